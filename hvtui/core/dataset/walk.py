"""Find a dataset's files (scan.py's first step), without opening any.

Each dataset's `instance_data_dir`, recursively, in sorted order. Videos: probe.VIDEO_SUFFIXES (mp4, mov,
mkv, webm, avi, ts, m2ts, ivf, mpg, ...); images (image datasets): .png .jpg .jpeg .webp .bmp; suffixes are
case-insensitive; other files are counted by suffix in the report. Names starting with "." are skipped (macOS
`._clip.mp4` resource forks, our own cache files). Symlinks are followed once: a symlinked folder already
visited (a loop, or the same folder twice) is skipped with a warning, and the same file reached twice is kept
once (the real file over a symlink to it) and the other path is discarded as a duplicate; a symlink that leads
back to itself is discarded as a symlink loop. A folder with a video's name (`clip.mp4/`) is scanned as a
folder, and a warning says so. FIFOs, sockets and devices with a video name are discarded unopened. A folder
that cannot be listed is a warning; bad files are discards with a reason (see probe.py); nothing a file
contains stops the scan.
"""
from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

from hvtui.core.dataset.model import (
    display,
)
from hvtui.core.dataset.probe import IMAGE_SUFFIXES, VIDEO_SUFFIXES


@dataclass(slots=True)
class Found:
    path: str                      # absolute path as walked (may pass through symlinks)
    relpath: str                   # relative to the dataset folder, "/"-separated
    kind: str
    size: int
    mtime_ns: int
    inode: int = 0
    folder: Path | None = None     # the containing folder (Path objects are built once per folder)
    stem: str = ""
    probe: dict | None = None
    cached: bool = False


class TextFile(NamedTuple):
    path: str
    relpath: str
    size: int
    mtime_ns: int


@dataclass
class Walk:
    files: list[Found] = field(default_factory=list)
    texts: dict[tuple[str, str], TextFile] = field(default_factory=dict)      # (folder, stem) -> .txt
    discards: list[tuple[str, str, str, str]] = field(default_factory=list)   # path, relpath, category, msg
    warnings: list[str] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)
    _texts_ci: dict | None = None

    def caption_file(self, folder: str, stem: str) -> TextFile | None:
        """The .txt for a clip: same folder, same stem; a different case (CLIP.TXT) as a fallback."""
        t = self.texts.get((folder, stem))
        if t is None:
            if self._texts_ci is None:
                self._texts_ci = {}
                for (f, s), v in self.texts.items():
                    self._texts_ci.setdefault((f, s.lower()), v)
            t = self._texts_ci.get((folder, stem.lower()))
        return t


def walk(root: Path, kind: str) -> Walk:
    out = Walk()
    media = IMAGE_SUFFIXES if kind == "image" else VIDEO_SUFFIXES
    st = root.stat()
    seen_dirs = {(st.st_dev, st.st_ino): "."}
    seen_files: dict[tuple[int, int], tuple[int, Found, bool]] = {}   # (dev, ino) -> (index, file, is link)
    stack: list[tuple[str, str]] = [(str(root), "")]
    files, texts, discards = out.files, out.texts, out.discards
    by_name = attrgetter("name")
    S_ISREG, S_ISDIR = stat.S_ISREG, stat.S_ISDIR
    # This loop runs once per file on every scan, cached or not: it is kept lean on purpose.
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=by_name)
        except OSError as err:
            out.warnings.append(f"{display(rel) or '.'}/: folder cannot be read ({err.strerror}); skipped")
            continue
        prefix = rel + "/" if rel else ""
        folder_path = None
        subdirs = []
        for e in entries:
            name = e.name
            if name[0] == ".":
                continue
            dot = name.rfind(".")
            suffix = name[dot:].lower() if dot > 0 else ""
            is_txt = suffix == ".txt"
            if is_txt or suffix in media:
                r = prefix + name
                try:
                    fst = e.stat()
                except FileNotFoundError:
                    if not is_txt:
                        target = os.readlink(e.path) if e.is_symlink() else "?"
                        discards.append((e.path, r, "broken_link", f"broken symlink to {display(target)}"))
                    continue
                except OSError as err:
                    if is_txt:
                        continue
                    if err.errno == errno.ELOOP:
                        discards.append((e.path, r, "broken_link", "a symlink loop: following it leads back to "
                                         "itself (fix: point the link at the real file, or remove it)"))
                    else:
                        discards.append((e.path, r, "unreadable", f"cannot stat: {err.strerror}"))
                    continue
                mode = fst.st_mode
                if S_ISREG(mode):
                    if is_txt:
                        texts[(rel, name[:dot])] = TextFile(e.path, r, fst.st_size, fst.st_mtime_ns)
                        continue
                    if folder_path is None:
                        folder_path = Path(folder)
                    found = Found(e.path, r, kind, fst.st_size, fst.st_mtime_ns, fst.st_ino, folder_path, name[:dot])
                    fkey = (fst.st_dev, fst.st_ino)
                    prev = seen_files.get(fkey)
                    if prev is None:
                        seen_files[fkey] = (len(files), found, e.is_symlink())
                        files.append(found)
                        continue
                    # the same file twice: keep the real file over a symlink to it, whichever came first
                    is_link = e.is_symlink()
                    keep, drop = (found, prev[1]) if prev[2] and not is_link else (prev[1], found)
                    if keep is found:
                        files[prev[0]] = found
                        seen_files[fkey] = (prev[0], found, is_link)
                    how = "a symlink to" if (prev[2] or is_link) else "a hard link of"
                    discards.append((drop.path, drop.relpath, "duplicate",
                                     f"{how} {display(keep.relpath)}, which is already included"))
                    continue
                if not S_ISDIR(mode):
                    # a FIFO would block the probe forever; sockets and devices are no better
                    if not is_txt:
                        discards.append((e.path, r, "not_video", "not a regular file (a FIFO, socket or device)"))
                    continue
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                r = prefix + name
                try:
                    dst = e.stat()
                except OSError as err:
                    out.warnings.append(f"{display(r)}/: folder cannot be read ({err.strerror}); skipped")
                    continue
                key = (dst.st_dev, dst.st_ino)
                if key in seen_dirs:
                    out.warnings.append(f"{display(r)}/: symlink to a folder already scanned "
                                        f"({display(seen_dirs[key])}/); skipped (a loop or the same folder twice)")
                    continue
                seen_dirs[key] = r
                subdirs.append((e.path, r))
                if suffix in media:
                    out.warnings.append(f"{display(r)}/: a folder with a {suffix} name, not a file: scanned as a "
                                        f"folder")
            else:
                out.ignored[suffix or "(no suffix)"] += 1
        stack.extend(reversed(subdirs))
    return out

