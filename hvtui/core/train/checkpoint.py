"""Full-state checkpoints, written atomically: a crash or SIGKILL mid-write never costs the previous one.

Layout: OUTPUT_DIR/checkpoints/checkpoint-000040/
  pytorch_lora_weights.safetensors   the LoRA in diffusers format (every checkpoint is a usable LoRA); the
                                     alpha/rank scale is folded into lora_B so any loader reproduces it
  lora_state.safetensors             the PEFT LoRA tensors as trained (unfolded): resume loads these, exactly
  optimizer.pt, scheduler.pt         torch state dicts
  rng_state_R.pt                     python / numpy / torch / cuda RNG of rank R, one file per process
  state.json                         step, data order position, loss EMA, the run-defining settings, and
                                     "manual": true for a save-now checkpoint (never pruned)
  COMPLETE                           written last: the manifest (size + SHA-256 of every file,
                                     ckpt_manifest.py); a folder without it is not a checkpoint
Writing goes to checkpoints/.tmp-checkpoint-000040-PID/, the marker is written and synced last, then the
folder is renamed into place. Old checkpoints beyond the limit are deleted only after that rename; save-now
checkpoints ("manual") do not count towards the limit and are never deleted.
Resuming verifies the manifest first: `resolve_resume(..., "auto")` says which newer checkpoints it skipped and
why; a damaged checkpoint given by path is a CheckpointError naming the file.
With several processes (`save(..., sync=Collectives)`): rank 0 makes the folder and writes the shared parts
(the processes hold identical LoRA / optimizer / scheduler state after each all-reduced step), every rank
writes its own RNG file into it, all agree that every part is there, then rank 0 alone writes the marker
and renames: one complete checkpoint, written once.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from hvtui.core.formatting import first_line

DIRNAME = "checkpoints"
PREFIX = "checkpoint-"
MARKER = "COMPLETE"
STATE_FILE = "state.json"
LORA_STATE_FILE = "lora_state.safetensors"
_NAME = re.compile(r"^checkpoint-(\d+)$")

# Test hook (documented in tests/test_train_loop_checkpoint.py): "STEP:SECONDS" sleeps inside the write of
# the checkpoint for STEP, after the temporary folder exists, so a test can SIGKILL the run mid-write.
SLEEP_HOOK = "HVTUI_TEST_CHECKPOINT_SLEEP"

# Settings that change what a resumed run means. Changing the first group needs --allow-changed; the second
# group cannot be resumed at all (the saved LoRA/optimizer state does not fit the new run).
MEANING_KEYS = ("train_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler",
                "lr_warmup_steps", "optimizer", "seed", "buckets", "num_processes",
                "lora_alpha", "timestep_sampling", "shift",   # alpha: the same tensors, another LoRA scale
                "base_model_precision")   # the same LoRA shapes on a differently rounded base
INCOMPATIBLE_KEYS = ("model_flavour", "pretrained_model_name_or_path", "lora_rank", "lora_targets")


class CheckpointError(Exception):
    """A checkpoint that cannot be used (missing, incomplete, unreadable) or written: the message says which
    and why. A failed write carries the file it was writing (`path`) and the exception (`cause`)."""

    def __init__(self, message: str, path: Path | None = None, cause: BaseException | None = None):
        super().__init__(message)
        self.path, self.cause = path, cause


@dataclass
class CheckpointInfo:
    path: Path
    step: int
    state: dict


def root(output_dir: Path) -> Path:
    return Path(output_dir) / DIRNAME


def name_for(step: int) -> str:
    return f"{PREFIX}{step:06d}"


# --- reading -------------------------------------------------------------------------------------------
def read_checkpoint(path: Path, verify: bool = False) -> CheckpointInfo:
    """The checkpoint in `path`; `verify`: also every file against its manifest (sizes and checksums)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path}: incomplete checkpoint (no {MARKER} marker: its write did not finish, or "
                              "the marker was deleted); use --resume auto to pick the newest complete one")
    if verify:
        from hvtui.core.train import ckpt_manifest

        problem = ckpt_manifest.verify(path, MARKER, (LORA_STATE_FILE, "pytorch_lora_weights.safetensors"))
        if problem:
            raise CheckpointError(f"{problem}: the checkpoint is damaged")
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        step = int(state["step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / STATE_FILE}: unreadable checkpoint state: {type(e).__name__}: {e}") from None
    return CheckpointInfo(path, step, state)


def list_complete(output_dir: Path, problems: list[str] | None = None) -> list[CheckpointInfo]:
    """Complete checkpoints, oldest step first; temporary folders are ignored. A checkpoint-N folder that is
    not complete (no marker, unreadable state) is left out, and said in `problems` when given."""
    d = root(output_dir)
    out = []
    try:
        entries = list(d.iterdir()) if d.is_dir() else []
    except FileNotFoundError:   # moved aside meanwhile (--fresh on rank 0 of a data-parallel run)
        entries = []
    if entries:
        for p in entries:
            if not _NAME.match(p.name):
                continue
            try:
                out.append(read_checkpoint(p))
            except CheckpointError as e:
                if problems is not None:
                    problems.append(str(e))
    return sorted(out, key=lambda c: c.step)


def set_aside(output_dir: Path, names: tuple[str, ...]) -> Path:
    """Move an earlier run's checkpoints and `names` (its LoRA files, samples) out of the way of a new run in
    the same output_dir, into OUTPUT_DIR/previous-TIME/ (nothing is deleted); returns that folder."""
    import time

    output_dir = Path(output_dir)
    dest = output_dir / time.strftime("previous-%Y%m%d-%H%M%S")
    n = 1
    while dest.exists():
        dest = output_dir / f"{dest.name.split('.')[0]}.{n}"
        n += 1
    dest.mkdir()
    for name in (DIRNAME, *names):
        if (output_dir / name).exists():
            os.replace(output_dir / name, dest / name)
    return dest


def find_newest(output_dir: Path) -> CheckpointInfo | None:
    done = list_complete(output_dir)
    return done[-1] if done else None


def resolve_resume(output_dir: Path, spec: str | None, skipped=None) -> CheckpointInfo | None:
    """`None` -> fresh run; "auto" -> the newest checkpoint that is complete and intact (its files match its
    manifest), or None; else a path (must be complete and intact, else CheckpointError).
    `skipped(message)` hears about each newer checkpoint "auto" passed over and why."""
    if not spec:
        return None
    if spec != "auto":
        return read_checkpoint(Path(spec).expanduser(), verify=True)
    problems: list[str] = []
    done = list_complete(output_dir, problems)
    newest = done[-1].step if done else -1
    for text in problems:   # incomplete folders newer than the one resumed are news; older ones are noise
        m = re.search(r"checkpoint-(\d+)", text)
        if skipped is not None and (m is None or int(m.group(1)) > newest):
            skipped(f"skipped {text}")
    for info in reversed(done):
        try:
            return read_checkpoint(info.path, verify=True)
        except CheckpointError as e:
            if skipped is not None:
                skipped(f"skipped {info.path.name}: {e}; trying an older checkpoint")
    return None


# --- RNG -----------------------------------------------------------------------------------------------
def capture_rng() -> dict:
    """Every RNG the run touches, as tensors and plain lists (loadable with torch.load(weights_only=True))."""
    import numpy as np
    import torch

    np_state = cast(tuple, np.random.get_state(legacy=True))   # the legacy form is a tuple
    py_state = random.getstate()
    out = {"python": [py_state[0], list(py_state[1]), py_state[2]],
           "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                     int(np_state[3]), float(np_state[4])],
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict) -> None:
    import numpy as np
    import torch

    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def rng_file(rank: int) -> str:
    return f"rng_state_{rank}.pt"


# --- writing -------------------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_temporaries(output_dir: Path) -> list[Path]:
    """Remove the remains of interrupted writes (call before a run writes checkpoints). A complete
    checkpoint that `commit` had moved aside (.old-NAME-PID) when the write crashed before its
    replacement took its place is moved back instead."""
    d = root(output_dir)
    removed = []
    if d.is_dir():
        for p in d.iterdir():
            if p.name.startswith(".old-"):
                final = d / p.name[len(".old-"):].rpartition("-")[0]
                if _NAME.match(final.name) and not final.exists() and (p / MARKER).is_file():
                    os.replace(p, final)
                    continue
            if p.name.startswith(".tmp-") or p.name.startswith(".old-"):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def begin(output_dir: Path, step: int) -> Path:
    """A fresh temporary folder for the checkpoint of `step` (all ranks write their parts into it)."""
    d = root(output_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".tmp-{name_for(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _test_sleep(step: int) -> None:
    hook = os.environ.get(SLEEP_HOOK, "")
    if hook:
        at, _, seconds = hook.partition(":")
        if int(at) == step:
            time.sleep(float(seconds or 60))


def commit(output_dir: Path, tmp: Path, step: int, state: dict, limit: int, ranks: int = 1) -> CheckpointInfo:
    """Write state.json, then the marker (the manifest), sync, rename into place, then prune to `limit`
    checkpoints. Refuses (CheckpointError) when an RNG file of one of the `ranks` processes is missing."""
    from hvtui.core.train import ckpt_manifest

    missing = [rng_file(r) for r in range(ranks) if not (tmp / rng_file(r)).is_file()]
    if missing:
        raise CheckpointError(f"{tmp}: {', '.join(missing)} missing; the checkpoint of step {step} is not complete")
    state = {**state, "step": step, "saved_at": time.time(), "ranks": ranks}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
    _test_sleep(step)
    from hvtui.core.file_mode import follow_umask

    for p in tmp.iterdir():
        follow_umask(p)   # safetensors' files come out 0600; the umask decides, as for every output
        _fsync(p)
    (tmp / MARKER).write_text(ckpt_manifest.build(tmp, step, skip=(MARKER,)), encoding="utf-8")
    _fsync(tmp / MARKER)
    _fsync(tmp)
    final = root(output_dir) / name_for(step)
    old = None
    if final.exists():   # a save-now and the final save at the same step: swap, then drop the old one
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync(root(output_dir))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    prune(output_dir, limit)
    return CheckpointInfo(final, step, state)


def prune(output_dir: Path, limit: int) -> list[Path]:
    """Keep the newest `limit` checkpoints; save-now ("manual") ones are kept besides and never deleted."""
    done = [c for c in list_complete(output_dir) if not c.state.get("manual")]
    removed = []
    for c in done[:max(len(done) - max(limit, 1), 0)]:
        shutil.rmtree(c.path, ignore_errors=True)
        removed.append(c.path)
    return removed


def save(output_dir: Path, step: int, *, write_lora: Callable[[Path], object], optimizer, scheduler,
         state: dict, limit: int, rank: int = 0, sync=None) -> CheckpointInfo | None:
    """Write one checkpoint. One process: all of it. Several (`sync`: a collectives.Collectives; every
    process calls this at the same step): see the module doc. Returns the checkpoint on rank 0, None on the
    others. A failed write on any process raises CheckpointError on all and leaves no checkpoint."""
    import torch

    ranks = sync.world if sync is not None else 1
    main = rank == 0
    final = root(output_dir) / name_for(step)
    tmp: Path | None = None
    error: Exception | None = None
    writing = root(output_dir)   # `writing`: the file being written, as the user sees it
    try:
        if main:
            tmp = begin(output_dir, step)
    except OSError as e:
        error = e
    if sync is not None:
        tmp = sync.broadcast_object(str(tmp) if tmp is not None else None)
        tmp = Path(tmp) if tmp is not None else None
    if tmp is not None:
        try:
            if main:
                writing = final
                write_lora(tmp)
                writing = final / "optimizer.pt"
                torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
                writing = final / "scheduler.pt"
                torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            writing = final / rng_file(rank)
            torch.save(capture_rng(), tmp / rng_file(rank))
            _fsync(tmp / rng_file(rank))
        except Exception as e:   # OSError, torch's RuntimeError, SafetensorError: the caller classifies it
            from hvtui.core.train.write_guard import is_write_error

            if not is_write_error(e):
                raise
            error = e
    failed = error is not None or tmp is None
    if sync is not None:
        failed = sync.any(failed)       # also the barrier: every rank's part is on disk
    info = None
    if not failed and main:
        assert tmp is not None   # rank 0 made it, or the write failed
        writing = final
        try:
            info = commit(output_dir, tmp, step, state, limit, ranks=ranks)
        except (OSError, CheckpointError) as e:
            error, failed = e, True
    if sync is not None:
        failed = sync.any(failed)
    if failed:
        if main and tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"the checkpoint of step {step} could not be written" +
                              (f": {error}" if error is not None else " (another process failed to write its part)"),
                              path=writing, cause=error)
    return info


def load_states(info: CheckpointInfo, optimizer, scheduler, rank: int = 0) -> None:
    """Optimizer, scheduler and this rank's RNG from a checkpoint (the LoRA is loaded by the caller)."""
    rng = info.path / rng_file(rank)
    if not rng.is_file():
        rng = info.path / rng_file(0)
    opt, sch, rng_state = (read_torch_file(f) for f in (info.path / "optimizer.pt", info.path / "scheduler.pt", rng))
    try:
        optimizer.load_state_dict(opt)
        scheduler.load_state_dict(sch)
        restore_rng(rng_state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{info.path}: its training state does not fit this run ({type(e).__name__}: "
                              f"{first_line(e, limit=200)}); the checkpoint may come from another run or "
                              "version") from None


def read_torch_file(path: Path):
    """A checkpoint's torch file, or a CheckpointError naming it (missing, or damaged: truncated, overwritten)."""
    import pickle

    import torch

    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint is damaged")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:   # torch's text here advises loading unsafely: not for a damaged file
        raise CheckpointError(f"{path} cannot be read (not a torch checkpoint file): the checkpoint is "
                              "damaged") from None
    except Exception as e:   # noqa: BLE001  overwritten bytes make the unpickler raise almost anything
        # (IndexError, KeyError, UnicodeDecodeError, ... besides the usual OSError / RuntimeError / EOFError);
        # only torch.load runs here, so whatever it raises means this file cannot be read
        # the first line only: torch.load's further lines advise loading unsafely, not for a damaged file
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {first_line(e, limit=200)}): the "
                              "checkpoint is damaged") from None


# --- what a run means ----------------------------------------------------------------------------------
def compare_summary(saved: dict, current: dict) -> tuple[list[str], list[str]]:
    """(changed, incompatible): human lines like "train_batch_size: 1 -> 2"."""
    def lines(keys):
        out = []
        for k in keys:
            if k in saved and k in current and saved[k] != current[k]:
                out.append(f"{k}: {_short(saved[k])} -> {_short(current[k])}")
        return out
    return lines(MEANING_KEYS), lines(INCOMPATIBLE_KEYS)


def _short(v) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 120 else s[:117] + "..."
