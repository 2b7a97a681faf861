"""Saving a run: when and what the trainer writes, on top of checkpoint.py's file format.

- `Checkpointer.save`: a full-state checkpoint (every process calls it at the same step: each writes its RNG
  state into the one checkpoint, rank 0 the rest and the marker); a failed write stops the run at the next
  step boundary (write_guard.py), so no steps are trained that could not be saved.
- `save_lora`: the final LoRA into output_dir (rank 0); `final_save`: LoRA first (the thing people want), then
  the full state; `save_on_failure`: what a failed run still keeps.
- `check_room`: no run trains steps it cannot save: one checkpoint must fit before the first step.
Resuming (which checkpoint, whether it fits the run, loading it) is resume.py.
"""
from __future__ import annotations

from pathlib import Path

from hvtui.core.run import exitcodes
from hvtui.core.run.events import Event
from hvtui.core.train import checkpoint as ckpt
from hvtui.core.train import write_guard
from hvtui.core.train.context import Progress, RunContext, Training
from hvtui.core.train.failures import Abort


def run_summary(preset, bucket_keys: list[str], num_processes: int) -> dict:
    """The settings a checkpoint records; checkpoint.compare_summary says which may change on resume."""
    return {
        "train_batch_size": preset.train_batch_size,
        "gradient_accumulation_steps": preset.gradient_accumulation_steps,
        "learning_rate": preset.learning_rate,
        "lr_scheduler": preset.lr_scheduler,
        "lr_warmup_steps": preset.lr_warmup_steps,
        "optimizer": preset.optimizer,
        "seed": preset.seed,
        "buckets": sorted(bucket_keys),
        "num_processes": num_processes,
        "model_flavour": preset.model_flavour,
        "pretrained_model_name_or_path": preset.pretrained_model_name_or_path,
        "lora_rank": preset.lora_rank,
        "lora_alpha": preset.lora_alpha if preset.lora_alpha is not None else preset.lora_rank,
        "lora_targets": preset.lora_targets,
        "max_train_steps": preset.max_train_steps,
        "timestep_sampling": preset.timestep_sampling,
        "shift": preset.shift,
        "logit_mean": preset.logit_mean,
        "logit_std": preset.logit_std,
        "base_model_precision": preset.base_model_precision,
    }


class Checkpointer:
    """Saves `training` (set once it exists) at `progress.step`."""

    def __init__(self, ctx: RunContext, progress: Progress):
        self.ctx, self.progress = ctx, progress
        self.training: Training | None = None

    def unwrapped(self):
        assert self.training is not None
        return self.ctx.accelerator.unwrap_model(self.training.model)

    def check_room(self) -> None:
        """One checkpoint must fit on output_dir's disk before the first step (write_guard.estimate_save_bytes;
        later checkpoints' measured size is used). Data-parallel: any process short of space stops all."""
        assert self.training is not None
        ctx = self.ctx
        ctx.writes.save_bytes = write_guard.estimate_save_bytes(sum(q.numel() for q in self.training.params),
                                                                ctx.preset.export_comfyui)
        short = ctx.writes.space_short()
        if ctx.coll.distributed and ctx.coll.max([bool(short)])[0] and not short:
            short = "another process found too little free space for a checkpoint"
        if short:
            raise Abort(exitcodes.WRITE_FAILED, f"not enough space to save this run: {short}",
                        "free space on that disk (or set another output_dir) and run again")

    def save(self, then: str | None = "training", manual: bool = False, data: dict | None = None) -> None:
        """A checkpoint of this step, unless it is written already. `then`: the phase to announce afterwards.
        `manual`: a save-now checkpoint, never pruned. `data`: the sampler state to record (default: now)."""
        ctx, progress, t = self.ctx, self.progress, self.training
        assert t is not None
        if progress.step == progress.last_saved_step:
            return
        from safetensors.torch import save_file

        from hvtui.core.train.lora import LORA_FILE, lora_state_dict, save_lora

        p, step = ctx.preset, progress.step

        def write_lora(d: Path) -> None:
            write_guard.inject("checkpoint", d, step)
            save_lora(self.unwrapped(), d)   # folded scale: the file any loader reads
            exact = {k: v.detach().cpu().contiguous() for k, v in lora_state_dict(self.unwrapped()).items()}
            save_file(exact, str(d / ckpt.LORA_STATE_FILE))

        ctx.phase("saving", f"checkpoint at step {step}")
        state = {"summary": run_summary(p, sorted({e.bucket_key for e in t.entries.values()}),
                                        ctx.accelerator.num_processes),
                 "data": data or t.sampler.state_dict(), "loss_ema": progress.loss_ema,
                 "loss_ema_n": progress.loss_ema_n, **({"manual": True} if manual else {})}
        try:
            info = ckpt.save(ctx.out, step, write_lora=write_lora, optimizer=t.optimizer, scheduler=t.scheduler,
                             state=state, limit=p.checkpoints_total_limit, rank=ctx.accelerator.process_index,
                             sync=ctx.coll if ctx.coll.distributed else None)
        except ckpt.CheckpointError as e:
            ctx.writes.report_error(e.cause or e, e.path or ctx.out)
            ctx.log(f"{e}; stopping (the previous checkpoint is intact)", "warning")
            if then:
                ctx.phase(then, "")
            return
        progress.last_saved_step = step
        if info is not None:
            ctx.writes.save_bytes = write_guard.tree_size(info.path) + (info.path / LORA_FILE).stat().st_size * (
                1 + int(p.export_comfyui))   # the next checkpoint and the final LoRA: what must still fit
            ctx.publish(Event("checkpoint", {"step": step, "path": str(info.path),
                                             "lora_path": str(info.path / LORA_FILE)}))
        if then:
            ctx.phase(then, "")

    def save_lora(self) -> list[Path]:
        """The final LoRA into output_dir. A refused write is reported (the run then ends WRITE_FAILED) and the
        earlier LoRA file, if any, stays (the write is atomic)."""
        from hvtui.core.train.lora import LORA_FILE, save_lora

        ctx = self.ctx
        try:
            write_guard.inject("lora", ctx.out / LORA_FILE, self.progress.step)
            return save_lora(self.unwrapped(), ctx.out, comfy=ctx.preset.export_comfyui)
        except Exception as e:
            failure = write_guard.classify(e, ctx.out / LORA_FILE) if write_guard.is_write_error(e) else None
            if failure is None:
                raise
            ctx.writes.report(failure)
            ctx.log(f"the final LoRA was not written: {failure}", "warning")
            return []

    def final_save(self) -> bool:
        """LoRA first (the thing people want; rank 0), then the full state (every process). False when there
        was nothing to save (no step trained, or none since the checkpoint the run resumed from)."""
        from hvtui.core.train.lora import LORA_FILE

        ctx, progress = self.ctx, self.progress
        if progress.step == 0:
            ctx.log("stopped before the first step: nothing to save")
            return False
        if progress.step == progress.resumed_step and (ctx.out / LORA_FILE).is_file():
            ctx.log(f"nothing trained since the checkpoint of step {progress.step}"
                    + (f" (max_train_steps = {ctx.preset.max_train_steps}: raise it to train longer)"
                       if progress.step >= ctx.preset.max_train_steps else "") + "; its LoRA is in place")
            return False
        if ctx.is_main:
            ctx.phase("saving", "final LoRA")
            paths = self.save_lora()
            if paths:
                ctx.log("LoRA: " + ", ".join(str(x) for x in paths))
        self.save(then=None)
        return True

    def save_on_failure(self, agreed: bool = True, data: dict | None = None) -> None:
        """Training stopped for a repeated failure: the last good state is still worth keeping. `agreed`:
        every process stops here together (else only this one failed: no collective, rank 0 saves the LoRA).
        `data`: the sampler state to record (after an error inside a step: the state before that step, so a
        resume trains its samples). Nothing before training exists."""
        progress = self.progress
        if self.training is None or progress.step <= 0 or progress.step == progress.last_saved_step:
            return
        try:
            if self.ctx.is_main:
                self.save_lora()
            if agreed or not self.ctx.distributed:
                self.save(then=None, data=data)
        except Exception as e:   # the error being reported matters more
            self.ctx.log(f"could not save after the failure: {e}", "warning")
