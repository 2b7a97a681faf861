"""Check a preset before anything heavy: every problem at once, as `file:line: key: what is wrong; how to fix`.

Rule: a preset that passes (no errors) must not fail later for a reason visible here. Things that need the
model files or the GPU (do the weights exist, does it fit) belong to `hvtui doctor`; things that need every
clip decoded belong to `hvtui buckets`. Everything else is here, and it stays fast: no torch import, no
file walks, only stat() calls on the folders the preset names.
"""
from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from hvtui.core.preset.check_bounds import path_problem
from hvtui.core.preset.check_fields import Checker, describe
from hvtui.core.preset.check_rules import run_checks
from hvtui.core.preset.problems import ERROR, Problem, Validation
from hvtui.core.preset.schema import DatasetSpec, Preset, VideoSpec, preset_from_dict, read_dataset_file
from hvtui.core.preset.toml_positions import key_lines


def _read_lines(path: Path | None) -> tuple[str, dict]:
    if path is None:
        return "<preset>", {}
    try:
        return str(path), key_lines(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError):
        return str(path), {}


def _load_dataset_file(c: Checker, p: Preset, inline: bool) -> list[dict] | None:
    """Datasets from dataset_backend_config (when the preset has no [[datasets]]). Problems if unreadable."""
    key = ("dataset_backend_config",)
    if not p.dataset_backend_config or not c.good(key):
        return None
    if inline:
        c.warn(key, "ignored: this preset also has [[datasets]] tables, which win",
               "remove dataset_backend_config or the [[datasets]] tables")
        return None
    path = p.resolve_path(p.dataset_backend_config)
    c.bad.add(("datasets",))  # until the file is read: no "no training dataset" noise on top
    problem = path_problem(p.dataset_backend_config, str(path))
    if problem:
        c.bad.add(key)
        c.error(key, *problem)
        return None
    if not path.is_file():
        c.error(key, f"dataset file {path} does not exist" if not path.exists() else f"{path} is not a file",
                "fix the path (relative paths start at the preset file's folder), or add [[datasets]] tables here")
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
        tables = read_dataset_file(path)
    except (OSError, UnicodeDecodeError) as e:
        c.error(key, f"cannot read dataset file {path}: {getattr(e, 'strerror', None) or e}",
                "check the file's permissions and encoding (UTF-8)")
        return None
    except json.JSONDecodeError as e:
        c.problems.append(Problem(ERROR, _shown(path), e.lineno, "dataset file", f"not valid JSON: {e.msg} "
                                  f"(column {e.colno})", "fix the JSON syntax at that position"))
        return None
    except tomllib.TOMLDecodeError as e:
        line, col, msg = _toml_error_position(str(e), text)
        c.problems.append(Problem(ERROR, _shown(path), line, "dataset file", f"not valid TOML: {msg}"
                                  + (f" (column {col})" if col else ""), "fix the TOML syntax at that position"))
        return None
    except AttributeError:  # JSON that is neither a list nor an object
        c.error(key, f"{path} must hold a list of dataset tables",
                "write it as SimpleTuner's multidatabackend.json: [ {...}, ... ]")
        return None
    is_json = path.suffix.lower() == ".json"
    c.ds_file = _shown(path)
    c.ds_lines = key_lines(text, json=is_json)
    c.ds_prefix = () if is_json and text.lstrip().startswith("[") else ("datasets",)
    if not isinstance(tables, list):
        c.error(key, f"{path} must hold a list of dataset tables", "write [[datasets]] tables (TOML) or a JSON list")
        return None
    c.bad.discard(("datasets",))
    return tables


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _toml_error_position(message: str, text: str) -> tuple[int | None, int | None, str]:
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
    if m:
        return int(m.group(1)), int(m.group(2)), message[:m.start()]
    m = re.search(r"\s*\(at end of document\)\s*$", message)
    if m:
        last = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        return last, None, message[:m.start()] + " at end of file"
    return None, None, message


def _check_raw_tables(c: Checker, tables, from_file: bool) -> list[dict]:
    """Shapes and unknown keys of dataset tables (file mode); returns the tables preset_from_dict keeps."""
    kept = []
    c.ds_index = []
    for i, t in enumerate(tables):
        if not isinstance(t, dict):
            c.add(ERROR, ("datasets", i), f"expected a table, got {describe(t)}",
                  "each dataset is an object {\"id\": ..., ...}" if from_file
                  else "each dataset is a [[datasets]] table with key = value lines", raw=True)
            continue
        kept.append(t)
        c.ds_index.append(i)
        c.unknown_keys(t, DatasetSpec, ("datasets", len(kept) - 1), where="of a dataset")
        video = t.get("video")
        if video is not None and not isinstance(video, dict):
            c.bad.add(("datasets", len(kept) - 1, "video"))
            c.error(("datasets", len(kept) - 1, "video"), f"expected a table, got {describe(video)}",
                    "write [datasets.video] with num_frames = 61 etc. below it")
        elif isinstance(video, dict):
            c.unknown_keys(video, VideoSpec, ("datasets", len(kept) - 1, "video"), where="of datasets.video")
    return kept



def validate_file(path: str | Path, env: Mapping[str, str] | None = None) -> Validation:
    """Read and check a preset file. Never raises for a user error: problems say what and where."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")   # a BOM (Windows editors write one) is no syntax error
    except OSError as e:
        return Validation(shown, None, [Problem(ERROR, shown, None, "preset", f"cannot read the file: {e.strerror}",
                                                "check the path")])
    except UnicodeDecodeError as e:
        return Validation(shown, None, [Problem(ERROR, shown, None, "preset", f"not UTF-8 text ({e.reason})",
                                                "save the preset as UTF-8")])
    return validate_text(text, path, env)


def validate_text(text: str, path: str | Path, env: Mapping[str, str] | None = None) -> Validation:
    """Check preset text as if it were the file `path` (relative paths start at its folder): the TUI
    validates unsaved edits with this, with the edited text's line numbers."""
    path = Path(path)
    env = os.environ if env is None else env
    shown = str(path)
    text = text.removeprefix("\ufeff")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line, col, msg = _toml_error_position(str(e), text)
        where = f" at column {col}" if col else ""
        return Validation(shown, None, [Problem(ERROR, shown, line, "toml", f"syntax error: {msg}{where}",
                                                "fix the TOML syntax (strings need quotes, one key per line)")])
    c = Checker(shown, key_lines(text))
    c.unknown_keys({k: v for k, v in raw.items() if k != "datasets"}, Preset, (), where="of a preset")
    build = dict(raw)
    # A separate dataset file is read here (not in preset_from_dict) so its problems get its own lines.
    build.pop("dataset_backend_config", None)
    tables = raw.get("datasets")
    inline = tables is not None
    if inline and not isinstance(tables, list):
        c.bad.add(("datasets",))
        c.error(("datasets",), "datasets must be a list of tables",
                "write each dataset as [[datasets]] (double brackets), with [datasets.video] below it")
        tables = []
    preset = preset_from_dict({**build, "datasets": []}, source=path.resolve())
    preset.dataset_backend_config = raw.get("dataset_backend_config")
    if not isinstance(preset.dataset_backend_config, (str, type(None))):
        c.bad.add(("dataset_backend_config",))
        c.type_error(("dataset_backend_config",), "dataset_backend_config", str, preset.dataset_backend_config)
    from_file = _load_dataset_file(c, preset, inline)
    if from_file is not None:
        tables = from_file
    kept = _check_raw_tables(c, tables or [], from_file is not None)
    preset.datasets = preset_from_dict({"datasets": kept}).datasets
    run_checks(c, preset, env)
    return Validation(shown, preset, _in_file_order(c.problems, shown))


def validate_preset(preset: Preset, env: Mapping[str, str] | None = None) -> list[Problem]:
    """Check an in-memory preset (the TUI's inline validation). Line numbers come from its source file,
    when it has one: they point at where the key is on disk."""
    env = os.environ if env is None else env
    shown, lines = _read_lines(preset.source)
    c = Checker(shown, lines)
    c.ds_index = list(range(len(preset.datasets)))
    if preset.dataset_backend_config and ("datasets",) not in lines and isinstance(preset.dataset_backend_config, str):
        # Datasets came from the dataset file: report its problems there (and its lines).
        tables = _load_dataset_file(c, preset, inline=False) or []
        index = [i for i, t in enumerate(tables) if isinstance(t, dict)]
        if len(index) == len(preset.datasets):
            c.ds_index = index
    elif not isinstance(preset.dataset_backend_config, (str, type(None))):
        c.bad.add(("dataset_backend_config",))
    run_checks(c, preset, env)
    return _in_file_order(c.problems, shown)


def validate_for_run(preset: Preset, env: Mapping[str, str] | None = None) -> list[Problem]:
    """What `--run` and the doctor check. A preset loaded from a file is checked as that file (unknown keys,
    which loading drops, are errors there), unless it was changed since (the TUI's form): then as it is."""
    source = preset.source
    if source is not None and Path(source).is_file():
        on_disk = validate_file(source, env)
        if on_disk.preset == preset:
            return on_disk.problems
    return validate_preset(preset, env)


def _in_file_order(problems: list[Problem], main_file: str) -> list[Problem]:
    """The preset's own problems first, then the dataset file's, each top to bottom (whole-file ones last)."""
    return sorted(problems, key=lambda p: (p.file != main_file, p.file, p.line is None, p.line or 0))
