"""Environment and model-asset checks, run before anything heavy is loaded.

`run_doctor(preset)` answers: where does every component come from (hvtui.core.assets), is it whole (config
class names, tokenizer files, every safetensors shard's header), what is this machine (GPU through NVML,
package versions through importlib.metadata: torch is never imported here), and does the run fit in GPU
memory (hvtui.core.fit). Each answer is a Check: ok / warn / fail, a detail line and a hint a user can act
on. `hvtui doctor` exits 3 when any check fails; `--run` and the TUI's environment pane show the same list.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Mapping

from hvtui.core import exitcodes
from hvtui.core.assets import (ENV_TEXT, ENV_VISION, Component, config_class, hf_cache_dir,
                               inspect_weights, read_json, resolve_components, tokenizer_files,
                               transformer_version)
from hvtui.core.fit import FitEstimate, GiB, card_for, estimate_memory, largest_bucket
from hvtui.core.nvml import NvmlInfo
from hvtui.core.preset import BUILTIN_TINY, Preset, flavour_height, is_i2v
from hvtui.core.train import quantize

OK, WARN, FAIL = "ok", "warn", "fail"

# (distribution, minimum version, why): minimums follow pyproject.toml
PACKAGES = (("torch", "2.5", ""), ("diffusers", "0.42", "the HunyuanVideo 1.5 classes"),
            ("transformers", "4.57", "Qwen2.5-VL text model"), ("peft", "0.19", "LoRA next to torchao >= 0.18"), ("accelerate", "1.0", ""))
MODEL_COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "image_encoder")


@dataclass
class Check:
    name: str
    status: str          # ok | warn | fail
    detail: str
    hint: str = ""
    group: str = ""      # system | model | fit

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DoctorReport:
    preset: Preset
    checks: list[Check] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)
    fit: FitEstimate | None = None
    gpu: NvmlInfo | None = None

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    @property
    def exit_code(self) -> int:
        return exitcodes.DOCTOR_FAILED if self.failed else exitcodes.OK

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in (OK, WARN, FAIL)}

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict:
        return {"preset": str(self.preset.source) if self.preset.source else None,
                "flavour": self.preset.model_flavour, "ok": not self.failed, "exit_code": self.exit_code,
                "counts": self.counts(), "checks": [c.to_dict() for c in self.checks],
                "components": [c.to_dict() for c in self.components],
                "fit": self.fit.to_dict() if self.fit else None,
                "gpu": self.gpu.to_dict() if self.gpu else None}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)


def gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def source_words(source: str) -> str:
    if source == "model":
        return "the model folder"
    kind, _, what = source.partition(":")
    return {"preset": f"preset key {what}", "env": f"${what}", "hf-cache": f"the HF cache ({what})"}.get(kind, source)


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _real(preset: Preset) -> bool:
    return preset.pretrained_model_name_or_path != BUILTIN_TINY


# ------------------------------------------------------------------------------------------- system

def check_python() -> Check:
    v = platform.python_version()
    if sys.version_info < (3, 10):
        return Check("python", FAIL, f"Python {v} is too old", "use Python 3.10 or newer", "system")
    return Check("python", OK, f"Python {v} ({sys.executable})", group="system")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, _, _ in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_packages(versions: dict[str, str | None]) -> Check:
    missing = [n for n, v in versions.items() if v is None]
    old = [f"{n} {versions[n]} < {m}" + (f" ({why})" if why else "")
           for n, m, why in PACKAGES if versions.get(n) and _version_tuple(versions[n]) < _version_tuple(m)]
    detail = ", ".join(f"{n} {v}" for n, v in versions.items() if v)
    if missing:
        return Check("packages", FAIL, f"not installed: {', '.join(missing)}" + (f"; have {detail}" if detail else ""),
                     "pip install -e . (installs hvtui's dependencies)", "system")
    if old:
        return Check("packages", WARN, f"{detail}; older than hvtui needs: {'; '.join(old)}",
                     "pip install -U " + " ".join(o.split()[0] for o in old), "system")
    return Check("packages", OK, detail, group="system")


def check_gpu(info: NvmlInfo, real: bool = True) -> Check:
    if not info.available:
        return Check("cuda", WARN, f"{info.reason}; training runs on the CPU (only the builtin tiny model is "
                     "practical there)", "run on a machine with an NVIDIA GPU and its driver for real models",
                     "system")
    vis = info.visible_gpus
    if not vis:
        return Check("cuda", FAIL if real else WARN,
                     f"{len(info.gpus)} GPU(s) present but CUDA_VISIBLE_DEVICES hides them all",
                     "fix CUDA_VISIBLE_DEVICES (e.g. export CUDA_VISIBLE_DEVICES=0)", "system")
    parts = [f"{g.index}: {g.name}, {gib(g.mem_total or 0)} total, {gib(g.mem_free or 0)} free" for g in vis]
    drv = f"driver {info.driver}" + (f" (CUDA {info.cuda})" if info.cuda else "")
    return Check("cuda", OK, "; ".join(parts) + f"; {drv}", group="system")


def check_torch_build(version: str | None, info: NvmlInfo) -> Check:
    if version is None:
        return Check("torch build", FAIL, "torch is not installed", "install torch for your CUDA version "
                     "(https://pytorch.org/get-started/locally/)", "system")
    local = version.split("+", 1)[1] if "+" in version else ""
    has_gpu = info.available and bool(info.visible_gpus)
    live = ""
    torch = sys.modules.get("torch")   # only asked when already imported: importing it costs seconds
    if torch is not None:
        try:
            live = "; torch.cuda.is_available() = " + str(bool(torch.cuda.is_available()))
        except Exception:
            live = ""
    if local == "cpu":
        if has_gpu:
            return Check("torch build", FAIL, f"torch {version} is a CPU-only build; the GPU cannot be used",
                         "pip install torch --index-url https://download.pytorch.org/whl/cu128 (match your driver)",
                         "system")
        return Check("torch build", OK, f"torch {version}: CPU-only build{live}", group="system")
    cuda = ""
    if local.startswith("cu") and local[2:].isdigit():
        digits = local[2:]
        cuda = f"{digits[:-1]}.{digits[-1]}"
    detail = f"torch {version}" + (f" for CUDA {cuda}" if cuda else "") + live
    if cuda and info.cuda and _version_tuple(cuda)[:2] > _version_tuple(info.cuda)[:2]:
        return Check("torch build", FAIL, f"{detail}, but the driver supports CUDA {info.cuda} at most",
                     f"update the NVIDIA driver, or install a torch build for CUDA <= {info.cuda}", "system")
    return Check("torch build", OK, detail, group="system")


def check_base_precision(preset: Preset, info: NvmlInfo, versions: dict | None = None) -> list[Check]:
    """A quantized base_model_precision needs torchao (hvtui.core.train.quantize), and fp8-torchao FP8 tensor
    cores: a CUDA GPU of compute capability 8.9+. No check for the unquantized modes. `versions`: installed
    {"torchao": ..., "torch": ...} (tests); read from the package metadata when None."""
    mode = preset.base_model_precision
    return [_base_precision(mode, info, versions)] if quantize.is_quantized(mode) else []


def _torchao_problem(mode: str, versions: dict | None) -> str | None:
    if versions is None:
        versions = {}
        for name in ("torchao", "torch"):
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
    ao, torch_v = versions.get("torchao"), versions.get("torch")
    if ao is None:
        return f"{mode} needs torchao, which is not installed"
    if _version_tuple(ao) < _version_tuple(quantize.TORCHAO_MIN):
        return f"{mode} needs torchao >= {quantize.TORCHAO_MIN}; torchao {ao} is installed"
    if torch_v is not None and _version_tuple(torch_v) < _version_tuple(quantize.TORCH_MIN):
        return f"torchao {ao} needs torch >= {quantize.TORCH_MIN}; torch {torch_v} is installed"
    return None


def _base_precision(mode: str, info: NvmlInfo, versions: dict | None) -> Check:
    problem = _torchao_problem(mode, versions)
    if problem:
        return Check("base precision", FAIL, problem, f'pip install "torchao>={quantize.TORCHAO_MIN}" (with torch '
                     f'>= {quantize.TORCH_MIN}), or set base_model_precision = "bf16"', "system")
    gpus = [(g.name, g.capability) for g in info.visible_gpus] if info.available else []
    if mode == "fp8-torchao":
        problem = quantize.fp8_hardware_problem(gpus)
        if problem:
            return Check("base precision", FAIL, problem, quantize.INT8_ALTERNATIVE, "system")
        unknown = [n for n, cc in gpus if cc is None]
        if unknown:
            return Check("base precision", WARN, f"fp8-torchao: the compute capability of {unknown[0]} is unknown "
                         "(NVML did not say); the run checks the FP8 matmul on the GPU before training",
                         quantize.INT8_ALTERNATIVE + " if it fails", "system")
        return Check("base precision", OK, f"fp8-torchao: float8 transformer blocks, FP8 matmuls on "
                     f"{gpus[0][0]} (compute capability {gpus[0][1][0]}.{gpus[0][1][1]})", group="system")
    where = f"on {gpus[0][0]}" if gpus else "on the CPU"
    return Check("base precision", OK, f"int8-torchao: int8 transformer blocks, bf16 matmuls {where}",
                 group="system")


def meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(path).read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    except OSError:
        pass
    return out


def check_host_memory(preset: Preset, mem: dict[str, int] | None = None) -> Check:
    mem = meminfo() if mem is None else mem
    total, avail = mem.get("MemTotal"), mem.get("MemAvailable")
    if not total:
        return Check("host memory", WARN, "unknown (no /proc/meminfo)", "", "system")
    detail = f"{gib(total)} total, {gib(avail or 0)} available"
    if _real(preset):
        need = 32 * GiB + (16 * GiB if preset.enable_group_offload else 0)
        if total < need:
            why = ("block weights pinned in host memory (~15 GiB) + the text encoder while caching"
                   if preset.enable_group_offload else "loading the 7B text encoder and the 8.3B transformer")
            return Check("host memory", WARN, f"{detail}; about {gib(need)} recommended for {why}",
                         "close other programs or use a machine with more RAM; swapping makes loading very slow",
                         "system")
    return Check("host memory", OK, detail, group="system")


def _existing_ancestor(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_disk(preset: Preset) -> Check:
    places: list[tuple[str, Path]] = []
    out = preset.resolve_path(preset.output_dir)
    if out is not None:
        places.append(("output", out))
    for ds in preset.datasets:
        if ds.cache_dir and not ds.disabled:
            places.append((f"cache {ds.id or '?'}", preset.resolve_path(ds.cache_dir)))
    seen: dict[int, str] = {}
    parts, worst = [], None
    for label, p in places:
        base = _existing_ancestor(p)
        try:
            st = os.stat(base)
            usage = shutil.disk_usage(base)
        except OSError as e:
            parts.append(f"{label} {p}: {e.strerror}")
            continue
        if st.st_dev in seen:
            parts.append(f"{label}: same disk as {seen[st.st_dev]}")
            continue
        seen[st.st_dev] = label
        parts.append(f"{label} {p}: {gib(usage.free)} free")
        worst = usage.free if worst is None else min(worst, usage.free)
    if worst is None:
        return Check("disk", WARN, "; ".join(parts) or "no output or cache folder", "set output_dir", "system")
    detail = "; ".join(parts)
    fail_below, warn_below = (2 * GiB, 20 * GiB) if _real(preset) else (0.05 * GiB, 0.2 * GiB)
    if worst < fail_below:
        return Check("disk", FAIL, detail, f"free at least {gib(warn_below)}: latents, text embeddings and "
                     "checkpoints are written there", "system")
    if worst < warn_below:
        return Check("disk", WARN, detail, f"{gib(warn_below)} or more free is safer for caches and checkpoints",
                     "system")
    return Check("disk", OK, detail, group="system")


def check_session(env: Mapping[str, str]) -> Check:
    ssh = any(env.get(v) for v in ("SSH_CONNECTION", "SSH_TTY", "SSH_CLIENT"))
    mux = "tmux" if env.get("TMUX") else "screen" if env.get("STY") else ""
    if ssh and not mux:
        return Check("session", WARN, "connected over SSH outside tmux/screen: a dropped connection would end a "
                     "run started in this terminal", "start tmux (or screen) first, or train headless with "
                     "`nohup hvtui --run PRESET &` and follow it with `hvtui --attach OUTPUT_DIR`", "system")
    return Check("session", OK, ("SSH inside " + mux) if ssh else (f"inside {mux}" if mux else "local terminal"),
                 group="system")


# ------------------------------------------------------------------------------------------- model

def check_model_root(preset: Preset, env: Mapping[str, str]) -> Check:
    name = preset.pretrained_model_name_or_path
    if name == BUILTIN_TINY:
        return Check("model", OK, f"{BUILTIN_TINY}: tiny random HunyuanVideo 1.5 built in code (no files)",
                     group="model")
    from hvtui.core.assets import cache_snapshot, detect_layout, looks_like_repo_id
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


def _class_check(comp: Component, filename: str, label: str) -> Check:
    name = f"{comp.name} {label}"
    cfg = comp.path / filename
    if not cfg.is_file():
        return Check(name, FAIL, f"{cfg} is missing", f"re-download {comp.path} (its {filename} is missing)", "model")
    data = read_json(cfg)
    if data is None:
        return Check(name, FAIL, f"{cfg} is not valid JSON", f"re-download {comp.path}", "model")
    if comp.name == "feature_extractor":
        cls = data.get("image_processor_type") or data.get("processor_class")
    elif comp.name in ("tokenizer", "tokenizer_2"):
        cls = data.get("tokenizer_class")
    else:
        cls = config_class(comp.path, filename)
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
    data = read_json(comp.path / "config.json") or {}
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
    folder = comp.path
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
        files = ", ".join(p.name for p in info.files[:3]) + (" ..." if n > 3 else "")
        return Check(name, OK, f"{files}: {human_bytes(info.bytes)} (pickle: dtype not read without loading)",
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
    checks = [Check(comp.name, OK, f"{comp.path} (from {source_words(comp.source)}, {comp.layout} layout"
                    + (f", {comp.format}" if comp.format != "pretrained" else "") + ")", group="model")]
    if comp.name in MODEL_COMPONENTS:
        if comp.format == "byt5-glyph" and not comp.path.is_dir():
            checks.append(Check("text_encoder_2 config", FAIL, f"{comp.path} is missing (google/byt5-small)",
                                f"hf download google/byt5-small --local-dir {comp.path}", "model"))
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
        present, missing = tokenizer_files(comp.name, comp.path)
        if missing:
            where = comp.path if comp.path.is_dir() else f"{comp.path} (missing folder)"
            checks.append(Check(f"{comp.name} files", FAIL, f"{where}: no {', '.join(missing)}",
                                "copy the tokenizer files next to the model or download them again", "model"))
        else:
            cls = (read_json(comp.path / "tokenizer_config.json") or {}).get("tokenizer_class")
            if cls and cls not in comp.expected:
                checks.append(Check(f"{comp.name} files", FAIL, f"{comp.path}/tokenizer_config.json names {cls}; "
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


# ------------------------------------------------------------------------------------------- fit

def check_fit(est: FitEstimate, preset: Preset, info: NvmlInfo | None) -> Check:
    """The whole run's peak (hvtui.core.fit: every phase as NVML sees it) against this machine's GPU."""
    where = f" (largest bucket from the {est.bucket_source})" if est.bucket_source else ""
    if est.builtin:
        return Check("fit", OK, est.breakdown(), group="fit")
    peak_words = est.peak_words()
    gpus = info.visible_gpus if info and info.available else []
    if not gpus:
        hint = f"run on a machine with an NVIDIA GPU of {card_for(est.peak_gib)} or more"
        alt = _offload_alternative(est, preset)
        if alt is not None:
            hint += f"; with enable_group_offload = true about {alt.peak_gib:.1f} GiB ({card_for(alt.peak_gib)})"
        return Check("fit", FAIL, f"no GPU found; the run needs about {peak_words}: {est.breakdown()}{where}",
                     hint, "fit")
    cap = min(g.mem_total or 0 for g in gpus)
    free = min(g.mem_free if g.mem_free is not None else (g.mem_total or 0) for g in gpus)
    name = gpus[0].name
    # what the run needs: the attention cache is left out, it only fills what the card has left (speed.py)
    peak = (est.required_gib or est.peak_gib) * GiB
    detail = f"about {peak_words} of {gib(cap)} on {name}: {est.breakdown()}{where}"
    if peak > cap:
        return Check("fit", FAIL, detail, _fit_hint(est, preset, cap), "fit")
    if peak > 0.92 * cap:
        return Check("fit", WARN, "tight: " + detail, _fit_hint(est, preset, 0.92 * cap), "fit")
    if peak > free:
        return Check("fit", WARN, detail + f"; only {gib(free)} free now ({gib(cap - free)} used by other processes)",
                     "stop the other GPU processes (nvidia-smi lists them)", "fit")
    return Check("fit", OK, detail, group="fit")


def check_trackers(preset: Preset, env: Mapping[str, str]) -> list[Check]:
    """report_to's trackers: installed (they are optional extras), and for W&B, a login (else the run logs
    offline). Nothing is imported: find_spec, the environment and ~/.netrc only."""
    from hvtui.core.trackers import missing_packages, wandb_credentials, wanted

    names = wanted(preset.report_to)
    if not names:
        return []
    missing = missing_packages(preset.report_to)
    if missing:
        return [Check("trackers", WARN, f"report_to = {preset.report_to}: {', '.join(n for n, _ in missing)} not "
                      "installed; the run trains without it", "pip install " + " ".join(f"'{x}'" for _, x in missing),
                      "system")]
    mode = env.get("WANDB_MODE", "").strip().lower()
    if "wandb" in names and mode not in ("offline", "dryrun", "disabled") and not wandb_credentials(env):
        return [Check("trackers", WARN, "no W&B login: the run logs to wandb offline (OUTPUT_DIR/wandb/)",
                      "run `wandb login` (or set WANDB_API_KEY); `wandb sync DIR` uploads an offline run later",
                      "system")]
    return [Check("trackers", OK, ", ".join(names) + (f" (WANDB_MODE={mode})" if "wandb" in names and mode else ""),
                  group="system")]


def check_preset(preset: Preset, env) -> Check:
    """The preset's own errors (what `hvtui check` says): the doctor is never "ready" for a preset --run refuses."""
    from hvtui.core.validate import validate_for_run

    problems = validate_for_run(preset, dict(env))
    errors = [q for q in problems if q.is_error]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return Check("preset", FAIL, f"{len(errors)} error(s): {errors[0]}{more}",
                     "hvtui check PRESET lists them with their lines", "preset")
    warned = len(problems)
    return Check("preset", OK, "valid" + (f", {warned} warning(s) (hvtui check PRESET)" if warned else ""),
                 group="preset")


def check_gpu_count(processes: int, info: NvmlInfo | None) -> Check:
    """`hvtui doctor --gpus N`: does this machine have N usable GPUs (one process each)?"""
    from hvtui.core.train.multi_gpu import gpus_problem

    available = len(info.visible_gpus) if info is not None and info.available else 0
    problem = gpus_problem(processes, available)
    if not problem and not available:
        return Check("gpus", WARN, f"no GPU here: --gpus {processes} would run {processes} CPU processes (gloo), "
                     "for trying the launch only", "run on a machine with that many NVIDIA GPUs", "fit")
    return Check("gpus", FAIL if problem else OK, problem or f"data-parallel over {processes} GPU(s)",
                 "pick a GPU count this machine has" if problem else "", "fit")


def _offload_alternative(est: FitEstimate, preset: Preset) -> FitEstimate | None:
    """The same run with block offload, when it is off and would lower the peak; never a hint for what is on."""
    if est.offload:
        return None
    alt = estimate_memory(preset, _shape(est), offload=True)
    return alt if alt.peak_gib < est.peak_gib - 0.5 else None


def _fit_hint(est: FitEstimate, preset: Preset, budget: float) -> str:
    """What lowers each phase that is over `budget` (bytes), from the same estimate the detail quotes."""
    hints = []
    over = [p for p in est.phases if p.nvml_gib * GiB > budget and p.name != "checkpointing"]
    for phase in over:
        if phase.name == "caching":
            if not preset.vae_enable_tiling and "VAE encode" in phase.parts:
                hints.append(f"caching needs ~{phase.nvml_gib:.1f} GiB: set vae_enable_tiling = true")
            else:
                hints.append(f"caching needs ~{phase.nvml_gib:.1f} GiB ({phase.note}): cache on a larger GPU and "
                             "copy the cache folders")
        elif phase.name == "training":
            fixes = []
            if not est.gradient_checkpointing:
                fixes.append("set gradient_checkpointing = true")
            alt = _offload_alternative(est, preset)
            if alt is not None:
                fixes.append(f"set enable_group_offload = true (training then ~{alt.phase('training').nvml_gib:.1f} "
                             f"GiB, the run's peak ~{alt.peak_gib:.1f} GiB)")
            fixes.append(f"lower resolution / num_frames (largest bucket {est.bucket})")
            if est.batch_size > 1:
                fixes.append("train_batch_size = 1 with gradient_accumulation_steps")
            hints.append(f"training needs ~{phase.nvml_gib:.1f} GiB: " + ", or ".join(fixes))
        elif phase.name == "validation":
            fixes = ["lower validation_resolution / validation_num_video_frames"]
            if not preset.vae_enable_tiling:
                fixes.insert(0, "set vae_enable_tiling = true")
            fixes.append("set validation_steps = 0")
            hints.append(f"validation sampling needs ~{phase.nvml_gib:.1f} GiB ({phase.note}): " + ", or ".join(fixes))
    return "; ".join(hints)


def _shape(est: FitEstimate):
    from hvtui.core.fit import BucketShape
    w, rest = est.bucket.split("x")
    h, f = rest.split("@")
    return BucketShape(int(w), int(h), int(f), est.bucket_source)


def check_sampling(preset: Preset, env) -> Check | None:
    """How validation samples are drawn (hvtui.core.sampling): the checkpoint's guidance / steps / shift."""
    if not (preset.validation_steps and preset.all_validation_prompts):
        return None
    from hvtui.core.sampling import sampling_settings

    settings = sampling_settings(preset, env)
    if settings.warning():
        return Check("sampling", WARN, settings.warning(), "remove validation_guidance from the preset (the "
                     "checkpoint's guider then decides) or set it to 1", "model")
    return Check("sampling", OK, "validation: " + settings.describe(), group="model")


# ------------------------------------------------------------------------------------------- entry point

def run_doctor(preset: Preset, system: bool = True, *, env: Mapping[str, str] | None = None,
               gpu: NvmlInfo | None = None, scan: bool = True, processes: int = 1) -> DoctorReport:
    """All checks for a preset. `gpu` replaces the NVML query (tests); `scan` lets the fit estimate use the
    dataset scan for the largest bucket (else the preset's resolution / num_frames); `processes`: a
    data-parallel run's process count (the fit adds NCCL's buffers)."""
    env = os.environ if env is None else env
    report = DoctorReport(preset)

    def run(name: str, group: str, fn, *args) -> list[Check]:
        # a preset with odd values (validate.py reports them) must give a check, never a traceback
        try:
            out = fn(*args)
        except Exception as e:
            return [Check(name, WARN, f"could not check: {type(e).__name__}: {e}", "run `hvtui check PRESET`",
                          group)]
        return out if isinstance(out, list) else [out]

    if system:
        if gpu is None:
            from hvtui.core.nvml import query
            gpu = query(env)
        report.gpu = gpu
        versions = package_versions()
        report.checks += [check_python(), check_packages(versions), check_gpu(gpu, _real(preset)),
                          check_torch_build(versions.get("torch"), gpu)]
        report.checks += run("base precision", "system", check_base_precision, preset, gpu)
        report.checks += run("host memory", "system", check_host_memory, preset)
        report.checks += run("disk", "system", check_disk, preset)
        report.checks.append(check_session(env))
        report.checks += run("trackers", "system", check_trackers, preset, env)
    report.checks += run("preset", "preset", check_preset, preset, env)
    model = run("model", "model", check_model_root, preset, env)
    report.checks += model
    try:
        report.components = resolve_components(preset, env)
    except Exception as e:
        report.checks.append(Check("components", FAIL, f"cannot resolve: {type(e).__name__}: {e}",
                                   "run `hvtui check PRESET` and fix the model keys", "model"))
    sources = source_checks(report.components)
    unfound = [c for c in report.components if not c.found and not c.builtin]
    if model and model[0].status == FAIL and unfound:   # one cause, one row
        fold_missing_components(model[0], unfound, preset)
        root = preset.resolve_path(preset.pretrained_model_name_or_path)
        inside = [c for c in sources if root is not None and str(root) + os.sep in c.detail]
        if inside:
            model[0].detail += "; " + ", ".join(c.detail.split(":", 1)[0] for c in inside) + " point(s) inside it"
            sources = [c for c in sources if c not in inside]
    report.checks += sources
    for comp in report.components:
        if comp not in unfound or not (model and model[0].status == FAIL):
            report.checks += run(comp.name, "model", component_checks, comp, preset)
    report.checks += [c for c in run("sampling", "model", check_sampling, preset, env) if c is not None]
    try:
        gpus = report.gpu.visible_gpus if report.gpu is not None and report.gpu.available else []
        card = min((g.mem_total or 0) for g in gpus) / GiB if gpus else None   # the cache sizes itself to it
        report.fit = estimate_memory(preset, largest_bucket(preset, scan=scan), processes=processes,
                                     card_gib=card or None)
    except Exception as e:   # a preset too broken to estimate: validate.py reports why
        report.checks.append(Check("fit", WARN, f"no estimate: {type(e).__name__}: {e}",
                                   "run `hvtui check PRESET` first", "fit"))
    else:
        if system:
            report.checks.append(check_fit(report.fit, preset, report.gpu))
    return report
