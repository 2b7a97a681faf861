"""Loading: builtin:tiny (seeded), precision rules, a diffusers-layout folder, Tencent-layout weights."""
import json

import pytest
import torch
from safetensors.torch import save_file

from hvtui.core.preset.schema import Preset
from hvtui.core.train import components as C
from hvtui.core.train.tencent_keys import diffusers_to_tencent, diffusers_vae_to_tencent
from hvtui.core.train.tiny import tiny_components

pytestmark = pytest.mark.slow


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_is_seeded_by_preset_and_leaves_global_rng_alone():
    p = Preset(pretrained_model_name_or_path="builtin:tiny", base_model_precision="no_change",
               mixed_precision="no", seed=7)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = C.load_components(p, "cpu", parts=("transformer",))
    after = torch.rand(3)
    assert torch.equal(before, after)                      # loading did not consume the trainer's RNG
    b = C.load_components(p, "cpu", parts=("transformer", "vae"))
    assert set(a) == {"transformer", "scheduler", "guider", "info"} and "vae" in b and "text_encoder" not in b
    assert _same(a["transformer"], b["transformer"]) and a["info"].dtype == torch.float32
    c = C.load_components(Preset(pretrained_model_name_or_path="builtin:tiny", base_model_precision="no_change",
                                 mixed_precision="no", seed=8), "cpu", parts=("transformer",))
    assert not _same(a["transformer"], c["transformer"])
    assert a["info"].key() != c["info"].key()


def test_i2v_tiny_has_image_encoder_and_bf16_default():
    p = Preset(pretrained_model_name_or_path="builtin:tiny", model_flavour="i2v-480p")
    comps = C.load_components(p, "cpu", parts=("transformer", "image"))
    assert comps["image_encoder"] is not None and comps["feature_extractor"] is not None
    assert comps["transformer"].dtype == torch.bfloat16 and comps["image_encoder"].dtype == torch.bfloat16
    assert not any(q.requires_grad for q in comps["transformer"].parameters())


@pytest.mark.parametrize("precision", ["int4-torchao", "fp8-quanto"])
def test_unsupported_precision_is_a_clear_error(precision):
    with pytest.raises(C.ModelLoadError, match="base_model_precision.*not supported") as e:
        C.load_components(Preset(pretrained_model_name_or_path="builtin:tiny", base_model_precision=precision),
                          "cpu", parts=("transformer",))
    assert "bf16, no_change, int8-torchao, fp8-torchao" in e.value.hint


@pytest.mark.parametrize("mixed, dtype", [("bf16", torch.bfloat16), ("no", torch.float32)])
def test_quantized_modes_load_like_no_change(mixed, dtype):
    """int8-torchao / fp8-torchao load in the compute dtype; their blocks are quantized when training starts."""
    p = Preset(pretrained_model_name_or_path="builtin:tiny", base_model_precision="int8-torchao",
               mixed_precision=mixed)
    assert C.weight_dtype(p) == dtype
    assert C.load_components(p, "cpu", parts=("transformer",))["transformer"].dtype == dtype


def test_diffusers_layout_folder_loads_the_same_weights(tmp_path):
    from diffusers import HunyuanVideo15Pipeline

    torch.manual_seed(0)
    HunyuanVideo15Pipeline(**tiny_components("t2v", seed=3)).save_pretrained(tmp_path / "model")
    p = Preset(pretrained_model_name_or_path=str(tmp_path / "model"), base_model_precision="no_change",
               mixed_precision="no")
    comps = C.load_components(p, "cpu", parts=("transformer", "vae", "text"))
    ref = tiny_components("t2v", seed=3)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert _same(comps[name], ref[name]), name
    assert comps["tokenizer"]("a cat").input_ids == ref["tokenizer"]("a cat").input_ids
    assert comps["info"].model_id == str(tmp_path / "model") and not comps["info"].tiny
    assert hasattr(comps["transformer"], "_hvtui_mask_mode")   # packed-attention processors installed


def test_missing_component_names_what_was_tried(tmp_path):
    (tmp_path / "model").mkdir()
    p = Preset(pretrained_model_name_or_path=str(tmp_path / "model"), base_model_precision="bf16")
    with pytest.raises(C.ModelLoadError, match="not found"):
        C.load_components(p, "cpu", parts=("transformer",))


def test_tencent_transformer_and_vae_convert(tmp_path):
    ref = tiny_components("t2v", seed=4)
    tdir = tmp_path / "transformer" / "480p_t2v"
    tdir.mkdir(parents=True)
    sd = diffusers_to_tencent(ref["transformer"].state_dict())
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tdir / "diffusion_pytorch_model.safetensors"))
    (tdir / "config.json").write_text(json.dumps({"rope_dim_list": [4, 6, 6], "target_size": 64}))
    from diffusers import HunyuanVideo15Transformer3DModel
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    if "HunyuanVideo15Transformer3DModel" not in SINGLE_FILE_LOADABLE_CLASSES:   # diffusers 0.42: why we convert
        with pytest.raises(ValueError, match="only compatible with"):
            HunyuanVideo15Transformer3DModel.from_single_file(str(tdir / "diffusion_pytorch_model.safetensors"))
    tr = C.load_tencent_transformer(tdir, "t2v-480p", torch.float32)
    assert _same(tr, ref["transformer"])
    assert tr.config.num_layers == 2 and tr.config.attention_head_dim == 16 and tr.config.text_embed_dim == 32
    vdir = tmp_path / "vae"
    vdir.mkdir()
    save_file({k: v.contiguous() for k, v in diffusers_vae_to_tencent(ref["vae"].state_dict()).items()},
              str(vdir / "diffusion_pytorch_model.safetensors"))
    (vdir / "config.json").write_text(json.dumps(dict(ref["vae"].config)))
    vae = C.load_tencent_vae(vdir, torch.float32)
    assert _same(vae, ref["vae"])
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(vae.encode(x).latent_dist.mean, ref["vae"].encode(x).latent_dist.mean)
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file({"foo.weight": torch.zeros(2)}, str(bad / "x.safetensors"))
    with pytest.raises(C.ModelLoadError, match="not an original"):
        C.load_tencent_transformer(bad, "t2v-480p", torch.float32)
