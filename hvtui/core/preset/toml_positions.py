"""Line numbers of keys in a TOML (or JSON) text, for `file:line:` messages.

tomllib returns plain dicts without positions, so this scans the text itself: table headers, [[array]]
headers (each one is the next index), dotted keys, quoted keys, inline tables and arrays, multi-line
strings. It assumes the text already parsed (tomllib / json succeeded) and never raises on odd input:
an unexpected character just ends the scan, so callers get fewer lines, not an exception.

A key path is a tuple like ("datasets", 0, "video", "num_frames"). JSON documents use the same paths
(a top-level JSON list gives (0, "id"), ...), because ':' is accepted wherever '=' is.
"""
from __future__ import annotations

import bisect
import json as _json

Path = tuple  # tuple[str | int, ...]

_BARE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _Scanner:
    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.n = len(text)
        self.newlines = [k for k, c in enumerate(text) if c == "\n"]
        self.lines: dict[Path, int] = {}
        # Each [[a.b]] header appends one element; remember how many each array path holds.
        self.aot_count: dict[Path, int] = {}
        # Header paths resolve through the latest element of arrays of tables: [[a]] then [a.b] -> (a, i, b).
        self.aot_latest: dict[Path, int] = {}

    # --- low level
    def line(self, pos: int) -> int:
        return bisect.bisect_right(self.newlines, pos - 1) + 1 if pos else 1

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < self.n else ""

    def skip_ws(self, newlines: bool = False) -> None:
        while self.i < self.n:
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#" or (c == "/" and self.peek(1) == "/"):
                while self.i < self.n and self.s[self.i] != "\n":
                    self.i += 1
            else:
                return

    def record(self, path: Path, pos: int) -> None:
        self.lines.setdefault(path, self.line(pos))

    # --- strings and keys
    def read_string(self) -> str:
        s, i = self.s, self.i
        if s.startswith('"""', i) or s.startswith("'''", i):
            q = s[i:i + 3]
            end = s.find(q, i + 3)
            end = self.n if end < 0 else end
            while s.startswith(q[0], end + 3):  # up to two quotes may close the string content
                end += 1
            self.i = end + 3
            return s[i + 3:end]
        q = s[i]
        j = i + 1
        out = []
        while j < self.n and s[j] != q and s[j] != "\n":
            if q == '"' and s[j] == "\\" and j + 1 < self.n:
                out.append(s[j:j + 2])
                j += 2
                continue
            out.append(s[j])
            j += 1
        self.i = j + 1
        text = "".join(out)
        if q == '"' and "\\" in text:
            try:
                text = _json.loads('"' + text + '"')
            except ValueError:
                pass
        return text

    def read_key(self) -> list[str]:
        """A dotted key: bare or quoted parts separated by dots."""
        parts: list[str] = []
        while True:
            self.skip_ws()
            c = self.peek()
            if c in ('"', "'"):
                parts.append(self.read_string())
            else:
                j = self.i
                while self.i < self.n and self.s[self.i] in _BARE:
                    self.i += 1
                if self.i == j:
                    raise ValueError("no key")
                parts.append(self.s[j:self.i])
            self.skip_ws()
            if self.peek() == ".":
                self.i += 1
                continue
            return parts

    # --- values
    def read_value(self, path: Path) -> None:
        self.skip_ws()
        c = self.peek()
        if c == "{":
            self.i += 1
            self.read_pairs(path, "}")
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                if self.peek() == "":
                    raise ValueError("unterminated array")
                self.record(path + (index,), self.i)
                self.read_value(path + (index,))
                index += 1
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        elif c in ('"', "'"):
            self.read_string()
        else:
            while self.i < self.n and self.s[self.i] not in ",]}\n#":
                self.i += 1

    def read_pairs(self, base: Path, close: str) -> None:
        """`key = value` (or JSON `"key": value`) pairs until `close` (inline table / JSON object)."""
        while True:
            self.skip_ws(newlines=True)
            if self.peek() == close:
                self.i += 1
                return
            if self.peek() == "":
                raise ValueError("unterminated table")
            start = self.i
            path = base + tuple(self.read_key())
            self.record(path, start)
            self.skip_ws()
            if self.peek() not in ("=", ":"):
                raise ValueError("expected = or :")
            self.i += 1
            self.read_value(path)
            self.skip_ws(newlines=True)
            if self.peek() == ",":
                self.i += 1

    # --- documents
    def resolve_header(self, parts: list[str]) -> Path:
        """A header path through the latest element of each array of tables on the way."""
        out: Path = ()
        for part in parts:
            out = out + (part,)
            if out in self.aot_latest:
                out = out + (self.aot_latest[out],)
        return out

    def json_document(self) -> None:
        self.read_value(())

    def document(self) -> None:
        table: Path = ()
        while self.i < self.n:
            self.skip_ws(newlines=True)
            if self.i >= self.n:
                return
            start = self.i
            if self.s.startswith("[[", self.i):
                self.i += 2
                parts = self.read_key()
                array = self.resolve_header(parts[:-1]) + (parts[-1],)
                index = self.aot_count.get(array, 0)
                self.aot_count[array] = index + 1
                self.aot_latest[array] = index
                table = array + (index,)
                self.record(array, start)
                self.record(table, start)
                self.i = self.s.find("]]", self.i) + 2 if "]]" in self.s[self.i:] else self.n
            elif self.peek() == "[":
                self.i += 1
                parts = self.read_key()
                table = self.resolve_header(parts)
                self.record(table, start)
                end = self.s.find("]", self.i)
                self.i = self.n if end < 0 else end + 1
            else:
                path = table + tuple(self.read_key())
                self.record(path, start)
                self.skip_ws()
                if self.peek() != "=":
                    raise ValueError("expected =")
                self.i += 1
                self.read_value(path)


def key_lines(text: str, json: bool = False) -> dict[Path, int]:
    """Map every key path found in TOML (or, with json=True, JSON) `text` to its 1-based line number.

    Best effort, never raises."""
    scanner = _Scanner(text)
    try:
        scanner.json_document() if json else scanner.document()
    except (ValueError, IndexError):
        pass
    return scanner.lines


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of `path`, else of its nearest recorded ancestor (a missing key points at its table)."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None
