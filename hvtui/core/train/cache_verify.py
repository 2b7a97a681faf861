"""Cache entries are verified before they are trusted.

When a run starts (`drop_damaged`, on `plan_cache`'s plan), every existing entry's file is checked without reading
its tensors: a zero-byte, truncated or bad-header file, missing tensors, a dtype or shape that does not fit the
entry (the bucket's latent size, the model's dtype), or an entry stored under another key than its name (the source's
fingerprint: file path, size and mtime are in the key) is damaged. A damaged entry is deleted with its path and
the reason said, and encoded again in the caching phase like a missing one.

When an entry is read for a step (`load`), its tensors are checked for non-finite values and against the
checksum stored at write time (`stamp`): damage that keeps the file's shape (bit rot, garbled values) is found
there. The trainer skips that batch, names the file and deletes it (the next start encodes it again).
Entries written before checksums existed are checked for finite values only.
"""
from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path

KEY_META = "hvtui_key"          # the entry's cache key (its file name): the source fingerprint it was made for
CHECKSUM_META = "hvtui_crc32"   # CRC-32 over the tensors (sorted by name: name, dtype, shape, bytes)
MAX_HEADER = 100 << 20
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_ST_DTYPE = {"torch.bfloat16": "BF16", "torch.float16": "F16", "torch.float32": "F32"}
TEXT_KEYS = ("text", "text_2")
LATENT_KEYS = ("mean", "std")
I2V_KEYS = ("cond", "image", "first_frame")


class CacheEntryDamaged(Exception):
    def __init__(self, path: Path, why: str):
        self.path, self.why = Path(path), why
        super().__init__(f"cache entry {path} is damaged: {why}")


class NonFiniteEncoding(Exception):
    """An encoder gave NaN / inf for a clip or caption (an overflow, not a damaged file)."""

    def __init__(self, source: str, tensors: str):
        self.source = source
        super().__init__(f"encoding {source} gave non-finite {tensors} (NaN / inf)")


def checksum(tensors: dict) -> str:
    import torch

    crc = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        crc = zlib.crc32(f"{name}|{t.dtype}|{tuple(t.shape)}".encode(), crc)
        if t.numel():
            crc = zlib.crc32(memoryview(t.reshape(-1).view(torch.uint8).numpy()), crc)
    return f"{crc:08x}"


def stamp(path: Path, tensors: dict, metadata: dict | None) -> dict:
    """The metadata an entry is written with: the caller's, its key and its checksum."""
    return {**(metadata or {}), KEY_META: Path(path).stem, CHECKSUM_META: checksum(tensors)}


def read_header(path: Path) -> dict:
    """The safetensors header of `path`, checked against the file's size. CacheEntryDamaged if it is not a
    whole safetensors file."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if size == 0:
                raise CacheEntryDamaged(path, "the file is empty (0 bytes)")
            if len(head) < 8:
                raise CacheEntryDamaged(path, f"the file is truncated ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise CacheEntryDamaged(path, f"not a safetensors file, or truncated (header of {n} bytes in a "
                                              f"file of {size})")
            raw = f.read(n)
    except OSError as e:
        raise CacheEntryDamaged(path, f"cannot be read ({e.strerror})") from None
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise CacheEntryDamaged(path, f"its header is garbled ({type(e).__name__})") from None
    end = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = t["dtype"], [int(x) for x in t["shape"]], t["data_offsets"]
            count = 1
            for x in shape:
                count *= x
            if dtype not in _ITEMSIZE or b - a != count * _ITEMSIZE[dtype] or a < 0:
                raise ValueError(name)
        except (KeyError, TypeError, ValueError):
            raise CacheEntryDamaged(path, f"its header is garbled (tensor {name!r})") from None
        end = max(end, b)
    if size != 8 + n + end:
        raise CacheEntryDamaged(path, f"the file is {size} bytes, its header says {8 + n + end} (truncated or "
                                      "overwritten)")
    return header


def _geometry(bucket_key: str) -> tuple[int, int, int] | None:
    m = re.search(r"(\d+)x(\d+)@(\d+)", bucket_key or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def check_text(path: Path) -> None:
    header = read_header(path)
    _keys(path, header, TEXT_KEYS)
    for k in TEXT_KEYS:
        if len(header[k]["shape"]) != 2:
            raise CacheEntryDamaged(path, f"{k} has shape {header[k]['shape']}, expected [tokens, dim]")
    _key_matches(path, header)


def check_latent(path: Path, bucket_key: str, i2v: bool, dtype=None) -> None:
    """`dtype`: the model's torch dtype the latents were encoded in (checked when given)."""
    header = read_header(path)
    _keys(path, header, LATENT_KEYS + (I2V_KEYS if i2v else ()))
    mean, std = header["mean"], header["std"]
    if mean["shape"] != std["shape"] or len(mean["shape"]) != 4:
        raise CacheEntryDamaged(path, f"mean {mean['shape']} / std {std['shape']}: expected two equal "
                                      "[channels, frames, height, width] tensors")
    geo = _geometry(bucket_key)
    if geo is not None:   # the VAE: x16 spatial, x4 temporal (real and tiny model alike)
        w, h, f = geo
        want = [(f - 1) // 4 + 1, h // 16, w // 16]
        if mean["shape"][1:] != want:
            raise CacheEntryDamaged(path, f"latents of shape {mean['shape']} do not fit bucket {bucket_key} "
                                          f"(expected [*, {', '.join(map(str, want))}])")
    want_dtype = _ST_DTYPE.get(str(dtype)) if dtype is not None else None
    if want_dtype and mean["dtype"] != want_dtype:
        raise CacheEntryDamaged(path, f"latents are {mean['dtype']}, the model encodes {want_dtype}")
    if i2v and header["cond"]["shape"][1:] != mean["shape"][1:]:
        raise CacheEntryDamaged(path, f"cond {header['cond']['shape']} does not fit the latents {mean['shape']}")
    _key_matches(path, header)


def _keys(path: Path, header: dict, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in header]
    if missing:
        raise CacheEntryDamaged(path, f"tensor(s) {', '.join(missing)} missing")


def _key_matches(path: Path, header: dict) -> None:
    key = (header.get("__metadata__") or {}).get(KEY_META)
    if key is not None and key != Path(path).stem:
        raise CacheEntryDamaged(path, f"it holds the entry {key} (copied or renamed from another file), not the "
                                      "one its name says")


def usable(path: Path, check, damaged: list[str]) -> bool:
    """Is the entry at `path` there and intact? A damaged one is deleted (it is encoded again) and its
    reason appended to `damaged`."""
    if not path.is_file():
        return False
    try:
        check(path)
        return True
    except CacheEntryDamaged as e:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as u:
            e = CacheEntryDamaged(path, f"{e.why}; it cannot be deleted ({u.strerror}): delete it yourself")
            damaged.append(str(e))
            raise e from None
        damaged.append(f"{e}; encoding it again")
        return False


def nonfinite(tensors: dict) -> str:
    """The names of float tensors holding NaN / inf ("" when none). One reduction per tensor: the largest
    magnitude is NaN or inf exactly when some value is (amax propagates NaN); on a CPU that is ~0.2 ms for a
    480p x 61 bf16 latent, where isfinite(t).all() takes tens of ms in bf16."""
    import torch

    def finite(t) -> bool:
        return t.numel() == 0 or bool(torch.isfinite(t.abs().amax()))

    return ", ".join(k for k, t in tensors.items() if t.is_floating_point() and not finite(t))


def drop_damaged(plan, i2v: bool, dtype=None) -> list[str]:
    """Check every entry `plan` (cache.plan_cache) found on disk; delete the damaged ones (a new plan then
    encodes them). Returns what was wrong with each, for the log. CacheEntryDamaged when one cannot be
    deleted."""
    todo_text, todo_latents = set(plan.todo_text), {s.id for s in plan.todo_latents}
    damaged: list[str] = []
    for caption, path in plan.text_paths.items():
        if caption not in todo_text:
            usable(path, check_text, damaged)
    for s in plan.samples:
        if s.id not in todo_latents:
            usable(plan.latent_paths[s.id], lambda p, s=s: check_latent(p, s.bucket_key, i2v, dtype), damaged)
    return damaged


def load(path: Path) -> dict:
    """The tensors of an entry, checked: finite values, and the stored checksum when it has one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise CacheEntryDamaged(path, "the file is gone (deleted while the run was using it)") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CacheEntryDamaged(path, f"cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    bad = nonfinite(tensors)
    if bad:
        raise CacheEntryDamaged(path, f"{bad} hold(s) non-finite values (NaN / inf)")
    want = meta.get(CHECKSUM_META)
    if want is not None and checksum(tensors) != want:
        raise CacheEntryDamaged(path, "its tensors differ from when it was written (checksum mismatch)")
    return tensors


def discard(path: Path) -> None:
    """Delete a damaged entry found while training: the next start encodes it again."""
    try:
        Path(path).unlink()
    except OSError:
        pass
