"""OUTPUT_DIR/events.jsonl: the run's events, one JSON object per line, flushed per line.

The first line is a header with the schema version. `hvtui --attach` and the TUI replay and follow it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TextIO

from hvtui.core.run.events import SCHEMA_VERSION, Event

FILENAME = "events.jsonl"


class RunLogWriter:
    """A bus sink. Appends (a resumed run continues the same file after a new header line).

    `held`: events are kept in memory until `open()`, and dropped by `discard()`: a run refused at start
    (an earlier run there, another run holding the folder, a failed check) writes nothing into the output
    dir, while its console still shows every event. A failed write (full or read-only disk) never raises
    into the publisher: it goes to `on_error(exception, path)` once and the writer stops writing."""

    def __init__(self, output_dir: Path, held: bool = False, on_error=None):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / FILENAME
        self._f: TextIO | None = None
        self._held: list[Event] | None = [] if held else None
        self._on_error = on_error
        self.failed = False
        if not held:
            self.open()

    def open(self) -> None:
        """Start writing: the header, then what was held."""
        held, self._held = self._held or [], None
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._f = f = open(self.path, "a", encoding="utf-8", buffering=1)
            f.write(json.dumps({"schema": SCHEMA_VERSION, "hvtui_events": True, "pid": os.getpid(),
                                      "time": round(time.time(), 3)}) + "\n")
            for e in held:
                self._write(e)
        except OSError as e:
            self._fail(e)

    def discard(self) -> None:
        self._held = None

    def _write(self, event: Event) -> None:
        if event.kind == "step":
            from hvtui.core.train.write_guard import inject

            inject("events", self.path, event.data.get("step"))
        assert self._f is not None, "written only once open() has opened the file"
        self._f.write(event.to_json() + "\n")

    def _fail(self, e: Exception) -> None:
        self.failed = True
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass   # the buffered line cannot be written either
        if self._on_error is not None:
            self._on_error(e, self.path)

    def __call__(self, event: Event) -> None:
        if self._held is not None:
            self._held.append(event)
        elif self._f is not None and not self._f.closed and not self.failed:
            try:
                self._write(event)
            except OSError as e:   # ENOSPC, EROFS, EIO...: the trainer stops at its next step boundary
                self._fail(e)

    def close(self) -> None:
        self._held = None
        if self._f is not None and not self._f.closed:
            try:
                self._f.close()
            except OSError as e:
                if not self.failed:
                    self._fail(e)


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

