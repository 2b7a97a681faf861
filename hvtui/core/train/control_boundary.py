"""Control requests between steps: pause / resume, stop (the TUI, `hvtui --attach`, signals, a disk running out
of room), save now and sample now are honoured only here, at a step boundary.

Rank 0 reads the control files; every rank has its own signals. Data-parallel, whatever decides what every
process does next is agreed through one collective (`agree`), so no process waits in a collective the others
never reach: a stop anywhere stops all (with the signal's exit code), and paused processes wait together.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from hvtui.core.run import events
from hvtui.core.train import write_guard
from hvtui.core.train.context import Progress, RunContext
from hvtui.core.train.failures import STOP_EXIT

PAUSE_POLL_S = 0.25      # data-parallel pause: how often the processes agree whether to go on


class ControlBoundary:
    """`check()` between steps. `save(then, manual)` and `sample(then)` carry out save-now / sample-now
    (checkpointing.Checkpointer.save, samples.ValidationSamples.take)."""

    def __init__(self, ctx: RunContext, progress: Progress, save: Callable[..., None],
                 sample: Callable[..., None]):
        self.ctx, self.progress, self.save, self.sample = ctx, progress, save, sample

    def check(self, final: bool = False) -> bool:
        """Control requests between steps (`final`: after the last one). True when the run must stop now."""
        ctx, control = self.ctx, self.ctx.control
        # stop while a checkpoint still fits (write_guard.py); rank 0 writes the checkpoints: it decides
        if not final and ctx.is_main and ctx.writes.check_space():
            control.request("stop", reason=write_guard.STOP_REASON)
        commands = control.take()
        paused = control.paused
        distributed = ctx.distributed
        if distributed:
            commands, paused = self.agree(commands, paused)
        if not final and paused:
            ctx.publish(events.state("paused"))
            commands = self._while_paused(commands, distributed)
            if not control.stop_requested:
                ctx.publish(events.state("running"))
        self._carry_out(commands, then=None if final else "training")
        if control.stop_requested:
            ctx.publish(events.state("stopping"))
            ctx.log(f"stopping at step {self.progress.step}: {control.stop_reason}")
            return True
        return False

    def agree(self, commands: set[str], paused: bool) -> tuple[set[str], bool]:
        """Data-parallel: one decision for every process. Rank 0 brings the control files' requests, every
        rank its own signals; a stop anywhere stops all (with the signal's exit code)."""
        control = self.ctx.control
        reason = control.stop_reason if control.stop_requested else ""
        stop = STOP_EXIT.get(reason, 1) if control.stop_requested else 0
        stop, save, sample, pause = self.ctx.coll.max([stop, "save" in commands, "sample" in commands, paused])
        if stop and not control.stop_requested:
            names = {v: k for k, v in STOP_EXIT.items()}
            control.request("stop", reason=names.get(int(stop), "stop requested (another process)"))
        agreed = {c for c, on in (("save", save), ("sample", sample)) if on}
        return agreed, bool(pause) and not stop

    def _while_paused(self, commands: set[str], distributed: bool) -> set[str]:
        """Wait for resume or stop. A save or sample asked for meanwhile is carried out at once (a checkpoint
        taken during a pause is on disk before the user walks away). Data-parallel: the processes wait
        together, agreeing a few times a second whether to go on."""
        control = self.ctx.control
        paused = True
        while paused:
            if commands:
                self._carry_out(commands, then="training")
                commands = set()
                self.ctx.publish(events.state("paused"))
            if distributed:
                time.sleep(PAUSE_POLL_S)
                commands, paused = self.agree(control.take(), control.paused)
            else:
                control.wait_while_paused(until_command=True)
                commands, paused = control.take(), control.paused and not control.stop_requested
        return commands

    def _carry_out(self, commands: set[str], then: str | None) -> None:
        step = self.progress.step
        if "save" in commands and step > 0:
            if step == self.progress.last_saved_step:
                self.ctx.log(f"save now: the checkpoint of step {step} is already written")
            self.save(then=then, manual=True)
        if "sample" in commands:
            self.sample(then=then)
