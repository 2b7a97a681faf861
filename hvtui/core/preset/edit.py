"""Edit a preset file without losing its comments or key order (tomlkit), for the TUI's Config pane.

    doc = PresetDocument.open("presets/mine.toml")
    doc.set("learning_rate", 5e-5)
    doc.set("datasets.0.video.num_frames", 33)     # or "datasets[0].video.num_frames" (Problem.key style)
    print(doc.diff())                               # unified diff against the file on disk
    doc.save()                                      # atomic: temp file + rename

Reading for training stays with tomllib (`hvtui.core.preset.schema.load_preset`); this module only edits.
"""
from __future__ import annotations

import difflib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from hvtui.core.preset.schema import Preset, PresetError, preset_from_dict

_MISSING = object()


def parse_key_path(key_path) -> list[str | int]:
    """"datasets.0.video.num_frames", "datasets[0].video.num_frames" or a tuple -> ["datasets", 0, ...]."""
    if isinstance(key_path, (tuple, list)):
        return list(key_path)
    parts: list[str | int] = []
    for part in re.sub(r"\[(-?\d+)\]", r".\1", str(key_path)).split("."):
        if part == "":
            raise KeyError(f"bad key path {key_path!r}")
        parts.append(int(part) if re.fullmatch(r"-?\d+", part) else part)
    return parts


def _plain(value):
    """tomlkit items -> plain Python values."""
    return value.unwrap() if hasattr(value, "unwrap") else value


def _tomlable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_tomlable(v) for v in value]
    return value


class PresetDocument:
    def __init__(self, path: Path, text: str):
        self.path = Path(path)
        self.original = text
        try:
            self.doc = tomlkit.parse(text)
        except TOMLKitError as e:
            raise PresetError(f"{self.path}: not valid TOML: {e}") from None

    @classmethod
    def open(cls, path: str | Path) -> PresetDocument:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise PresetError(f"{path}: cannot read preset: {getattr(e, 'strerror', None) or e}") from None
        return cls(path, text)

    # --- reading
    @property
    def text(self) -> str:
        return tomlkit.dumps(self.doc)

    @property
    def dirty(self) -> bool:
        return self.text != self.original

    def _walk(self, parts: list, create: bool = False):
        """The container holding the last part."""
        node: Any = self.doc
        for i, part in enumerate(parts[:-1]):
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                if not create or isinstance(part, int):
                    where = ".".join(str(p) for p in parts[:i + 1])
                    raise KeyError(f"{where} is not in {self.path.name}") from None
                node[part] = tomlkit.table()
                node = node[part]
        return node

    def get(self, key_path, default=_MISSING):
        parts = parse_key_path(key_path)
        try:
            return _plain(self._walk(parts)[parts[-1]])
        except (KeyError, IndexError, TypeError):
            if default is _MISSING:
                raise KeyError(f"{'.'.join(map(str, parts))} is not set in {self.path.name}") from None
            return default

    # --- editing
    def set(self, key_path, value) -> None:
        """Set a value (None removes the key: TOML has no null). Tables on the way are created; a dataset
        index must exist (add datasets with `add_dataset`)."""
        parts = parse_key_path(key_path)
        if value is None:
            self.delete(parts)
            return
        self._walk(parts, create=True)[parts[-1]] = _tomlable(value)

    def delete(self, key_path) -> None:
        parts = parse_key_path(key_path)
        try:
            node = self._walk(parts)
            del node[parts[-1]]
        except (KeyError, IndexError):
            pass

    def add_dataset(self, table: dict) -> int:
        """Append a [[datasets]] table; returns its index."""
        if "datasets" not in self.doc:
            self.doc.append("datasets", tomlkit.aot())
        aot = self.doc["datasets"]
        aot.append(tomlkit.item(table))
        return len(aot) - 1

    # --- results
    def diff(self) -> str:
        """Unified diff of the edited text against the file as it was read (empty when unchanged). Both headers
        name the file as given (no git-style a/ b/ prefix, which doubled the slash of an absolute path):
        `--- PATH (saved)` and `+++ PATH (edited)`."""
        name = str(self.path)
        return "".join(difflib.unified_diff(self.original.splitlines(keepends=True),
                                            self.text.splitlines(keepends=True),
                                            fromfile=f"{name} (saved)", tofile=f"{name} (edited)"))

    def to_preset(self) -> Preset:
        return preset_from_dict(self.doc.unwrap(), source=self.path.resolve())

    def validate(self, env: dict | None = None):
        """Problems of the edited (unsaved) text, with its own line numbers."""
        from hvtui.core.preset.check import validate_text
        return validate_text(self.text, self.path, env=env)

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically (temp file in the same folder + rename); keeps the file's permissions."""
        target = Path(path) if path is not None else self.path
        text = self.text
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            if target.exists():
                os.chmod(tmp, target.stat().st_mode & 0o7777)
            else:   # a new preset: the umask decides (mkstemp's 0600 would stay)
                from hvtui.core.file_mode import follow_umask

                follow_umask(tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if path is None or target == self.path:
            self.original = text
        return target
