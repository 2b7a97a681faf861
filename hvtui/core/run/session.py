"""A training session: owns the trainer thread, its bus and its control object.

Both faces use it: `--run` (headless) joins it from the main thread; the TUI starts it and pulls from the
bus on a timer. The thread is a plain non-daemon thread, so an interpreter exit waits for the final save.
The backend is any callable `backend(preset, bus, control, options) -> exit code`; the real one is
`hvtui.core.train.loop.train`, tests and the TUI's demo mode pass fakes.
"""
from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from hvtui.core.preset.schema import Preset
from hvtui.core.run import exitcodes
from hvtui.core.run.bus import Bus
from hvtui.core.run.control import Control
from hvtui.core.run.events import Event


@dataclass
class RunOptions:
    resume: str | None = None         # None | "auto" | a checkpoint path
    allow_changed: bool = False       # resume even if batch size / buckets / LR differ
    fresh: bool = False               # start over where OUTPUT_DIR holds an earlier run (it is moved aside)
    file_control: bool = True         # read OUTPUT_DIR/control/ between steps (for `--attach`)
    write_events: bool = True         # append OUTPUT_DIR/events.jsonl

    def cli_flags(self) -> list[str]:
        """The `hvtui --run` flags that ask for this (a launched run's command line)."""
        flags = ["--resume", str(self.resume)] if self.resume else []
        return flags + ["--allow-changed"] * self.allow_changed + ["--fresh"] * self.fresh


Backend = Callable[[Preset, Bus, Control, RunOptions], int]


def real_backend(preset: Preset, bus: Bus, control: Control, options: RunOptions) -> int:
    from hvtui.core.train.loop import train  # heavy imports happen only here

    return train(preset, bus, control, options)


class Session:
    def __init__(self, preset: Preset, backend: Backend | None = None, options: RunOptions | None = None,
                 bus: Bus | None = None):
        self.preset = preset
        self.backend = backend or real_backend
        self.options = options or RunOptions()
        self.bus = bus or Bus()
        control_dir = None
        if self.options.file_control:
            control_dir = preset.resolve_path(preset.output_dir) / "control"
        self.control = Control(control_dir)
        self.exit_code: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("session already started")
        self._thread = threading.Thread(target=self._main, name="hvtui-trainer", daemon=False)
        self._thread.start()

    def _main(self) -> None:
        try:
            self.exit_code = self.backend(self.preset, self.bus, self.control, self.options)
        except BaseException as e:  # the thread must always end with a finished event
            self.exit_code = exitcodes.UNEXPECTED
            self.bus.publish(Event("error", {"message": f"{type(e).__name__}: {e}",
                                             "hint": "this is a bug in hvtui; the traceback is in the log",
                                             "traceback": traceback.format_exc()}))
            self.bus.publish(Event("finished", {"status": "failed", "exit_code": self.exit_code}))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """True once the thread has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
