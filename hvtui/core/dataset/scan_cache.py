"""The scan's metadata cache: probe results keyed by what decides them, so a rescan reads only what changed.

Where: `<cache_dir>/.hvtui-scan-<hash>.json` when the dataset sets `cache_dir` (relative to the preset),
else `$XDG_CACHE_HOME/hvtui/scan/<hash>.json` (default `~/.cache/hvtui/scan/`). `<hash>` is a short hash of the
resolved dataset folder (and the dataset type, for image datasets). hvtui never writes into the dataset folder
itself: it may be read-only or shared.

Cached: header facts (size, fps, frame count, display geometry, or why the file is unusable) and the parsed
text of caption files. A verdict depends on the file, on the code that judged it and on the decoder, so:
- each media entry is keyed by its relative path and the file's identity (size, mtime, inode): a file replaced
  or touched is read again;
- the whole cache is keyed by `verdict_identity()`: the probe rules (CACHE_VERSION), the hvtui version and the
  PyAV version (whose wheel carries its FFmpeg). After an upgrade or a downgrade every file is read again, so a
  verdict one decoder gave is never reused under another;
- results that can change without the file changing (a permission error) or that were not the file's fault
  (an error raised by hvtui or a library) are never stored (probe results marked "nocache").
Frame rules, buckets and caption strategies are applied fresh on every scan, so editing a caption or the preset
needs no reprobe. A cache that cannot be read is ignored; one that cannot be written is a warning, never an
error.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
from pathlib import Path

CACHE_VERSION = 4          # bump when probe.py or caption reading starts answering differently (old results are reread)


def pyav_version() -> str:
    """The installed PyAV's version without importing it (import av costs ~0.2 s; a cached rescan needs none)."""
    try:
        spec = importlib.util.find_spec("av")
        folder = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
        if folder:
            m = re.search(r'__version__\s*=\s*["\']([^"\']+)', Path(folder, "about.py").read_text())
            if m:
                return m.group(1)
    except (OSError, ImportError, ValueError):
        pass
    try:
        import av

        return str(av.__version__)
    except ImportError:
        return "none"


def verdict_identity() -> str:
    """What, besides the file, decides a probe's verdict: the probe rules, hvtui and the decoder."""
    from hvtui import __version__

    return f"rules {CACHE_VERSION}, hvtui {__version__}, PyAV {pyav_version()}"


def cache_path(root: Path, cache_dir: Path | None, kind: str = "video") -> Path:
    key = str(root.resolve()) + ("" if kind == "video" else f"\0{kind}")
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    if cache_dir is not None:
        return cache_dir / f".hvtui-scan-{digest}.json"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hvtui" / "scan" / f"{digest}.json"


class ScanCache:
    def __init__(self, path: Path, entries: dict[str, list] | None = None, captions: dict[str, list] | None = None):
        self.path = path
        # Lookups are done by the scan's per-file loop directly on these dicts (a method call per file costs).
        self.entries: dict[str, list] = entries or {}     # media relpath -> [size, mtime_ns, inode, probe]
        # .txt relpath -> [size, mtime_ns, [captions, warnings, problem]]
        self.captions: dict[str, list] = captions or {}
        self.dirty = False

    @classmethod
    def load(cls, path: Path) -> ScanCache:
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
            entries, captions = data.get("entries"), data.get("captions")
            if (data.get("version") == CACHE_VERSION and data.get("identity") == verdict_identity()
                    and isinstance(entries, dict) and isinstance(captions, dict)
                    and all(type(v) is list and len(v) == 4 and type(v[3]) is dict for v in entries.values())
                    and all(type(v) is list and len(v) == 3 and type(v[2]) is list and len(v[2]) == 3
                            for v in captions.values())):
                return cls(path, entries, captions)
        except (OSError, ValueError, AttributeError):
            pass
        return cls(path)

    def put_caption(self, relpath: str, size: int, mtime_ns: int, value: list) -> None:
        self.captions[relpath] = [size, mtime_ns, value]
        self.dirty = True

    def put(self, relpath: str, size: int, mtime_ns: int, inode: int, probe: dict) -> None:
        if probe.get("nocache"):
            if self.entries.pop(relpath, None) is not None:
                self.dirty = True
            return
        self.entries[relpath] = [size, mtime_ns, inode, probe]
        self.dirty = True

    def prune(self, keep: set[str], keep_captions: set[str]) -> None:
        """Forget files that are gone."""
        for table, alive in ((self.entries, keep), (self.captions, keep_captions)):
            gone = [k for k in table if k not in alive]
            for k in gone:
                del table[k]
            if gone:
                self.dirty = True

    def save(self) -> str | None:
        """Write atomically if anything changed. Returns a warning on failure."""
        if not self.dirty:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".hvtui-scan-", suffix=".tmp", dir=self.path.parent)
            try:
                # json.dumps, not json.dump: dump() to a file runs the pure-Python encoder (10x slower)
                text = json.dumps({"version": CACHE_VERSION, "identity": verdict_identity(),
                                   "entries": self.entries, "captions": self.captions}, separators=(",", ":"))
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                os.chmod(tmp, 0o644)     # mkstemp makes it 0600; it is not secret
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as e:
            return f"metadata cache not saved to {self.path}: {e.strerror or e}; the next scan reads every file again"
        self.dirty = False
        return None
