"""Check a preset before anything heavy: every problem at once, as `file:line: key: what is wrong; how to fix`.

Rule: a preset that passes (no errors) must not fail later for a reason visible here. Things that need the
model files or the GPU (do the weights exist, does it fit) belong to `hvtui doctor`; things that need every
clip decoded belong to `hvtui buckets`. Everything else is here, and it stays fast: no torch import, no
file walks, only stat() calls on the folders the preset names.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import json
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hvtui.core.preset import (
    BUILTIN_TINY, SIDE_MAX, DatasetSpec, Preset, VideoSpec, field_specs, flavour_height, is_i2v, preset_from_dict,
    read_dataset_file,
)
from hvtui.core.tomlpos import key_lines, line_of
from hvtui.core.validate_bounds import (
    check_clip_memory, check_output_outside_datasets, check_paths, not_finite, path_problem,
)

ERROR = "error"
WARNING = "warning"
VISION_ENV = "HUNYUANVIDEO_VISION_ENCODER_PATH"
# Optimizers that need a package the base install lacks: name -> (import name, pip name).
OPTIONAL_OPTIMIZERS = {"adamw8bit": ("bitsandbytes", "bitsandbytes"), "prodigy": ("prodigyopt", "prodigyopt")}
# diffusers' "flash" backend is the flash-attn package (the SDPA flash kernel is used by "native"/"auto").
OPTIONAL_ATTENTION = {"flash": ("flash_attn", "flash-attn")}


@dataclass(frozen=True)
class Problem:
    severity: str          # "error" | "warning"
    file: str
    line: int | None
    key: str               # e.g. "learning_rate", "datasets[0].video.num_frames"
    message: str           # what is wrong
    fix: str               # how to fix it

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}; {self.fix}"

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Validation:
    file: str
    preset: Preset | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {"file": self.file, "ok": self.ok, "errors": len(self.errors), "warnings": len(self.warnings),
                "problems": [p.to_dict() for p in self.problems]}


# ----------------------------------------------------------------------------------------------- helpers

def nearest_frame_counts(n: int) -> tuple[int, int]:
    """The valid (4k+1) frame counts either side of n."""
    low = max(1, (n - 1) // 4 * 4 + 1)
    return low, low + 4


def nearest_multiples(n: int, m: int = 16) -> tuple[int, int]:
    low = n // m * m
    return (low, low + m) if low > 0 else (m, 2 * m)


def parse_resolutions(text: str) -> list[tuple[int, int]] | None:
    """'848x480' or '848x480,480x848' -> [(848, 480), ...]; None if malformed."""
    out = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", part)
        if not m:
            return None
        out.append((int(m.group(1)), int(m.group(2))))
    return out or None


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Is there an NVIDIA GPU? Without importing torch: the driver's proc entry, else NVML."""
    if Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()):
        return True
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVMLError_LibraryNotFound without a driver (REFERENCE trap 7), ImportError
        return False


def package_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
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


def _describe(value) -> str:
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

class _Checker:
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
        self.error(path, f"expected {want}, got {_describe(value)}", fix)


def want_example(base) -> str:
    return {bool: "true", int: "16", float: "0.0001"}.get(base, '"..."')


# ----------------------------------------------------------------------------------------------- checks

def _check_model(c: _Checker, p: Preset, env) -> None:
    tiny = p.pretrained_model_name_or_path == BUILTIN_TINY
    if c.good(("pretrained_model_name_or_path",)):
        name = p.pretrained_model_name_or_path
        if not name.strip():
            c.error(("pretrained_model_name_or_path",), "is empty",
                    f"set it to the local model folder (or {BUILTIN_TINY} for the demo model)")
        elif name.startswith("builtin:") and not tiny:
            c.error(("pretrained_model_name_or_path",), f"unknown built-in model {json.dumps(name)}",
                    f"the only built-in model is {BUILTIN_TINY}")
    if c.good(("model_flavour",)) and is_i2v(p.model_flavour) and not tiny and c.good(("vision_encoder_path",)):
        if not (p.vision_encoder_path or "").strip() and not env.get(VISION_ENV, "").strip():
            c.error(("vision_encoder_path",),
                    f"{p.model_flavour} needs the SigLIP vision encoder, and no path is set",
                    f'set vision_encoder_path = "/path/to/vision_encoder_root" or export {VISION_ENV} '
                    "(hvtui doctor checks that it exists)", at=("model_flavour",) if
                    ("vision_encoder_path",) not in c.main_lines else None)
    if c.good(("output_dir",)) and not p.output_dir.strip():
        c.error(("output_dir",), "is empty", 'set output_dir = "output/my-lora"')


def _check_training(c: _Checker, p: Preset) -> None:
    opt = p.optimizer
    if c.good(("optimizer",)) and opt in OPTIONAL_OPTIMIZERS:
        module, pip = OPTIONAL_OPTIMIZERS[opt]
        if not package_available(module):
            c.error(("optimizer",), f"{opt} needs the {pip} package, which is not installed",
                    f'pip install {pip}, or use optimizer = "adamw_bf16"')
    if c.good(("attention_backend",)) and p.attention_backend in OPTIONAL_ATTENTION:
        module, pip = OPTIONAL_ATTENTION[p.attention_backend]
        if not package_available(module):
            c.error(("attention_backend",), f"{p.attention_backend} needs the {pip} package, which is not installed",
                    f'pip install {pip}, or use attention_backend = "auto"')
    if c.good(("max_train_steps",), ("lr_warmup_steps",)) and p.lr_warmup_steps > p.max_train_steps:
        c.warn(("lr_warmup_steps",), f"{p.lr_warmup_steps} warmup steps is more than max_train_steps "
               f"({p.max_train_steps}): the learning rate never reaches its peak",
               f"use fewer warmup steps (e.g. {max(0, p.max_train_steps // 10)})")
    if c.good(("learning_rate",)) and p.learning_rate == 0:
        c.warn(("learning_rate",), "is 0: the LoRA will not change", "use e.g. learning_rate = 1e-4")
    if (c.good(("max_train_steps",), ("checkpointing_steps",))
            and p.checkpointing_steps > p.max_train_steps):
        c.warn(("checkpointing_steps",), f"{p.checkpointing_steps} is more than max_train_steps "
               f"({p.max_train_steps}): only the final save happens",
               "lower it to checkpoint during the run (0 means only at the end)")


def _check_memory(c: _Checker, p: Preset) -> None:
    group = c.good(("enable_group_offload",)) and p.enable_group_offload
    if group and c.good(("enable_model_cpu_offload",)) and p.enable_model_cpu_offload:
        c.error(("enable_model_cpu_offload",), "cannot be combined with enable_group_offload",
                "turn one off: keep enable_group_offload = true for training on small cards")
    if c.good(("group_offload_use_stream",)) and p.group_offload_use_stream:
        if not group:
            c.warn(("group_offload_use_stream",), "has no effect without enable_group_offload",
                   "set enable_group_offload = true, or remove this key")
        elif not cuda_available():
            c.warn(("group_offload_use_stream",), "no CUDA GPU on this machine: streams are not used here",
                   "fine for checking; on a machine without an NVIDIA GPU set it to false")


def _check_validation(c: _Checker, p: Preset) -> None:
    tiny = p.pretrained_model_name_or_path == BUILTIN_TINY
    steps_ok = c.good(("validation_steps",))
    if (steps_ok and p.validation_steps > 0 and c.good(("validation_prompt",), ("validation_prompts",))
            and not p.all_validation_prompts):
        c.error(("validation_prompt",), f"validation_steps = {p.validation_steps} but no validation prompt is set",
                'set validation_prompt = "..." or validation_steps = 0', at=("validation_steps",))
    if steps_ok and c.good(("max_train_steps",)) and p.validation_steps > p.max_train_steps:
        c.warn(("validation_steps",), f"{p.validation_steps} is more than max_train_steps ({p.max_train_steps}): "
               "no sample is made during the run", f"lower it (e.g. {max(1, p.max_train_steps // 4)})")
    if c.good(("validation_num_video_frames",)):
        _check_frames(c, ("validation_num_video_frames",), p.validation_num_video_frames)
    if c.good(("validation_resolution",)):
        resolutions = parse_resolutions(p.validation_resolution)
        if resolutions is None:
            c.error(("validation_resolution",), f"{json.dumps(p.validation_resolution)} is not WIDTHxHEIGHT",
                    'write it like "848x480" (several: "848x480,480x848")')
            return
        for w, h in resolutions:
            bad = [(name, v) for name, v in (("width", w), ("height", h)) if v % 16]
            if not (16 <= w <= SIDE_MAX and 16 <= h <= SIDE_MAX):   # "0x0" divides by 16 too
                c.error(("validation_resolution",), f"{w}x{h}: each side must be 16 to {SIDE_MAX} pixels",
                        "use a size like 848x480 (480p) or 1280x720 (720p)")
            elif bad:
                fixed_w = w if w % 16 == 0 else _closest16(w)
                fixed_h = h if h % 16 == 0 else _closest16(h)
                what = " and ".join(f"{name} {v}" for name, v in bad)
                options = "; ".join(f"{name} {a} or {b}" for name, v in bad for a, b in [nearest_multiples(v)])
                c.error(("validation_resolution",), f"{w}x{h}: {what} not a multiple of 16",
                        f"use {options} (e.g. {fixed_w}x{fixed_h})")
            elif not tiny and c.good(("model_flavour",)):
                _check_flavour_size(c, ("validation_resolution",), p.model_flavour, min(w, h), f"{w}x{h}")


def _closest16(v: int) -> int:
    low, high = nearest_multiples(v)
    return low if v - low <= high - v else high


def _check_flavour_size(c: _Checker, path: tuple, flavour: str, short_side: int, what: str) -> None:
    native = flavour_height(flavour)
    if native == 720 and short_side < 600:
        c.warn(path, f"{what} is a 480p size but model_flavour is {flavour} (trained at 1280x720)",
               "use 1280x720-class sizes, or a 480p flavour")
    elif native == 480 and short_side > 600:
        c.warn(path, f"{what} is a 720p size but model_flavour is {flavour} (trained at 848x480)",
               "use 848x480-class sizes, or a 720p flavour")


def _check_frames(c: _Checker, path: tuple, n: int) -> bool:
    if (n - 1) % 4 == 0:
        return True
    low, high = nearest_frame_counts(n)
    c.error(path, f"{n} frames is not 4k+1 (the VAE packs 4 frames per latent after the first)",
            f"use {low} or {high}")
    return False


def folder_problem(folder: Path) -> str | None:
    """Why a folder the run writes into cannot be used (it, or the nearest part of it that exists, is a file or
    not writable), or None. Nothing is created."""
    if folder.exists():
        if not folder.is_dir():
            return f"{folder} is a file, not a folder"
        return None if os.access(folder, os.W_OK) else f"{folder} is not writable"
    parent = next((a for a in folder.parents if a.exists()), None)
    if parent is None:
        return None
    if not parent.is_dir():
        return f"{folder} cannot be created: {parent} is a file"
    return None if os.access(parent, os.W_OK) else f"{folder} cannot be created: {parent} is not writable"


def _check_writable_folders(c: _Checker, p: Preset) -> None:
    """output_dir and the cache folders: found unusable here, not after the model has loaded."""
    places = [(("output_dir",), p.output_dir)]
    places += [(("datasets", k, "cache_dir"), d.cache_dir) for k, d in enumerate(p.datasets)
               if isinstance(d.cache_dir, str) and d.cache_dir.strip()]
    for path, value in places:
        if not c.good(path) or not isinstance(value, str) or not value.strip():
            continue
        problem = folder_problem(p.resolve_path(value))
        if problem:
            c.error(path, problem, f"set {path[-1]} to a folder you can write to")


def _check_datasets(c: _Checker, p: Preset) -> None:
    tiny = p.pretrained_model_name_or_path == BUILTIN_TINY
    seen: dict[str, int] = {}
    defaults = []
    for k, d in enumerate(p.datasets):
        base = ("datasets", k)
        if c.good(base + ("id",)):
            if not d.id.strip():
                c.error(base + ("id",), "every dataset needs an id", f'add id = "dataset-{k}"', at=base)
            elif d.id in seen:
                c.error(base + ("id",), f"{json.dumps(d.id)} is already used by {c.raw_key(('datasets', seen[d.id]))}",
                        "give each dataset its own id")
            else:
                seen[d.id] = k
        if not c.good(base + ("disabled",)) or d.disabled:
            continue
        if not c.good(base + ("dataset_type",)):
            continue
        if d.dataset_type == "text_embeds":
            if c.good(base + ("default",)) and d.default:
                defaults.append(k)
            continue
        _check_dataset_dir(c, p, base, d)
        if c.good(base + ("caption_strategy",), base + ("instance_prompt",)):
            if d.caption_strategy == "instanceprompt" and not (d.instance_prompt or "").strip():
                c.error(base + ("instance_prompt",), "caption_strategy is instanceprompt but no instance_prompt is set",
                        'set instance_prompt = "a photo of ..." (used as every clip\'s caption)',
                        at=base + ("caption_strategy",))
        if c.good(base + ("caption_strategy",), base + ("metadata_file",)) and d.caption_strategy == "metadata":
            if not (d.metadata_file or "").strip():
                c.error(base + ("metadata_file",), "caption_strategy is metadata but no metadata_file is set",
                        'set metadata_file = "captions.jsonl" (JSONL or CSV with file + caption columns)',
                        at=base + ("caption_strategy",))
            else:
                path = p.resolve_path(d.metadata_file)
                if not path.is_file():
                    c.error(base + ("metadata_file",), f"{path} does not exist",
                            "fix the path (relative paths start at the preset file's folder)")
        if not tiny and c.good(base + ("resolution",), ("model_flavour",)) and d.dataset_type == "video":
            _check_flavour_size(c, base + ("resolution",), p.model_flavour, d.resolution, f"resolution {d.resolution}")
        _check_video(c, base, d)
    if len(defaults) > 1:
        c.error(("datasets", defaults[1], "default"), f"more than one text_embeds dataset is the default "
                f"(also {c.raw_key(('datasets', defaults[0]))})", "set default = true on one of them only")
    unreadable = ("datasets",) in c.bad or any(("datasets", k, key) in c.bad for k in range(len(p.datasets))
                                               for key in ("dataset_type", "disabled"))
    if not p.training_datasets and not unreadable:
        c.error(("datasets",), "no training dataset (an enabled dataset with dataset_type video or image)",
                'add a [[datasets]] table with dataset_type = "video" and instance_data_dir = "your/clips"',
                at=("datasets",) if p.datasets else ("dataset_backend_config",))


def _check_dataset_dir(c: _Checker, p: Preset, base: tuple, d: DatasetSpec) -> None:
    path_key = base + ("instance_data_dir",)
    if not c.good(path_key):
        return
    if not (d.instance_data_dir or "").strip():
        c.error(path_key, f"a {d.dataset_type} dataset needs a folder of clips",
                'add instance_data_dir = "path/to/clips" (relative to the preset file)', at=base)
        return
    folder = p.resolve_path(d.instance_data_dir)
    if not folder.exists():
        c.error(path_key, f"folder {folder} does not exist",
                "create it and put your clips (with .txt captions) there, or fix the path "
                "(relative paths start at the preset file's folder)")
    elif not folder.is_dir():
        c.error(path_key, f"{folder} is a file, not a folder", "point instance_data_dir at the folder of clips")


def _check_video(c: _Checker, base: tuple, d: DatasetSpec) -> None:
    v = d.video
    vb = base + ("video",)
    if not isinstance(v, VideoSpec) or d.dataset_type != "video":
        return
    per_bucket = c.good(vb + ("bucket_strategy",)) and v.bucket_strategy == "resolution_frames"
    # resolution_frames takes each clip's own length: num_frames is not used there.
    n_ok = not per_bucket and c.good(vb + ("num_frames",)) and _check_frames(c, vb + ("num_frames",), v.num_frames)
    lo = v.min_frames if c.good(vb + ("min_frames",)) else None
    hi = v.max_frames if c.good(vb + ("max_frames",)) else None
    if per_bucket:
        # Bucket lengths are clip lengths capped at max_frames and rounded down to 4k+1 (dataset/frames.py):
        # a bound that is not 4k+1 works, but not as written.
        if hi is not None and (hi - 1) % 4:
            low, high = nearest_frame_counts(hi)
            c.warn(vb + ("max_frames",), f"{hi} is not 4k+1: samples are at most {low} frames",
                   f"use {low} or {high}")
        if lo is not None and (lo - 1) % 4:
            low, high = nearest_frame_counts(lo)
            c.warn(vb + ("min_frames",), f"{lo} is not 4k+1: the shortest sample is {high} frames",
                   f"use {low} or {high}")
        if lo is not None and hi is not None and lo > hi:
            c.error(vb + ("min_frames",), f"min_frames {lo} is more than max_frames {hi}: every clip is discarded",
                    "swap or fix them")
        return
    if lo is not None and hi is not None and lo > hi:
        c.error(vb + ("min_frames",), f"min_frames {lo} is more than max_frames {hi}: every clip is discarded",
                "swap or fix them")
    elif n_ok and hi is not None and hi < v.num_frames:
        c.error(vb + ("max_frames",), f"max_frames {hi} is below num_frames {v.num_frames}: "
                "no clip is both long enough and short enough", f"set max_frames >= {v.num_frames} or remove it")


# ----------------------------------------------------------------------------------------------- entry points

def _read_lines(path: Path | None) -> tuple[str, dict]:
    if path is None:
        return "<preset>", {}
    try:
        return str(path), key_lines(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError):
        return str(path), {}


def _load_dataset_file(c: _Checker, p: Preset, inline: bool) -> list[dict] | None:
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
        c.error(key, f"{path} must hold a list of dataset tables", "write it as SimpleTuner's multidatabackend.json: [ {...}, ... ]")
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
        return max(1, text.count("\n") + (0 if text.endswith("\n") else 1)), None, message[:m.start()] + " at end of file"
    return None, None, message


def _check_raw_tables(c: _Checker, tables, from_file: bool) -> list[dict]:
    """Shapes and unknown keys of dataset tables (file mode); returns the tables preset_from_dict keeps."""
    kept = []
    c.ds_index = []
    for i, t in enumerate(tables):
        if not isinstance(t, dict):
            c.add(ERROR, ("datasets", i), f"expected a table, got {_describe(t)}",
                  "each dataset is an object {\"id\": ..., ...}" if from_file
                  else "each dataset is a [[datasets]] table with key = value lines", raw=True)
            continue
        kept.append(t)
        c.ds_index.append(i)
        c.unknown_keys(t, DatasetSpec, ("datasets", len(kept) - 1), where="of a dataset")
        video = t.get("video")
        if video is not None and not isinstance(video, dict):
            c.bad.add(("datasets", len(kept) - 1, "video"))
            c.error(("datasets", len(kept) - 1, "video"), f"expected a table, got {_describe(video)}",
                    "write [datasets.video] with num_frames = 61 etc. below it")
        elif isinstance(video, dict):
            c.unknown_keys(video, VideoSpec, ("datasets", len(kept) - 1, "video"), where="of datasets.video")
    return kept


def _run_checks(c: _Checker, p: Preset, env) -> None:
    c.fields(p, Preset, ())
    for k, d in enumerate(p.datasets):
        c.fields(d, DatasetSpec, ("datasets", k))
        if isinstance(d.video, VideoSpec):
            c.fields(d.video, VideoSpec, ("datasets", k, "video"))
    check_paths(c, p)   # first: the checks below stat these paths
    check_clip_memory(c, p)
    check_output_outside_datasets(c, p)
    _check_model(c, p, env)
    _check_training(c, p)
    _check_memory(c, p)
    _check_validation(c, p)
    _check_datasets(c, p)
    _check_writable_folders(c, p)


def validate_file(path: str | Path, env: dict | None = None) -> Validation:
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


def validate_text(text: str, path: str | Path, env: dict | None = None) -> Validation:
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
    c = _Checker(shown, key_lines(text))
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
    _run_checks(c, preset, env)
    return Validation(shown, preset, _in_file_order(c.problems, shown))


def validate_preset(preset: Preset, env: dict | None = None) -> list[Problem]:
    """Check an in-memory preset (the TUI's inline validation). Line numbers come from its source file,
    when it has one: they point at where the key is on disk."""
    env = os.environ if env is None else env
    shown, lines = _read_lines(preset.source)
    c = _Checker(shown, lines)
    c.ds_index = list(range(len(preset.datasets)))
    if preset.dataset_backend_config and ("datasets",) not in lines and isinstance(preset.dataset_backend_config, str):
        # Datasets came from the dataset file: report its problems there (and its lines).
        tables = _load_dataset_file(c, preset, inline=False) or []
        index = [i for i, t in enumerate(tables) if isinstance(t, dict)]
        if len(index) == len(preset.datasets):
            c.ds_index = index
    elif not isinstance(preset.dataset_backend_config, (str, type(None))):
        c.bad.add(("dataset_backend_config",))
    _run_checks(c, preset, env)
    return _in_file_order(c.problems, shown)


def validate_for_run(preset: Preset, env: dict | None = None) -> list[Problem]:
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
