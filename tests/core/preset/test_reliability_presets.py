"""Values `check` must refuse because the run could not take them (issue 18), each as an error at its
file:line with a fix, never a traceback; a BOM is not an error; an output_dir inside a dataset folder is
refused (issue 14); and a bounded preset fuzzer (bench/reliability.py runs many more cases)."""
import json
import tomllib

import pytest

from hvtui.cli import main
from hvtui.core.preset.check import validate_file
from hvtui.core.preset.schema import load_preset
from tests.helpers import preset_fuzz

FLOAT_KEYS = ("learning_rate", "lora_alpha", "lora_dropout", "max_grad_norm", "flow_schedule_shift", "logit_mean",
              "logit_std", "validation_guidance", "caption_dropout_probability")


def _write(tmp_path, name="p.toml", top=None, dataset=None, video=None, raw=None) -> str:
    data = preset_fuzz.base_preset(tmp_path)
    data.update(top or {})
    data["datasets"][0].update(dataset or {})
    data["datasets"][0].setdefault("video", {}).update(video or {})
    import tomlkit

    path = tmp_path / name
    path.write_text(raw if raw is not None else tomlkit.dumps(data), encoding="utf-8")
    return str(path)


def _errors(path) -> list:
    v = validate_file(path)
    assert all(p.line for p in v.errors), [str(p) for p in v.errors]   # every error has its line
    return v.errors


CASES = [
    ({"top": {k: float("nan")}}, k, "not a finite number") for k in FLOAT_KEYS
] + [
    ({"top": {"seed": 2**63 - 1}}, "seed", "out of range"),
    ({"top": {"validation_seed": 2**40}}, "validation_seed", "out of range"),
    ({"video": {"frame_rate": float("inf")}}, "datasets[0].video.frame_rate", "not a finite number"),
    ({"dataset": {"resolution": 2**31}}, "datasets[0].resolution", "out of range"),
    ({"dataset": {"resolution": 100000}}, "datasets[0].resolution", "out of range"),
    ({"dataset": {"repeats": 2**31}}, "datasets[0].repeats", "out of range"),
    ({"top": {"group_offload_blocks_per_group": 2**63 - 1}}, "group_offload_blocks_per_group", "out of range"),
    ({"top": {"gradient_accumulation_steps": 2**40}}, "gradient_accumulation_steps", "out of range"),
    ({"top": {"validation_resolution": "0x0"}}, "validation_resolution", "each side must be"),
    ({"top": {"validation_resolution": "4096x4096"}}, "validation_resolution", "each side must be"),
    ({"video": {"num_frames": 4 * 10**6 + 1}}, "datasets[0].video.num_frames", "out of range"),
]


@pytest.mark.parametrize("change, key, what", CASES, ids=[f"{c[1]}-{c[2][:12]}" for c in CASES])
def test_values_the_run_cannot_take_are_errors_at_check(tmp_path, change, key, what):
    errors = _errors(_write(tmp_path, **change))
    assert any(p.key == key and what in p.message and p.fix for p in errors), [str(p) for p in errors]


PATHS = {"a NUL byte": "out\x00put", "a 300-byte name": "d/" + "n" * 300,
         "a 5000-byte path": "/".join(["p" * 100] * 50)}
PATH_KEYS = [("top", "output_dir"), ("dataset", "cache_dir"), ("dataset", "instance_data_dir"),
             ("dataset", "metadata_file"), ("top", "dataset_backend_config"), ("top", "text_encoder_path")]


@pytest.mark.parametrize("where, key", PATH_KEYS, ids=[k for _, k in PATH_KEYS])
@pytest.mark.parametrize("kind", sorted(PATHS))
def test_paths_the_os_cannot_hold_are_errors_for_check_and_buckets(tmp_path, capsys, where, key, kind):
    value = PATHS[kind]
    change = {where: {key: value}}
    if key == "metadata_file":
        change["dataset"]["caption_strategy"] = "metadata"
    if key == "dataset_backend_config":   # used when the preset has no [[datasets]]
        data = preset_fuzz.base_preset(tmp_path)
        text = "\n".join(f"{k} = {json.dumps(v)}" for k, v in data.items() if k != "datasets")
        path = _write(tmp_path, raw=text + f"\ndataset_backend_config = {json.dumps(value)}\n")
    else:
        path = _write(tmp_path, **change)
    shown = key if where == "top" else f"datasets[0].{key}"
    assert any(p.key == shown for p in _errors(path))
    for command in ("check", "buckets"):
        assert main([command, path]) == 2
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err and shown in out + err
    load_preset(path)                                    # loading (the TUI, --run) does not raise either


def test_a_preset_saved_with_a_utf8_bom_is_read(tmp_path):
    path = _write(tmp_path)
    raw = (tmp_path / "p.toml").read_bytes()
    (tmp_path / "p.toml").write_bytes(b"\xef\xbb\xbf" + raw)
    assert validate_file(path).ok and load_preset(path).lora_rank == 8
    (tmp_path / "data.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(tomllib.loads(raw.decode())["datasets"]).encode())
    text = "\n".join(line for line in raw.decode().split("[[datasets]]")[0].splitlines())
    (tmp_path / "q.toml").write_text(text + '\ndataset_backend_config = "data.json"\n')
    assert validate_file(tmp_path / "q.toml").ok


def test_an_output_dir_inside_a_dataset_folder_is_refused(tmp_path):
    data = preset_fuzz.base_preset(tmp_path)
    errors = _errors(_write(tmp_path, top={"output_dir": data["datasets"][0]["instance_data_dir"] + "/runs/x"}))
    assert any(p.key == "output_dir" and "inside the dataset folder" in p.message for p in errors)


def test_the_preset_fuzzer_finds_no_traceback(tmp_path):
    result = preset_fuzz.fuzz(120, seed=18, work=tmp_path)
    assert result["TRACEBACK"] == 0, result["failures"][:3]
    assert result["ok"] > 5 and result["refused"] > 50          # it reached both outcomes
