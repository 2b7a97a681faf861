"""Experiment trackers: `report_to` = tensorboard | wandb | all | none, through accelerate's tracker classes.

`TrackerSink` is a bus sink that the trainer adds on rank 0 only (next to the events.jsonl writer). It is fed by
the events the trainer publishes anyway:
  run_started  starts the trackers; the preset is the run's config (a resumed run's TensorBoard purges the
               steps after its checkpoint, so the curve has one point per step)
  step         loss, smoothed loss, learning rate, grad norm, step time, samples/s, peak GPU memory
  gpu          the group-offload counters: the time the GPU stalled on transfers, per step
  sample       the validation video and its contact sheet
  finished     ends the trackers (a failed run is marked failed in W&B)
It must never fail or stall a run. The sink only queues the event (bounded: past MAX_QUEUED events, new ones
are dropped and counted); one worker thread imports the tracker packages (wandb ~2 s, TensorBoard's writer
~0.5 s after torch), starts them and logs. Whatever a tracker raises makes it a warning and drops that tracker;
the others go on. A missing package is a warning (the extras `hvtui[tensorboard]`, `hvtui[wandb]`); so is a
missing W&B login or network: wandb then logs offline, to a folder that `wandb sync` uploads later.
`close(timeout)` waits a bounded time for the last writes, then leaves the worker (a daemon thread) behind.

Where each tracker logs is published as `tracker` events (the TUI's Train pane shows them) and log lines.
This module imports nothing heavy at import time: doctor and validation use `wanted` / `missing_packages`.
"""
from __future__ import annotations

import importlib.util
import math
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from hvtui.core.formatting import first_line
from hvtui.core.run import events
from hvtui.core.run.events import Event

# report_to name -> (module to import, pip extra that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "hvtui[tensorboard]"), "wandb": ("wandb", "hvtui[wandb]")}
CONSUMED = ("run_started", "step", "gpu", "sample", "finished")
MAX_QUEUED = 10_000
CLOSE_TIMEOUT_S = 30.0
# step event key -> tracker key (the same names in TensorBoard and W&B)
STEP_SCALARS = (("loss", "train/loss"), ("loss_smooth", "train/loss_smooth"), ("lr", "train/lr"),
                ("grad_norm", "train/grad_norm"), ("step_time", "train/step_time_s"),
                ("samples_per_s", "train/samples_per_s"))


def wanted(report_to: str | None) -> list[str]:
    """The trackers a report_to value asks for, in a fixed order."""
    value = (report_to or "none").strip().lower()
    if value == "all":
        return list(PACKAGES)
    return [value] if value in PACKAGES else []


def package_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_packages(report_to: str | None) -> list[tuple[str, str]]:
    """(tracker, pip extra) for each wanted tracker whose package is not installed (nothing is imported)."""
    return [(name, PACKAGES[name][1]) for name in wanted(report_to) if not package_installed(PACKAGES[name][0])]


def wandb_credentials(env) -> bool:
    """A W&B login without importing wandb: WANDB_API_KEY, an identity token file, or the API host in
    ~/.netrc (where `wandb login` writes it). The run itself asks wandb (tracker_backends.wandb_logged_in)."""
    import netrc
    import os
    from urllib.parse import urlparse

    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = env.get("NETRC") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def run_name(preset, output_dir: Path) -> str:
    return (preset.tracker_run_name or "").strip() or Path(output_dir).name or "hvtui"


def step_values(data: dict) -> dict[str, float]:
    """A step event's numbers under their tracker keys (absent or non-numeric ones left out)."""
    out = {}
    for key, name in STEP_SCALARS:
        v = data.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = float(v)
    if isinstance(data.get("mem_peak"), (int, float)):
        out["memory/peak_allocated_gib"] = data["mem_peak"] / 2 ** 30
    return out


class OffloadStall:
    """Seconds per step the GPU waited on offload transfers, from the cumulative `wait_s` counter that `gpu`
    events carry (~1 Hz): the counter's growth between two steps that saw a new reading, over the steps."""

    def __init__(self):
        self.total: float | None = None     # the latest reading
        self.fresh = False                  # a reading came since the last step
        self.base: tuple[int, float] | None = None

    def reading(self, offload: dict | None) -> None:
        w = (offload or {}).get("wait_s")
        if isinstance(w, (int, float)) and math.isfinite(w):
            self.total, self.fresh = float(w), True

    def per_step(self, step: int) -> float | None:
        if not self.fresh or self.total is None:
            return None
        self.fresh = False
        base, self.base = self.base, (step, self.total)
        if base is None or step <= base[0]:
            return None
        return max(0.0, (self.total - base[1]) / (step - base[0]))


class TrackerSink:
    """`bus.add_sink(TrackerSink(preset, output_dir, bus.publish))`, then `close()` after the run's last event."""

    def __init__(self, preset, output_dir: Path, publish: Callable[[Event], None], names: list[str] | None = None,
                 max_queued: int = MAX_QUEUED):
        self.preset, self.output_dir, self.publish = preset, Path(output_dir), publish
        self.names = wanted(preset.report_to) if names is None else names
        self.max_queued = max_queued
        self.dropped = 0
        self.trackers: list = []            # the started backends (tracker_backends.py)
        self.stall = OffloadStall()
        self._q: queue.Queue = queue.Queue()
        self._ended = False
        self._thread = threading.Thread(target=self._work, name="hvtui-trackers", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the publisher's side (never blocks)
    def __call__(self, event: Event) -> None:
        if event.kind not in CONSUMED:
            return
        if self._q.qsize() >= self.max_queued:
            self.dropped += 1
            return
        self._q.put_nowait(event)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Let the worker log what is queued and end the trackers; True when it did within `timeout`."""
        self._q.put_nowait(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._say(f"experiment trackers still busy after {timeout:.0f} s; leaving them to finish in the "
                      "background (an incomplete W&B run can be uploaded with `wandb sync`)", "warning")
            return False
        return True

    # ------------------------------------------------------------------ the worker
    def _say(self, message: str, level: str = "info") -> None:
        try:
            self.publish(events.log(message, level))
        except Exception:   # the bus never raises; a test's publish might
            pass

    def _status(self, name: str, status: str, where: str = "", message: str = "") -> None:
        try:
            self.publish(Event("tracker", {"name": name, "status": status, "where": where, "message": message}))
        except Exception:
            pass

    def _work(self) -> None:
        while True:
            event = self._q.get()
            if event is None:
                break
            try:
                getattr(self, f"_on_{event.kind}")(event.data)
            except Exception as e:   # a bug here must not reach the trainer: say it once, keep going
                self._say(f"experiment trackers: {type(e).__name__}: {first_line(e)}", "warning")
        self._end(None)
        if self.dropped:
            self._say(f"experiment trackers fell behind: {self.dropped} event(s) were not logged", "warning")

    def _each(self, what: str, call) -> None:
        """call(tracker) for every live tracker; one that raises is reported and dropped."""
        for t in list(self.trackers):
            try:
                call(t)
            except Exception as e:
                self.trackers.remove(t)
                self._say(f"{t.name}: stopped logging ({what} failed: {type(e).__name__}: {first_line(e)}); "
                          "training goes on", "warning")
                self._status(t.name, "failed", message=f"{what} failed: {first_line(e)}")

    def _on_run_started(self, d: dict) -> None:
        from hvtui.core.run.tracker_backends import BACKENDS, TrackerUnavailable, run_config

        self._end(None)   # a second run on the same sink (not done by the trainer) starts afresh
        self._ended = False
        config = run_config(self.preset, d)
        for name in self.names:
            module, extra = PACKAGES[name]
            if not package_installed(module):
                self._say(f"report_to asks for {name}, which is not installed: training goes on without it "
                          f"(pip install '{extra}')", "warning")
                self._status(name, "failed", message=f"not installed (pip install '{extra}')")
                continue
            backend = BACKENDS[name](self.preset, self.output_dir, run_name(self.preset, self.output_dir))
            try:
                status, where, note = backend.start(config, resume_step=d.get("resume_step"))
            except TrackerUnavailable as e:
                self._say(f"{name}: {e}; training goes on without it", "warning")
                self._status(name, "failed", message=str(e))
                continue
            except Exception as e:
                self._say(f"{name}: could not start ({type(e).__name__}: {first_line(e)}); training goes on "
                          "without it", "warning")
                self._status(name, "failed", message=f"{type(e).__name__}: {first_line(e)}")
                continue
            self.trackers.append(backend)
            self._say(f"{name}: {note}", "warning" if status == "offline" and backend.fell_back else "info")
            self._status(name, status, where, note)

    def _on_step(self, d: dict) -> None:
        step = d.get("step")
        if not isinstance(step, int) or not self.trackers:
            return
        values = step_values(d)
        stall = self.stall.per_step(step)
        if stall is not None:
            values["offload/stall_s_per_step"] = stall
        self._each("logging a step", lambda t: t.log(values, step))

    def _on_gpu(self, d: dict) -> None:
        self.stall.reading(d.get("offload"))

    def _on_sample(self, d: dict) -> None:
        if not self.trackers or not d.get("path"):
            return
        self._each("logging a sample", lambda t: t.log_sample(d))

    def _on_finished(self, d: dict) -> None:
        self._end(d.get("exit_code"))

    def _end(self, exit_code) -> None:
        if self._ended:
            return
        self._ended = True
        for t in list(self.trackers):
            try:
                where, note = t.finish(exit_code)
                self._status(t.name, "finished", where, note)
                if note:
                    self._say(f"{t.name}: {note}")
            except Exception as e:
                self._say(f"{t.name}: could not finish cleanly ({type(e).__name__}: {first_line(e)})", "warning")
        self.trackers = []
