"""Convert a SimpleTuner HunyuanVideo config (config.json + multidatabackend.json) into an hvtui preset.

SimpleTuner's config.json is flat: keys may carry the CLI's leading `--`, and values are often strings
("true", "1e-4"). Every key that names a preset field is kept (its value coerced to the field's type);
every other key is dropped and listed with its reason, so nothing disappears silently. Datasets are inlined
as [[datasets]] tables. A video or image dataset's cache_dir_vae (where SimpleTuner caches its latents)
becomes hvtui's cache_dir, and wins over a cache_dir given too (a note says so).

Read as SimpleTuner reads them (checked against its source, simpletuner/helpers/configuration and
data_backend):
- Key names: its current names and their legacy aliases both map (checkpoint_step_interval and
  checkpointing_steps -> checkpointing_steps, validation_step_interval and validation_steps ->
  validation_steps, save_total_limit -> checkpoints_total_limit). Both given: the later one in the file wins,
  as in SimpleTuner (its argument parser keeps the last), and a note says so.
- Placeholders: `{model_family}`, `{output_dir}` and `{id}` (the dataset's) in dataset values, `{env:NAME}`
  anywhere, are expanded as SimpleTuner does; an unknown one is kept and noted.
- resolution_type (SimpleTuner's default is pixel_area): hvtui's `resolution` is the short side of a 16:9
  frame of the same pixel area, so pixel_area R becomes round(R x 3/4) (480 -> 360: 230,400 pixels, 640x360
  at 16:9, as SimpleTuner makes it) and area (megapixels) its matching side; pixel (short side R at every
  aspect) keeps R, which agrees at 16:9 only. Each conversion is a note with the numbers.
- grad_clip_method: SimpleTuner's default "value" clips every gradient element to +-max_grad_norm; hvtui clips
  the total norm only, so such a max_grad_norm is not carried over (a note says why); "norm" carries over.

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

from hvtui.core.preset.check_fields import (
    coerce_string,
    field_hints,
    field_type,
    parse_resolutions,
    type_ok,
)
from hvtui.core.preset.schema import DatasetSpec, Preset, VideoSpec, field_specs

# SimpleTuner's names (current and legacy) that mean an hvtui key. hvtui's own names are SimpleTuner's legacy
# ones (checkpointing_steps, validation_steps): both spellings land on them.
ALIASES = {"data_backend_config": "dataset_backend_config", "checkpoint_step_interval": "checkpointing_steps",
           "validation_step_interval": "validation_steps", "save_total_limit": "checkpoints_total_limit"}
# SimpleTuner's quanto modes -> the torchao mode with the same weights (int8 / float8 e4m3 per channel).
QUANTO_TO_TORCHAO = {"int8-quanto": "int8-torchao", "fp8-quanto": "fp8-torchao"}
# ... and in a video or image dataset: SimpleTuner keeps their latents in cache_dir_vae (hvtui: cache_dir).
LATENT_ALIASES = {**ALIASES, "cache_dir_vae": "cache_dir"}
# Why some common SimpleTuner keys are dropped (the rest get a generic reason).
DROP_REASONS = {
    "num_train_epochs": "hvtui counts max_train_steps only",
    "resume_from_checkpoint": "use `hvtui --run PRESET --resume auto`",
    "logging_dir": "hvtui writes TensorBoard logs to OUTPUT_DIR/tensorboard",
    "tracker_image_layout": "hvtui logs each validation video and its contact sheet",
    "push_to_hub": "hvtui does not upload", "hub_model_id": "hvtui does not upload",
    "lora_type": "hvtui trains standard LoRA",
    "aspect_bucket_rounding": "hvtui buckets to multiples of 16",
    "cache_dir_vae": "the latent cache of a video or image dataset; this dataset has no latents",
    "compress_disk_cache": "hvtui's cache entries are uncompressed safetensors",
    "disable_benchmark": "hvtui runs no start-up benchmark (validation_steps samples during training)",
    "push_checkpoints_to_hub": "hvtui does not upload",
    "vae_batch_size": "hvtui encodes one clip at a time", "vae_enable_slicing": "hvtui encodes one clip at a "
    "time (slicing splits a batch)",
    "validation_prompt_library": "hvtui has no prompt library; validation_prompt / validation_prompts are used",
    "user_prompt_library": "hvtui has no prompt library; validation_prompt / validation_prompts are used",
    "minimum_image_size": "hvtui keeps clips of every size (smaller ones are upscaled, with a warning)",
    "maximum_image_size": "hvtui scales every clip to its bucket", "target_downsample_size": "hvtui scales "
    "every clip to its bucket",
    "crop": "hvtui always scales a clip to cover its bucket and centre-crops", "crop_style": "hvtui always "
    "centre-crops", "crop_aspect": "hvtui buckets by each clip's displayed aspect ratio",
    "metadata_backend": "hvtui reads captions as caption_strategy says", "lycoris_config": "hvtui trains "
    "standard LoRA", "validation_torch_compile": "hvtui compiles the transformer blocks (compile_blocks)",
    "resolution_type": "hvtui reads resolution as described in the notes",
}
# SimpleTuner's placeholders in dataset values (data_backend/factory.py fill_variables_in_config_paths)
PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
# SimpleTuner's "area" resolutions that mean a square's pixel count (image_manipulation/training_sample.py)
ST_AREA_MAP = {0.25: 512 ** 2, 0.5: 768 ** 2, 1.0: 1024 ** 2, 2.0: 1536 ** 2, 4.0: 2048 ** 2}
TOP_PATHS = ("output_dir", "text_encoder_path", "vision_encoder_path")
DATASET_PATHS = ("instance_data_dir", "cache_dir", "metadata_file")
SECTION_ORDER = ("model", "lora", "training", "memory", "validation", "logging", "data")


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
        source: dict[str, str] = {}
        for key, value in raw.items():
            name = aliases.get(key.lstrip("-"), key.lstrip("-"))
            shown = f"{prefix}{key}"
            if name in skip:
                continue
            if name in source and name in specs:
                self.notes.append(f"{prefix}{name}: both {source[name]} and {key.lstrip('-')} are set; SimpleTuner "
                                  f"uses the later one ({key.lstrip('-')} = {json.dumps(value)}), and so does hvtui")
            source[name] = key.lstrip("-")
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

    def grad_clip(self, config: dict) -> None:
        """SimpleTuner clips by value unless grad_clip_method is "norm"; hvtui clips by norm only."""
        method = config.pop("grad_clip_method", None)
        method = str(method).strip().lower() if method is not None else None
        if method == "norm":
            return
        if method not in (None, "value"):
            self.dropped.append(f"grad_clip_method: {json.dumps(method)} is not a SimpleTuner method (value, norm)")
        if "max_grad_norm" not in config:
            if method == "value":
                self.notes.append("grad_clip_method: value (each gradient element clipped to +-max_grad_norm, "
                                  "SimpleTuner's default 2.0) is not available in hvtui, which clips the total "
                                  "gradient norm: hvtui's default max_grad_norm 1.0 (by norm) applies")
            return
        limit = config.pop("max_grad_norm")
        how = "grad_clip_method value" if method else "grad_clip_method left at SimpleTuner's default, value"
        self.dropped.append(f"max_grad_norm: {json.dumps(limit)} with {how}: SimpleTuner clips every gradient "
                            f"element to +-{limit}; hvtui clips the total gradient norm only, and as a norm "
                            f"{limit} would clip far harder, so it is not carried over: hvtui's default "
                            "max_grad_norm 1.0 (by norm) applies (set max_grad_norm = 0 to turn clipping off)")

    def report_to(self, value):
        """SimpleTuner's report_to is a tracker or a comma list ("wandb,tensorboard"); hvtui's is one of
        none / tensorboard / wandb / all. Trackers hvtui lacks (comet_ml, ...) are named in a note."""
        if not isinstance(value, str):
            return value
        names = [n.strip().lower() for n in value.split(",") if n.strip()]
        known = [n for n in ("tensorboard", "wandb") if n in names or "all" in names]
        other = [n for n in names if n not in ("tensorboard", "wandb", "all", "none")]
        result = "all" if len(known) == 2 else (known[0] if known else "none")
        if other:
            self.notes.append(f"report_to: {', '.join(other)} not supported by hvtui (tensorboard and wandb are); "
                              f"using {json.dumps(result)}")
        return result

    def preset(self, config: dict) -> dict:
        self.grad_clip(config)
        if "report_to" in config:
            config = {**config, "report_to": self.report_to(config["report_to"])}
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

    def placeholders(self, value, variables: dict, where: str):
        """Expand SimpleTuner's `{name}` / `{env:NAME}` placeholders in strings, recursively, as it does."""
        if isinstance(value, dict):
            return {k: self.placeholders(v, variables, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.placeholders(v, variables, f"{where}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, str) or "{" not in value:
            return value
        unknown = []

        def sub(m: re.Match) -> str:
            token = m.group(1)
            if token.startswith("env:"):
                return os.environ.get(token[4:], "")
            if token in variables:
                return "" if variables[token] is None else str(variables[token])
            unknown.append(m.group(0))
            return m.group(0)

        new = PLACEHOLDER.sub(sub, value)
        if new != value:
            self.notes.append(f"{where}: {json.dumps(value)} -> {json.dumps(new)} (SimpleTuner's placeholders "
                              "expanded)")
        if unknown:
            self.notes.append(f"{where}: {', '.join(unknown)} is not a SimpleTuner placeholder; kept as written")
        return new

    def resolution(self, prefix: str, value, rtype) -> int | None:
        """SimpleTuner's resolution + resolution_type -> hvtui's resolution, with a note giving the numbers."""
        from hvtui.core.dataset.buckets import bucket_size

        by_default = rtype in (None, "")
        rtype = "pixel_area" if by_default else str(rtype)
        try:
            v = float(value)
        except (TypeError, ValueError):
            return None               # table() lists it as not understood
        if not math.isfinite(v) or v <= 0:
            return None

        def shapes(r: int) -> str:
            w, h = bucket_size(16, 9, r)
            sq = bucket_size(1, 1, r)[0]
            return f"{w}x{h} at 16:9, {sq}x{sq} square"

        if rtype == "pixel_area":
            area = v * v
            r = max(64, int(round(v * 3 / 4)))
            self.notes.append(f"{prefix}resolution: {v:g} with resolution_type pixel_area"
                              f"{' (SimpleTuner' + chr(39) + 's default)' if by_default else ''} means "
                              f"{v:g}x{v:g} = {area:,.0f} pixels per frame in "
                              f"SimpleTuner; hvtui's resolution is the short side of a 16:9 frame of that area, so "
                              f"it becomes {r} ({shapes(r)}; hvtui would read {v:g} as {shapes(int(v))}, "
                              f"{16 / 9:.2f}x the pixels)")
            return r
        if rtype == "area":
            area = next((px for mp, px in ST_AREA_MAP.items() if abs(v - mp) < 0.05), v * 1e6)
            r = max(64, int(round(math.sqrt(area * 9 / 16))))
            self.notes.append(f"{prefix}resolution: {v:g} megapixels (resolution_type area) is {area:,.0f} "
                              f"pixels per frame in SimpleTuner; hvtui's resolution for that area is {r} "
                              f"({shapes(r)})")
            return r
        if rtype == "pixel":
            r = int(round(v))
            w43, h43 = bucket_size(4, 3, r)
            self.notes.append(f"{prefix}resolution: {v:g} with resolution_type pixel makes the short side "
                              f"{r} at every aspect in SimpleTuner (about {r * 16 / 9:.0f}x{r} at 16:9, {r}x{r} "
                              f"square, {r * 4 // 3}x{r} at 4:3); hvtui keeps the pixel area of a 16:9 frame "
                              f"instead, so {r} gives the same 16:9 buckets but larger ones at other aspects "
                              f"({shapes(r)}, {w43}x{h43} at 4:3)")
            return r
        self.dropped.append(f"{prefix}resolution_type: {json.dumps(rtype)} is not a SimpleTuner type (pixel_area, "
                            "area, pixel); resolution is read the hvtui way (the short side of a 16:9 frame)")
        return None

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
        skip = ["resolution_type"]
        if dtype in ("video", "image") and raw.get("resolution") is not None:
            converted = self.resolution(prefix, raw.get("resolution"), raw.get("resolution_type"))
            if converted is not None:
                raw = {**raw, "resolution": converted}
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
    out_dir = Path(output_path).parent
    conv = _Converter(Path("."), out_dir if str(out_dir) else Path("."))
    config = {k: conv.placeholders(v, {}, k) for k, v in config.items()}
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
    conv.root = root
    inherited = {k: config.pop(k) for k in ("resolution", "resolution_type") if k in config}
    # the values SimpleTuner puts into dataset placeholders (its default output_dir when none is set)
    variables = {"model_family": str(family or "hunyuanvideo"),
                 "output_dir": config.get("output_dir") or str(root / ".simpletuner_output")}
    values = conv.preset(config)
    tables = [conv.placeholders(t, {**variables, "id": str(t.get("id", "") or "")}, f"datasets[{i}]")
              if isinstance(t, dict) else t for i, t in enumerate(tables)]
    datasets = [d for i, t in enumerate(tables) if (d := conv.dataset(i, t, inherited)) is not None]
    if not any(d.get("dataset_type") in ("video", "image") for d in datasets):
        conv.dropped += [f"{k}: no video or image dataset to apply it to (it is every dataset's default)"
                         for k in inherited]
    header = [f"Imported from SimpleTuner: {config_path.name}"
              + (f" + {result.datasets_from.name}" if result.datasets_from else "") + " (hvtui import-simpletuner).",
              "Relative paths are relative to this file's folder. Check it with: hvtui check THIS_FILE"]
    if conv.dropped:
        header += textwrap.wrap("Not carried over: " + ", ".join(d.split(":")[0] for d in conv.dropped), 100)
    result.text = render(values, datasets, header)
    result.dropped = conv.dropped
    result.notes = conv.notes
    return result
