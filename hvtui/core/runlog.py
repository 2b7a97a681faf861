"""OUTPUT_DIR/events.jsonl: the run's events, one JSON object per line, flushed per line.

The first line is a header with the schema version. `hvtui --attach` and the TUI replay and follow it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hvtui.core.events import SCHEMA_VERSION, Event

FILENAME = "events.jsonl"


class RunLogWriter:
    """A bus sink. Appends (a resumed run continues the same file after a new header line)."""

    def __init__(self, output_dir: Path):
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / FILENAME
        self._f = open(self.path, "a", encoding="utf-8", buffering=1)
        self._f.write(json.dumps({"schema": SCHEMA_VERSION, "hvtui_events": True, "pid": os.getpid(),
                                  "time": round(time.time(), 3)}) + "\n")

    def __call__(self, event: Event) -> None:
        if not self._f.closed:
            self._f.write(event.to_json() + "\n")

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def parse_line(line: str) -> Event | None:
    """An event, or None for a header, a blank or a half-written last line."""
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if "kind" not in obj:
        if obj.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise ValueError(f"events.jsonl schema {obj['schema']} is newer than this hvtui ({SCHEMA_VERSION})")
        return None
    return Event.from_json(line)


class RunLogFollower:
    """Reads new complete lines on each `poll()`; keeps a partial last line for the next poll."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._pos = 0
        self._partial = ""

    def poll(self) -> list[Event]:
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                f.seek(self._pos)
                chunk = f.read()
                self._pos = f.tell()
        except OSError:
            return []
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()   # "" when the chunk ended with a newline
        return [e for e in map(parse_line, lines) if e is not None]


def read_events(path: Path) -> list[Event]:
    return RunLogFollower(path).poll()
