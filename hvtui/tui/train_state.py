"""What the Train pane shows, folded from events: a plain model (no widgets) the UI timer feeds.

The UI pulls events from the bus (or an attached run's events.jsonl) ~4 times a second and applies them
here; widgets read this object when `version` changed. Loss history is kept whole up to a cap and thinned
evenly beyond it, so a long run still charts from step 1.

Read from a file, a run may span several processes (each header line is a ProcessStart): a resume continues
the history, a new run (run_started without resume_from) replaces it. Until a later process has said which
it is, its state changes wait, so a start that never began training (a refused one, in files written before
refused starts stopped writing there) does not hide the run that is in the folder.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hvtui.core.formatting import human_bytes
from hvtui.core.run.eta import format_duration  # noqa: F401  (the TUI's name for it)
from hvtui.core.run.events import Event

MAX_POINTS = 4000
MAX_PENDING = 2000                  # events of a process that has not yet said whether it resumes
ACTIVE_STATES = ("starting", "running", "paused", "stopping")
HELD_BACK = ("state", "error", "finished")   # what waits while a later process has not started training


@dataclass
class TrainState:
    state: str = "idle"     # idle|starting|running|paused|stopping|stopped|finished|failed|interrupted
    phase: str = ""
    phase_detail: str = ""
    progress: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    started: dict[str, Any] = field(default_factory=dict)
    step: dict[str, Any] = field(default_factory=dict)     # the latest step event's data
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smooth: list[float] = field(default_factory=list)
    gpus: list[dict] | None = None      # None: no telemetry yet; []: no GPU
    gpu_note: str = ""                  # why there are no GPUs ("no GPU: ..."), from the sampler
    torch_mem: dict[str, Any] = field(default_factory=dict)   # allocated/reserved/peak from `gpu` events
    offload: dict[str, Any] | None = None
    logs: deque = field(default_factory=lambda: deque(maxlen=400))
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    samples: list[tuple[int, str, str]] = field(default_factory=list)
    preview: tuple[int, str, str] | None = None    # (step, contact sheet PNG, prompt) of the latest sample
    trackers: dict[str, dict] = field(default_factory=dict)   # name -> its latest `tracker` event's data
    finished: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    log_count: int = 0                  # log lines ever added (views append those they have not shown)
    version: int = 0
    generation: int = 0                 # +1 per reset: a view clears what it drew of the earlier run
    writer_pid: int | None = None       # the process that wrote the newest part of a followed file
    _ema: float | None = None
    _ema_n: int = 0
    _pending: list | None = None        # a later process's events until its run_started (None: not waiting)
    _before_pending: tuple = ()

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def reset(self) -> None:
        """A new run: everything but the GPU readings, which belong to the machine."""
        gpus, note, generation, version, pid = self.gpus, self.gpu_note, self.generation, self.version, self.writer_pid
        TrainState.__init__(self)
        self.gpus, self.gpu_note, self.writer_pid = gpus, note, pid
        self.generation, self.version = generation + 1, version + 1

    def begin_run(self, resume: bool) -> None:
        """A run started here: a resume keeps the history shown (the chart continues), a new run clears it."""
        if not resume:
            self.reset()
        self.finished = self.error = None
        self.phase, self.phase_detail, self.progress = "", "", {}
        self.state = "starting"
        self.version += 1

    def sync_outputs(self, checkpoints: list[tuple[int, str]]) -> None:
        """What is on disk wins over what the events said: pruned and moved checkpoints, deleted samples."""
        from pathlib import Path

        self.checkpoints = list(checkpoints)
        self.samples = [s for s in self.samples if Path(s[1]).exists()]
        self.version += 1

    def apply(self, events: Iterable[Event]) -> bool:
        changed = False
        for e in events:
            changed = self._apply_one(e) or changed
        if changed:
            self.version += 1
        return changed

    def _apply_one(self, e) -> bool:
        if self._pending is not None and e.kind != "process_start":
            if e.kind == "run_started":
                return self._later_process_started(e)
            if len(self._pending) < MAX_PENDING:
                self._pending.append(e)
            if e.kind == "error":     # shown in the log now; the run's error only once it is known to be this run
                self.add_log("error", f"{e.get('message', '')}" + (f" ({e.get('hint')})" if e.get("hint") else ""),
                             e.time)
                return True
            if e.kind == "finished":
                self._later_process_ended(e)
                return True
            if e.kind in HELD_BACK:
                return False
        handler = getattr(self, f"_on_{e.kind}", None)
        if handler:
            handler(e.data, e.time)
            return True
        return False

    def _on_process_start(self, d, t):
        self.writer_pid = d.get("pid")
        if self.started or self.steps:   # a run is shown: wait until this process says whether it resumes it
            self._pending = []
            self._before_pending = (self.phase, self.phase_detail, dict(self.progress))

    def _later_process_started(self, e) -> bool:
        pending, self._pending = self._pending or [], None
        if not e.get("resume_from"):          # a new run in the same file: it replaces what is shown
            self.reset()                      # (its log lines come again, after the earlier run's)
            for x in pending:
                self._apply_one(x)
        else:
            for x in pending:   # the rest was applied as it came
                if x.kind == "state":
                    self._on_state(x.data, x.time)
        self._on_run_started(e.data, e.time)
        return True

    def _later_process_ended(self, e) -> None:
        """A process ended before it began training (a refused start): the run shown is still the one here."""
        self._pending = None
        self.phase, self.phase_detail, self.progress = self._before_pending
        self.add_log("warning", f"a later start here ended before training ({e.get('status', '?')}, exit "
                                f"{e.get('exit_code', '?')}); shown: the run that is in this folder", e.time)

    def _on_run_started(self, d, t):
        # a resumed run appends to the same events.jsonl: the chart continues, the outcome resets
        self.started = dict(d)
        self.finished = None
        self.error = None
        if not self.active:
            self.state = "running"

    def _on_phase(self, d, t):
        self.phase = d.get("phase", "")
        self.phase_detail = d.get("detail", "")

    def _on_progress(self, d, t):
        self.progress[d.get("phase", "")] = (int(d.get("done", 0)), int(d.get("total", 0) or 0), d.get("what", ""))

    def _on_step(self, d, t):
        self.step = dict(d)
        loss = d.get("loss")
        if loss is None:
            return
        loss = float(loss)
        step = int(d.get("step", len(self.steps) + 1))
        while self.steps and self.steps[-1] >= step:   # resumed from an earlier checkpoint: redone steps
            self.steps.pop()
            self.losses.pop()
            self.smooth.pop()
        smooth = d.get("loss_smooth")
        if smooth is None and math.isfinite(loss):
            # bias-corrected EMA (as in Adam), so the first points are not pulled toward 0
            self._ema_n += 1
            self._ema = loss if self._ema is None else 0.9 * self._ema + 0.1 * loss
            smooth = self._ema if self._ema_n > 1 else loss
        self.steps.append(step)
        self.losses.append(loss)
        self.smooth.append(float(smooth) if smooth is not None else float("nan"))
        if len(self.steps) > MAX_POINTS:
            self.steps = self.steps[::2]
            self.losses = self.losses[::2]
            self.smooth = self.smooth[::2]

    def add_log(self, level: str, message: str, t: float = 0.0) -> None:
        self.log_count += 1
        self.logs.append((self.log_count, t, level, message))

    def new_logs(self, seen: int) -> list[tuple[int, float, str, str]]:
        return [entry for entry in self.logs if entry[0] > seen]

    def _on_gpu(self, d, t):
        self.gpus = list(d.get("gpus") or [])
        self.gpu_note = str(d.get("error") or "")
        if d.get("torch"):
            self.torch_mem = dict(d["torch"])
        if d.get("offload"):
            self.offload = dict(d["offload"])

    def _on_state(self, d, t):
        self.state = d.get("state", self.state)

    def _on_checkpoint(self, d, t):
        self.checkpoints.append((int(d.get("step", 0)), str(d.get("path") or d.get("lora_path", ""))))

    def _on_sample(self, d, t):
        self.samples.append((int(d.get("step", 0)), str(d.get("path", "")), str(d.get("prompt", ""))))
        if d.get("sheet"):
            self.preview = (int(d.get("step", 0)), str(d["sheet"]), str(d.get("prompt", "")))

    def _on_tracker(self, d, t):
        self.trackers[str(d.get("name", "?"))] = dict(d)

    def _on_log(self, d, t):
        self.add_log(d.get("level", "info"), str(d.get("message", "")), t)

    def _on_error(self, d, t):
        self.error = dict(d)
        hint = f" ({d['hint']})" if d.get("hint") else ""
        self.add_log("error", f"{d.get('message', '')}{hint}", t)

    def _on_finished(self, d, t):
        self.finished = dict(d)
        status = d.get("status", "finished")
        self.state = {"completed": "finished", "interrupted": "stopped"}.get(status, status)
        if self.state not in ("finished", "stopped", "failed"):
            self.state = "finished"
        self.add_log("info" if status == "completed" else "warning",
                     f"run {status} (exit code {d.get('exit_code', '?')})", t)


def format_bytes(n: float | None) -> str:
    """The core's byte formatter, with "--" for a reading that is not there (NVML not available)."""
    return "--" if n is None else human_bytes(float(n))
