"""Convert a SimpleTuner HunyuanVideo config (config.json + multidatabackend.json) into an hvtui preset.

SimpleTuner's config.json is flat: keys may carry the CLI's leading `--`, and values are often strings
("true", "1e-4"). Every key that names a preset field is kept (its value coerced to the field's type);
every other key is dropped and listed, so nothing disappears silently. Datasets are inlined as
[[datasets]] tables. A video or image dataset's cache_dir_vae (where SimpleTuner caches its latents) becomes
hvtui's cache_dir, and wins over a cache_dir given too (a note says so).

Paths: SimpleTuner resolves relative paths against the folder it runs in (its checkout, where config/
lives). The converter finds that folder as the first of: the current directory, the config's
grandparent (config/config.json -> the checkout), the config's folder, in which the
dataset_backend_config file exists (the current directory when there is none); then rewrites relative
paths to be relative to the new preset's folder, which is how hvtui reads them.
"""
from __future__ import annotations

import json
import math
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import tomlkit

from hvtui.core.preset import DatasetSpec, Preset, VideoSpec, field_specs
from hvtui.core.validate import (
    coerce_string, field_type, field_hints, type_ok, parse_resolutions,
)

# SimpleTuner names that mean an hvtui key.
ALIASES = {"data_backend_config": "dataset_backend_config"}
# SimpleTuner's quanto modes -> the torchao mode with the same weights (int8 / float8 e4m3 per channel).
QUANTO_TO_TORCHAO = {"int8-quanto": "int8-torchao", "fp8-quanto": "fp8-torchao"}
# ... and in a video or image dataset: SimpleTuner keeps their latents in cache_dir_vae (hvtui: cache_dir).
LATENT_ALIASES = {**ALIASES, "cache_dir_vae": "cache_dir"}
# Why some common SimpleTuner keys are dropped (the rest get a generic reason).
DROP_REASONS = {
    "num_train_epochs": "hvtui counts max_train_steps only",
    "resume_from_checkpoint": "use `hvtui --run PRESET --resume auto`",
    "report_to": "hvtui logs to OUTPUT_DIR/events.jsonl and its own UI",
    "push_to_hub": "hvtui does not upload", "hub_model_id": "hvtui does not upload",
    "lora_type": "hvtui trains standard LoRA",
    "aspect_bucket_rounding": "hvtui buckets to multiples of 16",
    "cache_dir_vae": "the latent cache of a video or image dataset; this dataset has no latents",
}
TOP_PATHS = ("output_dir", "text_encoder_path", "vision_encoder_path")
DATASET_PATHS = ("instance_data_dir", "cache_dir", "metadata_file")
SECTION_ORDER = ("model", "lora", "training", "memory", "validation", "data")


@dataclass
class ImportResult:
    text: str                                            # the preset TOML
    dropped: list[str] = field(default_factory=list)     # "key: why" for every key not carried over
    notes: list[str] = field(default_factory=list)       # values changed on the way (with why)
    datasets_from: Path | None = None


class SimpleTunerInputError(Exception):
    """Unreadable input (exit 2)."""


def read_json(path: Path, what: str):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SimpleTunerInputError(f"{path}: cannot read {what}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SimpleTunerInputError(f"{path}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno})") from None


def _coerce(cls, name: str, value):
    """(ok, value) with `value` converted to the field's type; SimpleTuner writes many values as strings."""
    base, optional = field_type(field_hints(cls)[name])
    if value is None:
        return optional, None
    if isinstance(value, str) and base is not str:
        guess = coerce_string(base, value)
        value = value if guess is None else guess
    elif base is bool and isinstance(value, int) and value in (0, 1) and not isinstance(value, bool):
        value = bool(value)
    elif base is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    elif base is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return type_ok(base, value), value


def _round16(v: int) -> int:
    return max(16, int(math.floor(v / 16 + 0.5)) * 16)


class _Converter:
    def __init__(self, root: Path, out_dir: Path):
        self.root = root
        self.out_dir = out_dir
        self.dropped: list[str] = []
        self.notes: list[str] = []

    def relocate(self, value: str) -> str:
        p = Path(value)
        if p.is_absolute() or value.startswith("~"):
            return value
        return os.path.relpath((self.root / p).resolve(), self.out_dir.resolve())

    def table(self, cls, raw: dict, prefix: str, skip=(), aliases=ALIASES) -> dict:
        specs = field_specs(cls)
        out: dict = {}
        for key, value in raw.items():
            name = aliases.get(key.lstrip("-"), key.lstrip("-"))
            shown = f"{prefix}{key}"
            if name in skip:
                continue
            if name not in specs or name in ("datasets", "video"):
                self.dropped.append(f"{shown}: {DROP_REASONS.get(name, 'not an hvtui setting')}")
                continue
            ok, value = _coerce(cls, name, value)
            if value is None:
                self.dropped.append(f"{shown}: empty (null); the default is used")
                continue
            if not ok:
                self.dropped.append(f"{shown}: value {json.dumps(value)} not understood; the default is used")
                continue
            choices = specs[name].metadata.get("choices")
            if choices and value not in choices:
                default = specs[name].default
                self.dropped.append(f"{shown}: {json.dumps(value)} is not supported by hvtui "
                                    f"(one of {', '.join(choices)}); the default {json.dumps(default)} is used")
                continue
            out[name] = value
        return out

    def preset(self, config: dict) -> dict:
        for key, value in config.items():
            if key.lstrip("-") == "base_model_precision" and value in QUANTO_TO_TORCHAO:
                config = {**config, key: QUANTO_TO_TORCHAO[value]}
                self.notes.append(f"base_model_precision: {value} -> {QUANTO_TO_TORCHAO[value]} (hvtui quantizes "
                                  "with torchao; the same weight format)")
        out = self.table(Preset, config, "", skip=("dataset_backend_config",))
        res = out.get("validation_resolution")
        if res is not None:
            if re.fullmatch(r"\s*\d+\s*", res):  # SimpleTuner accepts one number for a square size
                res = f"{int(res)}x{int(res)}"
            sizes = parse_resolutions(res)
            if sizes:
                fixed = ",".join(f"{_round16(w)}x{_round16(h)}" for w, h in sizes)
                if fixed != res.replace(" ", ""):
                    self.notes.append(f"validation_resolution: {res} -> {fixed} (sizes must be multiples of 16)")
                res = fixed
            out["validation_resolution"] = res
        for key in TOP_PATHS:
            if key in out:
                out[key] = self.relocate(out[key])
        model = out.get("pretrained_model_name_or_path")
        if model and (model.startswith((".", "/", "~")) or (self.root / model).exists()):
            out["pretrained_model_name_or_path"] = self.relocate(model)
        return out

    def dataset(self, i: int, raw, inherited: dict) -> dict | None:
        prefix = f"datasets[{i}]."
        if isinstance(raw, dict) and raw.get("dataset_type", "image") in ("video", "image"):
            raw = {**inherited, **raw}   # SimpleTuner's top-level resolution is every dataset's default
        if not isinstance(raw, dict):
            self.dropped.append(f"datasets[{i}]: not a table; skipped")
            return None
        name = raw.get("id", f"#{i}")
        kind = raw.get("type", "local")
        if kind != "local":
            self.dropped.append(f"datasets[{i}] ({name}): storage type {json.dumps(kind)} is not supported "
                                "(local folders only); dataset skipped")
            return None
        dtype = raw.get("dataset_type", "image")
        if dtype not in ("video", "image", "text_embeds"):
            self.dropped.append(f"datasets[{i}] ({name}): dataset_type {json.dumps(dtype)} is not supported; "
                                "dataset skipped")
            return None
        rtype = raw.get("resolution_type")
        skip = ["resolution_type"]
        if rtype is not None and rtype != "pixel":
            if rtype == "area":
                skip.append("resolution")
                self.dropped.append(f"{prefix}resolution_type: area (megapixels) is not supported; "
                                    "resolution left at the default (480)")
            else:
                self.notes.append(f"{prefix}resolution_type: hvtui reads resolution {raw.get('resolution')} as the "
                                  "short side of a 16:9 bucket (480 -> 848x480); check `hvtui buckets`")
        aliases = ALIASES
        if dtype in ("video", "image"):
            aliases = LATENT_ALIASES
            vae, plain = raw.get("cache_dir_vae"), raw.get("cache_dir")
            if "cache_dir_vae" in raw and "cache_dir" in raw:
                if isinstance(vae, str) and vae.strip():
                    # both set: cache_dir_vae is the one that holds this dataset's latents
                    raw = {k: v for k, v in raw.items() if k != "cache_dir"}
                    if plain != vae:
                        self.notes.append(f"{prefix}cache_dir: {json.dumps(plain)} replaced by cache_dir_vae "
                                          f"{json.dumps(vae)} (SimpleTuner's latent cache; hvtui's cache_dir)")
                else:
                    raw = {k: v for k, v in raw.items() if k != "cache_dir_vae"}
                    self.dropped.append(f"{prefix}cache_dir_vae: empty ({json.dumps(vae)}); cache_dir is used")
        out = self.table(DatasetSpec, raw, prefix, skip=skip + ["video"], aliases=aliases)
        out.setdefault("dataset_type", dtype)  # SimpleTuner's default is image; hvtui's is video
        for key in DATASET_PATHS:
            if key in out:
                out[key] = self.relocate(out[key])
        video = raw.get("video")
        if isinstance(video, dict) and dtype == "video":
            v = self.table(VideoSpec, video, f"{prefix}video.")
            if v:
                out["video"] = v
        elif video is not None:
            self.dropped.append(f"{prefix}video: only used by video datasets")
        return out


def _help(cls, name: str) -> str:
    return field_specs(cls)[name].metadata.get("help") or ""


def render(values: dict, datasets: list[dict], header: list[str]) -> str:
    """A readable preset: sections in the preset model's order, each key with its help as a comment."""
    doc = tomlkit.document()
    for line in header:
        doc.add(tomlkit.comment(line))
    specs = field_specs(Preset)
    for section in SECTION_ORDER:
        keys = [k for k, f in specs.items() if f.metadata.get("section") == section and k in values]
        if not keys:
            continue
        doc.add(tomlkit.nl())
        doc.add(tomlkit.comment(f"--- {section}"))
        for key in keys:
            item = tomlkit.item(values[key])
            if _help(Preset, key):
                item.comment(_help(Preset, key))
            doc.add(key, item)
    if datasets:
        aot = tomlkit.aot()
        for d in datasets:
            t = tomlkit.table()
            for key in field_specs(DatasetSpec):
                if key in d and key != "video":
                    t.add(key, d[key])
            if "video" in d:
                v = tomlkit.table()
                for key in field_specs(VideoSpec):
                    if key in d["video"]:
                        v.add(key, d["video"][key])
                t.add("video", v)
            aot.append(t)
        doc.add(tomlkit.nl())
        doc.add("datasets", aot)
    text = tomlkit.dumps(doc)
    return text if text.endswith("\n") else text + "\n"


def _root_candidates(config_path: Path, cwd: Path) -> list[Path]:
    """Where a relative dataset_backend_config may start, in order (no folder twice)."""
    return list(dict.fromkeys(p.resolve() for p in (cwd, config_path.parent.parent, config_path.parent)))


def find_root(config_path: Path, backend: str | None, cwd: Path) -> Path:
    if backend:
        for base in _root_candidates(config_path, cwd):
            if (base / backend).is_file():
                return base.resolve()
    return cwd.resolve()


def convert(config_path: str | Path, backend_path: str | Path | None, output_path: str | Path,
            cwd: Path | None = None) -> ImportResult:
    """Read SimpleTuner JSON files and return the preset text (not written). Raises SimpleTunerInputError for
    unreadable input."""
    config_path = Path(config_path)
    cwd = Path.cwd() if cwd is None else Path(cwd)
    config = read_json(config_path, "the SimpleTuner config")
    if not isinstance(config, dict):
        raise SimpleTunerInputError(f"{config_path}: expected a JSON object of settings (SimpleTuner's config.json)")
    config = {str(k).lstrip("-"): v for k, v in config.items()}
    family = config.get("model_family")
    if family is not None and str(family).lower() != "hunyuanvideo":
        raise SimpleTunerInputError(f"{config_path}: model_family is {json.dumps(family)}; hvtui trains "
                                    "HunyuanVideo 1.5 only (model_family \"hunyuanvideo\")")
    backend_key = config.get("dataset_backend_config") or config.get("data_backend_config")
    backend_key = backend_key if isinstance(backend_key, str) and backend_key.strip() else None
    root = find_root(config_path, backend_key, cwd)
    result = ImportResult("")
    if backend_path is None and backend_key:
        candidate = Path(backend_key).expanduser()
        backend_path = candidate if candidate.is_absolute() else root / candidate
        if not Path(backend_path).is_file():
            raise SimpleTunerInputError(f"{config_path}: dataset_backend_config {backend_key} not found (looked in "
                               f"{', '.join(map(str, _root_candidates(config_path, cwd)))}); pass the multidatabackend "
                               "JSON as the second argument")
    tables: list = []
    if backend_path is not None:
        backend_path = Path(backend_path)
        data = read_json(backend_path, "the dataset config")
        if isinstance(data, dict) and isinstance(data.get("datasets"), list):
            data = data["datasets"]
        if not isinstance(data, list):
            raise SimpleTunerInputError(f"{backend_path}: expected a JSON list of datasets (SimpleTuner's "
                               "multidatabackend.json)")
        tables = data
        result.datasets_from = backend_path
    out_dir = Path(output_path).parent
    conv = _Converter(root, out_dir if str(out_dir) else Path("."))
    inherited = {k: config.pop(k) for k in ("resolution", "resolution_type") if k in config}
    values = conv.preset(config)
    datasets = [d for i, t in enumerate(tables) if (d := conv.dataset(i, t, inherited)) is not None]
    if inherited and not datasets:
        conv.dropped.append("resolution: no dataset to apply it to")
    header = [f"Imported from SimpleTuner: {config_path.name}"
              + (f" + {result.datasets_from.name}" if result.datasets_from else "") + " (hvtui import-simpletuner).",
              "Relative paths are relative to this file's folder. Check it with: hvtui check THIS_FILE"]
    if conv.dropped:
        header += textwrap.wrap("Not carried over: " + ", ".join(d.split(":")[0] for d in conv.dropped), 100)
    result.text = render(values, datasets, header)
    result.dropped = conv.dropped
    result.notes = conv.notes
    return result
