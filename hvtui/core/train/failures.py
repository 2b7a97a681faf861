"""Failure handling, in one place: what each way a run or a step can fail means for the run and its exit code.

- `Abort`: a part ends the run early with an exit code, a message and a hint (the error event).
  `Stopped`: a stop request came while caching (nothing to save yet).
- `StepFailures`: a failed step skips its batch and the step is tried again with new noise: an OOM (up to
  MAX_OOM_IN_A_ROW in a row), a damaged cache entry (deleted, encoded again at the next start; up to
  MAX_DAMAGED_IN_A_ROW), an fp16 gradient overflow (the loss scaler lowers its scale; up to
  MAX_OVERFLOW_IN_A_ROW) or a non-finite loss / gradient norm (up to the preset's max_nonfinite_steps). Past a
  limit the run saves what it has and stops with TRAINING_FAILED.
- `run_ending`: the exception a run ended with -> (exit code, status, clean): an Abort's code; a stop's signal
  code (129 / 130 / 143) or 0; a write failure anywhere, or a disk too full for the next save, -> WRITE_FAILED
  (write_guard.py) unless a signal stopped the run first; anything else is UNEXPECTED, reported with its
  traceback after saving what was trained.
- `Injector`: the test hooks below, read once per run.

Test hooks (environment variables, for tests only):
  HVTUI_INJECT_NAN_AT_STEP=N     the loss of step N is NaN (every attempt, or HVTUI_INJECT_NAN_TIMES times)
  HVTUI_INJECT_OOM_AT_STEP=N     step N raises torch.OutOfMemoryError (every attempt, or ..._OOM_TIMES times)
  HVTUI_INJECT_OOM_WHERE=backward  ... raised after that step's backward pass instead of before its forward
  HVTUI_INJECT_RANK=R            the hooks above fire on process R only (data-parallel tests)
  HVTUI_TEST_STEP_SLEEP=S        sleep S seconds after each step (lets a test signal a run mid-training)
  HVTUI_TEST_CHECKPOINT_SLEEP    see checkpoint.py
  HVTUI_INJECT_WRITE_FAIL        see write_guard.py
"""
from __future__ import annotations

import os
import traceback
from collections.abc import Callable

import torch

from hvtui.core.run import exitcodes
from hvtui.core.run.events import Event
from hvtui.core.train import checkpoint as ckpt
from hvtui.core.train import write_guard

STOP_EXIT = exitcodes.SIGNAL_EXIT
MAX_OOM_IN_A_ROW = 3
MAX_DAMAGED_IN_A_ROW = 10   # batches skipped for damaged cache entries before the cache is called damaged
MAX_OVERFLOW_IN_A_ROW = 30   # fp16 loss scaling starts high and halves on each overflow
OOM_ADVICE = ("set enable_group_offload = true, lower the bucket size (resolution / num_frames), or keep "
              "gradient_checkpointing = true")
DAMAGED_CHECKPOINT_HINT = ("resume from another checkpoint with --resume PATH (ls OUTPUT_DIR/checkpoints), or delete "
                           "this one")


class Abort(Exception):
    """Ends the run early with an exit code; message and hint go into the error event. `everywhere`: every
    process of a data-parallel run stops with this same error (rank 0 reports it for all); else only this
    process hit it and it says so itself."""

    def __init__(self, code: int, message: str, hint: str = "", status: str = "failed", everywhere: bool = True):
        super().__init__(message)
        self.code, self.message, self.hint, self.status = code, message, hint, status
        self.everywhere = everywhere


class Stopped(Exception):
    """A stop request before training started (while caching): nothing to save."""


def _env_int(name: str) -> int | None:
    v = os.environ.get(name, "").strip()
    return int(v) if v else None


class Injector:
    """The NaN / OOM test hooks (module doc), read once per run."""

    def __init__(self, rank: int = 0):
        only = _env_int("HVTUI_INJECT_RANK")
        here = only is None or only == rank
        self.nan_at = _env_int("HVTUI_INJECT_NAN_AT_STEP") if here else None
        self.oom_at = _env_int("HVTUI_INJECT_OOM_AT_STEP") if here else None
        self.nan_left, self.oom_left = _env_int("HVTUI_INJECT_NAN_TIMES"), _env_int("HVTUI_INJECT_OOM_TIMES")
        self.oom_where = os.environ.get("HVTUI_INJECT_OOM_WHERE", "").strip() or "forward"
        s = os.environ.get("HVTUI_TEST_STEP_SLEEP", "").strip()
        self.step_sleep = float(s) if s else 0.0

    def nan(self, step: int) -> bool:
        if self.nan_at != step or self.nan_left == 0:
            return False
        if self.nan_left is not None:
            self.nan_left -= 1
        return True

    def oom(self, step: int, where: str = "forward") -> None:
        if self.oom_at != step or self.oom_left == 0 or where != self.oom_where:
            return
        if self.oom_left is not None:
            self.oom_left -= 1
        raise torch.OutOfMemoryError(f"CUDA out of memory (injected by HVTUI_INJECT_OOM_AT_STEP={step}, {where})")


class StepFailures:
    """How many steps failed in a row, by kind, and what that means. `save_on_failure()` keeps the last good
    state before a limit stops the run. `attempt` numbers the retries of the current step: a retried step
    draws new noise (train_step.derived_seed)."""

    def __init__(self, ctx, save_on_failure: Callable[[], None]):
        self.ctx, self.save_on_failure = ctx, save_on_failure
        self.nonfinite_ids: list[str] = []   # sample ids of consecutive non-finite steps
        self.nonfinite = self.oom = self.overflow = self.damaged = 0
        self.attempt = 0

    def retry(self, result, step: int) -> bool:
        """After an attempt at step `step`: True when its batch was skipped and the step is tried again, False
        when it counts. Each kind's count resets once a later kind of outcome (in the order below) is reached."""
        from hvtui.core.train.components import release_memory

        log, ids = self.ctx.log, ", ".join(result.ids)
        if result.status == "oom":
            # the step's tensors died with its frame: now the allocator can give their memory back
            release_memory()
            self.oom += 1
            self.attempt += 1
            log(f"step {step}: out of memory on {ids} ({self.oom}/{MAX_OOM_IN_A_ROW} in a row); batch skipped",
                "warning")
            if self.oom >= MAX_OOM_IN_A_ROW:
                self.save_on_failure()
                raise Abort(exitcodes.TRAINING_FAILED, f"out of memory {self.oom} times in a row (last batch: {ids})",
                            OOM_ADVICE)
            return True
        self.oom = 0
        if result.status == "damaged":   # cache_verify.py: the entry is deleted, the batch skipped
            self.attempt += 1
            self.damaged += 1
            log(f"step {step}: {result.what}; batch skipped (the entry is deleted and encoded again at the next "
                "start)", "warning")
            if self.damaged >= MAX_DAMAGED_IN_A_ROW:
                self.save_on_failure()
                raise Abort(exitcodes.TRAINING_FAILED, f"{self.damaged} batches in a row had damaged cache entries "
                            f"(last: {result.what})", "the cache folders are damaged: run again with --resume auto "
                            "(the deleted entries are encoded again), or check the disk")
            return True
        self.damaged = 0
        if result.status == "overflow":
            self.attempt += 1
            self.overflow += 1
            if self.overflow >= MAX_OVERFLOW_IN_A_ROW:
                raise Abort(exitcodes.TRAINING_FAILED, f"fp16 gradients overflowed {self.overflow} times in a row",
                            "use mixed_precision = \"bf16\" or lower learning_rate")
            return True
        self.overflow = 0
        if result.status == "nonfinite":
            return self._nonfinite(result, step, ids)
        self.nonfinite_ids.clear()
        self.attempt = self.nonfinite = 0
        return False

    def _nonfinite(self, result, step: int, ids: str) -> bool:
        limit = self.ctx.preset.max_nonfinite_steps
        self.nonfinite_ids += result.ids
        self.attempt += 1
        self.nonfinite += 1
        self.ctx.log(f"step {step}: non-finite {result.what} on {ids}; no update ({self.nonfinite}/{limit} in a "
                     "row)", "warning")
        if self.nonfinite >= limit:
            self.save_on_failure()
            raise Abort(exitcodes.TRAINING_FAILED, f"non-finite {result.what} {self.nonfinite} times in a row; "
                        f"samples: {', '.join(dict.fromkeys(self.nonfinite_ids))}",
                        "lower learning_rate, check these clips, or use mixed_precision = \"bf16\"")
        return True


def stop_outcome(control) -> tuple[int, str]:
    """(exit code, status) of a run ended by a stop request: a signal's code, else 0."""
    reason = control.stop_reason
    return STOP_EXIT.get(reason, exitcodes.OK), ("interrupted" if reason in STOP_EXIT else "stopped")


def run_ending(ctx, error: Exception | None, step: int,
               save_after_unexpected: Callable[[], None]) -> tuple[int, str, bool]:
    """(exit code, status, clean) of a run that ended with `error` (None: it ran to its end or was stopped),
    its error event published. `clean`: every process ends here together (else one failed alone: no
    collective at the end)."""
    code, status, clean = exitcodes.OK, "completed", True
    if error is None:
        if ctx.control.stop_requested:
            code, status = stop_outcome(ctx.control)
    elif isinstance(error, Stopped):
        code, status = stop_outcome(ctx.control)
    elif isinstance(error, Abort):
        code, status, clean = error.code, error.status, error.everywhere
        ctx.publish(Event("error", {"message": error.message, "hint": error.hint}), local=not error.everywhere)
    else:
        failure = write_guard.classify(error, ctx.out, at_write_site=False)
        if failure is None:
            code, status, clean = _unexpected(ctx, error, save_after_unexpected)
        else:   # a full or read-only disk where no write was expected to fail (caching, --fresh, the lock)
            ctx.writes.report(failure)
            code, status, clean = exitcodes.WRITE_FAILED, "failed", False
    if ctx.writes.failure is not None or ctx.writes.low_space:
        code, status = _write_outcome(ctx, code, status, step)
    return code, status, clean


def _unexpected(ctx, e: Exception, save_after_unexpected: Callable[[], None]) -> tuple[int, str, bool]:
    """A bug or an unexpected library error: report it, keep what was trained."""
    where = (f"traceback in {ctx.out / 'events.jsonl'}" if ctx.writer is not None
             else "please report it with the preset")   # no events.jsonl was opened yet
    ctx.publish(Event("error", {"message": f"{type(e).__name__}: {e}",
                                "hint": f"unexpected error (likely a bug in hvtui); {where}",
                                "traceback": "".join(traceback.format_exception(e))}), local=True)
    save_after_unexpected()
    return exitcodes.UNEXPECTED, "failed", False


def _write_outcome(ctx, code: int, status: str, step: int) -> tuple[int, str]:
    """The error event of a run stopped by a write failure or a disk too full for the next save, and its
    exit code: WRITE_FAILED, unless a signal stopped the run first (it keeps 129/130/143)."""
    if ctx.is_main:
        message, hint = ctx.writes.explain(step, ckpt.find_newest(ctx.out))
        ctx.publish(Event("error", {"message": message, "hint": hint}))
    if ctx.control.stop_reason in STOP_EXIT:
        return STOP_EXIT[ctx.control.stop_reason], status
    return exitcodes.WRITE_FAILED, "failed"
