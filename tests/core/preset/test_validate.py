"""hvtui.core.preset.check + tomlpos: every problem at once, with the right file and line."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from hvtui.core.preset import check_rules as V
from hvtui.core.preset.check import validate_file, validate_preset
from hvtui.core.preset.check_rules import nearest_frame_counts
from hvtui.core.preset.problems import Problem
from hvtui.core.preset.schema import load_preset
from hvtui.core.preset.toml_positions import key_lines, line_of

GOOD = """\
model_flavour = "t2v-480p"
pretrained_model_name_or_path = "/models/hv15"
learning_rate = 1e-4
validation_steps = 0
# TOP
[[datasets]]
id = "clips"
instance_data_dir = "clips"

[datasets.video]
num_frames = 61
"""

pytestmark = pytest.mark.usefixtures("no_cuda")   # expected problems must not depend on this machine


def good(extra: str = "", **replace: str) -> str:
    """GOOD with extra top-level lines (they must come before the first table) and replacements."""
    text = GOOD.replace("# TOP\n", extra)
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    (tmp_path / "clips").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def lines(v, tmp_path: Path) -> list[str]:
    return [f"{p.severity}: " + str(p).replace(str(tmp_path) + "/", "") for p in v.problems]


def test_good_preset_is_clean(tmp_path):
    v = validate_file(write(tmp_path, GOOD), env={})
    assert v.ok and v.problems == []
    assert v.preset.datasets[0].video.num_frames == 61


def test_broken_preset_reports_every_problem_with_its_line(tmp_path):
    path = write(tmp_path, """\
        # broken on purpose
        model_flavour = "i2v-480p"
        pretrained_model_name_or_path = "/models/hv15"
        learning_rat = 1e-4
        lora_rank = "16"
        train_batch_size = 0
        optimizer = "adamw9bit"
        mixed_precision = true
        validation_resolution = "854x480"
        validation_num_video_frames = 60
        validation_steps = 100
        enable_group_offload = true
        enable_model_cpu_offload = true
        group_offload_use_stream = true
        base_model_precision = "int8-quanto"
        lr_warmup_steps = 5000
        max_grad_norm = 1

        [[datasets]]
        id = "clips"
        instance_data_dir = "nope"
        caption_strategy = "instanceprompt"

        [datasets.video]
        num_frames = 62
        max_frame = 80

        [[datasets]]
        id = "clips"
        dataset_type = "text_embeds"
        """)
    v = validate_file(path, env={})
    assert not v.ok
    assert lines(v, tmp_path) == [
        "error: p.toml:2: vision_encoder_path: i2v-480p needs the SigLIP vision encoder, and no path is set; "
        'set vision_encoder_path = "/path/to/vision_encoder_root" or export HUNYUANVIDEO_VISION_ENCODER_PATH '
        "(hvtui doctor checks that it exists)",
        "error: p.toml:4: learning_rat: unknown key; did you mean learning_rate?",
        'error: p.toml:5: lora_rank: expected a whole number, got the string "16"; write lora_rank = 16 (no quotes)',
        "error: p.toml:6: train_batch_size: 0 is out of range; use a value between 1 and 64",
        'error: p.toml:7: optimizer: "adamw9bit" is not one of the allowed values; did you mean "adamw8bit"? '
        "use one of: adamw, adamw_bf16, adamw8bit, adafactor, prodigy",
        'error: p.toml:8: mixed_precision: expected a string, got true; write mixed_precision = "bf16" '
        "(one of: bf16, fp16, no)",
        "error: p.toml:9: validation_resolution: 854x480: width 854 not a multiple of 16; "
        "use width 848 or 864 (e.g. 848x480)",
        "error: p.toml:10: validation_num_video_frames: 60 frames is not 4k+1 (the VAE packs 4 frames per "
        "latent after the first); use 57 or 61",
        "error: p.toml:11: validation_prompt: validation_steps = 100 but no validation prompt is set; "
        'set validation_prompt = "..." or validation_steps = 0',
        "error: p.toml:13: enable_model_cpu_offload: cannot be combined with enable_group_offload; "
        "turn one off: keep enable_group_offload = true for training on small cards",
        "warning: p.toml:14: group_offload_use_stream: no CUDA GPU on this machine: streams are not used here; "
        "fine for checking; on a machine without an NVIDIA GPU set it to false",
        'error: p.toml:15: base_model_precision: "int8-quanto" is not one of the allowed values; did you mean '
        '"int8-torchao"? use one of: bf16, no_change, int8-torchao, fp8-torchao',
        "warning: p.toml:16: lr_warmup_steps: 5000 warmup steps is more than max_train_steps (1000): "
        "the learning rate never reaches its peak; use fewer warmup steps (e.g. 100)",
        "error: p.toml:21: datasets[0].instance_data_dir: folder nope does not exist; create it and "
        "put your clips (with .txt captions) there, or fix the path (relative paths start at the preset "
        "file's folder)",
        "error: p.toml:22: datasets[0].instance_prompt: caption_strategy is instanceprompt but no "
        "instance_prompt is set; set instance_prompt = \"a photo of ...\" (used as every clip's caption)",
        "error: p.toml:25: datasets[0].video.num_frames: 62 frames is not 4k+1 (the VAE packs 4 frames per "
        "latent after the first); use 61 or 65",
        "error: p.toml:26: datasets[0].video.max_frame: unknown key; did you mean max_frames?",
        'error: p.toml:29: datasets[1].id: "clips" is already used by datasets[0]; give each dataset its own id',
    ]
    # max_grad_norm = 1 is an int where a float is expected: fine.
    assert not any(p.key == "max_grad_norm" for p in v.problems)


def test_str_of_problem_is_file_line_key_message_fix():
    p = Problem("error", "a.toml", 3, "lora_rank", "too big", "use 16")
    assert str(p) == "a.toml:3: lora_rank: too big; use 16"
    assert str(Problem("warning", "a.toml", None, "x", "m", "f")) == "a.toml: x: m; f"


@pytest.mark.parametrize("text, line, col", [
    ('a = 1\nlora_rank = \n', 2, 13),
    ('learning_rate = 1e-4\nvalidation_prompt = "unterminated\n', 2, None),
    ('[x]\nk = 1\n[x]\n', 3, 3),
])
def test_toml_syntax_error_has_line_and_column(tmp_path, text, line, col):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    v = validate_file(path)
    assert v.preset is None and not v.ok and len(v.problems) == 1
    p = v.problems[0]
    assert (p.key, p.line) == ("toml", line)
    assert (f"column {col}" in p.message) == (col is not None)


def test_unreadable_file_is_a_problem_not_an_exception(tmp_path):
    v = validate_file(tmp_path / "missing.toml")
    assert not v.ok and v.problems[0].key == "preset" and "cannot read" in v.problems[0].message


def test_types_int_for_float_ok_bool_is_not_a_number(tmp_path):
    v = validate_file(write(tmp_path, good("lora_rank = true\nmax_grad_norm = 2\nseed = 1.0\n")), env={})
    keys = {p.key: p for p in v.problems}
    assert set(keys) == {"lora_rank", "seed"}
    assert keys["lora_rank"].message == "expected a whole number, got true"
    assert keys["seed"].fix == "write seed = 1"


def test_string_numbers_and_bools_suggest_the_unquoted_value(tmp_path):
    v = validate_file(write(tmp_path, good('gradient_checkpointing = "true"\n').replace(
        "learning_rate = 1e-4", 'learning_rate = "1e-4"')), env={})
    fixes = {p.key: p.fix for p in v.problems}
    assert fixes == {"learning_rate": "write learning_rate = 0.0001 (no quotes)",
                     "gradient_checkpointing": "write gradient_checkpointing = true (no quotes)"}


@pytest.mark.parametrize("n, expected", [(60, (57, 61)), (62, (61, 65)), (2, (1, 5)), (48, (45, 49))])
def test_nearest_frame_counts(n, expected):
    assert nearest_frame_counts(n) == expected


def test_resolution_rules(tmp_path):
    base = GOOD.replace("validation_steps = 0", 'validation_resolution = "848x470,1280x720"')
    v = validate_file(write(tmp_path, base), env={})
    msgs = [(p.severity, p.key, p.message, p.fix) for p in v.problems]
    assert msgs == [
        ("error", "validation_resolution", "848x470: height 470 not a multiple of 16",
         "use height 464 or 480 (e.g. 848x464)"),
        ("warning", "validation_resolution", "1280x720 is a 720p size but model_flavour is t2v-480p "
         "(trained at 848x480)", "use 848x480-class sizes, or a 720p flavour"),
    ]
    v = validate_file(write(tmp_path, GOOD.replace("validation_steps = 0", 'validation_resolution = "big"')))
    assert v.problems[0].message == '"big" is not WIDTHxHEIGHT'


def test_720p_flavour_with_480p_validation_and_data_warns(tmp_path):
    text = good('validation_resolution = "848x480"\n').replace('"t2v-480p"', '"t2v-720p"')
    text = text.replace('instance_data_dir = "clips"', 'instance_data_dir = "clips"\nresolution = 480')
    v = validate_file(write(tmp_path, text), env={})
    assert v.ok
    assert [(p.key, p.line) for p in v.warnings] == [("validation_resolution", 5), ("datasets[0].resolution", 9)]


def test_builtin_tiny_skips_flavour_size_and_vision_checks(tmp_path):
    text = GOOD.replace('"/models/hv15"', '"builtin:tiny"').replace('"t2v-480p"', '"i2v-720p"')
    v = validate_file(write(tmp_path, text.replace("# TOP\n", 'validation_resolution = "64x64"\n')), env={})
    assert v.ok and v.problems == []
    v = validate_file(write(tmp_path, GOOD.replace('"/models/hv15"', '"builtin:huge"')), env={})
    assert [p.message for p in v.problems] == ['unknown built-in model "builtin:huge"']


def test_i2v_needs_a_vision_encoder_path_set(tmp_path):
    text = GOOD.replace('"t2v-480p"', '"i2v-480p"')
    assert [p.key for p in validate_file(write(tmp_path, text), env={}).errors] == ["vision_encoder_path"]
    # set in the environment, or in the preset (existence is the doctor's job, exit 3 there)
    assert validate_file(write(tmp_path, text), env={V.VISION_ENV: "/somewhere"}).ok
    assert validate_file(write(tmp_path, text.replace("# TOP", 'vision_encoder_path = "/not/here"')), env={}).ok


def test_group_offload_stream_warns_only_without_cuda(tmp_path, monkeypatch):
    text = good("enable_group_offload = true\ngroup_offload_use_stream = true\n")
    v = validate_file(write(tmp_path, text), env={})
    assert v.ok and [p.key for p in v.warnings] == ["group_offload_use_stream"]
    monkeypatch.setattr(V, "cuda_available", lambda: True)
    assert validate_file(write(tmp_path, text), env={}).problems == []
    v = validate_file(write(tmp_path, good("group_offload_use_stream = true\n")), env={})
    assert [p.message for p in v.warnings] == ["has no effect without enable_group_offload"]


def test_optimizer_and_attention_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(V, "package_available", lambda name: False)
    v = validate_file(write(tmp_path, good('optimizer = "prodigy"\nattention_backend = "flash"\n')), env={})
    assert [(p.key, p.fix) for p in v.errors] == [
        ("optimizer", 'pip install prodigyopt, or use optimizer = "adamw_bf16"'),
        ("attention_backend", 'pip install flash-attn, or use attention_backend = "auto"'),
    ]
    monkeypatch.setattr(V, "package_available", lambda name: True)
    assert validate_file(write(tmp_path, good('optimizer = "adamw8bit"\n')), env={}).ok


def test_dataset_rules(tmp_path):
    (tmp_path / "caps.jsonl").write_text("")
    text = """\
        validation_steps = 0
        [[datasets]]
        instance_data_dir = "clips"
        caption_strategy = "metadata"
        [[datasets]]
        id = "b"
        instance_data_dir = "p.toml"
        caption_strategy = "metadata"
        metadata_file = "missing.jsonl"
        [datasets.video]
        num_frames = 61
        min_frames = 90
        max_frames = 80
        [[datasets]]
        id = "c"
        disabled = true
        instance_data_dir = "nowhere"
        [[datasets]]
        id = "d"
        instance_data_dir = "clips"
        video = { num_frames = 61, max_frames = 33 }
        """
    v = validate_file(write(tmp_path, text), env={})
    got = [(p.line, p.key, p.message) for p in v.problems]
    assert got == [
        (2, "datasets[0].id", "every dataset needs an id"),
        (4, "datasets[0].metadata_file", "caption_strategy is metadata but no metadata_file is set"),
        (7, "datasets[1].instance_data_dir", f"{tmp_path}/p.toml is a file, not a folder"),
        (9, "datasets[1].metadata_file", f"{tmp_path}/missing.jsonl does not exist"),
        (12, "datasets[1].video.min_frames", "min_frames 90 is more than max_frames 80: every clip is discarded"),
        (21, "datasets[3].video.max_frames",
         "max_frames 33 is below num_frames 61: no clip is both long enough and short enough"),
    ]


def test_resolution_frames_bounds_warn(tmp_path):
    text = GOOD.replace("num_frames = 61", 'num_frames = 60\nbucket_strategy = "resolution_frames"\n'
                        "min_frames = 20\nmax_frames = 80")
    v = validate_file(write(tmp_path, text), env={})
    assert v.ok  # num_frames is not used by resolution_frames buckets
    assert [(p.key, p.message, p.fix) for p in v.warnings] == [
        ("datasets[0].video.min_frames", "20 is not 4k+1: the shortest sample is 21 frames", "use 17 or 21"),
        ("datasets[0].video.max_frames", "80 is not 4k+1: samples are at most 77 frames", "use 77 or 81"),
    ]


def test_no_training_dataset_and_single_bracket_tables(tmp_path):
    v = validate_file(write(tmp_path, 'validation_steps = 0\n[[datasets]]\nid = "t"\ndataset_type = "text_embeds"\n'))
    assert [(p.key, p.line) for p in v.errors] == [("datasets", 2)]
    v = validate_file(write(tmp_path, 'validation_steps = 0\n[datasets]\nid = "x"\n'))
    assert [p.fix for p in v.problems] == ["write each dataset as [[datasets]] (double brackets), with "
                                           "[datasets.video] below it"]
    v = validate_file(write(tmp_path, "validation_steps = 0\n"))
    assert [p.message for p in v.errors] == [
        "no training dataset (an enabled dataset with dataset_type video or image)"]


def test_dataset_backend_config_json_problems_point_into_that_file(tmp_path):
    backend = tmp_path / "multidatabackend.json"
    backend.write_text(json.dumps([
        {"id": "v", "type": "local", "dataset_type": "video", "instance_data_dir": "clips",
         "crop": False, "video": {"num_frames": 48}},
        {"id": "text-embeds", "dataset_type": "text_embeds", "default": True},
    ], indent=2))
    v = validate_file(write(tmp_path, 'validation_steps = 0\ndataset_backend_config = "multidatabackend.json"\n'))
    assert lines(v, tmp_path) == [
        "error: multidatabackend.json:7: datasets[0].crop: unknown key; remove it (not a key of a dataset)",
        "error: multidatabackend.json:9: datasets[0].video.num_frames: 48 frames is not 4k+1 (the VAE packs "
        "4 frames per latent after the first); use 45 or 49",
    ]
    assert v.preset.datasets[0].instance_data_dir == "clips"
    # the same preset through load_preset (the trainer's reader) sees the same datasets
    assert [d.id for d in load_preset(tmp_path / "p.toml").datasets] == ["v", "text-embeds"]


def test_dataset_backend_config_missing_or_broken(tmp_path):
    v = validate_file(write(tmp_path, 'validation_steps = 0\ndataset_backend_config = "nope.json"\n'))
    assert [(p.line, p.key) for p in v.problems] == [(2, "dataset_backend_config")]
    assert "does not exist" in v.errors[0].message
    (tmp_path / "bad.json").write_text('[\n  {"id": "x",}\n]\n')
    v = validate_file(write(tmp_path, 'validation_steps = 0\ndataset_backend_config = "bad.json"\n'))
    assert [(Path(p.file).name, p.line, p.key) for p in v.problems] == [("bad.json", 2, "dataset file")]


def test_validate_preset_in_memory(tmp_path):
    path = write(tmp_path, GOOD)
    preset = load_preset(path)
    assert validate_preset(preset, env={}) == []
    preset.lora_rank = 0
    preset.datasets[0].video.num_frames = 30
    problems = validate_preset(preset, env={})
    assert [(p.key, p.line) for p in problems] == [("datasets[0].video.num_frames", 11), ("lora_rank", None)]


def test_tomlpos_paths():
    text = textwrap.dedent("""\
        a = 1
        "quoted.key" = 'x # not a comment'
        s = \"\"\"
        fake = 1
        \"\"\"
        arr = [
          1,  # one
          { x = 1 },
        ]
        [[datasets]]
        id = "a"
        video = { num_frames = 61 }
        [[datasets]]
        video.num_frames = 5
        [datasets.video]
        min_frames = 9
        """)
    pos = key_lines(text)
    assert pos[("a",)] == 1 and pos[("quoted.key",)] == 2 and pos[("s",)] == 3 and ("fake",) not in pos
    assert pos[("arr", 1, "x")] == 8
    assert pos[("datasets", 0, "video", "num_frames")] == 12
    assert pos[("datasets", 1, "video", "num_frames")] == 14
    assert pos[("datasets", 1, "video", "min_frames")] == 16
    assert line_of(pos, ("datasets", 1, "repeats")) == 13
    assert key_lines('[\n {"id": 1,\n  "video": {"n": 2}}\n]', json=True)[(0, "video", "n")] == 3


def test_no_value_of_any_type_crashes_the_validator(tmp_path):
    """Every field set to each kind of TOML value at once: problems are reported, never an exception."""
    from hvtui.core.preset.schema import DatasetSpec, Preset, VideoSpec, field_specs
    for value in ['"text"', "7", "0.5", "-3", "true", "[1, 2]", '["a"]', "{ a = 1 }", "1979-05-27"]:
        top = "".join(f"{k} = {value}\n" for k in field_specs(Preset) if k != "datasets")
        ds = "".join(f"{k} = {value}\n" for k in field_specs(DatasetSpec) if k != "video")
        video = "".join(f"{k} = {value}\n" for k in field_specs(VideoSpec))
        text = f"{top}[[datasets]]\n{ds}[datasets.video]\n{video}[[datasets]]\n{ds}video = {value}\n"
        v = validate_file(write(tmp_path, text), env={})
        assert v.preset is not None and not v.ok, value
        assert all(p.line for p in v.problems if p.key != "datasets"), value


def test_known_key_in_the_wrong_table_says_where_it_belongs(tmp_path):
    text = good("num_frames = 61\n").replace('instance_data_dir = "clips"',
                                             'instance_data_dir = "clips"\nlearning_rate = 1.0')
    v = validate_file(write(tmp_path, text), env={})
    assert [(p.line, p.key, p.fix) for p in v.problems] == [
        (5, "num_frames", "num_frames belongs in [datasets.video]"),
        (9, "datasets[0].learning_rate", "learning_rate belongs at the top of the preset (above the first table)"),
    ]


def test_folders_the_run_writes_must_be_usable(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "clips").mkdir()
    p = tmp_path / "p.toml"
    p.write_text(textwrap.dedent("""\
        pretrained_model_name_or_path = "builtin:tiny"
        output_dir = "a-file"

        [[datasets]]
        id = "clips"
        instance_data_dir = "clips"
        cache_dir = "a-file/cache"
        [datasets.video]
        num_frames = 9
        """))
    errors = {(e.line, e.message) for e in validate_file(p).errors}
    assert (2, f"{tmp_path / 'a-file'} is a file, not a folder") in errors
    assert (7, f"{tmp_path / 'a-file' / 'cache'} cannot be created: {tmp_path / 'a-file'} is a file") in errors
    assert V.folder_problem(tmp_path / "new" / "deeper") is None          # creatable: fine
