"""Where every model component of a preset comes from, found without loading (or downloading) anything.

For the preset's flavour hvtui needs the transformer, the VAE, the scheduler config, the Qwen2.5-VL text
encoder + tokenizer, the byT5 glyph encoder + tokenizer and, for i2v flavours, the SigLIP vision encoder +
image processor. Each group is looked for in these sources, in this order, and the first that has it wins:

  1. explicit preset keys      text_encoder_path (text + byT5 groups), vision_encoder_path (SigLIP)
  2. environment variables     $HUNYUANVIDEO_TEXT_ENCODER_PATH, $HUNYUANVIDEO_VISION_ENCODER_PATH
  3. the model folder          subfolders of pretrained_model_name_or_path
  4. the Hugging Face cache    $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub: snapshots of the repo
                               named by pretrained_model_name_or_path, the flavour's diffusers repo
                               (hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v, ...), tencent/
                               HunyuanVideo-1.5, and for the encoders Qwen/Qwen2.5-VL-7B-Instruct and
                               black-forest-labs/FLUX.1-Redux-dev (the official SigLIP source, gated).

Two layouts are understood:
  diffusers  model_index.json, transformer/, vae/, scheduler/, text_encoder/, tokenizer/, text_encoder_2/,
             tokenizer_2/, image_encoder/, feature_extractor/ (what `save_pretrained` writes)
  tencent    the official tree (checkpoints-download.md): transformer/480p_t2v/ and siblings, vae/,
             scheduler/, text_encoder/llm (Qwen2.5-VL-7B-Instruct), text_encoder/byt5-small +
             text_encoder/Glyph-SDXL-v2 (checkpoints/byt5_model.pt, assets/*.json), vision_encoder/siglip
             (FLUX.1-Redux-dev: image_encoder/ + feature_extractor/)
An encoder path may also be the model folder itself (a Qwen2.5-VL or SigLIP download), or the Tencent
text_encoder/ folder. `Component.format` tells the loader how to build it (see FORMATS).

What is inside each component's files (safetensors headers, tokenizer files) is read by model_files.py.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hvtui.core.preset.schema import BUILTIN_TINY, FLAVOURS, Preset, is_i2v

ENV_TEXT = "HUNYUANVIDEO_TEXT_ENCODER_PATH"
ENV_VISION = "HUNYUANVIDEO_VISION_ENCODER_PATH"
TENCENT_REPO = "tencent/HunyuanVideo-1.5"
COMMUNITY_REPO = "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-{version}"
QWEN_REPO = "Qwen/Qwen2.5-VL-7B-Instruct"
SIGLIP_REPO = "black-forest-labs/FLUX.1-Redux-dev"

T2V_COMPONENTS = ("transformer", "vae", "scheduler", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
I2V_COMPONENTS = T2V_COMPONENTS + ("image_encoder", "feature_extractor")

# How the loader builds a component from `Component.path`:
FORMATS = {
    "pretrained": "`<loader>.from_pretrained(path)` gives it as the diffusers pipeline wants it",
    "tencent-transformer": "original Tencent keys (double_blocks.*): build the diffusers class, convert the keys",
    "tencent-vae": "original Tencent VAE keys: build AutoencoderKLHunyuanVideo15, convert the keys",
    "tencent-scheduler": "Tencent's FlowMatchDiscreteScheduler config: use FlowMatchEulerDiscreteScheduler(shift)",
    "qwen2_5_vl": "a full Qwen2.5-VL checkpoint: load its language model as Qwen2_5_VLTextModel",
    "byt5-glyph": "google/byt5-small + files['glyph_checkpoint'] (Glyph-SDXL-v2) + color/font tokens "
                  "(files['color_idx'], files['font_idx'])",
    "builtin": "built in code by hvtui.core.train.tiny (no files)",
}

# Class names a component's config may carry (diffusers `_class_name`, transformers `architectures`,
# tokenizer_class / image_processor_type), and the class hvtui loads it with.
EXPECTED = {
    "transformer": ("HunyuanVideo15Transformer3DModel", "HunyuanVideo_1_5_DiffusionTransformer"),
    "vae": ("AutoencoderKLHunyuanVideo15", "AutoencoderKLConv3D"),
    "scheduler": ("FlowMatchEulerDiscreteScheduler", "FlowMatchDiscreteScheduler"),
    "text_encoder": ("Qwen2_5_VLTextModel", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel"),
    "tokenizer": ("Qwen2Tokenizer", "Qwen2TokenizerFast", "TokenizersBackend"),
    "text_encoder_2": ("T5EncoderModel", "T5ForConditionalGeneration", "T5Model"),
    "tokenizer_2": ("ByT5Tokenizer",),
    "image_encoder": ("SiglipVisionModel", "SiglipModel"),
    "feature_extractor": ("SiglipImageProcessor", "SiglipImageProcessorFast", "SiglipImageProcessorPil"),
}
LOADER = {
    "transformer": "diffusers.HunyuanVideo15Transformer3DModel", "vae": "diffusers.AutoencoderKLHunyuanVideo15",
    "scheduler": "diffusers.FlowMatchEulerDiscreteScheduler", "text_encoder": "transformers.Qwen2_5_VLTextModel",
    "tokenizer": "transformers.Qwen2Tokenizer", "text_encoder_2": "transformers.T5EncoderModel",
    "tokenizer_2": "transformers.ByT5Tokenizer", "image_encoder": "transformers.SiglipVisionModel",
    "feature_extractor": "transformers.SiglipImageProcessor",
}
GROUPS = {   # components found together, from one source
    "transformer": ("transformer",), "vae": ("vae",), "scheduler": ("scheduler",),
    "text": ("text_encoder", "tokenizer"), "glyph": ("text_encoder_2", "tokenizer_2"),
    "vision": ("image_encoder", "feature_extractor"),
}
GROUP_OF = {name: g for g, names in GROUPS.items() for name in names}


@dataclass
class Component:
    name: str                      # the diffusers pipeline's component name
    path: Path | None              # the folder to load it from (None: builtin or not found)
    source: str                    # which source won: preset:<key> | env:<VAR> | model | hf-cache:<repo> |
                                   # builtin | missing
    tried: list[str] = field(default_factory=list)   # every source looked at, in order, and what was there
    layout: str = ""               # diffusers | tencent | folder (a plain model download) | builtin | ""
    format: str = ""               # a FORMATS key
    loader: str = ""               # module.Class hvtui loads it with
    expected: tuple[str, ...] = ()
    files: dict[str, Path] = field(default_factory=dict)   # extra files (the Glyph checkpoint and assets)
    expected_path: Path | None = None   # when missing: the folder hvtui looked for first
    hint: str = ""                 # when missing: how to get it
    problems: list[tuple[str, str]] = field(default_factory=list)  # (error|warning, message): explicit
                                   # sources that are set but unusable

    @property
    def found(self) -> bool:
        return self.source not in ("missing", "")

    @property
    def builtin(self) -> bool:
        return self.source == "builtin"

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path) if self.path else None, "source": self.source,
                "layout": self.layout, "format": self.format, "loader": self.loader, "tried": list(self.tried),
                "files": {k: str(v) for k, v in self.files.items()},
                "expected_path": str(self.expected_path) if self.expected_path else None, "hint": self.hint,
                "problems": [list(p) for p in self.problems]}


def component_names(flavour: str) -> tuple[str, ...]:
    return I2V_COMPONENTS if is_i2v(flavour) else T2V_COMPONENTS


def transformer_version(flavour: str) -> str:
    """The Tencent folder (and diffusers repo suffix) of a flavour: t2v-480p -> 480p_t2v, i2v-720p-distilled ->
    720p_i2v_distilled."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown model_flavour {flavour!r} (one of {', '.join(FLAVOURS)})")
    task, res, *rest = flavour.split("-")
    return f"{res}_{task}" + "".join(f"_{r}" for r in rest)


# ----------------------------------------------------------------------------------------- the HF cache

def hf_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """huggingface_hub's own order: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(env[var]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path("~/.cache").expanduser()
    return base / "huggingface" / "hub"


def cache_snapshot(cache: Path, repo_id: str) -> tuple[Path | None, str]:
    """The snapshot folder of a cached model repo (refs/main first, else the newest), and what was found."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    if not repo.is_dir():
        return None, f"{repo.name} not in the cache"
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap, "cached"
    snaps = [p for p in (repo / "snapshots").glob("*") if p.is_dir()] if (repo / "snapshots").is_dir() else []
    if not snaps:
        return None, f"{repo.name} has no snapshot"
    return max(snaps, key=lambda p: p.stat().st_mtime), "cached"


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and not text.startswith((".", "~"))


# ----------------------------------------------------------------------------------------- layouts

def _has_files(folder: Path) -> bool:
    try:
        return folder.is_dir() and any(p.is_file() for p in folder.iterdir())
    except OSError:
        return False


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def config_class(folder: Path, filename: str = "config.json") -> str | None:
    """The class a config names: diffusers `_class_name`, else transformers `architectures[0]`."""
    data = read_json(folder / filename)
    if data is None:
        return None
    if data.get("_class_name"):
        return str(data["_class_name"])
    arch = data.get("architectures")
    if isinstance(arch, list) and arch:
        return str(arch[0])
    return None


_VERSION_DIR = re.compile(r"^\d+p_(t2v|i2v|sr)")


def detect_layout(root: Path) -> str:
    """diffusers | tencent | folder (a plain model download: config.json at the top) | unknown."""
    if (root / "model_index.json").is_file():
        return "diffusers"
    t = root / "transformer"
    if t.is_dir() and any(p.is_dir() and _VERSION_DIR.match(p.name) for p in t.iterdir()):
        return "tencent"
    if (root / "text_encoder" / "llm").is_dir() or (root / "vision_encoder").is_dir():
        return "tencent"
    if _has_files(t) or _has_files(root / "vae") or (root / "text_encoder" / "config.json").is_file():
        return "diffusers"
    if (root / "config.json").is_file():
        return "folder"
    return "unknown"


@dataclass
class _Found:
    paths: dict[str, Path]
    layout: str
    formats: dict[str, str]
    files: dict[str, Path] = field(default_factory=dict)


def _probe_transformer(root: Path, version: str) -> tuple[_Found | None, str]:
    t = root / "transformer"
    if (t / version).is_dir():
        fmt = "pretrained" if config_class(t / version) == EXPECTED["transformer"][0] else "tencent-transformer"
        return _Found({"transformer": t / version}, "tencent", {"transformer": fmt}), ""
    if _has_files(t):
        fmt = "tencent-transformer" if config_class(t) == EXPECTED["transformer"][1] else "pretrained"
        return _Found({"transformer": t}, "diffusers", {"transformer": fmt}), ""
    if t.is_dir():
        subs = sorted(p.name for p in t.iterdir() if p.is_dir())
        if subs:
            return None, f"{t} has {', '.join(subs)} but no {version}/ (the flavour's weights)"
        return None, f"{t} is empty"
    return None, f"no transformer/ in {root}"


def _probe_single(root: Path, name: str) -> tuple[_Found | None, str]:
    folder = root / name
    if not _has_files(folder):
        return None, f"no {name}/ in {root}" if not folder.is_dir() else f"{folder} is empty"
    layout = detect_layout(root)
    if name == "vae":
        cls = config_class(folder)
        tencent = cls == EXPECTED["vae"][1] or (cls != EXPECTED["vae"][0] and layout == "tencent")
        fmt = "tencent-vae" if tencent else "pretrained"
    else:
        cls = config_class(folder, "scheduler_config.json")
        fmt = "tencent-scheduler" if cls == EXPECTED["scheduler"][1] else "pretrained"
    return _Found({name: folder}, layout if layout in ("diffusers", "tencent") else "diffusers", {name: fmt}), ""


def _text_format(folder: Path) -> str:
    cls = config_class(folder)
    return "qwen2_5_vl" if cls in ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel") else "pretrained"


def _probe_text(root: Path) -> tuple[_Found | None, str]:
    if detect_layout(root) == "folder":   # the Qwen2.5-VL download itself
        return _Found({"text_encoder": root, "tokenizer": root}, "folder", {"text_encoder": _text_format(root),
                                                                           "tokenizer": "pretrained"}), ""
    for llm, layout in ((root / "text_encoder" / "llm", "tencent"), (root / "llm", "tencent")):
        if llm.is_dir():
            return _Found({"text_encoder": llm, "tokenizer": llm}, layout,
                          {"text_encoder": _text_format(llm), "tokenizer": "pretrained"}), ""
    te = root / "text_encoder"
    if _has_files(te):
        return _Found({"text_encoder": te, "tokenizer": root / "tokenizer"}, "diffusers",
                      {"text_encoder": _text_format(te), "tokenizer": "pretrained"}), ""
    return None, f"no text_encoder/, text_encoder/llm/ or Qwen2.5-VL config.json in {root}"


def _glyph_files(glyph: Path) -> dict[str, Path]:
    return {"glyph_checkpoint": glyph / "checkpoints" / "byt5_model.pt",
            "color_idx": glyph / "assets" / "color_idx.json",
            "font_idx": glyph / "assets" / "multilingual_10-lang_idx.json"}


def _probe_glyph(root: Path) -> tuple[_Found | None, str]:
    bases = [root / "text_encoder", root]
    if detect_layout(root) == "folder":   # a Qwen2.5-VL folder (Tencent's text_encoder/llm): its siblings
        bases.append(root.parent)
    for base in bases:
        byt5, glyph = base / "byt5-small", base / "Glyph-SDXL-v2"
        if byt5.is_dir() or glyph.is_dir():
            return _Found({"text_encoder_2": byt5, "tokenizer_2": byt5}, "tencent",
                          {"text_encoder_2": "byt5-glyph", "tokenizer_2": "byt5-glyph"}, _glyph_files(glyph)), ""
    te2 = root / "text_encoder_2"
    if _has_files(te2):
        return _Found({"text_encoder_2": te2, "tokenizer_2": root / "tokenizer_2"}, "diffusers",
                      {"text_encoder_2": "pretrained", "tokenizer_2": "pretrained"}), ""
    return None, f"no text_encoder_2/ or text_encoder/byt5-small + Glyph-SDXL-v2/ in {root}"


def _probe_vision(root: Path) -> tuple[_Found | None, str]:
    fmts = {"image_encoder": "pretrained", "feature_extractor": "pretrained"}
    if detect_layout(root) == "folder":   # a SigLIP vision model download itself
        return _Found({"image_encoder": root, "feature_extractor": root}, "folder", fmts), ""
    for base, layout in ((root / "vision_encoder" / "siglip", "tencent"), (root, "diffusers")):
        if _has_files(base / "image_encoder"):
            if layout == "diffusers" and not (root / "model_index.json").is_file():
                layout = "folder"   # FLUX.1-Redux-dev itself: image_encoder/ + feature_extractor/
            return _Found({"image_encoder": base / "image_encoder", "feature_extractor": base / "feature_extractor"},
                          layout, fmts), ""
    return None, f"no image_encoder/ or vision_encoder/siglip/image_encoder/ in {root}"


# ----------------------------------------------------------------------------------------- resolution

@dataclass
class _Source:
    label: str                     # preset:text_encoder_path, env:VAR, model, hf-cache:<repo>
    root: Path | None              # a folder to look in (None: unusable, `note` says why)
    note: str = ""
    explicit: str = ""             # "error" / "warning" when a path the user set is unusable
    named: Path | None = None      # the path named, even when it does not exist (for "expected ...")


def _missing_note(what: str, p: Path) -> str:
    return f"{what}: {p} is not a folder" if p.exists() else f"{what}: {p} does not exist"


def _explicit(preset: Preset, key: str, var: str, env: Mapping[str, str]) -> list[_Source]:
    out = []
    value = getattr(preset, key)
    if value:
        p = preset.resolve_path(str(value))
        ok = p is not None and p.is_dir()
        out.append(_Source(f"preset:{key}", p if ok else None, "" if ok else _missing_note(f"{key} = {value!r}", p),
                           "error"))
    else:
        out.append(_Source(f"preset:{key}", None, f"{key} not set"))
    if env.get(var):
        p = Path(env[var]).expanduser()
        out.append(_Source(f"env:{var}", p if p.is_dir() else None,
                           "" if p.is_dir() else _missing_note(f"${var}", p), "warning"))
    else:
        out.append(_Source(f"env:{var}", None, f"${var} not set"))
    return out


def _model_sources(preset: Preset, env: Mapping[str, str], extra_repos: tuple[str, ...] = ()) -> list[_Source]:
    name = preset.pretrained_model_name_or_path
    out: list[_Source] = []
    local = preset.resolve_path(name)
    repos: list[str] = []
    if local is not None and local.is_dir():
        out.append(_Source("model", local, named=local))
    elif looks_like_repo_id(name) and not (local and local.exists()):
        # "owner/name" may be a repo id or a relative folder: look for both, name the folder when missing
        out.append(_Source("model", None, f"{_missing_note('model folder', local)}; as a repo id: "
                                          "looking in the Hugging Face cache (nothing is downloaded)", named=local))
        repos.append(name)
    else:
        out.append(_Source("model", None, _missing_note("model folder", local), named=local))
    version = transformer_version(preset.model_flavour)
    repos += [COMMUNITY_REPO.format(version=version), TENCENT_REPO, *extra_repos]
    cache = hf_cache_dir(env)
    for repo in dict.fromkeys(repos):
        snap, note = cache_snapshot(cache, repo)
        out.append(_Source(f"hf-cache:{repo}", snap, f"{note} ({cache})" if snap is None else ""))
    return out


def _group_sources(group: str, preset: Preset, env: Mapping[str, str]) -> list[_Source]:
    if group in ("text", "glyph"):
        extra = (QWEN_REPO,) if group == "text" else ()
        return _explicit(preset, "text_encoder_path", ENV_TEXT, env) + _model_sources(preset, env, extra)
    if group == "vision":
        return _explicit(preset, "vision_encoder_path", ENV_VISION, env) + _model_sources(preset, env, (SIGLIP_REPO,))
    return _model_sources(preset, env)


def _probe(group: str, root: Path, version: str) -> tuple[_Found | None, str]:
    if group == "transformer":
        return _probe_transformer(root, version)
    if group in ("vae", "scheduler"):
        return _probe_single(root, group)
    return {"text": _probe_text, "glyph": _probe_glyph, "vision": _probe_vision}[group](root)


def _expected_path(group: str, root: Path | None, version: str) -> Path | None:
    if root is None:
        return None
    layout = detect_layout(root) if root.is_dir() else "unknown"
    tencent = layout in ("tencent", "unknown")   # unknown: name the official tree's folders
    rel = {"transformer": f"transformer/{version}" if tencent else "transformer",
           "vae": "vae", "scheduler": "scheduler",
           "text": "text_encoder/llm" if tencent else "text_encoder",
           "glyph": "text_encoder/byt5-small" if tencent else "text_encoder_2",
           "vision": "vision_encoder/siglip" if tencent else "image_encoder"}[group]
    return root / rel


# Where text_encoder_path / $HUNYUANVIDEO_TEXT_ENCODER_PATH point: one folder serves both text groups (Qwen2.5-VL
# and byT5 + Glyph), Tencent's text_encoder/ (a Qwen2.5-VL folder itself works too: its siblings are searched).
TEXT_ROOT_WORDS = (f"inside the model folder nothing needs setting; elsewhere set text_encoder_path (or ${ENV_TEXT}) "
                   "to <root>/text_encoder, the folder holding llm/, byt5-small/ and Glyph-SDXL-v2/")


def _hint(group: str, preset: Preset, version: str) -> str:
    root = preset.pretrained_model_name_or_path
    return {
        "transformer": f"download the flavour's weights (hf download {TENCENT_REPO} --include "
                       f"'transformer/{version}/*' 'vae/*' 'scheduler/*' --local-dir <root>) and set "
                       f"pretrained_model_name_or_path = \"<root>\", or use a diffusers repo "
                       f"({COMMUNITY_REPO.format(version=version)})",
        "vae": f"put the VAE in {root}/vae (hf download {TENCENT_REPO} --include 'vae/*')",
        "scheduler": f"put the scheduler config in {root}/scheduler "
                     f"(hf download {TENCENT_REPO} --include 'scheduler/*')",
        "text": f"hf download {QWEN_REPO} --local-dir <root>/text_encoder/llm; {TEXT_ROOT_WORDS}",
        "glyph": "hf download google/byt5-small --local-dir <root>/text_encoder/byt5-small and modelscope download "
                 "--model AI-ModelScope/Glyph-SDXL-v2 --local_dir <root>/text_encoder/Glyph-SDXL-v2; "
                 f"{TEXT_ROOT_WORDS}",
        "vision": f"the official SigLIP is gated: request access to {SIGLIP_REPO}, hf download {SIGLIP_REPO} "
                  f"--local-dir <root>/vision_encoder/siglip and set vision_encoder_path (or ${ENV_VISION}); or use "
                  f"a diffusers i2v repo that bundles image_encoder/ ({COMMUNITY_REPO.format(version=version)})",
    }[group]


def _resolve_group(group: str, preset: Preset, env: Mapping[str, str]) -> list[Component]:
    version = transformer_version(preset.model_flavour)
    names = GROUPS[group]
    tried: list[str] = []
    problems: list[tuple[str, str]] = []
    first_root: Path | None = None
    for src in _group_sources(group, preset, env):
        if src.label == "model":
            first_root = src.named
        if src.root is None:
            tried.append(f"{src.label}: {src.note}")
            if src.explicit and src.note:
                problems.append((src.explicit, src.note))
            continue
        found, why = _probe(group, src.root, version)
        if found is None:
            tried.append(f"{src.label}: {why}")
            if src.explicit:
                problems.append((src.explicit, f"{src.label.split(':', 1)[1]} = {src.root}: {why}"))
            continue
        tried.append(f"{src.label}: found in {src.root} ({found.layout} layout)")
        return [Component(n, found.paths[n], src.label, list(tried), found.layout, found.formats[n], LOADER[n],
                          EXPECTED[n], dict(found.files), problems=list(problems)) for n in names]
    expected = _expected_path(group, first_root, version)
    hint = _hint(group, preset, version)
    return [Component(n, None, "missing", list(tried), "", "", LOADER[n], EXPECTED[n], expected_path=expected,
                      hint=hint, problems=list(problems)) for n in names]


def resolve_components(preset: Preset, env: Mapping[str, str] = os.environ) -> list[Component]:
    """One Component per part the flavour needs, in pipeline order. Reads folders and small JSON files only."""
    names = component_names(preset.model_flavour)
    if preset.pretrained_model_name_or_path == BUILTIN_TINY:
        return [Component(n, None, "builtin", [f"{BUILTIN_TINY}: built in code (no files)"], "builtin", "builtin",
                          LOADER[n], EXPECTED[n]) for n in names]
    out: dict[str, Component] = {}
    for group in dict.fromkeys(GROUP_OF[n] for n in names):
        for comp in _resolve_group(group, preset, env):
            out[comp.name] = comp
    return [out[n] for n in names]


def components_by_name(components: list[Component]) -> dict[str, Component]:
    return {c.name: c for c in components}
