"""Commands from the UI (or a control file) to the trainer, honoured at step boundaries.

The UI thread calls `request(...)`; the trainer calls `take()` between steps and `wait_while_paused()`.
An attached TUI or a script reaches a headless run through `FileControl`: one file per command in
OUTPUT_DIR/control/, written atomically, read and deleted by the run between steps.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

COMMANDS = ("pause", "resume", "stop", "save", "sample")


class Control:
    def __init__(self, control_dir: Path | None = None):
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.stop_reason: str = ""
        self.file_control = FileControl(control_dir) if control_dir else None

    def request(self, command: str, reason: str = "") -> None:
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; valid: {', '.join(COMMANDS)}")
        if command == "pause":
            self._paused.set()
        elif command == "resume":
            self._paused.clear()
        elif command == "stop":
            self.stop_reason = self.stop_reason or reason or "stop requested"
            self._stop.set()
            self._paused.clear()
        else:
            with self._lock:
                self._pending.add(command)
        self._wake.set()

    def _poll_files(self) -> None:
        if self.file_control:
            for cmd in self.file_control.drain():
                self.request(cmd, reason="control file")

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def take(self) -> set[str]:
        """One-shot commands (save, sample) since the last call; also reads the control folder."""
        self._poll_files()
        with self._lock:
            out, self._pending = self._pending, set()
        return out

    def wait_while_paused(self, on_pause=None, poll: float = 0.2, until_command: bool = False) -> None:
        """Block the trainer while paused; returns at once on resume or stop. `until_command`: also when a
        one-shot command (save, sample) arrives, so the trainer can carry it out while paused (a checkpoint
        asked for during a pause is written then, not after the resume)."""
        self._poll_files()
        if not self._paused.is_set():
            return
        if on_pause:
            on_pause()
        while self._paused.is_set() and not self._stop.is_set():
            if until_command and self._pending:
                return
            self._wake.wait(poll)
            self._wake.clear()
            self._poll_files()


class FileControl:
    """Commands as files: OUTPUT_DIR/control/<time>-<id>.<command>. Writers rename into place atomically."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    def send(self, command: str) -> Path:
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; valid: {', '.join(COMMANDS)}")
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:6]}.{command}"
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(command)
        os.replace(tmp, self.dir / name)
        return self.dir / name

    def drain(self) -> list[str]:
        try:
            names = sorted(p for p in os.listdir(self.dir) if not p.startswith("."))
        except OSError:
            return []
        out = []
        for name in names:
            cmd = name.rsplit(".", 1)[-1]
            try:
                os.unlink(self.dir / name)
            except OSError:
                continue
            if cmd in COMMANDS:
                out.append(cmd)
        return out
