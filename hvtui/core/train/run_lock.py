"""One live run per output_dir: OUTPUT_DIR/run.lock, held with flock(2) by the run's process (rank 0 of a
data-parallel run: its processes are one run) from before it reads the folder until it ends. The OS releases
the lock when the process dies, however it dies (SIGKILL, OOM killer, power loss of a remote client), so
no stale lock ever needs clearing. A second run, `--fresh` and `--resume` are refused while it is held, and
the file says who holds it (pid, host, start time, command), which `hvtui --attach` shows.

A refused start leaves the folder as it found it: a lock file (and folders) that `acquire` created are
removed again by `release(discard=True)`. Removing a lock file races with a process that opened it just
before: `acquire` therefore checks, once it holds the lock, that the file it locked is still the one at the
path, and tries again if not.
Works on local disks and NFS (Linux emulates flock there with POSIX locks).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "run.lock"


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: float
    command: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)) if self.started else "?"
        here = self.host == socket.gethostname()
        return (f"pid {self.pid}" + ("" if here else f" on {self.host}") + f", since {when}"
                + (f" ({self.command})" if self.command else ""))


class RunLocked(Exception):
    """Another live run holds the output_dir."""

    def __init__(self, output_dir: Path, holder: Holder | None):
        self.output_dir, self.holder = Path(output_dir), holder
        who = holder.describe() if holder else "another process"
        super().__init__(f"{output_dir} is in use by a live run: {who}")


def _command() -> str:
    argv = [os.path.basename(sys.argv[0]) if sys.argv else "python", *sys.argv[1:]]
    if argv[0] in ("__main__.py", "-m") or argv[0].startswith("python"):
        argv[0] = "hvtui"
    return " ".join(argv)[:300]


def _parse(text: str) -> Holder | None:
    try:
        d = json.loads(text)
        return Holder(int(d["pid"]), str(d.get("host", "")), float(d.get("started", 0)), str(d.get("command", "")))
    except (ValueError, KeyError, TypeError):
        return None


def holder(output_dir: Path) -> Holder | None:
    """Who holds OUTPUT_DIR's lock now, or None when no live run does (no lock file, or nobody holds it).
    A shared-lock probe: it never blocks, and never disturbs the holder."""
    path = Path(output_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            return _parse(text) or Holder(0, "?", 0.0, "")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class RunLock:
    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        self._fd: int | None = None
        self._created_file = False
        self._created_dirs: list[Path] = []
        self._previous = b""   # what the file said before (the last run's holder): put back by a refused start
        self._previous_times = (0, 0)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (creating OUTPUT_DIR if needed) or raise RunLocked. OSError: the folder cannot be
        written (the caller names it)."""
        missing = [d for d in (self.output_dir, *self.output_dir.parents) if not d.exists()]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._created_dirs = missing   # deepest first: the order rmdir needs
        for _ in range(20):
            created = False
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                created = True
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDWR)
                except FileNotFoundError:   # removed between the two opens: try again
                    continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise RunLocked(self.output_dir, holder(self.output_dir)) from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:   # the file was removed (a refused start cleaning up) after we opened it
                os.close(fd)
                continue
            self._fd, self._created_file = fd, created
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3),
                    "command": _command()}
            self._previous = os.pread(fd, 1 << 16, 0)
            st = os.fstat(fd)
            self._previous_times = (st.st_atime_ns, st.st_mtime_ns)
            self._write(json.dumps(info) + "\n")
            return
        raise OSError(errno.EAGAIN, "the lock file keeps changing under this process", str(self.path))

    def _write(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        assert self._fd is not None   # written only while the lock file is open
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self, discard: bool = False) -> None:
        """Let go. `discard`: the run was refused before it wrote anything: remove the lock file and the
        folders acquire created (those still empty), so the folder is as it was."""
        if self._fd is None:
            return
        if discard:
            if not self._created_file:
                try:
                    self._write(self._previous)
                    os.utime(self._fd, ns=self._previous_times)
                except OSError:
                    pass
            if self._created_file:
                try:
                    self.path.unlink()
                except OSError:
                    pass
            for d in self._created_dirs:
                try:
                    d.rmdir()
                except OSError:
                    break
        os.close(self._fd)   # closing the last descriptor releases the flock
        self._fd = None
