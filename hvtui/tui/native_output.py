"""Keeps C/Rust libraries that write straight to fds 1 and 2 (tokenizers' progress bars, c10 warnings) off
the UI while it runs, and says where the terminal is meanwhile (an $EDITOR must draw there, not in the log).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

# The terminal's fd while fds 1/2 are diverted (None when they are not).
TERMINAL_FD: list[int | None] = [None]


def native_output_log() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "hvtui" / "native-output.log"


@contextmanager
def native_output_diverted(log: Path):
    """Keep C/Rust libraries that write straight to fds 1 and 2 (tokenizers' progress bars, c10 warnings)
    from scribbling over the UI: fds 1 and 2 go to a log file while Textual draws on a duplicate of the
    terminal (its driver writes to sys.__stderr__). Yields the log path, or None when not diverted."""
    if not (sys.__stderr__ and sys.__stderr__.isatty()):
        yield None
        return
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        yield None
        return
    saved = {1: os.dup(1), 2: os.dup(2)}
    old_stderr, old_stdout = sys.__stderr__, sys.__stdout__
    terminal = os.fdopen(os.dup(2), "w", encoding=old_stderr.encoding, errors="replace", buffering=1)
    sys.__stderr__ = terminal   # type: ignore[misc]  # Final in typeshed; read by Textual's driver and App.suspend
    sys.__stdout__ = terminal   # type: ignore[misc]
    TERMINAL_FD[0] = terminal.fileno()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield log
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        sys.__stderr__, sys.__stdout__ = old_stderr, old_stdout   # type: ignore[misc]
        TERMINAL_FD[0] = None
        terminal.close()
