"""Reading the run that is in an output_dir: OUTPUT_DIR/events.jsonl from its first line, then as it grows.

The TUI's Train pane shows it at start-up and `hvtui --attach` follows it. Each header line marks a process
that started writing (a run, or a resume of it); it comes out as a ProcessStart record so a view can tell a
resumed run (which continues the same history) from a new one. A file that is replaced (a fresh start moves
the earlier run's file aside) is read again from its first line. A long run's file is read in slices, so a
UI that polls it never stalls on one big read.
"""
from __future__ import annotations

import codecs
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hvtui.core.run.events import Event
from hvtui.core.run.runlog import parse_line

MAX_READ = 4 << 20        # bytes per poll: ~20k events, a few tens of ms to parse


@dataclass(frozen=True)
class ProcessStart:
    """A header line of events.jsonl: the process `pid` began writing at `time`. Shaped like an Event
    (kind, data, time) so views fold it with the events."""
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = 0.0
    kind: str = "process_start"


class RunFollower:
    """poll() -> the events (and ProcessStart records) written since the last poll; never raises for a
    missing, replaced or half-written file."""

    def __init__(self, path: Path, max_read: int = MAX_READ):
        self.path = Path(path)
        self.max_read = max_read
        self.pid: int | None = None      # the process that wrote the newest header
        self.caught_up = False           # the last poll reached the end of the file
        self._pos = 0
        self._inode: int | None = None
        self._partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")   # a slice may split a character

    def skip_to_end(self) -> None:
        """Follow only what is written from now on."""
        try:
            st = self.path.stat()
        except OSError:
            return
        self._pos, self._inode, self._partial = st.st_size, st.st_ino, ""
        self._decoder.reset()

    def poll(self) -> list:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino != self._inode or st.st_size < self._pos:
                    # another file under this name: a fresh run replaced the earlier one's; read it whole
                    self._pos, self._inode, self._partial = 0, st.st_ino, ""
                    self._decoder.reset()
                f.seek(self._pos)
                chunk = f.read(self.max_read)
                self._pos += len(chunk)
                self.caught_up = self._pos >= st.st_size
        except OSError:
            self.caught_up = True
            return []
        text = self._partial + self._decoder.decode(chunk)
        lines = text.split("\n")
        self._partial = lines.pop()   # "" when the chunk ended with a newline
        out: list = []
        for line in lines:
            header = _header(line)
            if header is not None:
                self.pid = header.get("pid") if isinstance(header.get("pid"), int) else None
                out.append(ProcessStart({"pid": self.pid}, float(header.get("time") or 0.0)))
                continue
            try:
                event = parse_line(line)
            except (ValueError, KeyError, TypeError):   # a line another program wrote: not ours to show
                continue
            if event is not None:
                out.append(event)
        return out

    def stale_for(self) -> float:
        """Seconds since the file last changed (0 when it cannot be read)."""
        import time

        try:
            return max(0.0, time.time() - self.path.stat().st_mtime)
        except OSError:
            return 0.0


def _header(line: str) -> dict | None:
    if '"hvtui_events"' not in line:
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) and obj.get("hvtui_events") and "kind" not in obj else None


def process_alive(pid: int | None) -> bool | None:
    """Whether a process with this pid exists on this machine (None: unknown). A run written from another
    host of a shared disk reads as gone, so callers also wait until its file has been quiet a while."""
    if not pid:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # someone else's process
        return True
    except OSError:
        return None
    return True


def ended_without_final_event(follower: RunFollower, quiet_s: float) -> bool:
    """The writer of a run that has no final event is gone: its process no longer exists and the file has
    not changed for `quiet_s` seconds (killed -9, out of memory, the machine rebooted)."""
    return follower.caught_up and process_alive(follower.pid) is False and follower.stale_for() >= quiet_s


def gone_event(pid: int | None) -> list[Event]:
    """What a view shows for such a run: it did not stop cleanly; its newest complete checkpoint still holds."""
    return [Event("log", {"level": "warning",
                          "message": f"the run's process (pid {pid}) ended without a final event (killed?); "
                                     "its newest complete checkpoint can be resumed"}),
            Event("state", {"state": "interrupted"})]


def read_events(path: Path, max_read: int = MAX_READ) -> list[Event]:
    """Every event in an events.jsonl written so far (header lines left out; a half-written last line waits)."""
    follower = RunFollower(path, max_read=max_read)
    out: list[Event] = []
    while True:
        out += [e for e in follower.poll() if isinstance(e, Event)]
        if follower.caught_up:
            return out
