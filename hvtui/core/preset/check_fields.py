"""Field-level checks of a preset: each value against its annotated type, its choices and its range (from
schema.py's field metadata), unknown keys with a "did you mean", and the Checker that collects the problems with
the file and line each belongs to (a dataset file has its own lines). The form and the SimpleTuner import use the
same type helpers, so all three agree on what a field takes."""
from __future__ import annotations

import difflib
import functools
import json
import re
import types
import typing
from typing import Any

from hvtui.core.preset.check_bounds import not_finite
from hvtui.core.preset.problems import ERROR, WARNING, Problem
from hvtui.core.preset.schema import DatasetSpec, Preset, VideoSpec, field_specs
from hvtui.core.preset.toml_positions import line_of


def parse_resolutions(text: str) -> list[tuple[int, int]] | None:
    """'848x480' or '848x480,480x848' -> [(848, 480), ...]; None if malformed."""
    out = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", part)
        if not m:
            return None
        out.append((int(m.group(1)), int(m.group(2))))
    return out or None


@functools.cache
def field_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_type(hint) -> tuple[type | str, bool]:
    """(base type, optional) of a field annotation like `int | None` or `list[str]`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        base = [a for a in args if a is not type(None)]
        return base[0], type(None) in args
    return hint, False


def type_ok(base, value) -> bool:
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:  # an int is fine where a float is expected; a bool is not a number
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is str:
        return isinstance(value, str)
    if typing.get_origin(base) is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return True


_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def describe(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return repr(value) if isinstance(value, (int, float)) else json.dumps(value, default=str)


def coerce_string(base, text: str):
    """What a quoted value was probably meant to be (for the fix), or None."""
    t = text.strip()
    if base is bool and t.lower() in ("true", "false", "1", "0", "yes", "no"):
        return t.lower() in ("true", "1", "yes")
    if base in (int, float):
        try:
            number = float(t)
        except ValueError:
            return None
        if base is int:
            return int(number) if number.is_integer() else None
        return int(number) if re.fullmatch(r"[+-]?\d+", t) else number
    return None


def _format_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def display_key(path: tuple) -> str:
    """("datasets", 0, "video", "num_frames") -> "datasets[0].video.num_frames"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ----------------------------------------------------------------------------------------------- checker

class Checker:
    """Collects problems. Key paths are in the preset's namespace; `locate` maps them to file + line
    (datasets may live in a separate dataset file with its own line numbers)."""

    def __init__(self, main_file: str, main_lines: dict):
        self.main_file = main_file
        self.main_lines = main_lines
        self.ds_file: str | None = None      # set when datasets come from dataset_backend_config
        self.ds_lines: dict = {}
        self.ds_prefix: tuple = ("datasets",)
        self.ds_index: list[int] = []        # preset.datasets[k] is raw table ds_index[k]
        self.problems: list[Problem] = []
        self.bad: set[tuple] = set()         # paths with a wrong type: skip their semantic checks

    def to_raw(self, path: tuple) -> tuple:
        """preset.datasets[k] -> the k-th *table* in the file (non-table entries are skipped by the model)."""
        if path and path[0] == "datasets" and len(path) > 1 and isinstance(path[1], int):
            k = path[1]
            return ("datasets", self.ds_index[k] if k < len(self.ds_index) else k) + tuple(path[2:])
        return path

    def locate(self, raw_path: tuple) -> tuple[str, int | None]:
        if self.ds_file is not None and raw_path[:1] == ("datasets",) and len(raw_path) > 1:
            return self.ds_file, line_of(self.ds_lines, self.ds_prefix + raw_path[1:])
        return self.main_file, line_of(self.main_lines, raw_path)

    def raw_key(self, path: tuple) -> str:
        return display_key(self.to_raw(path))

    def add(self, severity: str, path: tuple, message: str, fix: str, at: tuple | None = None,
            raw: bool = False) -> None:
        where = at or path
        file, line = self.locate(where if raw else self.to_raw(where))
        key = display_key(path) if raw else self.raw_key(path)
        self.problems.append(Problem(severity, file, line, key, message, fix))

    def error(self, path: tuple, message: str, fix: str, at: tuple | None = None) -> None:
        self.add(ERROR, path, message, fix, at)

    def warn(self, path: tuple, message: str, fix: str, at: tuple | None = None) -> None:
        self.add(WARNING, path, message, fix, at)

    def good(self, *paths: tuple) -> bool:
        return not any(p in self.bad for p in paths)

    # --- raw tables (file mode only): unknown keys and table shapes
    def unknown_keys(self, table: dict, cls, prefix: tuple, where: str = "") -> None:
        known = list(field_specs(cls))
        # A known key in the wrong table is the usual mistake: say where it belongs.
        elsewhere = {Preset: "at the top of the preset (above the first table)", DatasetSpec: "in a [[datasets]] table",
                     VideoSpec: "in [datasets.video]"}
        for key in table:
            if key in known:
                continue
            path = prefix + (key,)
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            value = table[key]
            home = next((text for other, text in elsewhere.items() if other is not cls and key in field_specs(other)
                         and key not in ("datasets", "video")), None)
            if isinstance(value, dict) and any(k in known for k in value):
                fix = f"keys are not grouped in tables here: move the keys of [{key}] above the first table"
            elif home:
                fix = f"{key} belongs {home}"
            elif close:
                fix = f"did you mean {close[0]}?"
            else:
                fix = f"remove it (not a key {where or 'hvtui knows'})"
            self.error(path, "unknown key", fix)

    # --- typed fields (both modes)
    def fields(self, obj, cls, prefix: tuple) -> None:
        hints = field_hints(cls)
        for name, spec in field_specs(cls).items():
            if name in ("datasets", "video"):
                continue
            value = getattr(obj, name)
            base, optional = field_type(hints[name])
            path = prefix + (name,)
            if value is None and optional:
                continue
            if not type_ok(base, value):
                self.bad.add(path)
                self.type_error(path, name, base, value, spec.metadata.get("choices"))
                continue
            meta = spec.metadata
            choices = meta.get("choices")
            if choices and value not in choices:
                close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
                hint = f"did you mean {json.dumps(close[0])}? " if close else ""
                self.bad.add(path)
                self.error(path, f"{json.dumps(value)} is not one of the allowed values",
                           f"{hint}use one of: {', '.join(choices)}")
                continue
            low, high = meta.get("min"), meta.get("max")
            if not_finite(value):   # TOML has nan and inf; every number hvtui takes is finite
                self.bad.add(path)
                self.error(path, f"{value} is not a finite number",
                           "use a number" + (f" between {_format_number(low)} and {_format_number(high)}"
                                             if low is not None and high is not None else ""))
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if (low is not None and value < low) or (high is not None and value > high):
                    self.bad.add(path)
                    if low is not None and high is not None:
                        want = f"between {_format_number(low)} and {_format_number(high)}"
                    elif low is not None:
                        want = f"at least {_format_number(low)}"
                    else:
                        assert high is not None   # out of range, with no lower bound: above the upper one
                        want = f"at most {_format_number(high)}"
                    self.error(path, f"{_format_number(value)} is out of range", f"use a value {want}")

    def type_error(self, path: tuple, name: str, base, value, choices: tuple | None = None) -> None:
        want = _WORDS.get(base, "a list of strings")
        guess = coerce_string(base, value) if isinstance(value, str) else None
        if guess is None and base is int and isinstance(value, float) and value.is_integer():
            guess = int(value)
        if guess is not None:
            fix = f"write {name} = {_literal(guess)}" + (" (no quotes)" if isinstance(value, str) else "")
        elif base is str and choices:
            fix = f"write {name} = {json.dumps(choices[0])} (one of: {', '.join(choices)})"
        elif base is str and not isinstance(value, (dict, list, bool)):
            fix = f"write {name} = {json.dumps(str(value))} (in quotes)"
        elif base is str:
            fix = f'write {name} = "..." (a string in quotes)'
        elif typing.get_origin(base) is list:
            fix = f'write {name} = ["first", "second"]'
        else:
            fix = f"write {name} = {want_example(base)}"
        self.error(path, f"expected {want}, got {describe(value)}", fix)


def want_example(base) -> str:
    return {bool: "true", int: "16", float: "0.0001"}.get(base, '"..."')
