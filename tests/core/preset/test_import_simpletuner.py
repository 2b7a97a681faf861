"""hvtui import-simpletuner: SimpleTuner's HunyuanVideo quickstart JSON -> a preset that passes check."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from hvtui.cli import main
from hvtui.core.preset import check_rules as V
from hvtui.core.preset.check import validate_file
from hvtui.core.preset.schema import load_preset
from hvtui.core.preset.simpletuner_import import SimpleTunerInputError, convert

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

pytestmark = pytest.mark.usefixtures("no_cuda")   # expected problems must not depend on this machine


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
    assert "warning: 2 SimpleTuner keys not carried over:" in captured.err
    for key in ("datasets[0].crop", "datasets[0].video.is_i2v"):
        assert f"  {key}:" in captured.err
    assert "validation_resolution: 854x480 -> 848x480" in captured.err
    data = tomllib.loads(out.read_text())
    assert data["learning_rate"] == 1e-4 and isinstance(data["learning_rate"], float)
    assert data["enable_group_offload"] is True and data["validation_num_video_frames"] == 61
    assert data["validation_resolution"] == "848x480" and data["validation_steps"] == 100
    assert "dataset_backend_config" not in data and data["report_to"] == "wandb"   # the quickstart's tracker
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
        # where and why as the running Python's json parser says it (3.13 words it differently from 3.11)
        with pytest.raises(json.JSONDecodeError) as parsed:
            json.loads(cfg.read_text())
        assert f"{cfg}:{parsed.value.lineno}: not valid JSON: {parsed.value.msg} (column {parsed.value.colno})" in err
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
    # no resolution_type: SimpleTuner's default pixel_area (R x R pixels), hvtui's matching side is R x 3/4
    assert [d.get("resolution") for d in data["datasets"]] == [540, 360, None]
    assert result.dropped == []
    assert ("datasets[0].resolution: 720 with resolution_type pixel_area (SimpleTuner's default) means 720x720 = "
            "518,400 pixels per frame in SimpleTuner; hvtui's resolution is the short side of a 16:9 frame of that "
            "area, so it becomes 540 (960x544 at 16:9, 720x720 square; hvtui would read 720 as 1280x720 at 16:9, "
            "960x960 square, 1.78x the pixels)") in result.notes


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


# SimpleTuner's own HunyuanVideo 1.5 example, key for key and value for value as its repository gives it
# (bghira/SimpleTuner, simpletuner/examples/hunyuanvideo-1.5-t2v.peft-lora/config.json and
# simpletuner/examples/multidatabackend-small-video-480p+2s24fps.json, commit bc8e6ab7).
HV15_EXAMPLE = {
    "base_model_precision": "int8-torchao", "caption_dropout_probability": 0.1, "checkpoint_step_interval": 100,
    "checkpoints_total_limit": 5, "compress_disk_cache": True,
    "data_backend_config": "config/examples/multidatabackend-small-video-480p+2s24fps.json",
    "disable_benchmark": True, "gradient_checkpointing": True,
    "hub_model_id": "simpletuner-hunyuanvideo-1-5-lora-test", "learning_rate": 6e-05, "lora_rank": 16,
    "lora_type": "standard", "lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 50, "max_grad_norm": 0.1,
    "max_train_steps": 200, "minimum_image_size": 0, "mixed_precision": "bf16", "model_family": "hunyuanvideo",
    "model_flavour": "t2v-480p", "model_type": "lora", "num_train_epochs": 0, "optimizer": "adamw_bf16",
    "output_dir": "output/examples/hunyuanvideo-1.5-t2v.peft-lora",
    "pretrained_model_name_or_path": "tencent/HunyuanVideo-1.5", "report_to": "none", "resolution": 480,
    "resolution_type": "pixel_area", "resume_from_checkpoint": "latest", "seed": 42,
    "tracker_project_name": "lora-training", "tracker_run_name": "example-training-run", "train_batch_size": 2,
    "vae_batch_size": 1, "vae_enable_tiling": True, "vae_enable_slicing": True, "validation_guidance": 6.0,
    "validation_negative_prompt": "blurry, cropped, low quality", "validation_num_inference_steps": 30,
    "validation_num_video_frames": 49,
    "validation_prompt": "\U0001F7EB is holding a sign that says hello world from hunyuanvideo",
    "validation_prompt_library": False, "validation_resolution": "1280x720", "validation_seed": 42,
    "validation_steps": 50, "flow_schedule_shift": 5.0,
}
HV15_EXAMPLE_BACKEND = [
    {"id": "dreambooth-480", "type": "huggingface", "dataset_type": "video",
     "dataset_name": "sayakpaul/video-dataset-disney-organized", "crop": False, "crop_style": "random",
     "crop_aspect": "square", "minimum_image_size": 128, "maximum_image_size": 480, "target_downsample_size": 480,
     "resolution": 480, "resolution_type": "pixel_area", "metadata_backend": "huggingface",
     "caption_strategy": "huggingface", "video": {"num_frames": 48},
     "huggingface": {"video_column": "video", "caption_column": "prompt"},
     "cache_dir_vae": "cache/vae/{model_family}/dreambooth-480"},
    {"id": "alt-embed-cache", "dataset_type": "text_embeds", "default": True, "type": "local",
     "cache_dir": "cache/text/{model_family}"},
]
# The dataset config of SimpleTuner's HunyuanVideo quickstart (documentation/quickstart/HUNYUANVIDEO.md).
HV15_QUICKSTART_BACKEND = [
    {"id": "my-video-dataset", "type": "local", "dataset_type": "video", "instance_data_dir": "datasets/videos",
     "caption_strategy": "textfile", "resolution": 480,
     "video": {"num_frames": 61, "min_frames": 61, "frame_rate": 24, "bucket_strategy": "aspect_ratio"},
     "repeats": 10},
    {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
     "cache_dir": "cache/text/hunyuan", "disabled": False},
]


def _checkout(tmp_path, config: dict, backend: list, backend_name: str) -> Path:
    root = tmp_path / "SimpleTuner"
    (root / "config" / "examples").mkdir(parents=True)
    (root / "datasets" / "videos").mkdir(parents=True)
    (root / "config" / "config.json").write_text(json.dumps(config, indent=2))
    (root / backend_name).write_text(json.dumps(backend, indent=2))
    return root


def test_simpletuners_hv15_example_keeps_its_intervals_and_expands_placeholders(tmp_path, capsys, monkeypatch):
    root = _checkout(tmp_path, HV15_EXAMPLE, HV15_EXAMPLE_BACKEND, HV15_EXAMPLE["data_backend_config"])
    monkeypatch.chdir(root)
    out = tmp_path / "presets" / "hv15.toml"
    result = convert(root / "config" / "config.json", None, out, cwd=root)
    data = tomllib.loads(result.text)
    # current name (checkpoint_step_interval) and legacy alias (validation_steps) both carried over
    assert data["checkpointing_steps"] == 100 and data["validation_steps"] == 50
    assert data["checkpoints_total_limit"] == 5 and data["caption_dropout_probability"] == 0.1
    assert data["flow_schedule_shift"] == 5.0 and data["validation_seed"] == 42 and data["vae_enable_tiling"] is True
    assert "{" not in result.text                                      # no literal placeholder anywhere
    text_embeds = next(d for d in data["datasets"] if d["id"] == "alt-embed-cache")
    assert text_embeds["cache_dir"].endswith("cache/text/hunyuanvideo")
    assert ('datasets[1].cache_dir: "cache/text/{model_family}" -> "cache/text/hunyuanvideo" (SimpleTuner\'s '
            "placeholders expanded)") in result.notes
    # grad clipping: SimpleTuner's default method clips values; hvtui does not pretend it is a norm clip
    assert "max_grad_norm" not in data
    clip = next(d for d in result.dropped if d.startswith("max_grad_norm:"))
    assert "SimpleTuner clips every gradient element to +-0.1" in clip and "hvtui clips the total gradient norm" in clip
    # the Hugging Face dataset cannot be read by hvtui: skipped with its reason, never silently
    assert any(d.startswith('datasets[0] (dreambooth-480): storage type "huggingface" is not supported')
               for d in result.dropped)
    # every key of the example is mapped or listed with a reason
    listed = {d.split(":")[0] for d in result.dropped}
    for key in HV15_EXAMPLE:
        carried = {"checkpoint_step_interval": "checkpointing_steps", "data_backend_config": None,
                   "resolution": None, "resolution_type": None}.get(key, key)
        assert key in listed or (carried and carried in data) or carried is None, key
    for d in result.dropped:
        assert ": " in d and not d.endswith(": "), d                   # each with its reason
    # the CLI writes it and says what changed in meaning
    assert main(["import-simpletuner", str(root / "config" / "config.json"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "base_model_precision" not in err            # int8-torchao is kept as it is (no note, no drop)
    assert "placeholders expanded" in err and "max_grad_norm: 0.1 with grad_clip_method left at" in err


def test_simpletuners_hv15_quickstart_imports_and_passes_check(tmp_path, capsys, monkeypatch):
    config = {k: v for k, v in HV15_EXAMPLE.items() if k != "data_backend_config"}
    config["dataset_backend_config"] = "config/multidatabackend.json"
    # current spellings of both intervals, as SimpleTuner's other quickstarts and config.json.example write them
    config["validation_step_interval"] = config.pop("validation_steps")
    root = _checkout(tmp_path, config, HV15_QUICKSTART_BACKEND, "config/multidatabackend.json")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(V, "cuda_available", lambda: False)
    out = tmp_path / "presets" / "quick.toml"
    assert main(["import-simpletuner", str(root / "config" / "config.json"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    data = tomllib.loads(out.read_text())
    assert data["checkpointing_steps"] == 100 and data["validation_steps"] == 50
    video = data["datasets"][0]
    # resolution 480 with SimpleTuner's pixel_area: 480x480 pixels = 640x360 at 16:9 -> hvtui's 360
    assert video["resolution"] == 360 and "resolution_type" not in video
    assert ("note: datasets[0].resolution: 480 with resolution_type pixel_area means 480x480 = 230,400 pixels per "
            "frame in SimpleTuner; hvtui's resolution is the short side of a 16:9 frame of that area, so it becomes "
            "360 (640x368 at 16:9, 480x480 square; hvtui would read 480 as 848x480 at 16:9, 640x640 square, 1.78x "
            "the pixels)") in err
    from hvtui.core.dataset.buckets import bucket_size

    assert bucket_size(1920, 1080, video["resolution"]) == (640, 368)


def test_current_and_legacy_names_the_later_wins(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"--checkpointing_steps": 10, "--checkpoint_step_interval": 30, "--validation_step_interval": 7,'
                   ' "--validation_steps": 9, "--save_total_limit": 3, "--grad_clip_method": "norm",'
                   ' "--max_grad_norm": 0.5, "--output_dir": "{env:HVTUI_TEST_OUT}/run"}')
    import os

    os.environ["HVTUI_TEST_OUT"] = "/data/out"
    try:
        result = convert(cfg, None, tmp_path / "o.toml", cwd=tmp_path)
    finally:
        del os.environ["HVTUI_TEST_OUT"]
    data = tomllib.loads(result.text)
    assert (data["checkpointing_steps"], data["validation_steps"], data["checkpoints_total_limit"]) == (30, 9, 3)
    assert data["max_grad_norm"] == 0.5                     # "norm" is hvtui's own clipping: carried over
    assert data["output_dir"] == "/data/out/run"
    assert ("checkpointing_steps: both checkpointing_steps and checkpoint_step_interval are set; SimpleTuner uses "
            "the later one (checkpoint_step_interval = 30), and so does hvtui") in result.notes


@pytest.mark.parametrize("rtype, value, expected", [("area", 0.25, 384), ("area", 1.0, 768), ("pixel", 480, 480),
                                                    ("pixel_area", 1024, 768)])
def test_resolution_types_are_converted_with_numbers(tmp_path, rtype, value, expected):
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    backend = tmp_path / "db.json"
    backend.write_text(json.dumps([{"id": "a", "dataset_type": "video", "instance_data_dir": "x",
                                    "resolution": value, "resolution_type": rtype}]))
    result = convert(cfg, backend, tmp_path / "o.toml", cwd=tmp_path)
    assert tomllib.loads(result.text)["datasets"][0]["resolution"] == expected
    note = next(n for n in result.notes if n.startswith("datasets[0].resolution:"))
    if rtype == "area":
        assert f"(resolution_type area) is {(512 if value == 0.25 else 1024) ** 2:,} pixels per frame" in note
    if rtype == "pixel":
        assert "480x480 square" in note and "640x640 square" in note       # where the two rules part


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
        assert any(d.startswith('base_model_precision: "int4-quanto" is not supported by hvtui')
                   for d in result.dropped)
    else:
        assert data["base_model_precision"] == kept
        assert not any("base_model_precision" in d for d in result.dropped)
    assert validate_file(out).ok
