"""Resuming a run, on top of checkpoint.py's file format: which checkpoint (decided before anything loads), whether
it fits the run as now set, and loading it into the run once the model and optimizer exist.

- `choose`: `--resume auto` / PATH / none -> the checkpoint and why. A checkpoint trained with other model or
  LoRA settings is refused (RESUME_MISMATCH); one whose settings changed needs --allow-changed. A new run in a
  folder holding an earlier one is refused, or with --fresh the earlier run moves aside (run_claim.py).
- `restore`: the LoRA (the exact PEFT tensors, so a resumed run repeats an uninterrupted one bit for bit),
  optimizer, schedule, RNG, data order and loss average.
"""
from __future__ import annotations

from dataclasses import dataclass

from hvtui.core.run import exitcodes
from hvtui.core.train import checkpoint as ckpt
from hvtui.core.train.checkpointing import run_summary
from hvtui.core.train.context import Progress, RunContext, Training
from hvtui.core.train.failures import DAMAGED_CHECKPOINT_HINT, Abort


@dataclass(frozen=True)
class ResumeChoice:
    """The checkpoint a run continues (None: a new run), why, and the settings that changed since it was
    written (allowed by --allow-changed)."""
    checkpoint: ckpt.CheckpointInfo | None
    reason: str
    changed: tuple[str, ...] = ()


def choose(ctx: RunContext, report) -> ResumeChoice:
    spec = ctx.options.resume
    try:
        info = ckpt.resolve_resume(ctx.out, spec, skipped=lambda m: ctx.log(f"--resume auto: {m}", "warning"))
    except ckpt.CheckpointError as e:
        raise Abort(exitcodes.INVALID, str(e), "--resume auto takes the newest intact checkpoint; or pass "
                    "another one's path with --resume PATH (ls OUTPUT_DIR/checkpoints)") from None
    if spec == "auto" and info is None:
        ctx.log("--resume auto: no complete checkpoint in " + str(ckpt.root(ctx.out)) + "; starting fresh")
    if info is None:
        _make_room_for_a_new_run(ctx)
        return ResumeChoice(None, "--resume auto found no complete checkpoint: a new run" if spec == "auto"
                            else "a new run" + (" (--fresh)" if ctx.options.fresh else ""))
    changed = _changes(ctx, info, report)
    for line in changed:
        ctx.log(f"resume with a changed setting (--allow-changed): {line}", "warning")
    return ResumeChoice(info, "--resume auto: the newest intact checkpoint" if spec == "auto"
                        else f"--resume {spec}", tuple(changed))


def _changes(ctx: RunContext, info: ckpt.CheckpointInfo, report) -> list[str]:
    """What resuming `info` would change, or an Abort when it cannot or may not be resumed."""
    from hvtui.core.train.schedule_check import changes as schedule_changes

    preset, num_processes = ctx.preset, ctx.dist.world_size
    saved = info.state.get("summary", {})
    current = run_summary(preset, [b.key for b in report.buckets], num_processes)
    changed, incompatible = ckpt.compare_summary(saved, current)
    changed += schedule_changes(saved, current, info.step)
    before = saved.get("num_processes", num_processes)
    if before != num_processes:
        old = {**current, **{k: saved[k] for k in ("train_batch_size", "gradient_accumulation_steps") if k in saved}}
        g_old = old["train_batch_size"] * old["gradient_accumulation_steps"] * before
        g_new = preset.train_batch_size * preset.gradient_accumulation_steps * num_processes
        changed += [f"global batch: {g_old} -> {g_new} samples per optimizer step (learning_rate is not scaled)",
                    f"sample order: each epoch's batches are shared among {num_processes} process(es) instead "
                    f"of {before}, so different samples meet in each step from here on (the losses will not "
                    "repeat the original run's)"]
    if incompatible:
        raise Abort(exitcodes.RESUME_MISMATCH,
                    f"{info.path} was trained with other model/LoRA settings:\n  " + "\n  ".join(incompatible),
                    "resume it with the original settings, or start a new run in another output_dir")
    if changed and not ctx.options.allow_changed:
        raise Abort(exitcodes.RESUME_MISMATCH, f"resuming {info.path} would change the run:\n  " + "\n  ".join(changed),
                    "restore these settings, or pass --allow-changed to continue with the new ones")
    return changed


def _make_room_for_a_new_run(ctx: RunContext) -> None:
    """A new run in an output_dir that holds an earlier one would prune the earlier checkpoints by step
    number (or its own), mix two runs in one events.jsonl, and a later --resume auto could pick the wrong
    run: refuse, or with --fresh move the earlier run aside (run_claim.py)."""
    from hvtui.core.train.run_claim import EarlierRun

    try:
        moved, step = ctx.claim.make_room(ctx.options.fresh)
    except EarlierRun as e:
        if ctx.options.resume:   # --resume auto found checkpoints, none of them intact (said above)
            raise Abort(exitcodes.INVALID, f"no intact checkpoint to resume in {ckpt.root(ctx.out)}: each one "
                        "is damaged (the warnings above name the files)",
                        DAMAGED_CHECKPOINT_HINT + "; or --fresh") from None
        raise Abort(exitcodes.INVALID, f"{ctx.out} holds an earlier run (checkpoints up to step {e.step}); "
                    "a new run there would mix with it",
                    "continue it with --resume auto; or start over with --fresh (its checkpoints, LoRA, "
                    "samples and events.jsonl move to OUTPUT_DIR/previous-TIME/, nothing is deleted); or set "
                    "another output_dir") from None
    if moved is not None:
        ctx.log(f"--fresh: the earlier run in {ctx.out} (step {step}) moved to {moved}" if step is not None
                else f"the files of an earlier run in {ctx.out} (no checkpoint: nothing to resume) moved to {moved}")


def restore(ctx: RunContext, progress: Progress, training: Training, info: ckpt.CheckpointInfo) -> None:
    """Load checkpoint `info` into the run (every process; each its own RNG state)."""
    from safetensors import SafetensorError

    from hvtui.core.train.lora import LORA_FILE, load_lora_file

    ctx.phase("loading", f"resuming from {info.path.name}")
    exact = info.path / ckpt.LORA_STATE_FILE
    lora_file = exact if exact.is_file() else info.path / LORA_FILE
    try:
        if lora_file is exact:   # the PEFT tensors as trained: resuming repeats the run bit for bit
            from safetensors.torch import load_file

            from hvtui.core.train.lora import set_lora_state_dict

            set_lora_state_dict(training.model, load_file(str(exact)))
        else:   # an older checkpoint: the user file has alpha/rank folded into lora_B; undo that
            load_lora_file(training.model, lora_file)
    except (SafetensorError, OSError) as e:
        raise Abort(exitcodes.INVALID, f"{lora_file} cannot be read ({type(e).__name__}: {e}): the checkpoint "
                    "is damaged", DAMAGED_CHECKPOINT_HINT) from None
    except (KeyError, RuntimeError) as e:
        raise Abort(exitcodes.RESUME_MISMATCH, f"{info.path}: the LoRA does not fit this run ({e})",
                    "resume with the LoRA settings the checkpoint was trained with") from None
    try:
        ckpt.load_states(info, training.optimizer, training.scheduler, rank=ctx.accelerator.process_index)
    except ckpt.CheckpointError as e:
        raise Abort(exitcodes.INVALID, str(e), DAMAGED_CHECKPOINT_HINT) from None
    st = info.state
    progress.step = progress.resumed_step = int(st["step"])
    progress.last_saved_step = progress.step
    progress.loss_ema, progress.loss_ema_n = st.get("loss_ema"), int(st.get("loss_ema_n", 0))
    for w in training.sampler.load_state_dict(st.get("data", {})):
        ctx.log(w, "warning")
    ctx.log(f"resumed at step {progress.step} (epoch {training.sampler.epoch}, batch {training.sampler.index}"
            + (" of each process's share)" if ctx.coll.distributed else ")"))
