"""Tiny HunyuanVideo 1.5 model folders on disk, in both layouts, for the asset resolver and doctor tests.

Built once per session (the real diffusers/transformers classes, saved with save_pretrained); tests copy a
tree before breaking it. Layouts:
  diffusers/  HunyuanVideo15ImageToVideoPipeline.save_pretrained, transformer re-saved in 4 MB shards
  tencent/    the official tree arranged from the same files: transformer/480p_t2v + 480p_i2v (Tencent class
              name, original double_blocks.* keys), vae/ (AutoencoderKLConv3D), scheduler/, text_encoder/llm
              (Qwen2.5-VL, full-model architecture name), text_encoder/byt5-small, text_encoder/Glyph-SDXL-v2,
              vision_encoder/siglip/{image_encoder,feature_extractor}
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

_BUILT: dict[str, Path] = {}


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=1))


def _merge(dst: Path, *srcs: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for src in srcs:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, dst / f.name)


def build_trees(base: Path) -> dict[str, Path]:
    if _BUILT:
        return _BUILT
    import torch
    from diffusers import HunyuanVideo15ImageToVideoPipeline
    from safetensors.torch import save_file

    from hvtui.core.train.tiny import tiny_components

    d = base / "diffusers"
    pipe = HunyuanVideo15ImageToVideoPipeline(**tiny_components("i2v"))
    pipe.save_pretrained(d)
    for f in (d / "transformer").glob("*.safetensors"):
        f.unlink()
    pipe.transformer.save_pretrained(d / "transformer", max_shard_size="4MB")

    t = base / "tencent"
    for version, task in (("480p_t2v", "t2v"), ("480p_i2v", "i2v")):
        tdir = t / "transformer" / version
        tdir.mkdir(parents=True)
        shutil.copy2(d / "transformer" / "config.json", tdir / "config.json")
        _edit_json(tdir / "config.json", _class_name="HunyuanVideo_1_5_DiffusionTransformer", task_type=task)
        sd = {k.replace("transformer_blocks.", "double_blocks."): v.contiguous()
              for k, v in pipe.transformer.state_dict().items()}
        save_file(sd, str(tdir / "diffusion_pytorch_model.safetensors"))
    _merge(t / "vae", d / "vae")
    _edit_json(t / "vae" / "config.json", _class_name="AutoencoderKLConv3D")
    _merge(t / "scheduler", d / "scheduler")
    _edit_json(t / "scheduler" / "scheduler_config.json", _class_name="FlowMatchDiscreteScheduler")
    llm = t / "text_encoder" / "llm"
    _merge(llm, d / "text_encoder", d / "tokenizer")
    _edit_json(llm / "config.json", architectures=["Qwen2_5_VLForConditionalGeneration"])
    _merge(t / "text_encoder" / "byt5-small", d / "text_encoder_2", d / "tokenizer_2")
    glyph = t / "text_encoder" / "Glyph-SDXL-v2"
    (glyph / "checkpoints").mkdir(parents=True)
    torch.save(pipe.text_encoder_2.state_dict(), glyph / "checkpoints" / "byt5_model.pt")
    (glyph / "assets").mkdir()
    (glyph / "assets" / "color_idx.json").write_text(json.dumps({"white": 0, "black": 1}))
    (glyph / "assets" / "multilingual_10-lang_idx.json").write_text(json.dumps({"en-Arial": 0}))
    siglip = t / "vision_encoder" / "siglip"
    _merge(siglip / "image_encoder", d / "image_encoder")
    _merge(siglip / "feature_extractor", d / "feature_extractor")

    _BUILT.update(diffusers=d, tencent=t)
    return _BUILT


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def fake_cache(cache: Path, repo_id: str, snapshot_of: Path) -> Path:
    """An HF hub cache entry (refs/main -> snapshots/<hash>) whose snapshot links to `snapshot_of`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots").mkdir()
    snap = repo / "snapshots" / "0123abcd"
    snap.symlink_to(snapshot_of, target_is_directory=True)
    return snap
