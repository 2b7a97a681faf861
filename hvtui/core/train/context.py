"""What every part of a run shares: `RunContext` (the preset, where events go, which process this is, the run's
accelerator and collectives once they exist, the write guard, and what the run holds and must give back),
`Progress` (the step counters a checkpoint records and the loop advances) and `Training` (what is trained).

The parts (preflight.py, run_setup.py, cache_phase.py, train_step.py, checkpointing.py, samples.py,
failures.py, control_boundary.py) take the context instead of reaching into a trainer object; the loop
(loop.py) makes one per run and releases it at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hvtui.core.run import events, exitcodes
from hvtui.core.run.events import Event
from hvtui.core.train import write_guard
from hvtui.core.train.failures import Abort
from hvtui.core.train.multi_gpu import dist_env


@dataclass
class Progress:
    """Where training stands. `data_at_step`: the sampler's state after the last completed step (what a save
    after a failure inside the next step records, so a resume trains that step's samples)."""
    step: int = 0
    last_saved_step: int = -1
    last_validated_step: int = -1
    resumed_step: int = -1
    loss_ema: float | None = None
    loss_ema_n: int = 0
    data_at_step: dict | None = None


@dataclass
class Training:
    """What the steps train: the prepared model, its optimizer and schedule, the LoRA parameters, the sampler
    and the cache entries it draws from (sample id -> latent_cache.CacheEntry). run_setup.build_training makes
    it once caching is done."""
    model: Any
    optimizer: Any
    scheduler: Any
    params: list
    sampler: Any
    entries: dict = field(default_factory=dict)
    speed: Any = None      # speed.SpeedHandle of the transformer


class RunContext:
    """One run's shared services and the resources it holds until `release`."""

    def __init__(self, preset, bus, control, options):
        self.preset, self.bus, self.control, self.options = preset, bus, control, options
        self.out: Path = preset.resolve_path(preset.output_dir)
        self.dist = dist_env()        # rank / world size from torchrun or accelerate launch (1 process else)
        self.is_main = self.dist.is_main
        self.accelerator: Any = None  # accelerate.Accelerator, from run_setup.start
        self.coll: Any = None         # collectives.Collectives once the accelerator exists
        self.components: dict = {}    # load_components' modules (the VAE stays for validation samples)
        self.writes = write_guard.WriteGuard(self.out, on_failure=self._write_failed)
        # held until release(): the run lock, the events.jsonl writer, trackers, telemetry, torch's thread count
        self.claim: Any = None        # run_claim.RunClaim: the lock on output_dir
        self.writer: Any = None       # runlog.RunLogWriter on rank 0
        self.trackers: Any = None     # trackers.TrackerSink on rank 0 when report_to asks for one
        self.telemetry: Any = None
        self.threads: int | None = None

    # ------------------------------------------------------------------ events
    def publish(self, e: Event, local: bool = False) -> None:
        """Rank 0 publishes for the run; another rank publishes only `local` events (its own errors, shown
        in its console with its rank)."""
        if self.is_main:
            self.bus.publish(e)
        elif local:
            self.bus.publish(Event(e.kind, {**e.data, "rank": self.dist.rank}, e.time))

    def log(self, message: str, level: str = "info") -> None:
        self.publish(events.log(message, level))

    def phase(self, name: str, detail: str = "") -> None:
        self.publish(events.phase(name, detail))

    @property
    def distributed(self) -> bool:
        return self.coll is not None and self.coll.distributed

    def _write_failed(self, failure) -> None:
        """A write failed somewhere (any thread): stop at the next step boundary (a signal's stop keeps its
        reason and exit code)."""
        self.control.request("stop", reason=write_guard.STOP_REASON)

    # ------------------------------------------------------------------ what the run holds
    def claim_output_dir(self) -> None:
        """The run lock, and events held in memory until the run is accepted (run_claim.py)."""
        from hvtui.core.run.runlog import RunLogWriter
        from hvtui.core.train.run_claim import LOCKED_HINT, RunClaim
        from hvtui.core.train.run_lock import RunLocked

        self.claim = RunClaim(self.out, main=self.is_main)
        try:
            self.claim.acquire()
        except RunLocked as e:
            raise Abort(exitcodes.INVALID, str(e), LOCKED_HINT) from None
        except OSError as e:
            failure = write_guard.classify(e, self.out)
            if failure is None:
                raise
            raise failure from e
        if self.options.write_events and self.is_main:
            self.writer = RunLogWriter(self.out, held=True, on_error=self.writes.report_error)
            self.bus.add_sink(self.writer)

    def start_trackers(self) -> None:
        """report_to's experiment trackers, as a sink of this run's events on rank 0 (trackers.py): they start
        at run_started, in their own thread, and can neither fail nor stall the run."""
        from hvtui.core.run.trackers import TrackerSink, wanted

        if self.is_main and wanted(self.preset.report_to):
            self.trackers = TrackerSink(self.preset, self.out, self.bus.publish)
            self.bus.add_sink(self.trackers)

    def release(self, clean: bool = True) -> None:
        """Give back what the run holds. `clean`: every process ends here together (after an error on one
        process alone, no collective: the process exit ends the group)."""
        from hvtui.core.train.components import release_memory

        if clean and self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
            self.threads = None
        if self.telemetry is not None:
            self.telemetry.stop()
            self.telemetry = None
        if self.trackers is not None:   # before the writer goes: its last words land in events.jsonl
            self.bus.remove_sink(self.trackers)
            self.trackers.close()
            self.trackers = None
        if self.writer is not None:
            self.bus.remove_sink(self.writer)
            self.writer.close()
            self.writer = None
        self.components.clear()
        release_memory()

    def release_claim(self) -> None:
        """Last, and always (a TUI process outlives its runs): the folder is free once this run wrote all it
        will; a refused start leaves nothing behind (run_claim.py)."""
        if self.claim is not None:
            self.claim.release()
