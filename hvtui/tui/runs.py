"""The Train pane's view of a run: one started here (a core Session in its own thread) or one attached to
(a headless run's OUTPUT_DIR/events.jsonl + control files). The UI only polls and sends commands; nothing
here blocks on, or is called by, the trainer.
"""
from __future__ import annotations

from pathlib import Path

from hvtui.core.control import FileControl
from hvtui.core.events import Event
from hvtui.core.preset import Preset
from hvtui.core.runlog import FILENAME, RunLogFollower
from hvtui.core.session import Backend, RunOptions, Session


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


class AttachedRun:
    """Follows a run another process owns. Commands go through OUTPUT_DIR/control/; it keeps running when
    this UI quits."""
    attached = True

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.events_path = self.output_dir / FILENAME
        self.follower = RunLogFollower(self.events_path)
        self.control = FileControl(self.output_dir / "control")
        self._finished = False
        self.exit_code: int | None = None

    def start(self) -> None:
        raise RuntimeError("an attached run is started by `hvtui --run`, not from this UI")

    def poll(self) -> list[Event]:
        events = self.follower.poll()
        for e in events:
            if e.kind == "finished":
                self._finished = True
                self.exit_code = e.get("exit_code")
            elif e.kind == "run_started":
                self._finished = False
        return events

    def request(self, command: str, reason: str = "") -> None:
        self.control.send(command)

    @property
    def active(self) -> bool:
        return not self._finished

    def join(self, timeout: float | None = None) -> bool:
        return True


def attach_problem(output_dir: Path) -> str | None:
    """Why `--attach OUTPUT_DIR` cannot work, or None."""
    if not output_dir.is_dir():
        return f"{output_dir}: no such folder; pass the output_dir of a run started with `hvtui --run PRESET`"
    if not (output_dir / FILENAME).is_file():
        return (f"{output_dir}: no {FILENAME} here; is this the output_dir of a `hvtui --run` run "
                f"(the preset's output_dir)?")
    return None
