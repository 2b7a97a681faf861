"""hvtui import-simpletuner: SimpleTuner's HunyuanVideo quickstart JSON -> a preset that passes check."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from hvtui.cli import main
from hvtui.core import validate as V
from hvtui.core.preset import load_preset
from hvtui.core.simpletuner import SimpleTunerInputError, convert
from hvtui.core.validate import validate_file

# The shape of SimpleTuner's HunyuanVideo 1.5 quickstart, with the CLI's "--" prefixes and string values
# that SimpleTuner's own config files carry.
CONFIG = {
    "--model_type": "lora",
    "--model_family": "hunyuanvideo",
    "--pretrained_model_name_or_path": "tencent/HunyuanVideo-1.5",
    "--model_flavour": "t2v-480p",
    "--output_dir": "output/hunyuan-video",
    "--validation_resolution": "854x480",
    "--validation_num_video_frames": "61",
    "--validation_guidance": 6.0,
    "--train_batch_size": 1,
    "--gradient_accumulation_steps": "1",
    "--learning_rate": "1e-4",
    "--mixed_precision": "bf16",
    "--optimizer": "adamw_bf16",
    "--lora_rank": 16,
    "--enable_group_offload": "true",
    "--group_offload_type": "block_level",
    "--group_offload_blocks_per_group": 1,
    "--group_offload_use_stream": True,
    "--dataset_backend_config": "config/multidatabackend.json",
    "--report_to": "wandb",
    "--max_train_steps": 2000,
    "--validation_prompt": "a cat",
    "--validation_steps": "100",
}
BACKEND = [
    {"id": "my-video-dataset", "type": "local", "dataset_type": "video", "instance_data_dir": "datasets/videos",
     "caption_strategy": "textfile", "resolution": 480, "crop": False,
     "video": {"num_frames": 61, "min_frames": 61, "frame_rate": 24, "is_i2v": False}, "repeats": 10},
    {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
     "cache_dir": "cache/text/hunyuan", "disabled": False},
]


@pytest.fixture(autouse=True)
def no_cuda(monkeypatch):
    monkeypatch.setattr(V, "cuda_available", lambda: False)


@pytest.fixture
def simpletuner(tmp_path) -> Path:
    """A SimpleTuner checkout: config/config.json, config/multidatabackend.json, datasets/videos/."""
    root = tmp_path / "SimpleTuner"
    (root / "config").mkdir(parents=True)
    (root / "datasets" / "videos").mkdir(parents=True)
    (root / "config" / "config.json").write_text(json.dumps(CONFIG, indent=2))
    (root / "config" / "multidatabackend.json").write_text(json.dumps(BACKEND, indent=2))
    return root


def test_quickstart_imports_and_passes_check(simpletuner, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: the converter finds it from config/'s location
    out = tmp_path / "presets" / "imported.toml"
    rc = main(["import-simpletuner", str(simpletuner / "config" / "config.json"), "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured
    # every dropped key is listed, with the dataset ones by position
    assert "warning: 3 SimpleTuner keys not carried over:" in captured.err
    for key in ("report_to", "datasets[0].crop", "datasets[0].video.is_i2v"):
        assert f"  {key}:" in captured.err
    assert "validation_resolution: 854x480 -> 848x480" in captured.err
    data = tomllib.loads(out.read_text())
    assert data["learning_rate"] == 1e-4 and isinstance(data["learning_rate"], float)
    assert data["enable_group_offload"] is True and data["validation_num_video_frames"] == 61
    assert data["validation_resolution"] == "848x480" and data["validation_steps"] == 100
    assert "dataset_backend_config" not in data and "report_to" not in data
    assert [d["id"] for d in data["datasets"]] == ["my-video-dataset", "text-embeds"]
    assert data["datasets"][0]["video"] == {"num_frames": 61, "min_frames": 61, "frame_rate": 24}
    # paths keep pointing where SimpleTuner would look, now relative to the preset's folder
    preset = load_preset(out)
    assert preset.resolve_path(preset.datasets[0].instance_data_dir) == (simpletuner / "datasets" / "videos").resolve()
    assert preset.resolve_path(preset.output_dir) == (simpletuner / "output" / "hunyuan-video").resolve()
    assert preset.pretrained_model_name_or_path == "tencent/HunyuanVideo-1.5"  # a repo id, not a path
    # readable: section comments and help comments
    text = out.read_text()
    assert "# --- training" in text and "[datasets.video]" in text and "# peak learning rate" in text
    v = validate_file(out)
    assert v.ok and [p.key for p in v.warnings] == ["group_offload_use_stream"]


def test_second_argument_wins_and_unsupported_values_are_dropped(simpletuner, tmp_path):
    config = dict(CONFIG, **{"--optimizer": "optimi-lion", "--base_model_precision": "fp8-quanto",
                             "--lora_rank": "sixteen", "--model_flavour": "i2v-480p"})
    del config["--dataset_backend_config"]
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(config))
    backend = tmp_path / "db.json"
    backend.write_text(json.dumps(BACKEND + [{"id": "s3", "type": "aws"}]))
    result = convert(cfg, backend, simpletuner / "p.toml", cwd=simpletuner)
    dropped = "\n".join(result.dropped)
    assert "optimizer: \"optimi-lion\" is not supported by hvtui" in dropped
    assert 'lora_rank: value "sixteen" not understood' in dropped
    assert "datasets[2] (s3): storage type \"aws\" is not supported" in dropped
    assert result.notes[0] == ("base_model_precision: fp8-quanto -> fp8-torchao (hvtui quantizes with torchao; "
                               "the same weight format)")
    data = tomllib.loads(result.text)
    assert "optimizer" not in data and "lora_rank" not in data and data["base_model_precision"] == "fp8-torchao"
    assert len(data["datasets"]) == 2


def test_i2v_import_passes_check_with_the_vision_encoder_env(simpletuner, tmp_path, monkeypatch):
    config = dict(CONFIG, **{"--model_flavour": "i2v-480p"})
    cfg = simpletuner / "config" / "config.json"
    cfg.write_text(json.dumps(config))
    out = tmp_path / "i2v.toml"
    monkeypatch.chdir(simpletuner)
    monkeypatch.delenv(V.VISION_ENV, raising=False)
    assert main(["import-simpletuner", str(cfg), "-o", str(out)]) == 2   # written, but check says what's missing
    assert [p.key for p in validate_file(out).errors] == ["vision_encoder_path"]
    monkeypatch.setenv(V.VISION_ENV, "/models/siglip")
    assert main(["import-simpletuner", str(cfg), "-o", str(out)]) == 0


@pytest.mark.parametrize("case", ["missing", "bad_json", "not_object", "missing_backend", "bad_backend",
                                  "other_family"])
def test_unreadable_input_exits_2_without_traceback(tmp_path, capsys, case):
    cfg = tmp_path / "config.json"
    backend = None
    if case == "bad_json":
        cfg.write_text('{"model_type": "lora",\n}')
    elif case == "not_object":
        cfg.write_text("[1, 2]")
    elif case == "missing_backend":
        cfg.write_text(json.dumps({"dataset_backend_config": "config/nope.json"}))
    elif case == "other_family":
        cfg.write_text(json.dumps({"--model_family": "flux"}))
    elif case == "bad_backend":
        cfg.write_text("{}")
        backend = tmp_path / "db.json"
        backend.write_text('{"id": "x"}')
    args = ["import-simpletuner", str(cfg)] + ([str(backend)] if backend else []) + ["-o", str(tmp_path / "o.toml")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "o.toml").exists()
    if case == "bad_json":
        assert f"{cfg}:2: not valid JSON" in err
    with pytest.raises(SimpleTunerInputError):
        convert(cfg, backend, tmp_path / "o.toml", cwd=tmp_path)


def test_top_level_resolution_is_the_datasets_default(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"--resolution": "720", "--model_flavour": "t2v-720p"}))
    backend = tmp_path / "db.json"
    backend.write_text(json.dumps([{"id": "a", "dataset_type": "video", "instance_data_dir": "x"},
                                   {"id": "b", "dataset_type": "video", "instance_data_dir": "x", "resolution": 480},
                                   {"id": "t", "dataset_type": "text_embeds", "default": True}]))
    result = convert(cfg, backend, tmp_path / "o.toml", cwd=tmp_path)
    data = tomllib.loads(result.text)
    assert [d.get("resolution") for d in data["datasets"]] == [720, 480, None]
    assert result.dropped == []


def test_cache_dir_vae_is_the_datasets_latent_cache(simpletuner, tmp_path, capsys, monkeypatch):
    # SimpleTuner's video (and image) datasets keep their latents in cache_dir_vae: hvtui's dataset cache_dir
    backend = [dict(BACKEND[0], cache_dir_vae="cache/vae/hunyuan/videos"),
               {"id": "both", "dataset_type": "video", "instance_data_dir": "datasets/videos",
                "cache_dir": "cache/other", "cache_dir_vae": "/abs/vae"},
               {"id": "img", "dataset_type": "image", "instance_data_dir": "datasets/videos",
                "cache_dir_vae": "cache/vae/img", "cache_dir": "cache/vae/img"},
               {"id": "null", "dataset_type": "video", "instance_data_dir": "datasets/videos",
                "cache_dir": "cache/kept", "cache_dir_vae": None},
               dict(BACKEND[1], cache_dir_vae="cache/vae/text")]
    (simpletuner / "config" / "multidatabackend.json").write_text(json.dumps(backend))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "presets" / "imported.toml"
    assert main(["import-simpletuner", str(simpletuner / "config" / "config.json"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "cache_dir_vae: not an hvtui setting" not in err
    preset = load_preset(out)
    # relative paths are rewritten like the other dataset paths: still where SimpleTuner put them
    assert preset.datasets[0].cache_dir == "../SimpleTuner/cache/vae/hunyuan/videos"
    assert preset.resolve_path(preset.datasets[0].cache_dir) == (simpletuner / "cache/vae/hunyuan/videos").resolve()
    assert preset.datasets[1].cache_dir == "/abs/vae"                      # both given: cache_dir_vae wins
    assert preset.datasets[2].cache_dir == "../SimpleTuner/cache/vae/img"  # both the same: no note
    assert preset.datasets[3].cache_dir == "../SimpleTuner/cache/kept"     # a null cache_dir_vae is no choice
    assert preset.datasets[4].cache_dir == "../SimpleTuner/cache/text/hunyuan"   # text embeds: no latents
    result = convert(simpletuner / "config" / "config.json", None, out, cwd=tmp_path)
    assert [n for n in result.notes if "cache_dir" in n] == [
        'datasets[1].cache_dir: "cache/other" replaced by cache_dir_vae "/abs/vae" (SimpleTuner\'s latent cache; '
        "hvtui's cache_dir)"]
    assert [d for d in result.dropped if "cache_dir" in d] == [
        "datasets[3].cache_dir_vae: empty (null); cache_dir is used",
        "datasets[4].cache_dir_vae: the latent cache of a video or image dataset; this dataset has no latents"]
    assert validate_file(out).ok


@pytest.mark.parametrize("value, kept", [("int8-torchao", "int8-torchao"), ("fp8-torchao", "fp8-torchao"),
                                         ("int8-quanto", "int8-torchao"), ("int4-quanto", None)])
def test_quantized_base_precision_keeps_its_meaning(simpletuner, tmp_path, value, kept):
    """SimpleTuner's HunyuanVideo 1.5 example sets int8-torchao: it stays quantized (quanto's int8 / fp8 become
    torchao's, a mode hvtui has no equivalent for is dropped with the reason) and the preset passes check."""
    config = dict(CONFIG, **{"--base_model_precision": value})
    cfg = simpletuner / "config" / "config.json"
    cfg.write_text(json.dumps(config))
    out = tmp_path / "q.toml"
    result = convert(cfg, None, out, cwd=simpletuner)
    out.write_text(result.text)
    data = tomllib.loads(result.text)
    if kept is None:
        assert "base_model_precision" not in data
        assert any(d.startswith('base_model_precision: "int4-quanto" is not supported by hvtui') for d in result.dropped)
    else:
        assert data["base_model_precision"] == kept
        assert not any("base_model_precision" in d for d in result.dropped)
    assert validate_file(out).ok
