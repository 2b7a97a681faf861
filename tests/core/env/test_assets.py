"""Component resolution: source order, both layouts, the HF cache, flavours, and what is reported as tried."""
import subprocess
import sys

import pytest

from hvtui.core.env import assets as A
from hvtui.core.env import model_files as MF
from hvtui.core.preset.schema import Preset, load_preset
from tests.helpers.doctor_trees import copy_tree, fake_cache

pytestmark = pytest.mark.slow   # most tests build or read the tiny model trees



def by_name(preset, env):
    return {c.name: c for c in A.resolve_components(preset, env)}


def test_flavour_folder_names():
    assert A.transformer_version("t2v-480p") == "480p_t2v"
    assert A.transformer_version("i2v-720p-distilled") == "720p_i2v_distilled"
    assert A.component_names("t2v-720p") == A.T2V_COMPONENTS
    assert A.component_names("i2v-480p")[-2:] == ("image_encoder", "feature_extractor")


def test_builtin_tiny_resolves_every_component_to_builtin():
    comps = A.resolve_components(Preset(pretrained_model_name_or_path="builtin:tiny", model_flavour="i2v-480p"), {})
    assert [c.name for c in comps] == list(A.I2V_COMPONENTS)
    assert all(c.source == "builtin" and c.layout == "builtin" and c.path is None and c.found for c in comps)


def test_diffusers_layout(model_trees, tmp_path):
    root = model_trees["diffusers"]
    assert A.detect_layout(root) == "diffusers"
    c = by_name(Preset(pretrained_model_name_or_path=str(root), model_flavour="i2v-480p"),
                {"HF_HUB_CACHE": str(tmp_path)})
    for name, sub in [("transformer", "transformer"), ("vae", "vae"), ("scheduler", "scheduler"),
                      ("text_encoder", "text_encoder"), ("tokenizer", "tokenizer"),
                      ("text_encoder_2", "text_encoder_2"),
                      ("tokenizer_2", "tokenizer_2"), ("image_encoder", "image_encoder"),
                      ("feature_extractor", "feature_extractor")]:
        assert c[name].path == root / sub, name
        assert (c[name].source, c[name].layout, c[name].format) == ("model", "diffusers", "pretrained"), name
    # the encoders' explicit sources were tried first and reported as unset
    assert c["text_encoder"].tried[:2] == ["preset:text_encoder_path: text_encoder_path not set",
                                           f"env:{A.ENV_TEXT}: ${A.ENV_TEXT} not set"]
    assert c["text_encoder"].tried[2].startswith(f"model: found in {root}")


def test_tencent_layout(model_trees, tmp_path):
    root = model_trees["tencent"]
    assert A.detect_layout(root) == "tencent"
    c = by_name(Preset(pretrained_model_name_or_path=str(root), model_flavour="i2v-480p"),
                {"HF_HUB_CACHE": str(tmp_path)})
    assert c["transformer"].path == root / "transformer" / "480p_i2v"
    assert c["transformer"].format == "tencent-transformer"
    assert c["vae"].format == "tencent-vae" and c["scheduler"].format == "tencent-scheduler"
    assert c["text_encoder"].path == c["tokenizer"].path == root / "text_encoder" / "llm"
    assert c["text_encoder"].format == "qwen2_5_vl"          # a full Qwen2.5-VL download
    assert c["text_encoder_2"].path == root / "text_encoder" / "byt5-small"
    assert c["text_encoder_2"].format == "byt5-glyph"
    assert (c["text_encoder_2"].files["glyph_checkpoint"]
            == root / "text_encoder/Glyph-SDXL-v2/checkpoints/byt5_model.pt")
    assert c["image_encoder"].path == root / "vision_encoder" / "siglip" / "image_encoder"
    assert all(x.layout == "tencent" for x in c.values())


def test_missing_flavour_names_the_expected_folder(model_trees, tmp_path):
    root = model_trees["tencent"]
    c = by_name(Preset(pretrained_model_name_or_path=str(root), model_flavour="i2v-720p"),
                {"HF_HUB_CACHE": str(tmp_path)})
    tr = c["transformer"]
    assert not tr.found and tr.source == "missing"
    assert tr.expected_path == root / "transformer" / "720p_i2v"
    assert any("has 480p_i2v, 480p_t2v but no 720p_i2v/" in t for t in tr.tried)
    assert "transformer/720p_i2v" in tr.hint
    assert c["vae"].found and c["text_encoder"].found       # the rest of the tree still resolves


def test_explicit_sources_win_in_order(model_trees, tmp_path):
    root = model_trees["diffusers"]
    preset_llm = copy_tree(model_trees["tencent"] / "text_encoder" / "llm", tmp_path / "qwen-from-preset")
    env_root = copy_tree(model_trees["tencent"] / "text_encoder", tmp_path / "te-from-env")
    env = {A.ENV_TEXT: str(env_root), "HF_HUB_CACHE": str(tmp_path / "cache")}

    c = by_name(Preset(pretrained_model_name_or_path=str(root), text_encoder_path=str(preset_llm)), env)
    assert (c["text_encoder"].source, c["text_encoder"].path, c["text_encoder"].layout) == \
        ("preset:text_encoder_path", preset_llm, "folder")
    # the byT5 group is not in the Qwen folder: the env var's Tencent text_encoder/ folder has it
    assert c["text_encoder_2"].source == f"env:{A.ENV_TEXT}"
    assert c["text_encoder_2"].path == env_root / "byt5-small"
    assert any(t.startswith("preset:text_encoder_path: no text_encoder_2/") for t in c["text_encoder_2"].tried)

    c = by_name(Preset(pretrained_model_name_or_path=str(root)), env)      # no preset key: the env var wins
    assert c["text_encoder"].source == f"env:{A.ENV_TEXT}" and c["text_encoder"].path == env_root / "llm"
    assert c["vae"].source == "model"                                      # env vars are for encoders only


def test_env_var_pointing_nowhere_falls_through_with_a_warning(model_trees, tmp_path):
    env = {A.ENV_TEXT: str(tmp_path / "nowhere"), "HF_HUB_CACHE": str(tmp_path)}
    c = by_name(Preset(pretrained_model_name_or_path=str(model_trees["diffusers"])), env)
    te = c["text_encoder"]
    assert te.source == "model"
    assert te.problems == [("warning", f"${A.ENV_TEXT}: {tmp_path / 'nowhere'} does not exist")]


def test_preset_key_relative_to_the_preset_file(model_trees, tmp_path):
    copy_tree(model_trees["tencent"], tmp_path / "ckpts")
    (tmp_path / "p.toml").write_text('pretrained_model_name_or_path = "ckpts"\nmodel_flavour = "t2v-480p"\n'
                                     'text_encoder_path = "ckpts/text_encoder"\n')
    c = by_name(load_preset(tmp_path / "p.toml"), {"HF_HUB_CACHE": str(tmp_path / "cache")})
    assert c["text_encoder"].source == "preset:text_encoder_path"
    assert c["text_encoder"].path == tmp_path / "ckpts" / "text_encoder" / "llm"
    assert c["transformer"].path == tmp_path / "ckpts" / "transformer" / "480p_t2v"


def test_hf_cache_snapshots(model_trees, tmp_path):
    cache = tmp_path / "hub"
    # the model named by repo id, with no text encoder in it; Qwen's own repo in the cache
    partial = tmp_path / "partial"
    for sub in ("transformer", "vae", "scheduler"):
        copy_tree(model_trees["tencent"] / sub, partial / sub)
    snap = fake_cache(cache, A.TENCENT_REPO, partial)
    qwen = fake_cache(cache, A.QWEN_REPO, model_trees["tencent"] / "text_encoder" / "llm")
    c = by_name(Preset(pretrained_model_name_or_path=A.TENCENT_REPO), {"HF_HOME": str(tmp_path)})
    assert A.hf_cache_dir({"HF_HOME": str(tmp_path)}) == cache
    assert c["transformer"].source == f"hf-cache:{A.TENCENT_REPO}"
    assert c["transformer"].path == snap / "transformer" / "480p_t2v"
    assert "as a repo id: looking in the Hugging Face cache" in c["transformer"].tried[0]
    assert c["text_encoder"].source == f"hf-cache:{A.QWEN_REPO}" and c["text_encoder"].path == qwen
    assert not c["text_encoder_2"].found                     # nothing has byT5: reported, not downloaded
    assert any("models--google" not in t and A.TENCENT_REPO in t for t in c["text_encoder_2"].tried)


def test_flavour_diffusers_repo_in_cache(model_trees, tmp_path):
    cache = tmp_path / "hub"
    snap = fake_cache(cache, "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v", model_trees["diffusers"])
    c = by_name(Preset(pretrained_model_name_or_path="not/here", model_flavour="i2v-480p"),
                {"HF_HUB_CACHE": str(cache)})
    assert c["image_encoder"].source == "hf-cache:hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v"
    assert c["image_encoder"].path == snap / "image_encoder" and c["image_encoder"].layout == "diffusers"
    # refs/main missing: the newest snapshot is used
    (cache / "models--hunyuanvideo-community--HunyuanVideo-1.5-Diffusers-480p_i2v" / "refs" / "main").unlink()
    assert A.cache_snapshot(cache, "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v")[0] == snap


def test_siglip_download_as_vision_encoder_path(model_trees, tmp_path):
    redux = tmp_path / "FLUX.1-Redux-dev"
    copy_tree(model_trees["tencent"] / "vision_encoder" / "siglip", redux)
    c = by_name(Preset(pretrained_model_name_or_path=str(model_trees["tencent"]), model_flavour="i2v-480p",
                       vision_encoder_path=str(redux)), {"HF_HUB_CACHE": str(tmp_path)})
    assert c["image_encoder"].source == "preset:vision_encoder_path"
    assert c["image_encoder"].path == redux / "image_encoder"
    assert c["feature_extractor"].path == redux / "feature_extractor"


def test_safetensors_header_reader(model_trees, tmp_path):
    folder = model_trees["diffusers"] / "transformer"
    info = MF.inspect_weights(folder)
    assert info.kind == "index" and len(info.files) > 1 and info.ok
    assert info.dtype == "fp32" and info.key_format == "diffusers"
    from diffusers import HunyuanVideo15Transformer3DModel
    n = sum(p.numel() for p in HunyuanVideo15Transformer3DModel.from_pretrained(folder).parameters())
    assert info.params == n
    bad = tmp_path / "bad.safetensors"
    data = (model_trees["diffusers"] / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(MF.HeaderError, match="truncated"):
        MF.read_safetensors_header(bad)
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(MF.HeaderError, match="not JSON"):
        MF.read_safetensors_header(bad)
    assert MF.inspect_weights(model_trees["tencent"] / "transformer" / "480p_t2v").key_format == "tencent"


def test_resolution_imports_nothing_heavy():
    code = ("import sys; from hvtui.core.preset.schema import Preset; "
            "from hvtui.core.env.assets import resolve_components;"
            "resolve_components(Preset(pretrained_model_name_or_path='/nope'), {});"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'huggingface_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
