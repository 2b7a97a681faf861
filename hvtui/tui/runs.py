"""The Train pane's view of a run: one started here (a core Session in its own thread) or one attached to
(a headless run's OUTPUT_DIR/events.jsonl + control files). The UI only polls and sends commands; nothing
here blocks on, or is called by, the trainer.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hvtui.core.preset.schema import Preset
from hvtui.core.run.control import FileControl
from hvtui.core.run.events import Event
from hvtui.core.run.history import RunFollower, ended_without_final_event, gone_event
from hvtui.core.run.runlog import FILENAME
from hvtui.core.run.session import Backend, RunOptions, Session

if TYPE_CHECKING:     # imported when a run starts
    import subprocess


class LocalRun:
    attached = False

    def __init__(self, preset: Preset, backend: Backend | None = None, options: RunOptions | None = None):
        self.preset = preset
        self.session = Session(preset, backend=backend, options=options)
        self._cursor = 0

    @property
    def output_dir(self) -> Path | None:
        return self.preset.resolve_path(self.preset.output_dir)

    def start(self) -> None:
        self.session.start()

    def poll(self) -> list[Event]:
        events, self._cursor = self.session.bus.since(self._cursor)
        return events

    def request(self, command: str, reason: str = "") -> None:
        self.session.control.request(command, reason=reason)

    @property
    def active(self) -> bool:
        return self.session.alive

    @property
    def exit_code(self) -> int | None:
        return self.session.exit_code

    def join(self, timeout: float | None = None) -> bool:
        return self.session.join(timeout)


class FollowedRun:
    """A run read from OUTPUT_DIR/events.jsonl, from its first line (the history) and then as it grows.
    A run whose process vanished without a final event (kill -9) is reported as interrupted."""
    attached = True
    QUIET_S = 3.0       # the file must be this quiet before a vanished writer counts as gone (see process_alive)

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.events_path = self.output_dir / FILENAME
        self.follower = RunFollower(self.events_path)
        self._finished = False
        self._gone = False
        self.exit_code: int | None = None
        self.caught_up_once = False     # the history has been read whole at least once
        self._said_holder = False

    def start(self) -> None:
        raise RuntimeError("an attached run is started by `hvtui --run`, not from this UI")

    def poll(self) -> list:
        events = self.follower.poll()
        if not self._said_holder:   # who holds the folder (core/train/run_lock.py), first thing in the log
            self._said_holder = True
            line = holder_line(self.output_dir)
            if line:
                events.insert(0, Event("log", {"level": "info", "message": line}))
        for e in events:
            if e.kind == "finished":
                self._finished = True
                self.exit_code = e.get("exit_code")
            elif e.kind in ("run_started", "process_start"):
                self._finished = self._gone = False
        if (not events and not self._finished and not self._gone and self.follower.pid
                and ended_without_final_event(self.follower, self.QUIET_S)):
            self._gone = True
            events = gone_event(self.follower.pid)
        return events

    @property
    def just_caught_up(self) -> bool:
        """True once: the whole history has been read (the view then checks the outputs on disk)."""
        if self.follower.caught_up and not self.caught_up_once:
            self.caught_up_once = True
            return True
        return False

    def checkpoints_on_disk(self) -> list[tuple[int, str]]:
        from hvtui.core.train.checkpoint import list_complete

        try:
            return [(c.step, str(c.path)) for c in list_complete(self.output_dir)]
        except OSError:
            return []

    def request(self, command: str, reason: str = "") -> None:
        pass

    @property
    def active(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> bool:
        return True


class PastRun(FollowedRun):
    """The run already in a preset's output_dir, shown in the Train pane until a run is started here. Only
    read: the run keys do not reach it (a run another process owns is followed with `hvtui --attach`)."""
    attached = False


class AttachedRun(FollowedRun):
    """Follows a run another process owns. Commands go through OUTPUT_DIR/control/; it keeps running when
    this UI quits. Before the run has written anything (it is still starting), it waits."""

    def __init__(self, output_dir: Path):
        super().__init__(output_dir)
        self.control = FileControl(self.output_dir / "control")

    def request(self, command: str, reason: str = "") -> None:
        self.control.send(command)

    @property
    def active(self) -> bool:
        return not self._finished and not self._gone


class LaunchedRun(AttachedRun):
    """A data-parallel run started here: `hvtui --run PRESET --gpus N` as a child in its own session (this
    UI never joins the process group; torchrun starts the workers), followed through its events.jsonl and
    steered through control files, like an attached run. Its output goes to OUTPUT_DIR/LOG_FILE. It keeps
    running when this UI quits (`hvtui --attach OUTPUT_DIR` finds it again)."""
    LOG_FILE = "hvtui-run.log"
    LOG_HEADER = "=== hvtui: "   # starts the line each start writes: one file, its runs told apart

    def __init__(self, preset: Preset, gpus: int, options: RunOptions | None = None):
        if preset.source is None:
            raise ValueError("a multi-GPU run needs a preset saved to a file")
        super().__init__(preset.resolve_path(preset.output_dir))
        self._said_holder = True   # its own child will hold the folder: nothing to say about it
        self.preset, self.gpus = preset, gpus
        self.options = options or RunOptions()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.output_dir / self.LOG_FILE

    def command(self) -> list[str]:
        import sys

        return [sys.executable, "-m", "hvtui", "--run", str(self.preset.source), "--gpus", str(self.gpus),
                *self.options.cli_flags()]

    def start(self) -> None:
        import subprocess

        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.follower.skip_to_end()   # follow only what this run writes (a resumed run appends to the same file)
        # The log stays where it is when --fresh moves the earlier run aside (the child writes to it while it
        # moves), so each start opens with a line saying which run follows
        command = self.command()
        header = f"{self.LOG_HEADER}{time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command[1:])}\n"
        with open(self.log_path, "ab") as log:
            log.write(header.encode(errors="surrogateescape"))   # a path's undecodable bytes as they are
            log.flush()
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

    def poll(self) -> list[Event]:
        events = super().poll()
        if self.proc is not None and self.proc.poll() is not None and not self._finished:
            events += super().poll()   # the last lines, written just before the exit
            if not self._finished:     # it ended before writing its final event: say why
                self._finished = True
                self.exit_code = self.proc.returncode
                tail = _tail(self.log_path, after=self.LOG_HEADER)
                events += [Event("error", {"message": f"the {self.gpus}-GPU run ended (exit {self.exit_code}) "
                                                      f"without a final event" + (f": {tail}" if tail else ""),
                                           "hint": f"its output is in {self.log_path}"}),
                           Event("finished", {"status": "failed", "exit_code": self.exit_code})]
        return events

    @property
    def active(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and not self._finished and not self._gone


def _tail(path: Path, lines: int = 3, after: str | None = None) -> str:
    """The last `lines` lines of the file; with `after`, of what follows the last line starting with it."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    if after is not None:
        starts = [i for i, line in enumerate(text) if line.startswith(after)]
        text = text[starts[-1] + 1:] if starts else text
    return " | ".join(text[-lines:])


def gpu_choices(count: int) -> list[int]:
    """What the GPU prompt offers: 1, 2, 4, 8, ... up to the machine's count, and the count itself."""
    out: list[int] = []
    n = 1
    while n < count and len(out) < 7:
        out.append(n)
        n *= 2
    return out + [count]


def holder_line(output_dir: Path) -> str:
    """Who holds OUTPUT_DIR now ("" when no live run does)."""
    from hvtui.core.train.run_lock import holder

    h = holder(output_dir)
    return f"attached to the live run holding {output_dir}: {h.describe()}" if h is not None else ""


def attach_problem(output_dir: Path) -> str | None:
    """Why `--attach OUTPUT_DIR` cannot work, or None. A folder without events.jsonl yet (or not made yet) is
    fine: the run may be starting, and the Train pane says it is waiting for it."""
    if output_dir.exists() and not output_dir.is_dir():
        return f"{output_dir}: a file, not a folder; pass the output_dir of a run started with `hvtui --run PRESET`"
    if (output_dir / FILENAME).exists() and not (output_dir / FILENAME).is_file():
        return f"{output_dir / FILENAME}: not a file"
    return None
