"""A checkpoint's manifest: the size and SHA-256 of every file in it, written last as the COMPLETE marker.

A checkpoint is trusted only when every file it lists is there with its size and checksum: a truncated,
overwritten or garbled file (which may still unpickle: a garbled optimizer.pt loaded fine and the run died
of NaN two steps later) is found before anything is loaded. Checkpoints from before manifests have "STEP\n"
in their marker; for those only the files' presence is checked (`verify` says so).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

REQUIRED = ("optimizer.pt", "scheduler.pt", "state.json")   # + a LoRA file and rank 0's RNG (legacy check)
_CHUNK = 1 << 22


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def build(folder: Path, step: int, skip: tuple[str, ...] = ()) -> str:
    """The marker text for `folder` (every regular file in it except `skip`)."""
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256(p)}
             for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name not in skip}
    return json.dumps({"step": step, "files": files}, indent=1) + "\n"


def read(marker: Path) -> dict | None:
    """The manifest in a marker, or None for a marker from before manifests ("STEP\n"). ValueError: the
    marker itself is damaged."""
    text = marker.read_text(encoding="utf-8", errors="replace").strip()
    if text.isdigit():
        return None
    try:
        data = json.loads(text)
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a table")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{marker} is damaged (not a checkpoint manifest: {type(e).__name__})") from None
    return data


def verify(folder: Path, marker_name: str, lora_names: tuple[str, ...], checksums: bool = True) -> str | None:
    """Why the checkpoint in `folder` cannot be trusted (naming the file), or None. `checksums` False: sizes
    only (cheap, for listings)."""
    folder = Path(folder)
    try:
        manifest = read(folder / marker_name)
    except (OSError, ValueError) as e:
        return str(e) if isinstance(e, ValueError) else f"{folder / marker_name} cannot be read: {e.strerror}"
    if manifest is None:   # an older checkpoint: no checksums to compare
        missing = [n for n in REQUIRED if not (folder / n).is_file()]
        if not any((folder / n).is_file() for n in lora_names):
            missing.append(lora_names[0])
        if not any(folder.glob("rng_state_*.pt")):
            missing.append("rng_state_0.pt")
        return f"{folder / missing[0]} is missing" if missing else None
    for name, want in manifest["files"].items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path} is missing"
        if size != want.get("size"):
            return f"{path} has {size} bytes, {want.get('size')} when it was saved (truncated or overwritten)"
        if checksums and sha256(path) != want.get("sha256"):
            return f"{path} differs from when it was saved (its SHA-256 does not match the manifest)"
    return None
