"""Bounds that `hvtui check` puts on values the run could not take: paths the OS cannot hold, numbers that are
not finite, a clip that would not fit in this machine's memory once decoded, and an output_dir inside a
dataset folder (the run's sample videos would become training clips at the next scan).
Ranges of single numbers live with each field (schema.py's `meta`); these need more than one value, or the OS.
Everything here is stdlib and stat()-cheap, as check.py's rule asks.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

TOP_PATHS = ("output_dir", "text_encoder_path", "vision_encoder_path", "pretrained_model_name_or_path",
             "dataset_backend_config")
DATASET_PATHS = ("instance_data_dir", "metadata_file", "cache_dir")
RAM_SHARE_WARN = 0.5   # a decoded clip over half the RAM: a warning; over all of it: an error


def _limit(name: str, default: int) -> int:
    try:
        return int(os.pathconf("/", name))
    except (OSError, ValueError):
        return default


NAME_MAX = _limit("PC_NAME_MAX", 255)     # bytes in one file or folder name
PATH_MAX = _limit("PC_PATH_MAX", 4096)    # bytes in a whole path, with its terminating NUL


def path_problem(value: str, resolved: str | None = None) -> tuple[str, str] | None:
    """(what is wrong, how to fix) when the OS cannot take `value` as a path, else None. `resolved`: the
    path as the run will use it (relative paths joined to the preset's folder)."""
    if "\x00" in value:
        return "contains a NUL byte (\\0), which no path can hold", "remove it"
    for part in value.split("/"):
        n = len(os.fsencode(part))
        if n > NAME_MAX:
            return (f"the name {part[:24]!r}... is {n} bytes long; a file or folder name may have at most {NAME_MAX}",
                    "shorten that name")
    for text in (value, resolved or ""):
        n = len(os.fsencode(text))
        if n >= PATH_MAX:
            return (f"is {n} bytes long{' once joined to the preset folder' if text is resolved else ''}; this "
                    f"system's paths hold at most {PATH_MAX - 1}", "use a shorter path")
    return None


def not_finite(value) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return None


def decoded_clip_bytes(resolution: int, frames: int) -> int:
    """A clip as caching holds it: uint8 frames at the bucket's pixel area (about resolution^2 * 16/9 for any
    aspect ratio), plus the float copy the VAE takes (2 bytes a value: bf16)."""
    area = resolution * resolution * 16 / 9
    return int(area * 3 * frames * (1 + 2))


def inside(child: Path, parent: Path) -> bool:
    """Is `child` the folder `parent` or below it (symlinks followed)?"""
    try:
        c, p = Path(os.path.realpath(child)), Path(os.path.realpath(parent))
    except (OSError, ValueError):
        return False
    return c == p or p in c.parents


# --- checks on a validate._Checker `c` (error / warn / good / bad) and a Preset `p` -------------------------
def check_paths(c, p) -> None:
    """Every path value the OS could not take: an error at its line, and no further check stats it."""
    places: list[tuple[tuple[str | int, ...], Any]] = [((key,), getattr(p, key, None)) for key in TOP_PATHS
                                                       if key != "dataset_backend_config"]
    places += [(("datasets", k, key), getattr(d, key, None)) for k, d in enumerate(p.datasets)
               for key in DATASET_PATHS]
    for path, value in places:
        if not isinstance(value, str) or not c.good(path) or value.startswith("builtin:"):
            continue
        problem = path_problem(value, _joined(p, value))
        if problem:
            c.bad.add(path)
            c.error(path, *problem)


def _joined(p, value: str) -> str:
    """`value` as the run will use it, without touching the disk (no resolve: it may not be a usable path)."""
    if "\x00" in value:
        return value
    q = Path(value).expanduser()
    return str(q if q.is_absolute() or p.source is None else Path(p.source).parent / q)


def check_clip_memory(c, p) -> None:
    """A training clip that, decoded for caching, would not fit in this machine's memory."""
    ram = ram_bytes()
    if not ram:
        return
    for k, d in enumerate(p.datasets):
        base = ("datasets", k)
        video = getattr(d, "video", None)
        if d.dataset_type != "video" or getattr(d, "disabled", False) or video is None:
            continue
        if not c.good(base + ("resolution",), base + ("video", "num_frames")):
            continue
        if not isinstance(d.resolution, int) or not isinstance(video.num_frames, int):
            continue
        need = decoded_clip_bytes(d.resolution, video.num_frames)
        if need > ram * RAM_SHARE_WARN:
            gib = need / 2**30
            text = (f"resolution {d.resolution} x {video.num_frames} frames: one clip takes about {gib:.1f} GiB "
                    f"to decode and encode, {'more than' if need > ram else 'over half of'} this machine's "
                    f"{ram / 2**30:.0f} GiB of memory")
            fix = "lower resolution or num_frames (HunyuanVideo 1.5 trains at 480 / 720, 61-121 frames)"
            (c.error if need > ram else c.warn)(base + ("resolution",), text, fix)


def check_output_outside_datasets(c, p) -> None:
    """output_dir inside a dataset folder: the run's validation mp4s would be scanned as clips next time."""
    if not c.good(("output_dir",)) or not isinstance(p.output_dir, str) or not p.output_dir.strip():
        return
    out = p.resolve_path(p.output_dir)
    for k, d in enumerate(p.datasets):
        key = ("datasets", k, "instance_data_dir")
        if d.disabled or d.dataset_type not in ("video", "image") or not c.good(key):
            continue
        if not isinstance(d.instance_data_dir, str) or not d.instance_data_dir.strip():
            continue
        folder = p.resolve_path(d.instance_data_dir)
        if inside(out, folder):
            c.error(("output_dir",), f"{out} is inside the dataset folder {folder} ({c.raw_key(key)}): the run's "
                    "sample videos would be read as training clips at the next run",
                    "put output_dir outside the dataset folder (e.g. next to it)")
