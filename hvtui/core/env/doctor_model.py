"""The doctor's questions about the model files: the model folder's layout, where every component comes from
(hvtui.core.env.assets), whether each is whole (config class, tokenizer files, every safetensors shard's
header), and how validation samples will be drawn."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hvtui.core.env.assets import (
    ENV_TEXT,
    ENV_VISION,
    Component,
    config_class,
    hf_cache_dir,
    read_json,
    transformer_version,
)
from hvtui.core.env.doctor_report import FAIL, OK, WARN, Check, source_words
from hvtui.core.env.model_files import inspect_weights, tokenizer_files
from hvtui.core.formatting import human_bytes, human_count
from hvtui.core.preset.schema import BUILTIN_TINY, Preset, flavour_height, is_i2v

MODEL_COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "image_encoder")


# ------------------------------------------------------------------------------------------- model

def check_model_root(preset: Preset, env: Mapping[str, str]) -> Check:
    name = preset.pretrained_model_name_or_path
    if name == BUILTIN_TINY:
        return Check("model", OK, f"{BUILTIN_TINY}: tiny random HunyuanVideo 1.5 built in code (no files)",
                     group="model")
    from hvtui.core.env.assets import cache_snapshot, detect_layout, looks_like_repo_id
    local = preset.resolve_path(name)
    if local is not None and local.is_dir():
        layout = detect_layout(local)
        if layout == "unknown":
            return Check("model", FAIL, f"{local} is neither a diffusers pipeline folder nor Tencent's tree",
                         "point pretrained_model_name_or_path at the folder holding transformer/, vae/ and scheduler/",
                         "model")
        return Check("model", OK, f"{local} ({layout} layout, flavour {preset.model_flavour})", group="model")
    fix = "fix pretrained_model_name_or_path (relative paths are relative to the preset file)"
    if looks_like_repo_id(name) and not (local and local.exists()):
        cache = hf_cache_dir(env)
        snap, _ = cache_snapshot(cache, name)
        if snap is not None:
            return Check("model", OK, f"{name!r}: the Hugging Face cache has it ({snap}, "
                         f"{detect_layout(snap)} layout); nothing is downloaded", group="model")
        return Check("model", FAIL, f"{name!r} is neither a local folder ({local} does not exist) nor in the "
                     f"Hugging Face cache {cache}; hvtui downloads nothing",
                     f"{fix}, or download it first (hf download {name} --local-dir <folder>)", "model")
    return Check("model", FAIL, f"model folder {local} does not exist (pretrained_model_name_or_path = {name!r})",
                 fix, "model")


def _folder(comp: Component) -> Path:
    """The folder of a component that was found (component_checks returns early for builtin or missing ones)."""
    assert comp.path is not None, comp.name
    return comp.path


def _class_check(comp: Component, filename: str, label: str) -> Check:
    name = f"{comp.name} {label}"
    folder = _folder(comp)
    cfg = folder / filename
    if not cfg.is_file():
        return Check(name, FAIL, f"{cfg} is missing", f"re-download {folder} (its {filename} is missing)", "model")
    data = read_json(cfg)
    if data is None:
        return Check(name, FAIL, f"{cfg} is not valid JSON", f"re-download {folder}", "model")
    if comp.name == "feature_extractor":
        cls = data.get("image_processor_type") or data.get("processor_class")
    elif comp.name in ("tokenizer", "tokenizer_2"):
        cls = data.get("tokenizer_class")
    else:
        cls = config_class(folder, filename)
    if cls is None:
        return Check(name, WARN, f"{cfg} names no class; expected {' or '.join(comp.expected)}", "", "model")
    if cls not in comp.expected:
        return Check(name, FAIL, f"{cfg} names {cls}; expected {' or '.join(comp.expected)}",
                     f"this folder holds a different model: point {_key_for(comp)} at a {comp.expected[0]} folder",
                     "model")
    return Check(name, OK, cls, group="model")


def _key_for(comp: Component) -> str:
    if comp.name in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"):
        return f"text_encoder_path (or ${ENV_TEXT})"
    if comp.name in ("image_encoder", "feature_extractor"):
        return f"vision_encoder_path (or ${ENV_VISION})"
    return "pretrained_model_name_or_path"


def _transformer_flavour(comp: Component, preset: Preset) -> Check | None:
    data = read_json(_folder(comp) / "config.json") or {}
    want_task = "i2v" if is_i2v(preset.model_flavour) else "t2v"
    task = data.get("task_type")
    if task and task != want_task:
        return Check("transformer flavour", FAIL, f"the transformer is a {task} model but model_flavour is "
                     f"{preset.model_flavour}", f"set model_flavour to a {task} flavour, or use the "
                     f"{transformer_version(preset.model_flavour)} weights", "model")
    size = data.get("target_size")
    want = 960 if flavour_height(preset.model_flavour) == 720 else 640
    if isinstance(size, int) and size != want:
        return Check("transformer flavour", WARN, f"target_size {size} in config.json; {preset.model_flavour} "
                     f"checkpoints use {want}", "check that the weights match model_flavour", "model")
    if task is None and size is None:
        return None
    return Check("transformer flavour", OK, f"task {task or '?'}, target_size {size or '?'} match "
                 f"{preset.model_flavour}", group="model")


def _weights_check(comp: Component, files: list[Path] | None = None, label: str = "weights") -> Check:
    name = f"{comp.name} {label}"
    folder = _folder(comp)
    info = inspect_weights(folder, files)
    if info.missing:
        what = "shard(s) listed in the index are missing" if info.kind == "index" else "file(s) missing"
        return Check(name, FAIL, f"{len(info.missing)} {what} in {folder}: {', '.join(info.missing[:4])}"
                     + (" ..." if len(info.missing) > 4 else ""),
                     "the download is incomplete: download the folder again", "model")
    if info.broken:
        return Check(name, FAIL, f"unreadable in {folder}: {'; '.join(info.broken[:3])}",
                     "the file is damaged or truncated: download it again", "model")
    if not info.files:
        return Check(name, FAIL, f"no weights (*.safetensors, *.bin, *.pt) in {folder}",
                     "download the model's weight files into this folder", "model")
    n = len(info.files)
    what = f"{n} shard{'s' if n > 1 else ''}" if info.kind == "index" else f"{n} file{'s' if n > 1 else ''}"
    if info.unchecked and not info.params:
        names = ", ".join(p.name for p in info.files[:3]) + (" ..." if n > 3 else "")
        return Check(name, OK, f"{names}: {human_bytes(info.bytes)} (pickle: dtype not read without loading)",
                     group="model")
    detail = f"{human_count(info.params)} params, {info.dtype}, {what}, {human_bytes(info.bytes)}"
    if comp.name == "transformer":
        keys = info.key_format
        if keys == "tencent" and comp.format == "pretrained":
            return Check(name, FAIL, f"{detail}; config.json names the diffusers class but the weights use "
                         "Tencent's original key names", "use the Tencent config.json or a converted checkpoint",
                         "model")
        if keys == "tencent" or comp.format == "tencent-transformer":
            detail += "; Tencent's original keys (converted on load)"
    return Check(name, OK, detail, group="model")


def _glyph_checks(comp: Component) -> list[Check]:
    out = []
    ckpt = comp.files.get("glyph_checkpoint")
    if ckpt is not None:
        if not ckpt.is_file():
            out.append(Check("text_encoder_2 glyph", FAIL, f"{ckpt} is missing (the Glyph-SDXL-v2 byT5 weights)",
                             "modelscope download --model AI-ModelScope/Glyph-SDXL-v2 --local_dir "
                             f"{ckpt.parent.parent}", "model"))
        else:
            out.append(_weights_check(comp, [ckpt], "glyph"))
    missing = [str(comp.files[k]) for k in ("color_idx", "font_idx") if k in comp.files and not comp.files[k].is_file()]
    if missing:
        out.append(Check("text_encoder_2 glyph assets", FAIL, f"missing: {', '.join(missing)}",
                         "download Glyph-SDXL-v2 completely (assets/ holds the color and font tokens)", "model"))
    return out


def component_checks(comp: Component, preset: Preset) -> list[Check]:
    if comp.builtin:
        return []
    if not comp.found:
        lead = PARTNER_OF.get(comp.name)
        if lead is not None:   # the group's first component already says where and how
            return [Check(comp.name, FAIL, f"not found (comes with {lead})", "", "model")]
        expected = f"expected {comp.expected_path}" if comp.expected_path else "no source has it"
        return [Check(comp.name, FAIL, f"not found: {expected}; {summarize_tried(comp.tried)}", comp.hint,
                      "model")]
    folder = _folder(comp)
    checks = [Check(comp.name, OK, f"{folder} (from {source_words(comp.source)}, {comp.layout} layout"
                    + (f", {comp.format}" if comp.format != "pretrained" else "") + ")", group="model")]
    if comp.name in MODEL_COMPONENTS:
        if comp.format == "byt5-glyph" and not folder.is_dir():
            checks.append(Check("text_encoder_2 config", FAIL, f"{folder} is missing (google/byt5-small)",
                                f"hf download google/byt5-small --local-dir {folder}", "model"))
        else:
            cfg = _class_check(comp, "config.json", "config")
            checks.append(cfg)
            if comp.name == "transformer" and cfg.status == OK:
                flav = _transformer_flavour(comp, preset)
                if flav is not None:
                    checks.append(flav)
            checks.append(_weights_check(comp))
        if comp.format == "byt5-glyph":
            checks += _glyph_checks(comp)
    elif comp.name == "scheduler":
        checks.append(_class_check(comp, "scheduler_config.json", "config"))
    elif comp.name == "feature_extractor":
        checks.append(_class_check(comp, "preprocessor_config.json", "config"))
    elif comp.name in ("tokenizer", "tokenizer_2"):
        present, missing = tokenizer_files(comp.name, folder)
        if missing:
            where = folder if folder.is_dir() else f"{folder} (missing folder)"
            checks.append(Check(f"{comp.name} files", FAIL, f"{where}: no {', '.join(missing)}",
                                "copy the tokenizer files next to the model or download them again", "model"))
        else:
            cls = (read_json(folder / "tokenizer_config.json") or {}).get("tokenizer_class")
            if cls and cls not in comp.expected:
                checks.append(Check(f"{comp.name} files", FAIL, f"{folder}/tokenizer_config.json names {cls}; "
                                    f"expected {' or '.join(comp.expected)}",
                                    f"this is another model's tokenizer: point {_key_for(comp)} at the right folder",
                                    "model"))
            else:
                checks.append(Check(f"{comp.name} files", OK, (f"{cls}: " if cls else "") + ", ".join(present),
                                    group="model"))
    return checks


PARTNER_OF = {"tokenizer": "text_encoder", "tokenizer_2": "text_encoder_2", "feature_extractor": "image_encoder"}


def fold_missing_components(model: Check, unfound: list[Component], preset: Preset) -> None:
    """The model folder is unusable, so every component it should hold is missing for that one reason: say so
    in the model row (which components, and how to get each group) instead of one FAIL row per component."""
    names = [c.name for c in unfound]
    model.detail += f"; so {', '.join(names)} {'were' if len(names) > 1 else 'was'} not found"
    covered = {"vae", "scheduler"} if "transformer" in names else set()   # its download includes them
    parts: list[str] = []
    for c in unfound:
        if c.hint and c.name not in covered:
            parts += [part for part in c.hint.split("; ") if part not in parts]
    if parts:
        model.hint += "; to get the files: " + "; ".join(parts)


def summarize_tried(tried: list[str]) -> str:
    """The sources looked at, short: unset keys left out, cache misses folded into one list."""
    parts, misses, cache = [], [], ""
    for entry in tried:
        label, _, note = entry.partition(": ")
        if note.endswith(" not set"):
            continue
        if label.startswith("hf-cache:"):
            misses.append(label.split(":", 1)[1])
            cache = note[note.rfind("(") + 1:-1] if note.endswith(")") else cache
        elif label.startswith(("preset:", "env:")):
            continue   # reported by its own "<component> source" check
        else:
            parts.append(note)
    if misses:
        parts.append(f"HF cache {cache}: no " + ", ".join(misses))
    return "looked in: " + "; ".join(parts) if parts else "no source was set"


def source_checks(components: list[Component]) -> list[Check]:
    """Explicit sources (preset keys, env vars) that are set but unusable: fail for a preset key, warn for
    an environment variable (stale shells are common) when another source had the component."""
    out, seen = [], set()
    for comp in components:
        for severity, message in comp.problems:
            if message in seen:
                continue
            seen.add(message)
            var = ENV_TEXT if ENV_TEXT in message else ENV_VISION if ENV_VISION in message else ""
            hint = (f"fix or unset ${var}" if var else "fix the path in the preset (relative paths are relative "
                    "to the preset file) or remove the key")
            status = FAIL if severity == "error" or not comp.found else WARN
            if status == WARN:   # a stale variable: the run goes on with what was found
                message += f"; used {source_words(comp.source)} instead"
            elif comp.found:     # a key the preset sets is never silently replaced: the run stops, and says why
                hint += f" ({source_words(comp.source)} has one: without the key it is used)"
            out.append(Check(f"{comp.name} source", status, message, hint, "model"))
    return out



def check_sampling(preset: Preset, env) -> Check | None:
    """How validation samples are drawn (hvtui.core.samples.sampling): the checkpoint's guidance / steps / shift."""
    if not (preset.validation_steps and preset.all_validation_prompts):
        return None
    from hvtui.core.samples.sampling import sampling_settings

    settings = sampling_settings(preset, env)
    if settings.warning():
        return Check("sampling", WARN, settings.warning(), "remove validation_guidance from the preset (the "
                     "checkpoint's guider then decides) or set it to 1", "model")
    return Check("sampling", OK, "validation: " + settings.describe(), group="model")

