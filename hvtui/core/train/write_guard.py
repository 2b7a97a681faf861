"""Write failures of every kind are one path: a full disk, a read-only or unwritable folder, a quota, an I/O
error, from Python (OSError), safetensors (SafetensorError, whose text holds the OS error) or torch.save
(a RuntimeError without an errno). Each becomes a `WriteFailure` that names the file, the cause and the free
space of the disk that holds it; the trainer stops at the next step boundary, keeps the last good checkpoint
and exits with exitcodes.WRITE_FAILED (a signal's stop keeps the signal's code).

`WriteGuard` is the run's record of the first failure (any thread may report one: the events file is written
from whichever thread publishes) and of the space one checkpoint needs, so the run stops while a save still
fits instead of training steps it cannot save.

Test hook (for tests and bench/reliability.py only; a mount cannot reach every write):
  HVTUI_INJECT_WRITE_FAIL="WHERE@N:ERR[,...]"  the N-th write at WHERE fails with ERR, where WHERE is
      checkpoint (N = the step), events (N = the step whose event is written), lora (the final LoRA, N = the
      step), cache (N = the N-th cache entry written by this process, from 1); ERR is an errno name
      (ENOSPC, EROFS, EDQUOT, EIO, EACCES) or "safetensors" (a SafetensorError as safetensors raises it).
      "@*" fails every write there.
"""
from __future__ import annotations

import errno as errno_mod
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hvtui.core.formatting import human_bytes

INJECT_ENV = "HVTUI_INJECT_WRITE_FAIL"
# errnos that say the disk refused a write wherever they come from (an unexpected OSError with one of these
# is a write failure, not a bug); at a known write site every OSError is one
DISK_ERRNOS = {errno_mod.ENOSPC, errno_mod.EROFS, errno_mod.EDQUOT, errno_mod.EIO, errno_mod.EFBIG}
NOT_WRITABLE = {errno_mod.EACCES, errno_mod.EPERM, errno_mod.EROFS}   # the fix is permissions, not space
WRITE_ERRNOS = DISK_ERRNOS | NOT_WRITABLE
STOP_REASON = "write failure"   # Control.stop_reason of a run stopped by one
SPACE_MARGIN = 1.25              # a checkpoint may grow a little (optimizer state appears after step 1)
SPACE_SLACK = 1 << 20            # + 1 MiB for events.jsonl and the LoRA's metadata


@dataclass
class WriteFailure(Exception):
    """A file hvtui could not write. `path`: the file (or folder) it was writing; `cause`: why, in words."""
    path: Path
    cause: str
    errno: int | None = None

    def __post_init__(self):
        super().__init__(self.message)

    @property
    def free(self) -> int | None:
        return free_bytes(self.path)

    @property
    def message(self) -> str:
        return f"cannot write {self.path}: {self.cause}; {space_text(self.path)}"

    def __str__(self) -> str:
        return self.message

    @property
    def fix(self) -> str:
        """What the user does about it, by cause."""
        if self.errno in NOT_WRITABLE:
            return "make the folder writable (or set another output_dir)"
        if self.errno == errno_mod.EIO:
            return "check that disk (dmesg shows I/O errors), or set another output_dir"
        if self.errno in (None, errno_mod.ENOSPC, errno_mod.EDQUOT, errno_mod.EFBIG):
            return "free space on that disk (or raise the quota)"
        return "fix that path (hvtui writes a file there)"


def human(n: float | None) -> str:
    """Free or needed bytes; "unknown" where the filesystem did not say."""
    return "unknown" if n is None else human_bytes(n)


def _existing(path: Path) -> Path | None:
    """The path itself or its nearest existing parent (a failed write may have left no file)."""
    p = Path(path)
    for q in (p, *p.parents):
        try:
            if q.exists():
                return q
        except OSError:
            continue
    return None


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged process may still write on the disk that holds `path` (None if unknown)."""
    q = _existing(path)
    if q is None:
        return None
    try:
        st = os.statvfs(q)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def mount_point(path: Path) -> Path | None:
    q = _existing(path)
    if q is None:
        return None
    q = q.resolve() if q.is_dir() else q.resolve().parent
    while not os.path.ismount(q) and q != q.parent:
        q = q.parent
    return q


def read_only(path: Path) -> bool:
    q = _existing(path)
    try:
        return q is not None and bool(os.statvfs(q).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def space_text(path: Path) -> str:
    where = mount_point(path)
    free = free_bytes(path)
    ro = " (mounted read-only)" if read_only(path) else ""
    q = _existing(path)
    try:
        st = os.statvfs(q) if q is not None else None
    except OSError:
        st = None
    inodes = (f", and no free inodes (all {st.f_files} files it can hold exist)"
              if st is not None and st.f_files and st.f_favail == 0 else "")
    return f"{human(free)} free on {where or 'its disk'}{ro}{inodes}"


_STRERROR = {os.strerror(e).lower(): e for e in WRITE_ERRNOS}


def _errno_of(exc: BaseException) -> int | None:
    """The OS error behind an exception: OSError.errno, "(os error 28)" in safetensors' text, a strerror in
    torch's ("open file failed with strerror: Read-only file system")."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    text = str(exc)
    m = re.search(r"os error (\d+)", text)
    if m:
        return int(m.group(1))
    low = text.lower()
    return next((e for s, e in _STRERROR.items() if s in low), None)


def _probe_cause(path: Path) -> tuple[str, int | None]:
    """torch.save's "unexpected pos" / "file write failed" carry no errno: ask the disk."""
    if read_only(path):
        return os.strerror(errno_mod.EROFS), errno_mod.EROFS
    free = free_bytes(path)
    if free is not None and free < (1 << 20):
        return os.strerror(errno_mod.ENOSPC) + " (the write stopped short)", errno_mod.ENOSPC
    q = _existing(path)
    if q is not None and not os.access(q if q.is_dir() else q.parent, os.W_OK):
        return os.strerror(errno_mod.EACCES), errno_mod.EACCES
    return "the write stopped short (an I/O error, or the disk filled and was freed again)", None


def is_safetensors_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "SafetensorError"


def is_write_error(exc: BaseException) -> bool:
    """An exception a write can raise when the disk refuses it (vs a bug in the code that writes)."""
    return isinstance(exc, (OSError, RuntimeError)) or is_safetensors_error(exc)


def classify(exc: BaseException, path: Path | str | None, at_write_site: bool = True) -> WriteFailure | None:
    """A WriteFailure for `exc` raised while writing `path`, or None when it is not a write failure.
    `at_write_site` False: `exc` came from anywhere (the trainer's last-resort handler), and only the errnos
    that mean a refusing disk count."""
    if isinstance(exc, WriteFailure):
        return exc
    cause = getattr(exc, "__cause__", None)
    if isinstance(cause, WriteFailure):
        return cause
    code = _errno_of(exc)
    if isinstance(exc, OSError) and exc.filename:
        path = exc.filename
    path = Path(path) if path is not None else None
    if not at_write_site:
        if code not in DISK_ERRNOS or path is None:
            return None
        return WriteFailure(path, os.strerror(code), code)
    if path is None:
        return None
    if isinstance(exc, OSError) or is_safetensors_error(exc):
        if code is None and is_safetensors_error(exc):
            text, code = _probe_cause(path)
            return WriteFailure(path, text, code)
        return WriteFailure(path, os.strerror(code) if code else str(exc), code)
    if isinstance(exc, RuntimeError):   # torch.save / the zip writer
        if code is not None:
            return WriteFailure(path, os.strerror(code), code)
        text, code = _probe_cause(path)
        return WriteFailure(path, text, code)
    return None


def estimate_save_bytes(n_params: int, comfy: bool = False) -> int:
    """One save before any was measured: the LoRA twice (folded file + exact state, fp32), AdamW's two
    moments, the ComfyUI copy when exported, and slack for the small files."""
    return n_params * 4 * (4 + int(comfy)) + (256 << 10)


def tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


class WriteGuard:
    """The run's first write failure (thread-safe) and the free space a save needs."""

    def __init__(self, folder: Path, on_failure=None):
        self.folder = Path(folder)
        self.failure: WriteFailure | None = None
        self.low_space: str = ""        # set when the run stopped because the next save might not fit
        self.save_bytes: int = 0        # what one save (checkpoint + LoRA) takes, measured or estimated
        self._on_failure = on_failure   # called once, with the failure (the trainer requests a stop)
        self._lock = threading.Lock()
        self._checked = 0.0

    def report_error(self, exc: BaseException, path: Path) -> None:
        """An exception from writing `path`: reported as a WriteFailure (with its cause in words)."""
        self.report(classify(exc, path) or WriteFailure(Path(path), f"{type(exc).__name__}: {exc}"))

    def explain(self, step: int, newest) -> tuple[str, str]:
        """(message, hint) of the run's end: what could not be written (or why it stopped while a save still
        fit), the last good checkpoint (`newest`: checkpoint.CheckpointInfo or None) and what to do."""
        kept = (f"the last good checkpoint is {newest.path} (step {newest.step}), intact" if newest is not None
                else "no checkpoint was written yet")
        if self.failure is not None:
            return self.failure.message, f"{kept}; {self.failure.fix}, then continue with --resume auto"
        return (f"stopped at step {step} while a checkpoint still fits: {self.low_space}",
                f"{kept}; free space on that disk, then continue with --resume auto")

    def report(self, failure: WriteFailure) -> None:
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = failure
        if first and self._on_failure is not None:
            self._on_failure(failure)

    def needed(self) -> int:
        return int(self.save_bytes * SPACE_MARGIN) + SPACE_SLACK

    def space_short(self) -> str:
        """Why the next save may not fit (free space below what one takes), or ""."""
        if not self.save_bytes:
            return ""
        free = free_bytes(self.folder)
        if free is None or free >= self.needed():
            return ""
        return (f"only {human(free)} free on {mount_point(self.folder) or 'the disk'} holding {self.folder}; "
                f"a checkpoint takes about {human(self.save_bytes)}")

    def check_space(self, every_s: float = 1.0) -> bool:
        """At a step boundary (at most every `every_s`): True when the next save may not fit; `low_space`
        then says why."""
        now = time.monotonic()
        if now - self._checked < every_s:
            return False
        self._checked = now
        why = self.space_short()
        if why:
            self.low_space = why
        return bool(why)


# --- the test hook --------------------------------------------------------------------------------------
_counts: dict[str, int] = {}


def _injections() -> dict[str, tuple[str, str]]:
    out = {}
    for part in os.environ.get(INJECT_ENV, "").split(","):
        where, _, rest = part.strip().partition("@")
        at, _, err = rest.partition(":")
        if where and at:
            out[where] = (at, err or "ENOSPC")
    return out


def inject(where: str, path: Path | str, n: int | None = None) -> None:
    """Raise the injected failure for this write, if HVTUI_INJECT_WRITE_FAIL asks for one. `n`: the step
    (checkpoint, events, lora) or None to count calls (cache)."""
    spec = _injections().get(where)
    if spec is None:
        return
    if n is None:
        _counts[where] = n = _counts.get(where, 0) + 1
    at, err = spec
    if at != "*" and str(n) != at:
        return
    if err == "safetensors":
        from safetensors import SafetensorError

        raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(errno_mod.EIO)} (os error 5) "
                              f"(injected by {INJECT_ENV})")
    code = getattr(errno_mod, err, errno_mod.EIO)
    raise OSError(code, f"{os.strerror(code)} (injected by {INJECT_ENV})", str(path))
