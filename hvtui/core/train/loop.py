"""The run half of the trainer: `train(preset, bus, control, options) -> exit code`. This module drives the parts
and publishes the step events; each part does one job:

  preflight.py         the preset (exit 2), the doctor (exit 3), the scan, then the run plan (plan.py)
  resume.py            which checkpoint to resume (exit 5 if it would change the run), and loading it
  run_setup.py         accelerator and process group; after caching, the model, optimizer, schedule, sampler
  cache_phase.py       load the encoders, encode what the plan says is missing (latent_cache.py)
  train_step.py        one optimizer step (step.py: batch -> loss and gradients, the code bench/ times)
  failures.py          NaN / OOM / damaged-entry retries and limits, write failures, Abort -> exit code
  control_boundary.py  pause / stop / save-now / sample-now between steps
  checkpointing.py     checkpoints and the final LoRA (checkpoint.py: their file format)
  samples.py           validation samples
  context.py           what they share: the preset, the events, the process, what the run holds

Order: preset -> doctor -> scan -> resume choice -> plan -> accelerator -> cache -> LoRA, optimizer,
schedule -> train `max_train_steps` optimizer steps -> final LoRA + checkpoint (+ a last validation sample).

Everything random in a step (data order, sigmas, noise, dropout) is a function of (seed, step, slot, attempt),
and the rest of the state is in the checkpoint, so a resumed run repeats an uninterrupted one.

Data-parallel (several processes from torchrun / accelerate launch, see multi_gpu.py): rank r takes batches
r, r+W, ... of the epoch plan, so W processes x batch 1 compute what one process with
gradient_accumulation_steps x W computes (the ranks' LoRA gradients are averaged as accumulation averages the
micro-batches; train_step.py). Rank 0 alone publishes events and reads the control files; whatever decides
what every process does next (control requests at step boundaries, skipping a step for a non-finite loss or an
OOM, aborting, caching done) is agreed through a collective (collectives.py), so no process waits in a
collective the others never reach.

Faults: one live run per output_dir (run_claim.py, run_lock.py); a refused start writes nothing there. Write
failures of any kind stop the run at the next step boundary with the file and the free space named, keep the
last good checkpoint and exit WRITE_FAILED (write_guard.py); the run also stops and saves while a checkpoint
still fits. Cache entries and checkpoints are verified before they are trusted (cache_verify.py,
ckpt_manifest.py). Test hooks (NaN, OOM, a sleep per step): failures.py.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from hvtui.core.run import events
from hvtui.core.run.eta import EtaClock
from hvtui.core.run.events import Event
from hvtui.core.train import cache_phase, preflight, resume, run_setup
from hvtui.core.train.checkpointing import Checkpointer
from hvtui.core.train.context import Progress, RunContext
from hvtui.core.train.control_boundary import ControlBoundary
from hvtui.core.train.failures import Injector, StepFailures, run_ending
from hvtui.core.train.train_step import StepResult, TrainStep

if TYPE_CHECKING:
    from hvtui.core.train.samples import ValidationSamples

EMA_BETA = 0.9


class Trainer:
    """One run: `run()` -> exit code."""

    def __init__(self, preset, bus, control, options, allocator_note: str = ""):
        self.ctx = RunContext(preset, bus, control, options)
        self.preset, self.allocator_note = preset, allocator_note
        self.progress = Progress()
        self.inject = Injector(self.ctx.dist.rank)
        self.saver = Checkpointer(self.ctx, self.progress)
        self.samples: ValidationSamples | None = None
        self.boundary = ControlBoundary(self.ctx, self.progress, save=self.saver.save, sample=self._sample)

    def run(self) -> int:
        ctx = self.ctx
        try:
            self._run()
            code, status, clean = run_ending(ctx, None, self.progress.step, self._save_after_unexpected)
        except Exception as e:   # every way a run fails maps to its exit code in one place (failures.py)
            code, status, clean = run_ending(ctx, e, self.progress.step, self._save_after_unexpected)
        ctx.publish(events.state({"completed": "finished", "stopped": "stopped",
                                  "interrupted": "stopped"}.get(status, "failed")))
        ctx.publish(events.phase("done", status))
        ctx.publish(Event("finished", {"status": status, "exit_code": code, "step": self.progress.step}))
        try:
            ctx.release(clean=clean)
        finally:
            ctx.release_claim()
        return code

    def _save_after_unexpected(self) -> None:
        self.saver.save_on_failure(agreed=False, data=self.progress.data_at_step)

    def _run(self) -> None:
        ctx = self.ctx
        preflight.check_preset(ctx)
        ctx.claim_output_dir()
        ctx.start_trackers()   # a sink only: they start at run_started, after the claim is accepted
        ctx.publish(events.state("running"))
        preflight.check_doctor(ctx)
        report = preflight.scan(ctx)
        choice = resume.choose(ctx, report)
        ctx.claim.accept(ctx.writer)   # from here on the run writes into output_dir
        if ctx.writer is not None and ctx.writer.failed:
            # the writer reports its failure to the write guard (on_error) before it calls itself failed
            assert ctx.writes.failure is not None
            raise ctx.writes.failure
        plan = preflight.make_plan(ctx, report, choice)
        run_setup.start(ctx, plan, self.allocator_note)
        preflight.check_shared_folders(ctx)
        run_setup.start_telemetry(ctx)
        cache = cache_phase.load_and_cache(ctx, plan.cache, report)
        from hvtui.core.train.samples import ValidationSamples, park  # diffusers: imported once a run gets here

        if "vae" in ctx.components:   # training does not use it: host memory until a validation needs it
            park(ctx.components["vae"])
        training = run_setup.build_training(ctx, cache)
        self.saver.training = training
        self.samples = ValidationSamples(ctx, self.progress, cache, self.saver.unwrapped)
        if plan.resume is not None:
            resume.restore(ctx, self.progress, training, plan.resume)
        self.progress.data_at_step = training.sampler.state_dict()
        self.saver.check_room()
        self._train_loop(cache, TrainStep(self.preset, ctx.accelerator, ctx.coll, training, self.inject))
        if self.saver.final_save() and self._final_sample_due():
            self._sample(then=None)

    def _sample(self, then: str | None = "training") -> None:
        if self.samples is not None:
            self.samples.take(then=then)

    def _final_sample_due(self) -> bool:
        p, ctx = self.preset, self.ctx
        return bool(p.validation_steps and self.progress.last_validated_step != self.progress.step
                    and not ctx.control.stop_requested and p.all_validation_prompts and ctx.writes.failure is None)

    def _train_loop(self, cache, train_step: TrainStep) -> None:
        p, ctx, progress = self.preset, self.ctx, self.progress
        ctx.phase("training", f"steps {progress.step + 1} to {p.max_train_steps}")   # stays true as steps pass
        clock = EtaClock(p.max_train_steps, p.checkpointing_steps, p.validation_steps)   # eta_s, one source
        failures = StepFailures(ctx, self.saver.save_on_failure)
        if ctx.accelerator.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.accelerator.device)
        while progress.step < p.max_train_steps:
            if self.boundary.check():
                return
            t0 = time.perf_counter()
            result = train_step(cache, progress.step + 1, failures.attempt)
            if result.status != "ok" and ctx.distributed:
                # every rank is on this path (the status was agreed): name every rank's samples
                result.ids = [i for ids in ctx.coll.gather_objects(result.ids) for i in ids]
            if failures.retry(result, progress.step + 1):
                continue
            progress.step += 1
            # what a save after a failure inside the next step records
            progress.data_at_step = train_step.training.sampler.state_dict()
            dt = time.perf_counter() - t0
            clock.step_done(dt)
            self._publish_step(result, dt, clock)
            if self.inject.step_sleep:
                time.sleep(self.inject.step_sleep)
            step = progress.step
            if p.checkpointing_steps and step % p.checkpointing_steps == 0 and step < p.max_train_steps:
                t0 = time.perf_counter()
                self.saver.save()
                clock.pause_done("checkpoint", time.perf_counter() - t0)
            if p.validation_steps and progress.step % p.validation_steps == 0:
                t0 = time.perf_counter()
                self._sample(then="training" if progress.step < p.max_train_steps else None)
                clock.pause_done("validation", time.perf_counter() - t0)
        self.boundary.check(final=True)

    def _publish_step(self, result: StepResult, dt: float, clock: EtaClock) -> None:
        progress, acc = self.progress, self.ctx.accelerator
        loss = result.loss
        progress.loss_ema = EMA_BETA * (progress.loss_ema or 0.0) + (1 - EMA_BETA) * loss   # bias-corrected below
        progress.loss_ema_n += 1
        smooth = progress.loss_ema / (1 - EMA_BETA ** progress.loss_ema_n)
        samples = len(result.ids) * acc.num_processes
        assert self.saver.training is not None
        data = {"step": progress.step, "max_steps": self.preset.max_train_steps, "epoch": result.epoch,
                "loss": loss, "loss_smooth": smooth, "lr": self.saver.training.scheduler.get_last_lr()[0],
                "grad_norm": result.grad_norm, "step_time": dt, "samples_per_s": samples / dt if dt > 0 else None,
                "eta_s": clock.remaining(progress.step), "sample_ids": result.ids}
        if acc.device.type == "cuda":
            data.update(mem_allocated=torch.cuda.memory_allocated(acc.device),
                        mem_reserved=torch.cuda.memory_reserved(acc.device),
                        mem_peak=torch.cuda.max_memory_allocated(acc.device))
        self.ctx.publish(Event("step", data))


def train(preset, bus, control, options) -> int:
    from hvtui.core.env.cuda_allocator import configure

    allocator = configure()   # before anything starts CUDA in this process (cuda_allocator.py says why)
    return Trainer(preset, bus, control, options, allocator_note=allocator).run()
