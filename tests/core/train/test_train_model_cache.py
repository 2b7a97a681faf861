"""The caching phase on real (tiny) encoders and PyAV-made clips: shapes, valid tokens only, keys, reuse."""
import pytest
import torch

from hvtui.core.dataset.scan import scan_preset
from hvtui.core.dataset.synth import write_clip
from hvtui.core.preset.schema import preset_from_dict
from hvtui.core.train import latent_cache, lora, samples, step, video_io
from hvtui.core.train.components import load_components
from hvtui.core.train.tiny import D_BYT5, D_IMG, D_TXT, IMAGE_TOKENS

pytestmark = pytest.mark.slow


def _preset(tmp_path, flavour="t2v-480p", captions=None):
    data = tmp_path / "clips"
    if not data.exists():
        data.mkdir()
        write_clip(data / "a.mp4", 64, 64, fps=8, frames=5, colour="red")
        write_clip(data / "b.mp4", 64, 64, fps=8, frames=5, colour="blue", direction="down")
    for name, text in (captions or {"a": 'a red square says "HI"', "b": "a blue square\na blue box"}).items():
        (data / f"{name}.txt").write_text(text)
    return preset_from_dict({
        "pretrained_model_name_or_path": "builtin:tiny", "model_flavour": flavour, "mixed_precision": "no",
        "base_model_precision": "no_change", "output_dir": str(tmp_path / "out"), "validation_prompt": "a cat",
        "datasets": [{"id": "clips", "instance_data_dir": str(data), "resolution": 64,
                      "video": {"num_frames": 5, "min_frames": 5}},
                     {"id": "text", "dataset_type": "text_embeds", "default": True,
                      "cache_dir": str(tmp_path / "textcache")}]}, source=tmp_path / "p.toml")


def _build(p, events=None, extra=()):
    report = scan_preset(p, use_cache=False)
    assert not report.errors, report.errors
    comps = load_components(p, "cpu", parts=latent_cache.plan_cache(p, report, _info(p)).parts_needed | {"image", *extra})
    return latent_cache.build_cache(p, report, comps, "cpu", publish=(events.append if events is not None else None)), comps


def _info(p):
    from hvtui.core.train.components import model_info

    return model_info(p)


def test_t2v_cache_shapes_valid_tokens_and_reuse(tmp_path):
    p = _preset(tmp_path)
    events = []
    idx, comps = _build(p, events)
    assert idx.stats == {"texts_encoded": 5, "latents_encoded": 2, "texts_reused": 0, "latents_reused": 0}
    # encoders freed, VAE kept for validation
    assert "text_encoder" not in comps and "tokenizer_2" not in comps and "vae" in comps
    prog = [e for e in events if e.kind == "progress"]
    assert prog[-1].data["done"] == prog[-1].data["total"] == 7 and prog[-1].data["phase"] == "caching"
    a = next(e for e in idx.entries if e.sample_id.endswith("a.mp4"))
    b = next(e for e in idx.entries if e.sample_id.endswith("b.mp4"))
    assert b.captions == ["a blue square", "a blue box"] and len(b.text_paths) == 2
    assert a.text_paths[0].parent == tmp_path / "textcache"
    item = idx.load(a)
    w, h = (int(x) for x in a.bucket_key.split("@")[0].split("x"))
    assert item["latents"].shape == (32, 2, h // 16, w // 16) and item["text"].shape[1] == D_TXT
    assert 0 < item["text"].shape[0] < 64                       # valid tokens only (pipeline pads to 64)
    assert item["text_2"].shape[1] == D_BYT5 and 0 < item["text_2"].shape[0] < 32   # quoted text, unpadded
    assert "cond" not in item and item["image"].shape[0] == 0
    assert idx.load(b)["text_2"].shape == (0, D_BYT5)            # no quotes -> 0 byT5 tokens
    # posterior sampling: mean without a generator, a different draw with one, reproducible per seed
    mean = idx.load(a)["latents"]
    s1 = idx.load(a, generator=torch.Generator().manual_seed(1))["latents"]
    s1b = idx.load(a, generator=torch.Generator().manual_seed(1))["latents"]
    assert torch.equal(s1, s1b) and not torch.equal(s1, mean)
    assert torch.equal(idx.load(a)["latents"], mean)
    empty = idx.load(a, generator=torch.Generator().manual_seed(0), caption_dropout=1.0)
    assert empty["caption"] == "" and torch.equal(empty["text"], idx.load_text("")["text"])
    assert idx.load_text("a cat")["text"].shape[1] == D_TXT
    batch = step.collate([item])
    assert batch["latents"].shape == (1, 32, 2, h // 16, w // 16)

    # second run: everything reused, nothing loaded for text
    plan = latent_cache.plan_cache(p, scan_preset(p, use_cache=False), _info(p))
    assert plan.parts_needed == set()
    # change one caption: exactly one text entry is re-encoded, no latents
    p2 = _preset(tmp_path, captions={"a": "a red square", "b": "a blue square\na blue box"})
    plan = latent_cache.plan_cache(p2, scan_preset(p2, use_cache=False), _info(p2))
    assert plan.todo_text == ["a red square"] and plan.todo_latents == [] and plan.parts_needed == {"text"}
    idx2, _ = _build(p2)
    assert idx2.stats["texts_encoded"] == 1 and idx2.stats["latents_encoded"] == 0
    # a changed clip (new mtime/size) re-encodes that clip's latents only
    write_clip(tmp_path / "clips" / "a.mp4", 64, 64, fps=8, frames=5, colour="green")
    plan = latent_cache.plan_cache(p2, scan_preset(p2, use_cache=False), _info(p2))
    assert [s.id for s in plan.todo_latents] == [a.sample_id] and plan.todo_text == []
    assert not list((tmp_path / "textcache").glob(".tmp-*"))


def test_i2v_conditioning_shapes_and_validation_sample(tmp_path):
    p = _preset(tmp_path, flavour="i2v-480p")
    idx, comps = _build(p, extra=("transformer",))
    assert "image_encoder" not in comps
    e = idx.entries[0]
    item = idx.load(e)
    T, H, W = item["latents"].shape[1:]
    assert item["cond"].shape == (33, T, H, W)
    assert item["cond"][32, 0].eq(1).all() and not item["cond"][32, 1:].any()
    assert item["cond"][:32, 0].abs().sum() > 0 and not item["cond"][:32, 1:].any()
    assert item["image"].shape == (IMAGE_TOKENS, D_IMG) and item["image"].abs().sum() > 0
    assert idx.first_frame(e).shape == (H * 16, W * 16, 3)
    batch = step.collate([item])
    assert batch["is_i2v"] and batch["cond"].shape == (1, 33, T, H, W)
    with pytest.raises(step.BatchError):
        t2v_item = dict(item, image=torch.zeros(0, 0))
        t2v_item.pop("cond")
        step.collate([item, t2v_item])
    # i2v validation: the first frame of a training clip conditions the sample; encoders are gone
    lora.add_lora(comps["transformer"], p)
    p.validation_num_inference_steps, p.validation_num_video_frames = 2, 5
    paths = samples.Validator(p, comps, idx, "cpu").run(comps["transformer"], step=1)
    assert len(paths) == 1 and video_io.count_frames(paths[0]) == 5
