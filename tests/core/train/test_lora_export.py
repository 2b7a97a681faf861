"""LoRA export: ComfyUI applies hvtui's ComfyUI file (by its own rules, tests/helpers/comfyui_rules.py) to the same
deltas diffusers/PEFT gives from the diffusers file; conversions between the three key spaces are exact."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hvtui.core.preset.schema import Preset
from hvtui.core.train import lora, lora_export
from hvtui.core.train.tiny import tiny_transformer
from tests.helpers.comfyui_rules import apply_lora, comfy_model_state_dict

pytestmark = pytest.mark.slow

ALL_LINEAR = (r"(transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
              r"|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)|norm1\.linear|norm1_context\.linear)"
              r"|context_embedder\.token_refiner\.refiner_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)"
              r"|norm_out\.linear)|time_embed\.timestep_embedder\.linear_[12]|norm_out\.linear|proj_out"
              r"|context_embedder_2\.linear_[123]|image_embedder\.linear_[12]|context_embedder\.proj_in"
              r"|context_embedder\.time_text_embed\.(timestep_embedder|text_embedder)\.linear_[12])")


def _randomize(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _hvtui_lora(targets="attention+mlp"):
    torch.manual_seed(0)
    tr = tiny_transformer().eval()
    base = {k: v.clone() for k, v in tr.state_dict().items()}
    lora.add_lora(tr, Preset(lora_rank=4, lora_alpha=8, lora_targets=targets))
    _randomize(tr)
    return tr, base


def peft_deltas(base: dict, path, prefix="transformer") -> dict[str, torch.Tensor]:
    """Per module, the weight delta PEFT applies when diffusers loads `path` into the transformer (as folder +
    weight_name: the form that reads the file's adapter metadata, so alpha patterns count)."""
    from peft.tuners.lora import Linear as LoraLinear

    fresh = tiny_transformer().eval()
    fresh.load_state_dict(base)
    fresh.load_lora_adapter(str(path.parent), weight_name=path.name, prefix=prefix, adapter_name="file")
    with torch.no_grad():
        return {name: m.get_delta_weight("file").float() for name, m in fresh.named_modules()
                if isinstance(m, LoraLinear)}


def expected_comfy_deltas(deltas: dict[str, torch.Tensor], comfy_sd: dict) -> dict[str, torch.Tensor]:
    """The PEFT deltas in ComfyUI's weight layout: q/k/v stacked into the fused qkv weight, the final layer's
    modulation halves swapped like the checkpoint's (written independently of lora_names' tables)."""
    fused = {"attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1), "attn.to_v": ("img_attn.qkv", 2),
             "attn.add_q_proj": ("txt_attn.qkv", 0), "attn.add_k_proj": ("txt_attn.qkv", 1),
             "attn.add_v_proj": ("txt_attn.qkv", 2)}
    plain = {"attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj", "ff.net.0.proj": "img_mlp.0",
             "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
             "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin"}
    refiner = {"attn.to_q": ("self_attn.qkv", 0), "attn.to_k": ("self_attn.qkv", 1), "attn.to_v": ("self_attn.qkv", 2),
               "attn.to_out.0": ("self_attn.proj", None), "ff.net.0.proj": ("mlp.0", None), "ff.net.2": ("mlp.2", None),
               "norm_out.linear": ("adaLN_modulation.1", None)}
    top = {"time_embed.timestep_embedder.linear_1": "time_in.in_layer",
           "time_embed.timestep_embedder.linear_2": "time_in.out_layer", "proj_out": "final_layer.linear",
           "norm_out.linear": "final_layer.adaLN_modulation.1", "context_embedder_2.linear_1": "byt5_in.fc1",
           "context_embedder_2.linear_2": "byt5_in.fc2", "context_embedder_2.linear_3": "byt5_in.fc3",
           "context_embedder.proj_in": "txt_in.input_embedder",
           "context_embedder.time_text_embed.timestep_embedder.linear_1": "txt_in.t_embedder.in_layer",
           "context_embedder.time_text_embed.timestep_embedder.linear_2": "txt_in.t_embedder.out_layer",
           "context_embedder.time_text_embed.text_embedder.linear_1": "txt_in.c_embedder.in_layer",
           "context_embedder.time_text_embed.text_embedder.linear_2": "txt_in.c_embedder.out_layer",
           "image_embedder.linear_1": "vision_in.proj.1", "image_embedder.linear_2": "vision_in.proj.3"}
    out: dict[str, torch.Tensor] = {}

    def put(name, delta, slot=None):
        key = f"diffusion_model.{name}.weight"
        if slot is None:
            out[key] = delta
            return
        full = out.setdefault(key, torch.zeros(comfy_sd[key].shape))
        n = full.shape[0] // 3
        full[slot * n:(slot + 1) * n] = delta

    for module, delta in deltas.items():
        parts = module.split(".")
        if parts[0] == "transformer_blocks":
            rest = ".".join(parts[2:])
            if rest in fused:
                put(f"double_blocks.{parts[1]}.{fused[rest][0]}", delta, fused[rest][1])
            else:
                put(f"double_blocks.{parts[1]}.{plain[rest]}", delta)
        elif module.startswith("context_embedder.token_refiner.refiner_blocks."):
            name, slot = refiner[".".join(parts[4:])]
            put(f"txt_in.individual_token_refiner.blocks.{parts[3]}.{name}", delta, slot)
        else:
            if module == "norm_out.linear":
                first, second = delta.chunk(2, 0)
                delta = torch.cat([second, first], 0)
            put(top[module], delta)
    return out


def assert_comfy_matches_peft(comfy_file, diffusers_file, base, prefix="transformer"):
    comfy_sd = comfy_model_state_dict({k: v.float() for k, v in base.items()})
    lora_sd = load_file(str(comfy_file))
    patched, not_loaded = apply_lora(comfy_sd, lora_sd)
    assert not_loaded == [], f"ComfyUI would skip: {not_loaded[:5]}"           # nothing outside its key space
    want = expected_comfy_deltas(peft_deltas(base, diffusers_file, prefix), comfy_sd)
    got = {k: patched[k] - comfy_sd[k] for k in comfy_sd if not torch.equal(patched[k], comfy_sd[k])}
    assert set(got) == set(want), (sorted(set(want) - set(got))[:3], sorted(set(got) - set(want))[:3])
    worst = max(float((got[k] - want[k]).abs().max() / want[k].abs().max()) for k in want)
    assert worst < 1e-2, worst
    return len(want)


def test_comfy_file_applies_like_the_diffusers_file(tmp_path):
    tr, base = _hvtui_lora()
    paths = lora.save_lora(tr, tmp_path, comfy=True)
    n = assert_comfy_matches_peft(paths[1], paths[0], base)
    assert n == 2 * 8     # per block: img and txt qkv, 2 proj, 4 MLP linears
    keys = load_file(str(paths[1]))
    assert "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight" in keys
    assert not any("img_attn_q." in k for k in keys)                         # no split q/k/v left
    # stacked rank 3 x 4: alpha = 12 so ComfyUI's alpha / rank = 1 (the alpha/rank 8/4 is folded into B)
    assert keys["diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"].shape[0] == 12
    assert float(keys["diffusion_model.double_blocks.0.img_attn.qkv.alpha"]) == 12.0
    assert float(keys["diffusion_model.double_blocks.0.img_attn.proj.alpha"]) == 4.0


def test_every_linear_of_another_trainers_file_lands_in_comfys_key_space(tmp_path):
    """A diffusers file with mixed ranks and alphas on every Linear (modulation, refiner, final layer with its
    swapped halves): converted, ComfyUI applies every module as PEFT does."""
    from peft import LoraConfig

    torch.manual_seed(0)
    tr = tiny_transformer().eval()
    base = {k: v.clone() for k, v in tr.state_dict().items()}
    cfg = LoraConfig(r=4, lora_alpha=4, target_modules=ALL_LINEAR,
                     rank_pattern={r"transformer_blocks\.0\.attn\.to_k": 2, "proj_out": 3},
                     alpha_pattern={r"transformer_blocks\.1\.attn\.add_v_proj": 16, "norm_out.linear": 1})
    tr.add_adapter(cfg, adapter_name="default")
    _randomize(tr, seed=3)
    tr.save_lora_adapter(str(tmp_path / "theirs"), adapter_name="default")    # keys without a prefix
    src = tmp_path / "theirs" / "pytorch_lora_weights.safetensors"
    modules, scheme = lora_export.read_lora_file(src)
    assert scheme == "diffusers" and len(modules) == 49
    out = lora_export.write_lora_file(modules, "comfyui", tmp_path / "comfy.safetensors")
    # blocks, refiner, top level; fused q/k/v once
    assert assert_comfy_matches_peft(out, src, base, prefix=None) == 2 * 10 + 5 + 14


def test_conversions_round_trip_exactly(tmp_path):
    tr, base = _hvtui_lora()
    diffusers_file = lora.save_lora(tr, tmp_path, comfy=True)[0]
    original, scheme = lora_export.read_lora_file(diffusers_file)
    assert scheme == "diffusers"
    for fmt in ("comfyui", "tencent", "diffusers"):
        path = lora_export.write_lora_file(original, fmt, tmp_path / fmt / "pytorch_lora_weights.safetensors")
        back, scheme = lora_export.read_lora_file(path)
        assert scheme == fmt and back.keys() == original.keys()
        for k, m in original.items():   # block-diagonal fused LoRAs split back to their own rank
            assert back[k].rank == m.rank and torch.allclose(back[k].delta(), m.delta(), atol=1e-7)
    # Tencent's generate.py: load_lora_adapter(dir, prefix=None) on its own module names; the delta is the same
    with safe_open(str(tmp_path / "tencent" / "pytorch_lora_weights.safetensors"), "pt") as f:
        keys, meta = list(f.keys()), json.loads(f.metadata()["lora_adapter_metadata"])
    assert "double_blocks.0.img_attn_q.lora_A.weight" in keys and meta["r"] == meta["lora_alpha"] == 4
    # the diffusers file written by the converter loads in diffusers with the trained deltas
    again = peft_deltas(base, tmp_path / "diffusers" / "pytorch_lora_weights.safetensors")
    for k, d in peft_deltas(base, diffusers_file).items():
        assert torch.allclose(again[k], d, atol=1e-7)


def test_a_fused_lora_that_is_not_block_diagonal_splits_exactly():
    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(6, 32, generator=g), torch.randn(96, 6, generator=g)
    sd = {"diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight": down,
          "diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight": up,
          "diffusion_model.double_blocks.0.img_attn.qkv.alpha": torch.tensor(3.0)}
    modules, scheme = lora_export.read_lora_state_dict(sd)
    assert scheme == "comfyui" and sorted(modules) == [f"transformer_blocks.0.attn.to_{p}" for p in "kqv"]
    fused = torch.cat([modules[f"transformer_blocks.0.attn.to_{p}"].delta() for p in "qkv"])
    assert torch.allclose(fused, 0.5 * up @ down, atol=1e-5)   # ComfyUI's scale alpha / rank = 3 / 6


def test_unreadable_inputs_are_named(tmp_path):
    with pytest.raises(lora_export.LoraFormatError, match="no such file"):
        lora_export.read_lora_file(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(lora_export.LoraFormatError, match="bad.safetensors: not a readable"):
        lora_export.read_lora_file(bad)
    other = tmp_path / "sdxl.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 8),
               "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight": torch.zeros(8, 4)}, str(other))
    with pytest.raises(lora_export.LoraFormatError, match="not a module of the HunyuanVideo 1.5 transformer"):
        lora_export.read_lora_file(other)
    dora = tmp_path / "dora.safetensors"
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 8),
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(8, 4),
               "transformer.transformer_blocks.0.attn.to_q.lora_magnitude_vector": torch.zeros(8)}, str(dora))
    with pytest.raises(lora_export.LoraFormatError, match="DoRA"):
        lora_export.read_lora_file(dora)


def _hvtui(*args):
    import os
    import subprocess
    import sys

    from tests.helpers.repo_paths import REPO as repo
    return subprocess.run([sys.executable, "-m", "hvtui", *map(str, args)], cwd=repo, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=str(repo)))


def test_hvtui_export_fixes_an_earlier_comfy_file(tmp_path):
    """The ComfyUI file earlier hvtui versions wrote (Tencent's split q/k/v names, which ComfyUI skips) converts
    into one ComfyUI applies completely."""
    from hvtui.core.train import lora_names

    tr, base = _hvtui_lora(targets="attention")
    diffusers_file = lora.save_lora(tr, tmp_path)[0]
    old = {}
    for module, m in lora.lora_modules(tr).items():
        name = "diffusion_model." + lora_names.target(module, "tencent").name
        old.update({name + ".lora_A.weight": m.down, name + ".lora_B.weight": m.up,
                    name + ".alpha": torch.tensor(float(m.rank))})
    old_file = tmp_path / "old" / "pytorch_lora_weights_comfy.safetensors"
    old_file.parent.mkdir()
    save_file({k: v.contiguous() for k, v in old.items()}, str(old_file))
    _, not_loaded = apply_lora(comfy_model_state_dict(base), old)
    assert len(not_loaded) == 2 * 6 * 3        # what ComfyUI skipped: split q/k/v down, up, alpha

    proc = _hvtui("export", old_file)
    assert proc.returncode == 2 and "is the input file" in proc.stderr     # same default name: never overwritten
    new = tmp_path / "fixed.safetensors"
    proc = _hvtui("export", old_file, "-o", new)
    assert proc.returncode == 0, proc.stderr
    assert "in tencent names" in proc.stdout and f"wrote {new} (comfyui)" in proc.stdout
    assert assert_comfy_matches_peft(new, diffusers_file, base) == 2 * 4
    proc = _hvtui("export", old_file, "-o", new)
    assert proc.returncode == 2 and "pass --force" in proc.stderr
    assert _hvtui("export", old_file, "-o", new, "--force", "--dtype", "bf16").returncode == 0
    assert load_file(str(new))["diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"].dtype == torch.bfloat16


def test_hvtui_export_formats_and_errors(tmp_path):
    tr, _ = _hvtui_lora()
    lora.save_lora(tr, tmp_path)
    proc = _hvtui("export", tmp_path, "--to", "tencent")     # a folder: its pytorch_lora_weights.safetensors
    out = tmp_path / "pytorch_lora_weights_tencent" / "pytorch_lora_weights.safetensors"
    assert proc.returncode == 0 and out.is_file(), proc.stderr
    proc = _hvtui("export", out, "--to", "diffusers")
    assert proc.returncode == 0 and (out.parent / "pytorch_lora_weights_diffusers.safetensors").is_file()
    proc = _hvtui("export", tmp_path / "nope.safetensors")
    assert proc.returncode == 2 and "nope.safetensors: no such file" in proc.stderr and "Traceback" not in proc.stderr
