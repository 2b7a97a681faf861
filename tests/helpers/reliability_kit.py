"""Tools for the reliability suite (tests/core/train/test_reliability_*.py, bench/reliability.py): small real
filesystems (a tmpfs, root only: the tests that need one are skipped with the reason otherwise), filling one, turning an
output folder read-only under a live run, and in-process runs whose events can be read while they train."""
from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from hvtui.core.preset.schema import load_preset
from hvtui.core.run.bus import Bus
from hvtui.core.run.session import RunOptions, Session


def mount_problem() -> str | None:
    """Why this process cannot mount a tmpfs (the reason a test is skipped), or None."""
    if os.geteuid() != 0:
        return f"mounting a tmpfs needs root (id -u is {os.geteuid()})"
    probe = Path(f"/tmp/hvtui-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True,
                           text=True)
        if r.returncode:
            return f"mount -t tmpfs failed here: {r.stderr.strip() or r.returncode}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    except OSError as e:
        return f"no mount command: {e}"
    finally:
        probe.rmdir()


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64m", **options):
    """A tmpfs at `path` (created) for the block; `options` like nr_inodes=8."""
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size}", *(f"{k}={v}" for k, v in options.items())])
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        _umount(path)


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)   # still busy: detach it


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(folder: Path, leave: int = 0) -> Path:
    """Take all but `leave` bytes of the disk holding `folder` with one file; returns it."""
    filler = folder / f"filler-{time.monotonic_ns()}"
    n = max(free(folder) - leave, 0)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if n:
            os.posix_fallocate(fd, 0, n)
    finally:
        os.close(fd)
    while free(folder) > leave + 4096:   # block rounding: top up in small pieces
        with open(filler, "ab") as f:
            f.write(b"\0" * min(free(folder) - leave, 1 << 20))
    return filler


@contextlib.contextmanager
def read_only_view(folder: Path, stage: Path):
    """Turn `folder` read-only under a live run: a copy of it on a tmpfs, remounted read-only and bound over
    it (a filesystem with files open for writing cannot be remounted read-only itself). Files the run already
    has open keep writing to the originals, underneath; new files and folders fail with EROFS. On exit the
    originals are visible again."""
    with tmpfs(stage, "64m"):
        subprocess.run(["cp", "-a", f"{folder}/.", f"{stage}/"], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(stage)], check=True)
        subprocess.run(["mount", "--bind", str(stage), str(folder)], check=True)
    try:
        yield folder
    finally:
        _umount(folder)


class InProcessRun:
    """A run in this process (its own thread): start, watch its events, join."""

    def __init__(self, preset_path: Path, **options):
        self.session = Session(load_preset(preset_path), options=RunOptions(**options), bus=Bus())

    def start(self) -> InProcessRun:
        self.session.start()
        return self

    def events(self) -> list:
        return self.session.bus.since(0)[0]

    def step(self) -> int:
        e = self.session.bus.latest("step")
        return e.get("step") if e is not None else 0

    def wait_for_step(self, k: int, timeout: float = 300.0) -> int:
        end = time.monotonic() + timeout
        while self.step() < k:
            if not self.session.alive:
                raise AssertionError(f"the run ended (exit {self.session.exit_code}) before step {k}: "
                                     f"{self.errors()}")
            if time.monotonic() > end:
                raise AssertionError(f"no step {k} after {timeout} s")
            time.sleep(0.02)
        return self.step()

    def join(self, timeout: float = 600.0) -> int:
        assert self.session.join(timeout), "the run did not end"
        return self.session.exit_code

    def errors(self) -> list[tuple[str, str]]:
        return [(e.get("message") or "", e.get("hint") or "") for e in self.events() if e.kind == "error"]

    def warnings(self) -> list[str]:
        return [e.get("message") or "" for e in self.events() if e.kind == "log" and e.get("level") == "warning"]


def run(preset_path: Path, **options) -> InProcessRun:
    r = InProcessRun(preset_path, **options).start()
    r.join()
    return r
