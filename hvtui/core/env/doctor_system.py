"""The doctor's questions about this machine: Python, package versions (importlib.metadata: torch is never
imported), the GPU through NVML, torch's CUDA build against the driver, the base model's precision on this
card, host memory, free disk where the run writes, the terminal session, and `--gpus N`."""
from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from hvtui.core.env.doctor_report import FAIL, OK, WARN, Check, real_model, version_tuple
from hvtui.core.env.fit import GiB
from hvtui.core.env.nvml import NvmlInfo
from hvtui.core.formatting import gib
from hvtui.core.preset.schema import Preset
from hvtui.core.train import quantize

# (distribution, minimum version, why): minimums follow pyproject.toml
PACKAGES = (("torch", "2.5", ""), ("diffusers", "0.42", "the HunyuanVideo 1.5 classes"),
            ("transformers", "4.57", "Qwen2.5-VL text model"), ("peft", "0.19", "LoRA next to torchao >= 0.18"),
            ("accelerate", "1.0", ""))


# ------------------------------------------------------------------------------------------- system

def check_python() -> Check:
    # No "too old" branch: pyproject requires 3.11 (tomllib), so an older Python never gets this far.
    v = platform.python_version()
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
           for n, m, why in PACKAGES if (ver := versions.get(n)) and version_tuple(ver) < version_tuple(m)]
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
    if cuda and info.cuda and version_tuple(cuda)[:2] > version_tuple(info.cuda)[:2]:
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
    if version_tuple(ao) < version_tuple(quantize.TORCHAO_MIN):
        return f"{mode} needs torchao >= {quantize.TORCHAO_MIN}; torchao {ao} is installed"
    if torch_v is not None and version_tuple(torch_v) < version_tuple(quantize.TORCH_MIN):
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
        name, cc = gpus[0]
        assert cc is not None    # an unknown capability returned above
        return Check("base precision", OK, f"fp8-torchao: float8 transformer blocks, FP8 matmuls on "
                     f"{name} (compute capability {cc[0]}.{cc[1]})", group="system")
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
    if real_model(preset):
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
    fail_below, warn_below = (2 * GiB, 20 * GiB) if real_model(preset) else (0.05 * GiB, 0.2 * GiB)
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

