"""A run's claim on its output_dir, from the first look at the folder until the run ends.

- `acquire`: the run lock (run_lock.py; rank 0 of a data-parallel run holds it for all its processes).
- `make_room`: a new run (not a resume) moves everything of the earlier run aside, into
  OUTPUT_DIR/previous-TIME/: checkpoints, LoRA files, samples and events.jsonl, so each events file holds one
  run (and its resumptions) and the earlier run's history stays beside its checkpoints. With checkpoints
  there this needs --fresh (else the start is refused); an earlier run without any (stopped or failed before
  its first save) has nothing to resume, and its files move aside on their own.
- `accept` / `release`: until the run is accepted (its checks passed, the earlier run is out of the way),
  events are held in memory; a refused start leaves the folder as it found it.
Stale control files (a stop sent by `hvtui --attach` to a run that had ended) are dropped when a run is
accepted, so they cannot stop the new one.
"""
from __future__ import annotations

from pathlib import Path

from hvtui.core.run.runlog import FILENAME as EVENTS_FILE
from hvtui.core.train import checkpoint as ckpt
from hvtui.core.train.run_lock import RunLock

LOCKED_HINT = ("wait for that run to end, or stop it (hvtui --attach OUTPUT_DIR, then x); or set another "
               "output_dir. --fresh and --resume are refused while it runs")


def earlier_run_files(output_dir: Path) -> tuple[str, ...]:
    """What of an earlier run lies in OUTPUT_DIR (names of entries that exist)."""
    from hvtui.core.train.lora import COMFY_FILE, LORA_FILE

    names = (ckpt.DIRNAME, LORA_FILE, COMFY_FILE, "samples", EVENTS_FILE)
    return tuple(n for n in names if (Path(output_dir) / n).exists())


class RunClaim:
    def __init__(self, output_dir: Path, main: bool):
        self.out = Path(output_dir)
        self.main = main                 # rank 0 (or the only process): the one that locks and moves
        self.lock = RunLock(self.out) if main else None
        self.accepted = False

    def acquire(self) -> None:
        """RunLocked when another live run holds the folder; OSError when it cannot be written."""
        if self.lock is not None:
            self.lock.acquire()

    def make_room(self, fresh: bool) -> tuple[Path | None, int | None]:
        """Move the earlier run aside for a new one: (the folder it went to, or None; the earlier run's newest
        checkpoint step, or None). Raises EarlierRun when it has checkpoints and `fresh` is not set."""
        newest = ckpt.find_newest(self.out)
        if newest is not None and not fresh:
            raise EarlierRun(newest.step)
        if not self.main or not earlier_run_files(self.out):
            return None, newest.step if newest else None
        return ckpt.set_aside(self.out, earlier_run_files(self.out)), newest.step if newest else None

    def accept(self, writer=None) -> None:
        from hvtui.core.run.control import FileControl

        self.accepted = True
        if self.main:
            FileControl(self.out / "control").drain()
        if writer is not None:
            writer.open()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release(discard=not self.accepted)


class EarlierRun(Exception):
    def __init__(self, step: int):
        self.step = step
        super().__init__(f"an earlier run with checkpoints up to step {step}")
