"""Captions for each clip, by `caption_strategy`.

- textfile: the `.txt` next to the clip with the same stem (`clip.mp4` -> `clip.txt`; a `.TXT` is found too).
  Every non-empty line is one caption (one is picked per step). A missing or empty file discards the clip
  with that reason.
- filename: the file stem with `_` read as spaces (`a_red_square.mp4` -> "a red square").
- instanceprompt: `instance_prompt` for every clip.
- metadata: a JSONL or CSV file (`metadata_file`; relative to the preset, else to the dataset folder) with a
  file column (file | file_name | filename | path | video | image, relative to the dataset folder, or
  absolute) and a caption column (caption | captions | text | prompt; a JSON list gives several captions).
  Clips not listed are discarded with that reason; rows naming missing files are warned about.

Text is read as UTF-8, unless a byte order mark says otherwise: a UTF-8, UTF-16 (LE/BE) or UTF-32 (LE/BE) BOM
picks that encoding and is dropped. Bytes that do not decode are replaced with U+FFFD and the file gets
a warning; a caption longer than MAX_CAPTION_CHARS is truncated with a warning (the text encoder reads at most
about 1,000 tokens), and only the first MAX_CAPTION_BYTES of a caption file are read.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

MAX_CAPTION_CHARS = 4000
MAX_CAPTION_BYTES = 64 * 1024
FILE_COLUMNS = ("file", "file_name", "filename", "path", "video", "image")
CAPTION_COLUMNS = ("caption", "captions", "text", "prompt")


@dataclass
class CaptionResult:
    captions: list[str] = field(default_factory=list)
    problem: str | None = None               # why there is no usable caption (discards the clip)
    warnings: list[str] = field(default_factory=list)


def _at(what: str | None) -> str:
    return f"{what}: " if what else ""


# Byte order marks, longest first (a UTF-32 LE BOM starts with the UTF-16 LE one).
BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
        (codecs.BOM_UTF8, "utf-8", "UTF-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"), (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"))


def _decode(raw: bytes, encoding: str, errors: str, final: bool) -> str:
    # final=False: an incomplete sequence at the end (the file was cut at a byte limit) is dropped, not an error.
    return codecs.getincrementaldecoder(encoding)(errors).decode(raw, final=final)


def decode_text(raw: bytes, what: str | None = None, truncated: bool = False) -> tuple[str, list[str]]:
    """Text of a caption/metadata file: UTF-8 unless a BOM names UTF-16 or UTF-32 (the BOM is dropped).
    `truncated`: `raw` is the start of a longer file, so a character cut at its end is dropped silently."""
    encoding, label, skip = "utf-8", "UTF-8", 0
    for bom, enc, name in BOMS:
        if raw.startswith(bom):
            encoding, label, skip = enc, name, len(bom)
            break
    body = raw[skip:]
    warnings = []
    try:
        text = _decode(body, encoding, "strict", final=not truncated)
    except UnicodeDecodeError as e:
        text = _decode(body, encoding, "replace", final=not truncated)
        offset = skip + e.start
        warnings.append(f"{_at(what)}not {label} (byte 0x{raw[offset]:02x} at offset {offset}); undecodable "
                        f"bytes were replaced with U+FFFD: save it as UTF-8")
    return text, warnings


def clean_captions(values: list[str], what: str | None = None) -> tuple[list[str], list[str]]:
    out, warnings = [], []
    for v in values:
        v = " ".join(v.split()) if "\n" in v or "\r" in v else v.strip()
        if not v:
            continue
        if len(v) > MAX_CAPTION_CHARS:
            warnings.append(f"{_at(what)}a caption of {len(v):,} characters was truncated to "
                            f"{MAX_CAPTION_CHARS:,} (the text encoder reads at most about 1,000 tokens)")
            v = v[:MAX_CAPTION_CHARS]
        out.append(v)
    return out, warnings


def read_caption_file(path: Path, size: int | None = None) -> CaptionResult:
    """Captions of one .txt; its warnings don't name the file (the caller does)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CAPTION_BYTES + 1)
    except PermissionError:
        return CaptionResult(problem=f"caption file {path.name} cannot be read: permission denied")
    except OSError as e:
        return CaptionResult(problem=f"caption file {path.name} cannot be read: {e.strerror}")
    warnings = []
    truncated = len(raw) > MAX_CAPTION_BYTES
    if truncated:
        total = size if size is not None else path.stat().st_size
        warnings.append(f"{total:,} bytes; only the first {MAX_CAPTION_BYTES // 1024} KiB were read")
        raw = raw[:MAX_CAPTION_BYTES]
    text, w = decode_text(raw, truncated=truncated)
    warnings += w
    caps, w = clean_captions(text.splitlines())
    warnings += w
    if not caps:
        return CaptionResult(problem=f"caption file {path.name} is empty", warnings=warnings)
    return CaptionResult(caps, warnings=warnings)


def caption_from_filename(path: Path) -> CaptionResult:
    text = " ".join(path.stem.replace("_", " ").split())
    if not text:
        return CaptionResult(problem=f"file name {path.name!r} gives an empty caption")
    return CaptionResult([text])


@dataclass
class MetadataCaptions:
    """A JSONL/CSV caption table, keyed by path relative to the dataset folder (posix)."""
    by_relpath: dict[str, list[str]] = field(default_factory=dict)
    by_name: dict[str, list[str] | None] = field(default_factory=dict)   # None: ambiguous basename
    warnings: list[str] = field(default_factory=list)
    source: str = ""

    def lookup(self, relpath: str) -> list[str] | None:
        caps = self.by_relpath.get(relpath)
        if caps is None:
            caps = self.by_name.get(relpath.rsplit("/", 1)[-1])
        return caps


def _pick(row: dict, names: tuple[str, ...]):
    lowered = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    for n in names:
        if n in lowered and lowered[n] not in (None, ""):
            return lowered[n]
    return None


def load_metadata(path: Path, root: Path) -> MetadataCaptions:
    """Read a JSONL (or JSON list) or CSV caption table. Raises OSError if it cannot be read."""
    raw = path.read_bytes()
    text, warnings = decode_text(raw, path.name)
    meta = MetadataCaptions(warnings=warnings, source=path.name)
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        for i, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            rows.append((i, row))
    else:
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                data = json.loads(stripped)
                rows = [(i + 1, r) for i, r in enumerate(data) if isinstance(r, dict)]
            except json.JSONDecodeError as e:
                meta.warnings.append(f"{path.name}: not valid JSON ({e.msg} at line {e.lineno})")
        else:
            for i, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    meta.warnings.append(f"{path.name}:{i}: not a JSON object ({e.msg}); line skipped")
                    continue
                if isinstance(obj, dict):
                    rows.append((i, obj))
                else:
                    meta.warnings.append(f"{path.name}:{i}: not a JSON object; line skipped")
    root_resolved = root.resolve()
    for lineno, row in rows:
        file = _pick(row, FILE_COLUMNS)
        cap = _pick(row, CAPTION_COLUMNS)
        if file is None:
            meta.warnings.append(f"{path.name}:{lineno}: no file column ({' | '.join(FILE_COLUMNS)}); row skipped")
            continue
        values = cap if isinstance(cap, list) else [cap] if cap is not None else []
        caps, w = clean_captions([str(v) for v in values if v is not None], f"{path.name}:{lineno}")
        meta.warnings += w
        p = Path(str(file))
        if p.is_absolute():
            try:
                rel = p.resolve().relative_to(root_resolved).as_posix()
            except ValueError:
                rel = p.as_posix()
        else:
            rel = Path(os.path.normpath(p)).as_posix()
        if rel in meta.by_relpath:
            meta.warnings.append(f"{path.name}:{lineno}: {rel} is listed again; the captions were added")
            meta.by_relpath[rel] = meta.by_relpath[rel] + caps
        else:
            meta.by_relpath[rel] = caps
        name = rel.rsplit("/", 1)[-1]
        meta.by_name[name] = None if name in meta.by_name else caps
    return meta


def resolve_metadata_path(metadata_file: str, preset, root: Path) -> Path | None:
    """Relative to the preset file first, then to the dataset folder."""
    candidates = []
    p = Path(metadata_file).expanduser()
    if p.is_absolute():
        candidates.append(p)
    else:
        resolved = preset.resolve_path(metadata_file)
        if resolved is not None:
            candidates.append(resolved)
        candidates.append(root / p)
    return next((c for c in candidates if c.is_file()), None)
