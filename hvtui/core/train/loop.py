"""The run half of the trainer: `train(preset, bus, control, options) -> exit code`.

Order: validate the preset (exit 2) -> the doctor's failing checks (exit 3) -> scan the datasets -> pick the
checkpoint to resume (exit 5 if it would change the run) -> load the models -> cache latents and text ->
LoRA, optimizer, schedule -> train `max_train_steps` optimizer steps -> final LoRA + checkpoint.

Built on `accelerate.Accelerator` (process group, device placement, mixed precision, gradient accumulation,
seed).
Everything random in a step (data order, sigmas, noise, dropout) is a function of (seed, step, slot,
attempt), and the rest of the state is in the checkpoint, so a resumed run repeats an uninterrupted one.

Data-parallel (several processes from torchrun / accelerate launch, see launch.py): the slot of a micro-batch
is its place in the global batch, `micro * world + rank`, and rank r takes batches r, r+W, ... of the epoch
plan, so W processes x batch 1 compute what one process with gradient_accumulation_steps x W computes (the
ranks' LoRA gradients are averaged as accumulation averages the micro-batches). The model is not wrapped in
DDP: after the last micro-batch's backward the processes agree on the step's outcome and then average the
LoRA gradients in place (Collectives.average_gradients_), so the gradients exist only from backward to the
optimizer step, as on one GPU (DDP's buckets would hold them through the forward pass too), and an OOM in
a backward pass is skipped like any other (no process is inside an all-reduce by then). Rank 0 alone
publishes events and reads the control files; whatever decides what every process does next (control
requests at step boundaries, skipping a step for a non-finite loss or an OOM, aborting, caching done) is
agreed through a collective (collectives.py), so no process waits in a collective the others never reach. The learning rate
is the preset's, never scaled with the number of processes.

Control requests are honoured between steps. Test hooks (environment variables, for tests only):
  HVTUI_INJECT_NAN_AT_STEP=N     the loss of step N is NaN (every attempt, or HVTUI_INJECT_NAN_TIMES times)
  HVTUI_INJECT_OOM_AT_STEP=N     step N raises torch.OutOfMemoryError (every attempt, or ..._OOM_TIMES times)
  HVTUI_INJECT_OOM_WHERE=backward  ... raised after that step's backward pass instead of before its forward
  HVTUI_INJECT_RANK=R            the hooks above fire on process R only (data-parallel tests)
  HVTUI_TEST_STEP_SLEEP=S        sleep S seconds after each step (lets a test signal a run mid-training)
  HVTUI_TEST_CHECKPOINT_SLEEP    see checkpoint.py
  HVTUI_INJECT_WRITE_FAIL        see write_guard.py

Faults: one live run per output_dir (run_claim.py, run_lock.py); a refused start writes nothing there. Write
failures of any kind stop the run at the next step boundary with the file and the free space named, keep the
last good checkpoint and exit WRITE_FAILED (write_guard.py); the run also stops and saves while a checkpoint
still fits. Cache entries and checkpoints are verified before they are trusted (cache_verify.py,
ckpt_manifest.py).
"""
from __future__ import annotations

import gc
import hashlib
import math
import os
import time
import traceback
from pathlib import Path

import torch

from hvtui.core.run import events, exitcodes
from hvtui.core.run.eta import EtaClock
from hvtui.core.run.events import Event
from hvtui.core.preset.schema import BUILTIN_TINY
from hvtui.core.train import checkpoint as ckpt
from hvtui.core.train import write_guard
from hvtui.core.train.components import release_memory
from hvtui.core.train.launch import dist_env

STOP_EXIT = exitcodes.SIGNAL_EXIT
MAX_OOM_IN_A_ROW = 3
MAX_DAMAGED_IN_A_ROW = 10   # batches skipped for damaged cache entries before the cache is called damaged
MAX_OVERFLOW_IN_A_ROW = 30   # fp16 loss scaling starts high and halves on each overflow
EMA_BETA = 0.9
OOM_ADVICE = ("set enable_group_offload = true, lower the bucket size (resolution / num_frames), or keep "
              "gradient_checkpointing = true")
DAMAGED_CHECKPOINT_HINT = "resume from another checkpoint with --resume PATH (ls OUTPUT_DIR/checkpoints), or delete this one"
DIST_TIMEOUT_S = 7200    # a collective may wait this long: rank 0 validating, the slowest rank caching
PAUSE_POLL_S = 0.25      # data-parallel pause: how often the processes agree whether to go on
SUPPORTED_DISTRIBUTED = ("NO", "MULTI_GPU", "MULTI_CPU")   # accelerate's DistributedType values hvtui runs under
OK, NONFINITE, OOM, DAMAGED = 0, 1, 2, 3   # a step's local outcome; across processes: OOM, then damaged, then NaN


class Abort(Exception):
    """Ends the run early with an exit code; message and hint go into the error event. `everywhere`: every
    process of a data-parallel run stops with this same error (rank 0 reports it for all); else only this
    process hit it and it says so itself."""

    def __init__(self, code: int, message: str, hint: str = "", status: str = "failed", everywhere: bool = True):
        super().__init__(message)
        self.code, self.message, self.hint, self.status = code, message, hint, status
        self.everywhere = everywhere


class _Stopped(Exception):
    """A stop request before training started (while caching): nothing to save."""


def derived_seed(*parts) -> int:
    """A 63-bit seed from any parts: independent streams per (seed, step, micro-batch, rank, purpose)."""
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def _env_int(name: str) -> int | None:
    v = os.environ.get(name, "").strip()
    return int(v) if v else None


class _Injector:
    """The NaN / OOM test hooks, read once per run."""

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


def _fresh_accelerator(mixed_precision: str, grad_accum: int, cpu: bool):
    """An Accelerator for this run. accelerate keeps process-wide singletons; in a single process a second
    run (tests, the TUI starting another run) may use another precision, so their state is reset first.
    Under torchrun / accelerate launch it joins the process group (NCCL on GPUs, gloo on the CPU)."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState
    from accelerate.utils import InitProcessGroupKwargs

    if not PartialState._shared_state or PartialState().num_processes == 1:
        AcceleratorState._reset_state()
        GradientState._reset_state()
    timeout = float(os.environ.get("HVTUI_DIST_TIMEOUT_S", "") or DIST_TIMEOUT_S)
    if dist_env().distributed and not cpu:
        from hvtui.core.train.collectives import lean_nccl_defaults

        lean_nccl_defaults()   # read when NCCL starts its communicator, after this
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum, cpu=cpu,
                       kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=timeout))])


def prepare_for_training(acc, transformer, optimizer, params, coll):
    """accelerate's autocast around the transformer and its optimizer wrapper, without a DDP wrapper
    (`evaluation_mode` is accelerate's switch for that): gradients are averaged by `_one_step` (module doc).
    Every process starts from rank 0's LoRA: the frozen base is the same everywhere (same files, seeded
    tiny model), but the LoRA's random init ran after each rank's own share of caching."""
    model = acc.prepare_model(transformer, device_placement=False, evaluation_mode=True)
    optimizer = acc.prepare_optimizer(optimizer, device_placement=False)
    coll.broadcast_(params)
    return model, optimizer


def describe_global_batch(preset, num_processes: int) -> str:
    per, accum = preset.train_batch_size, preset.gradient_accumulation_steps
    total = per * num_processes * accum
    return (f"global batch: {per} per process x {num_processes} process(es) x {accum} gradient accumulation = "
            f"{total} sample(s) per optimizer step; learning_rate {preset.learning_rate:g} is used as set "
            f"(hvtui does not scale it with the number of processes or the global batch)")


class Trainer:
    def __init__(self, preset, bus, control, options):
        self.preset, self.bus, self.control, self.options = preset, bus, control, options
        self.out: Path = preset.resolve_path(preset.output_dir)
        self.writer = None
        self.trackers = None          # trackers.TrackerSink on rank 0 when report_to asks for one
        self.step = 0
        self.last_saved_step = -1
        self.last_validated_step = -1
        self.resumed_step = -1
        self.ema = None
        self.ema_n = 0
        self.dist = dist_env()        # rank / world size from torchrun or accelerate launch (1 process else)
        self.is_main = self.dist.is_main
        self.inject = _Injector(self.dist.rank)
        self.accelerator = None
        self.coll = None              # collectives.Collectives once the accelerator exists
        self.components: dict = {}
        self.telemetry = None
        self.validator = None
        self.cache = None
        self._threads = None
        self.claim = None             # run_claim.RunClaim: the lock on output_dir, held until the run ends
        self.writes = write_guard.WriteGuard(self.out, on_failure=self._write_failed)
        self._data_at_step = None     # the sampler's state after the last completed step

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

    # ------------------------------------------------------------------ entry
    def run(self) -> int:
        code, status = exitcodes.OK, "completed"
        clean = True   # every process ends here together (else one failed alone: no collective at the end)
        try:
            self._run()
            if self.control.stop_requested:
                code, status = self._stop_outcome()
        except _Stopped:
            code, status = self._stop_outcome()
        except Abort as a:
            code, status, clean = a.code, a.status, a.everywhere
            self.publish(Event("error", {"message": a.message, "hint": a.hint}), local=not a.everywhere)
        except Exception as e:
            failure = write_guard.classify(e, self.out, at_write_site=False)
            if failure is None:
                code, status, clean = self._unexpected(e)
            else:   # a full or read-only disk where no write was expected to fail (caching, --fresh, the lock)
                self.writes.report(failure)
                code, status, clean = exitcodes.WRITE_FAILED, "failed", False
        if self.writes.failure is not None or self.writes.low_space:
            code, status = self._write_outcome(code, status)
        self.publish(events.state({"completed": "finished", "stopped": "stopped",
                                   "interrupted": "stopped"}.get(status, "failed")))
        self.publish(events.phase("done", status))
        self.publish(Event("finished", {"status": status, "exit_code": code, "step": self.step}))
        try:
            self._release(clean=clean)
        finally:   # last, and always (a TUI process outlives its runs): the folder is free once this run wrote
            if self.claim is not None:   # all it will; a refused start leaves nothing behind (run_claim.py)
                self.claim.release()
        return code

    def _unexpected(self, e: Exception) -> tuple[int, str, bool]:
        """A bug or an unexpected library error: report it, keep what was trained."""
        code, status, clean = exitcodes.UNEXPECTED, "failed", False
        where = (f"traceback in {self.out / 'events.jsonl'}" if self.writer is not None
                 else "please report it with the preset")   # no events.jsonl was opened yet
        self.publish(Event("error", {"message": f"{type(e).__name__}: {e}",
                                     "hint": f"unexpected error (likely a bug in hvtui); {where}",
                                     "traceback": traceback.format_exc()}), local=True)
        if getattr(self, "optimizer", None) is not None:
            self._save_on_failure(agreed=False, data=self._data_at_step)
        return code, status, clean

    def _write_failed(self, failure) -> None:
        """A write failed somewhere (any thread): stop at the next step boundary (a signal's stop keeps its
        reason and exit code)."""
        self.control.request("stop", reason=write_guard.STOP_REASON)

    def _write_outcome(self, code: int, status: str) -> tuple[int, str]:
        """The error event of a run stopped by a write failure or a disk too full for the next save, and its
        exit code: WRITE_FAILED, unless a signal stopped the run first (it keeps 129/130/143)."""
        if self.is_main:
            message, hint = self.writes.explain(self.step, ckpt.find_newest(self.out))
            self.publish(Event("error", {"message": message, "hint": hint}))
        if self.control.stop_reason in STOP_EXIT:
            return STOP_EXIT[self.control.stop_reason], status
        return exitcodes.WRITE_FAILED, "failed"

    def _stop_outcome(self) -> tuple[int, str]:
        """(exit code, status) of a run ended by a stop request: a signal's code, else 0."""
        reason = self.control.stop_reason
        return STOP_EXIT.get(reason, exitcodes.OK), ("interrupted" if reason in STOP_EXIT else "stopped")

    def _release(self, clean: bool = True) -> None:
        if clean and self.coll is not None and self.coll.distributed:
            import torch.distributed as dist

            if dist.is_initialized():   # every rank ends together here (after an error, the process exit does it)
                dist.destroy_process_group()
        if self._threads is not None:
            torch.set_num_threads(self._threads)
            self._threads = None
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

    # ------------------------------------------------------------------ phases
    def _run(self) -> None:
        p = self.preset
        self._validate()
        self._claim_output_dir()
        self._start_trackers()   # a sink only: they start at run_started, after the claim is accepted
        self.publish(events.state("running"))
        self._doctor()
        report = self._scan()
        resume = self._resume_target(report)
        self.claim.accept(self.writer)   # from here on the run writes into output_dir
        if self.writer is not None and self.writer.failed:
            raise self.writes.failure

        cuda = torch.cuda.is_available()
        mp = p.mixed_precision
        if not cuda and mp == "fp16":
            self.log("mixed_precision fp16 needs a GPU; training in fp32 on the CPU", "warning")
            mp = "no"
        self.accelerator = acc = _fresh_accelerator(mp, p.gradient_accumulation_steps, cpu=not cuda)
        if acc.distributed_type.value not in SUPPORTED_DISTRIBUTED:
            raise Abort(exitcodes.INVALID, f"accelerate is configured for {acc.distributed_type.value}; hvtui trains "
                        "a LoRA data-parallel only (its gradients are averaged by hvtui, the model is not sharded)",
                        "use `accelerate launch --multi_gpu ...`, `hvtui --run PRESET --gpus N`, or torchrun, "
                        "or set distributed_type: MULTI_GPU in your accelerate config")
        if not cuda and p.pretrained_model_name_or_path == BUILTIN_TINY:
            # the tiny model's tensors are too small to split: on a small CPU, intra-op threads only add
            # synchronisation (measured on 2 cores: ~40 ms/step with 1 thread, ~350 ms with 2 under load)
            self._threads = torch.get_num_threads()
            torch.set_num_threads(1)
        self.is_main = acc.is_main_process
        from accelerate.utils import set_seed

        from hvtui.core.train.collectives import Collectives

        self.coll = Collectives(acc)
        set_seed(p.seed)
        global_batch = p.train_batch_size * p.gradient_accumulation_steps * acc.num_processes
        self.publish(Event("run_started", {
            "preset": str(p.source) if p.source else "", "output_dir": str(self.out),
            "max_steps": p.max_train_steps, "flavour": p.model_flavour, "device": str(acc.device),
            "resume_from": str(resume.path) if resume else None, "resume_step": resume.step if resume else None,
            "global_batch": global_batch,
            "num_processes": acc.num_processes, "mixed_precision": mp}))
        self.log(describe_global_batch(p, acc.num_processes))
        if cuda and getattr(self, "allocator_note", ""):
            self.log(self.allocator_note)
        if acc.num_processes > 1:
            self.log(f"data-parallel: {acc.num_processes} processes ({acc.distributed_type.value.lower()}, "
                     f"{'NCCL' if cuda else 'gloo'}); rank 0 writes events and checkpoints, every rank its RNG state")
            if cuda:
                from hvtui.core.train.collectives import LEAN_NCCL

                ours = any(os.environ.get(k) == v for k, v in LEAN_NCCL.items())
                self.log("NCCL: " + " ".join(f"{k}={os.environ.get(k)}" for k in LEAN_NCCL)
                         + (" (hvtui's defaults where you set none: ~0.4 GiB less GPU memory per process)"
                            if ours else ""))
        if self.is_main:
            for gone in ckpt.clean_temporaries(self.out):
                self.log(f"removed {gone}: the remains of a checkpoint write that was interrupted")
        self._check_shared_folders()

        if cuda and self.is_main:
            from hvtui.core.env.telemetry import TelemetrySampler

            self.telemetry = TelemetrySampler(self.bus, device=acc.device).start()
        self.cache = cache = self._load_and_cache(report)
        if "vae" in self.components:   # training does not use it: host memory until a validation needs it
            from hvtui.core.train.validate import park

            park(self.components["vae"])
        transformer, params = self._prepare_transformer()
        from hvtui.core.train.optim import OptimizerError, build_optimizer, build_scheduler

        try:
            optimizer = build_optimizer(p.optimizer, params, p.learning_rate, acc.device.type)
        except OptimizerError as e:
            raise Abort(exitcodes.INVALID, str(e), "change optimizer in the preset or install the package")
        scheduler = build_scheduler(p.lr_scheduler, optimizer, p.lr_warmup_steps, p.max_train_steps)
        model, optimizer = prepare_for_training(acc, transformer, optimizer, params, self.coll)
        self.model, self.optimizer, self.scheduler, self.params = model, optimizer, scheduler, params
        self.sampler = self._sampler(cache)
        if resume is not None:
            self._restore(resume)
        self._data_at_step = self.sampler.state_dict()
        self._check_room_to_save(params)
        self._train_loop(cache)
        self._final_save()

    def _start_trackers(self) -> None:
        """report_to's experiment trackers, as a sink of this run's events on rank 0 (trackers.py): they start
        at run_started, in their own thread, and can neither fail nor stall the run."""
        from hvtui.core.run.trackers import TrackerSink, wanted

        if self.is_main and wanted(self.preset.report_to):
            self.trackers = TrackerSink(self.preset, self.out, self.bus.publish)
            self.bus.add_sink(self.trackers)

    def _claim_output_dir(self) -> None:
        """The run lock, and events held in memory until the run is accepted (run_claim.py)."""
        from hvtui.core.run.runlog import RunLogWriter
        from hvtui.core.train.run_claim import LOCKED_HINT, RunClaim
        from hvtui.core.train.run_lock import RunLocked

        self.claim = RunClaim(self.out, main=self.is_main)
        try:
            self.claim.acquire()
        except RunLocked as e:
            raise Abort(exitcodes.INVALID, str(e), LOCKED_HINT)
        except OSError as e:
            raise write_guard.classify(e, self.out) or e
        if self.options.write_events and self.is_main:
            self.writer = RunLogWriter(self.out, held=True, on_error=self.writes.report_error)
            self.bus.add_sink(self.writer)

    def _check_room_to_save(self, params) -> None:
        """No run trains steps it cannot save: one checkpoint must fit on output_dir's disk before the first
        step (write_guard.estimate_save_bytes; later checkpoints' measured size is used)."""
        self.writes.save_bytes = write_guard.estimate_save_bytes(sum(q.numel() for q in params),
                                                                 self.preset.export_comfyui)
        short = self.writes.space_short()
        if self.coll.distributed and self.coll.max([bool(short)])[0] and not short:
            short = "another process found too little free space for a checkpoint"
        if short:
            raise Abort(exitcodes.WRITE_FAILED, f"not enough space to save this run: {short}",
                        "free space on that disk (or set another output_dir) and run again")

    def _validate(self) -> None:
        from hvtui.core.preset.check import validate_for_run

        problems = validate_for_run(self.preset)
        errors = [q for q in problems if q.is_error]
        for q in problems:
            if not q.is_error:
                self.log(str(q), "warning")
        if errors:
            for q in errors:
                self.publish(Event("error", {"message": str(q), "hint": q.fix}))
            raise Abort(exitcodes.INVALID, f"the preset has {len(errors)} problem(s); nothing was trained",
                        "fix them (hvtui check PRESET lists them) and run again")

    def _doctor(self) -> None:
        try:
            from hvtui.core.env.doctor import run_doctor
        except ImportError:
            return
        report = run_doctor(self.preset, system=True, processes=self.dist.world_size)
        failed = [c for c in report.checks if c.status == "fail"]
        for c in report.checks:
            # system warnings (no GPU on the CPU demo, not in tmux) are for `hvtui doctor`, not every run
            if c.status == "warn" and getattr(c, "group", "") != "system":
                self.log(f"doctor: {c.name}: {c.detail}" + (f" ({c.hint})" if c.hint else ""), "warning")
        if failed:
            for c in failed:
                self.publish(Event("error", {"message": f"doctor: {c.name}: {c.detail}", "hint": c.hint}))
            raise Abort(exitcodes.DOCTOR_FAILED, f"{len(failed)} doctor check(s) failed; nothing was trained",
                        "hvtui doctor PRESET shows every check")

    def _scan(self):
        from hvtui.core.dataset.scan import scan_preset

        self.phase("loading", "scanning datasets")
        report = scan_preset(self.preset, progress=lambda d, t, w="": self.publish(events.progress("scanning", d, t, w)))
        for w in report.warnings:
            self.log(w, "warning")
        if report.errors or not report.samples:
            for e in report.errors:
                self.publish(Event("error", {"message": e, "hint": "hvtui buckets PRESET explains each clip"}))
            raise Abort(exitcodes.INVALID, "no usable training samples" if not report.errors else
                        "the datasets cannot be used", "hvtui buckets PRESET explains the fate of every clip")
        n = sum(len(b.samples) for b in report.buckets)
        self.log(f"{n} clips in {len(report.buckets)} bucket(s): " +
                 ", ".join(f"{b.key} x{len(b.samples)}" for b in report.buckets))
        return report

    def _resume_target(self, report):
        spec = self.options.resume
        try:
            info = ckpt.resolve_resume(self.out, spec, skipped=lambda m: self.log(f"--resume auto: {m}", "warning"))
        except ckpt.CheckpointError as e:
            raise Abort(exitcodes.INVALID, str(e), "--resume auto takes the newest intact checkpoint; or pass "
                        "another one's path with --resume PATH (ls OUTPUT_DIR/checkpoints)")
        if spec == "auto" and info is None:
            self.log("--resume auto: no complete checkpoint in " + str(ckpt.root(self.out)) + "; starting fresh")
        if info is None:
            self._make_room_for_a_new_run()
        if info is None:
            return None
        num_processes = self.dist.world_size
        saved = info.state.get("summary", {})
        current = run_summary(self.preset, [b.key for b in report.buckets], num_processes)
        changed, incompatible = ckpt.compare_summary(saved, current)
        from hvtui.core.train.schedule_check import changes as schedule_changes

        changed += schedule_changes(saved, current, info.step)
        before = saved.get("num_processes", num_processes)
        if before != num_processes:
            old = {**current, **{k: saved[k] for k in ("train_batch_size", "gradient_accumulation_steps")
                                 if k in saved}}
            g_old = old["train_batch_size"] * old["gradient_accumulation_steps"] * before
            g_new = self.preset.train_batch_size * self.preset.gradient_accumulation_steps * num_processes
            changed += [f"global batch: {g_old} -> {g_new} samples per optimizer step (learning_rate is not scaled)",
                        f"sample order: each epoch's batches are shared among {num_processes} process(es) instead "
                        f"of {before}, so different samples meet in each step from here on (the losses will not "
                        "repeat the original run's)"]
        if incompatible:
            raise Abort(exitcodes.RESUME_MISMATCH,
                        f"{info.path} was trained with other model/LoRA settings:\n  " + "\n  ".join(incompatible),
                        "resume it with the original settings, or start a new run in another output_dir")
        if changed and not self.options.allow_changed:
            raise Abort(exitcodes.RESUME_MISMATCH,
                        f"resuming {info.path} would change the run:\n  " + "\n  ".join(changed),
                        "restore these settings, or pass --allow-changed to continue with the new ones")
        for line in changed:
            self.log(f"resume with a changed setting (--allow-changed): {line}", "warning")
        return info

    def _make_room_for_a_new_run(self) -> None:
        """A new run in an output_dir that holds an earlier one would prune the earlier checkpoints by step
        number (or its own), mix two runs in one events.jsonl, and a later --resume auto could pick the wrong
        run: refuse, or with --fresh move the earlier run aside (run_claim.py)."""
        from hvtui.core.train.run_claim import EarlierRun

        try:
            moved, step = self.claim.make_room(self.options.fresh)
        except EarlierRun as e:
            if self.options.resume:   # --resume auto found checkpoints, none of them intact (said above)
                raise Abort(exitcodes.INVALID, f"no intact checkpoint to resume in {ckpt.root(self.out)}: each one "
                            "is damaged (the warnings above name the files)", DAMAGED_CHECKPOINT_HINT + "; or --fresh")
            raise Abort(exitcodes.INVALID, f"{self.out} holds an earlier run (checkpoints up to step {e.step}); "
                        "a new run there would mix with it",
                        "continue it with --resume auto; or start over with --fresh (its checkpoints, LoRA, "
                        "samples and events.jsonl move to OUTPUT_DIR/previous-TIME/, nothing is deleted); or set "
                        "another output_dir")
        if moved is not None:
            self.log(f"--fresh: the earlier run in {self.out} (step {step}) moved to {moved}" if step is not None
                     else f"the files of an earlier run in {self.out} (no checkpoint: nothing to resume) moved to {moved}")

    def _check_shared_folders(self) -> None:
        from hvtui.core.train.cache import cache_dirs
        from hvtui.core.train.shared_disk import unseen_folders

        latent, text = cache_dirs(self.preset)
        problems = unseen_folders(self.coll, [self.out, *latent.values(), text])
        if problems:
            raise Abort(exitcodes.INVALID, "the run's folders are not shared by all processes:\n  "
                        + "\n  ".join(problems),
                        "with several hosts, put output_dir and every cache_dir on a disk all hosts mount "
                        "(NFS or similar), at the same path")

    def _load_and_cache(self, report):
        """Load the models and cache what is missing. Data-parallel: each rank encodes its share of the
        missing entries (every rank's failure or stop is agreed before anyone reads the shared cache)."""
        coll = self.coll
        error, stopped, cache = None, False, None
        try:
            cache = self._load_and_cache_share(report, (coll.rank, coll.world))
        except _Stopped:
            stopped = True
        except Exception as e:   # raised below, after the other ranks know
            error = e
        if coll.distributed:
            failed, stopped_any = coll.sum([error is not None, stopped])
            if failed and error is None:
                raise Abort(exitcodes.TRAINING_FAILED, "another process failed while loading the model or "
                            "caching; its error is printed above (rank N)", "fix that error and run again")
            if 0 < failed < coll.world and isinstance(error, Abort):
                error.everywhere = False   # not every rank hit it: this one says it itself
            stopped = stopped or (stopped_any > 0 and error is None)
        if error is not None:
            raise error
        if stopped:
            raise _Stopped()
        if coll.distributed:
            encoded = coll.sum([cache.stats.get("texts_encoded", 0), cache.stats.get("latents_encoded", 0)])
            cache.stats.update(texts_encoded=int(encoded[0]), latents_encoded=int(encoded[1]))
            from hvtui.core.train import decode_failures   # clips another process could not decode

            decode_failures.settle(cache, {s.id: s for s in report.samples}, report, self.publish)
            missing = [e.latent_path for e in cache.entries if not Path(e.latent_path).is_file()]
            if missing:
                raise Abort(exitcodes.TRAINING_FAILED, f"{len(missing)} cache file(s) another process wrote are "
                            f"not visible here, e.g. {missing[0]}",
                            "with several hosts, output_dir and the datasets' cache_dir must be on a shared disk")
        self.log("cache: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in cache.stats.items()))
        if not cache.entries:
            from hvtui.core.train.decode_failures import describe

            failed = getattr(cache, "failed", None)
            if failed:
                raise Abort(exitcodes.INVALID, f"no usable training samples: every clip failed to decode: "
                            f"{describe(failed)}", "re-encode or replace these files (the events name each one)")
            raise Abort(exitcodes.INVALID, "the cache holds no samples", "hvtui buckets PRESET explains each clip")
        gc.collect()
        return cache

    def _load_and_cache_share(self, report, shard: tuple[int, int]):
        from hvtui.core.train.cache import CacheInterrupted, build_cache, plan_cache
        from hvtui.core.train.cache_verify import CacheEntryDamaged, NonFiniteEncoding, drop_damaged
        from hvtui.core.train.components import ModelLoadError, load_components, model_info

        p, device = self.preset, self.accelerator.device
        self.phase("loading", f"model {p.pretrained_model_name_or_path}")
        try:
            # one load, on the CPU; the transformer waits there while the encoders use the GPU for caching
            info = model_info(p)
            plan = plan_cache(p, report, info)
            try:   # an entry on disk is used only when intact: a damaged one is deleted and encoded again
                damaged = drop_damaged(plan, p.is_i2v, info.dtype)
            except CacheEntryDamaged as e:   # damaged, and its folder does not let it be deleted
                raise Abort(exitcodes.INVALID, str(e), "delete that file (or make its folder writable) and run again")
            for line in damaged:
                self.log(line, "warning")
            if damaged:
                plan = plan_cache(p, report, info)
            mine = plan.shard(*shard)   # the encoders this process needs for its share
            parts = {"transformer"} | set(mine.parts_needed)
            if mine.todo_latents and p.is_i2v:
                parts.add("image")
            if p.validation_steps and p.all_validation_prompts:
                parts.add("vae")   # the validator decodes with it
            comps = load_components(p, device=None, parts=tuple(sorted(parts)), publish=self.publish)
            for name, module in comps.items():
                if name != "transformer" and isinstance(module, torch.nn.Module):
                    module.to(device)
        except ModelLoadError as e:
            raise Abort(exitcodes.TRAINING_FAILED, f"cannot load the model: {e.message}", e.hint)
        self.components = comps
        share = f" (this process: {len(mine.todo_latents)} and {len(mine.todo_text)})" if shard[1] > 1 else ""
        self.phase("caching", f"{len(plan.todo_latents)} clips and {len(plan.todo_text)} captions to encode{share}")
        try:
            return build_cache(p, report, comps, device, self.publish, self.control, shard=shard, plan=plan)
        except CacheInterrupted:
            raise _Stopped()
        except NonFiniteEncoding as e:
            raise Abort(exitcodes.TRAINING_FAILED, str(e), "check that clip (hvtui buckets PRESET), or encode in "
                        "bf16 / fp32 (base_model_precision, mixed_precision): fp16 overflows")

    def _prepare_transformer(self):
        from hvtui.core.train.lora import add_lora

        p, device = self.preset, self.accelerator.device
        transformer = self.components["transformer"]
        from hvtui.core.train import quantize

        if quantize.is_quantized(p.base_model_precision):
            self.phase("loading", f"quantizing the transformer ({p.base_model_precision})")
            try:   # block by block on the device (with offload, prepare_transformer then moves them to the host)
                quantize.quantize_transformer(transformer, p.base_model_precision, device, publish=self.publish)
            except quantize.QuantizationError as e:   # doctor catches these first; `--run` reached here anyway
                raise Abort(exitcodes.DOCTOR_FAILED, e.message, e.hint)
        params = add_lora(transformer, p)
        try:
            from hvtui.core.train.speed import prepare_transformer
        except ImportError:
            prepare_transformer = None
        if not p.enable_group_offload or prepare_transformer is None:
            transformer.to(device)     # with offload, prepare_transformer places the blocks itself
        self.speed = None
        if prepare_transformer is not None:
            self.speed = prepare_transformer(transformer, p, device, publish=self.publish)
            if self.telemetry is not None and hasattr(self.speed, "stats"):
                self.telemetry.extra = self.speed.stats
        n = sum(q.numel() for q in params)
        self.log(f"LoRA rank {p.lora_rank} on {p.lora_targets}: {n:,} trainable parameters")
        return transformer, params

    def _sampler(self, cache):
        from hvtui.core.train.data import BucketBatchSampler, group_key

        groups: dict[str, list[str]] = {}
        self.entries = {}
        for e in cache.entries:
            self.entries[e.sample_id] = e
            g = group_key(e.bucket_key, bool(getattr(e, "i2v", self.preset.is_i2v)))
            groups.setdefault(g, []).extend([e.sample_id] * (1 + int(getattr(e, "repeats", 0) or 0)))
        acc = self.accelerator
        return BucketBatchSampler(groups, self.preset.train_batch_size, self.preset.seed,
                                  rank=acc.process_index, world_size=acc.num_processes)

    # ------------------------------------------------------------------ resume
    def _restore(self, info) -> None:
        from hvtui.core.train.lora import LORA_FILE, load_lora_file

        self.phase("loading", f"resuming from {info.path.name}")
        from safetensors import SafetensorError

        exact = info.path / ckpt.LORA_STATE_FILE
        lora_file = exact if exact.is_file() else info.path / LORA_FILE
        try:
            if lora_file is exact:   # the PEFT tensors as trained: resuming repeats the run bit for bit
                from safetensors.torch import load_file

                from hvtui.core.train.lora import set_lora_state_dict

                set_lora_state_dict(self.model, load_file(str(exact)))
            else:   # an older checkpoint: the user file has alpha/rank folded into lora_B; undo that
                load_lora_file(self.model, lora_file)
        except (SafetensorError, OSError) as e:
            raise Abort(exitcodes.INVALID, f"{lora_file} cannot be read ({type(e).__name__}: {e}): the checkpoint "
                        "is damaged", DAMAGED_CHECKPOINT_HINT)
        except (KeyError, RuntimeError) as e:
            raise Abort(exitcodes.RESUME_MISMATCH, f"{info.path}: the LoRA does not fit this run ({e})",
                        "resume with the LoRA settings the checkpoint was trained with")
        try:
            ckpt.load_states(info, self.optimizer, self.scheduler, rank=self.accelerator.process_index)
        except ckpt.CheckpointError as e:
            raise Abort(exitcodes.INVALID, str(e), DAMAGED_CHECKPOINT_HINT)
        st = info.state
        self.step = self.resumed_step = int(st["step"])
        self.last_saved_step = self.step
        self.ema, self.ema_n = st.get("loss_ema"), int(st.get("loss_ema_n", 0))
        for w in self.sampler.load_state_dict(st.get("data", {})):
            self.log(w, "warning")
        self.log(f"resumed at step {self.step} (epoch {self.sampler.epoch}, batch {self.sampler.index}"
                 + (" of each process's share)" if self.coll.distributed else ")"))

    # ------------------------------------------------------------------ training
    def _train_loop(self, cache) -> None:
        p, acc = self.preset, self.accelerator
        self.phase("training", f"steps {self.step + 1} to {p.max_train_steps}")   # stays true as steps pass
        clock = EtaClock(p.max_train_steps, p.checkpointing_steps, p.validation_steps)   # eta_s, one source
        nonfinite_run: list[str] = []   # sample ids of consecutive non-finite steps
        nonfinite_streak = oom_run = overflow_run = damaged_run = 0
        attempt = 0                     # retries of the current step (a skipped step draws new noise)
        if acc.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(acc.device)
        while self.step < p.max_train_steps:
            if self._boundary(cache):
                return
            t0 = time.perf_counter()
            result = self._one_step(cache, self.step + 1, attempt)
            if result["status"] != "ok" and self.coll.distributed:
                # every rank is on this path (the status was agreed): name every rank's samples
                result["ids"] = [i for ids in self.coll.gather_objects(result["ids"]) for i in ids]
            if result["status"] == "oom":
                # the step's tensors died with its frame: now the allocator can give their memory back
                release_memory()
                oom_run += 1
                attempt += 1
                self.log(f"step {self.step + 1}: out of memory on {', '.join(result['ids'])} "
                         f"({oom_run}/{MAX_OOM_IN_A_ROW} in a row); batch skipped", "warning")
                if oom_run >= MAX_OOM_IN_A_ROW:
                    self._save_on_failure()
                    raise Abort(exitcodes.TRAINING_FAILED,
                                f"out of memory {oom_run} times in a row (last batch: {', '.join(result['ids'])})",
                                OOM_ADVICE)
                continue
            oom_run = 0
            if result["status"] == "damaged":   # cache_verify.py: the entry is deleted, the batch skipped
                attempt += 1
                damaged_run += 1
                self.log(f"step {self.step + 1}: {result['what']}; batch skipped (the entry is deleted and "
                         "encoded again at the next start)", "warning")
                if damaged_run >= MAX_DAMAGED_IN_A_ROW:
                    self._save_on_failure()
                    raise Abort(exitcodes.TRAINING_FAILED, f"{damaged_run} batches in a row had damaged cache "
                                f"entries (last: {result['what']})", "the cache folders are damaged: run again "
                                "with --resume auto (the deleted entries are encoded again), or check the disk")
                continue
            damaged_run = 0
            if result["status"] == "overflow":
                attempt += 1
                overflow_run += 1
                if overflow_run >= MAX_OVERFLOW_IN_A_ROW:
                    raise Abort(exitcodes.TRAINING_FAILED, f"fp16 gradients overflowed {overflow_run} times in a row",
                                "use mixed_precision = \"bf16\" or lower learning_rate")
                continue
            overflow_run = 0
            if result["status"] == "nonfinite":
                nonfinite_run += result["ids"]
                attempt += 1
                nonfinite_streak += 1
                streak = nonfinite_streak
                self.log(f"step {self.step + 1}: non-finite {result['what']} on {', '.join(result['ids'])}; "
                         f"no update ({streak}/{p.max_nonfinite_steps} in a row)", "warning")
                if streak >= p.max_nonfinite_steps:
                    self._save_on_failure()
                    ids = ", ".join(dict.fromkeys(nonfinite_run))
                    raise Abort(exitcodes.TRAINING_FAILED,
                                f"non-finite {result['what']} {streak} times in a row; samples: {ids}",
                                "lower learning_rate, check these clips, or use mixed_precision = \"bf16\"")
                continue
            nonfinite_run.clear()
            attempt = nonfinite_streak = 0
            self.step += 1
            self._data_at_step = self.sampler.state_dict()   # what a save after a failed next step records
            dt = time.perf_counter() - t0
            clock.step_done(dt)
            self._publish_step(result, dt, clock)
            if self.inject.step_sleep:
                time.sleep(self.inject.step_sleep)
            if p.checkpointing_steps and self.step % p.checkpointing_steps == 0 and self.step < p.max_train_steps:
                t0 = time.perf_counter()
                self._checkpoint()
                clock.pause_done("checkpoint", time.perf_counter() - t0)
            if p.validation_steps and self.step % p.validation_steps == 0:
                t0 = time.perf_counter()
                self._validate_sample(cache, then="training" if self.step < p.max_train_steps else None)
                clock.pause_done("validation", time.perf_counter() - t0)
        self._boundary(cache, final=True)

    def _agree_control(self, commands: set[str], paused: bool) -> tuple[set[str], bool]:
        """Data-parallel: one decision for every process. Rank 0 brings the control files' requests, every
        rank its own signals; a stop anywhere stops all (with the signal's exit code)."""
        reason = self.control.stop_reason if self.control.stop_requested else ""
        stop = STOP_EXIT.get(reason, 1) if self.control.stop_requested else 0
        stop, save, sample, pause = self.coll.max([stop, "save" in commands, "sample" in commands, paused])
        if stop and not self.control.stop_requested:
            names = {v: k for k, v in STOP_EXIT.items()}
            self.control.request("stop", reason=names.get(int(stop), "stop requested (another process)"))
        agreed = {c for c, on in (("save", save), ("sample", sample)) if on}
        return agreed, bool(pause) and not stop

    def _boundary(self, cache, final: bool = False) -> bool:
        """Control requests between steps. True when the run must stop now."""
        # stop while a checkpoint still fits (write_guard.py); rank 0 writes the checkpoints: it decides
        if not final and self.is_main and self.writes.check_space():
            self.control.request("stop", reason=write_guard.STOP_REASON)
        commands = self.control.take()
        paused = self.control.paused
        distributed = self.coll is not None and self.coll.distributed
        if distributed:
            commands, paused = self._agree_control(commands, paused)
        if not final and paused:
            self.publish(events.state("paused"))
            commands = self._while_paused(cache, commands, distributed)
            if not self.control.stop_requested:
                self.publish(events.state("running"))
        self._carry_out(cache, commands, then=None if final else "training")
        if self.control.stop_requested:
            self.publish(events.state("stopping"))
            self.log(f"stopping at step {self.step}: {self.control.stop_reason}")
            return True
        return False

    def _while_paused(self, cache, commands: set[str], distributed: bool) -> set[str]:
        """Wait for resume or stop. A save or sample asked for meanwhile is carried out at once (a checkpoint
        taken during a pause is on disk before the user walks away). Data-parallel: the processes wait
        together, agreeing a few times a second whether to go on."""
        paused = True
        while paused:
            if commands:
                self._carry_out(cache, commands, then="training")
                commands = set()
                self.publish(events.state("paused"))
            if distributed:
                time.sleep(PAUSE_POLL_S)
                commands, paused = self._agree_control(self.control.take(), self.control.paused)
            else:
                self.control.wait_while_paused(until_command=True)
                commands, paused = self.control.take(), self.control.paused and not self.control.stop_requested
        return commands

    def _carry_out(self, cache, commands: set[str], then: str | None) -> None:
        if "save" in commands and self.step > 0:
            if self.step == self.last_saved_step:
                self.log(f"save now: the checkpoint of step {self.step} is already written")
            self._checkpoint(then=then, manual=True)
        if "sample" in commands:
            self._validate_sample(cache, then=then)

    def _one_step(self, cache, step: int, attempt: int) -> dict:
        """One optimizer step over `gradient_accumulation_steps` micro-batches. An OOM in a forward or backward
        pass becomes an "oom" result. Data-parallel: each process runs its micro-batches without talking to the
        others, then one collective agrees on the outcome and which LoRA tensors have gradients, and only then
        are the gradients averaged. An OOM after that (averaging, clipping, the optimizer's first allocation of
        its state: small next to the freed activations) is not caught: it ends the run, and the launcher stops
        the other processes."""
        from hvtui.core.train.step import collate, flow_matching_loss, sample_sigmas

        p, acc, coll = self.preset, self.accelerator, self.coll
        rank, world = acc.process_index, acc.num_processes
        batches = [self.sampler.next() for _ in range(p.gradient_accumulation_steps)]
        ids = [i for b in batches for i in b.ids]
        loss_sum, outcome, damaged = 0.0, OK, ""
        from hvtui.core.train.cache_verify import CacheEntryDamaged, discard

        for micro, b in enumerate(batches):
            with acc.accumulate(self.model):
                if outcome != OK:
                    continue   # keep accelerate's micro-batch counter aligned with the step
                slot = micro * world + rank   # this micro-batch's place in the global batch (module doc)
                try:
                    self.inject.oom(step)
                    # dropout & co., then the posterior sample, caption choice and caption dropout, then sigmas
                    # and noise: all drawn from generators seeded by (seed, step, slot, attempt)
                    torch.manual_seed(derived_seed(p.seed, step, slot, attempt, "global"))
                    gd = torch.Generator().manual_seed(derived_seed(p.seed, step, slot, attempt, "data"))
                    items = [cache.load(self.entries[i], generator=gd,
                                        caption_dropout=p.caption_dropout_probability) for i in b.ids]
                    batch = collate(items)
                    g = torch.Generator().manual_seed(derived_seed(p.seed, step, slot, attempt, "noise"))
                    sigmas = sample_sigmas(p, len(b.ids), g)
                    noise = torch.randn(batch["latents"].shape, generator=g, dtype=torch.float32)
                    loss = flow_matching_loss(self.model, batch, sigmas, noise)
                    del batch, items
                    if self.inject.nan(step):
                        loss = loss * float("nan")
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        outcome = NONFINITE
                        continue
                    acc.backward(loss)
                    self.inject.oom(step, "backward")
                except torch.OutOfMemoryError:
                    outcome = OOM
                    continue
                except CacheEntryDamaged as e:
                    outcome, damaged = DAMAGED, f"{e} (sample {b.ids})"
                    discard(e.path)
                    continue
                finally:
                    loss = None
                loss_sum += value / len(batches)
        if coll.distributed:
            outcome, loss_sum = self._agree_and_average(outcome, loss_sum)
        status, what = {OK: ("ok", ""), NONFINITE: ("nonfinite", "loss"), OOM: ("oom", ""),
                        DAMAGED: ("damaged", damaged or "a cache entry another process read is damaged")}[outcome]
        grad_norm = float("nan")
        if status == "ok":
            grad_norm = acc.clip_grad_norm_(self.params, self.preset.max_grad_norm or float("inf"))
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
            if not math.isfinite(grad_norm) and acc.scaler is not None:
                # fp16: the loss scaler skips this update and lowers its scale (it needs the step call)
                self.optimizer.step()
                status, what = "overflow", "fp16 gradient overflow"
            elif not math.isfinite(grad_norm):
                status, what = "nonfinite", "gradient norm"
            else:
                self.optimizer.step()
                self.scheduler.step()
        for q in self.params:
            q.grad = None
        return {"status": status, "what": what, "ids": ids, "loss": loss_sum, "grad_norm": grad_norm,
                "epoch": batches[-1].epoch}

    def _agree_and_average(self, outcome: int, loss_sum: float) -> tuple[int, float]:
        """One collective: the step's outcome (an OOM anywhere beats a non-finite loss anywhere), the loss
        over the global batch, and which LoRA tensors got a gradient on some process (the others keep none,
        as on one process: the optimizer skips them). Then, if every process succeeded, the mean gradient."""
        counts = self.coll.sum([outcome == OOM, outcome == NONFINITE, loss_sum, outcome == DAMAGED]
                               + [q.grad is not None for q in self.params])
        if counts[0]:
            return OOM, loss_sum
        if counts[3]:
            return DAMAGED, loss_sum
        if counts[1]:
            return NONFINITE, loss_sum
        synced = [q for q, n in zip(self.params, counts[4:]) if n]
        for q in synced:
            if q.grad is None:
                q.grad = torch.zeros_like(q)
        self.coll.average_gradients_(synced)
        return OK, counts[2] / self.coll.world

    def _publish_step(self, result: dict, dt: float, clock: EtaClock) -> None:
        p, acc = self.preset, self.accelerator
        loss = result["loss"]
        self.ema = EMA_BETA * (self.ema or 0.0) + (1 - EMA_BETA) * loss   # bias-corrected below
        self.ema_n += 1
        smooth = self.ema / (1 - EMA_BETA ** self.ema_n)
        samples = len(result["ids"]) * acc.num_processes
        data = {"step": self.step, "max_steps": p.max_train_steps, "epoch": result["epoch"], "loss": loss,
                "loss_smooth": smooth, "lr": self.scheduler.get_last_lr()[0], "grad_norm": result["grad_norm"],
                "step_time": dt, "samples_per_s": samples / dt if dt > 0 else None,
                "eta_s": clock.remaining(self.step), "sample_ids": result["ids"]}
        if acc.device.type == "cuda":
            data.update(mem_allocated=torch.cuda.memory_allocated(acc.device),
                        mem_reserved=torch.cuda.memory_reserved(acc.device),
                        mem_peak=torch.cuda.max_memory_allocated(acc.device))
        self.publish(Event("step", data))

    # ------------------------------------------------------------------ saving
    def _unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def _checkpoint(self, then: str | None = "training", manual: bool = False, data: dict | None = None) -> None:
        """Every process calls this at the same step (data-parallel: each writes its RNG state into the one
        checkpoint, rank 0 the rest and the marker). A failed write stops the run at the next step boundary
        (write_guard.py): no steps are trained that could not be saved. `manual`: a save-now checkpoint,
        never pruned. `data`: the sampler state to record (default: now)."""
        if self.step == self.last_saved_step:
            return
        from safetensors.torch import save_file

        from hvtui.core.train.lora import LORA_FILE, lora_state_dict, save_lora

        p = self.preset

        def write_lora(d: Path) -> None:
            write_guard.inject("checkpoint", d, self.step)
            save_lora(self._unwrapped(), d)   # folded scale: the file any loader reads
            exact = {k: v.detach().cpu().contiguous() for k, v in lora_state_dict(self._unwrapped()).items()}
            save_file(exact, str(d / ckpt.LORA_STATE_FILE))

        self.phase("saving", f"checkpoint at step {self.step}")
        state = {"summary": run_summary(p, sorted({e.bucket_key for e in self.entries.values()}),
                                        self.accelerator.num_processes),
                 "data": data or self.sampler.state_dict(), "loss_ema": self.ema, "loss_ema_n": self.ema_n,
                 **({"manual": True} if manual else {})}
        try:
            info = ckpt.save(self.out, self.step, write_lora=write_lora, optimizer=self.optimizer,
                             scheduler=self.scheduler, state=state, limit=p.checkpoints_total_limit,
                             rank=self.accelerator.process_index, sync=self.coll if self.coll.distributed else None)
        except ckpt.CheckpointError as e:
            self.writes.report_error(e.cause or e, e.path or self.out)
            self.log(f"{e}; stopping (the previous checkpoint is intact)", "warning")
            if then:
                self.phase(then, "")
            return
        self.last_saved_step = self.step
        if info is not None:
            self.writes.save_bytes = write_guard.tree_size(info.path) + (info.path / LORA_FILE).stat().st_size * (
                1 + int(p.export_comfyui))   # the next checkpoint and the final LoRA: what must still fit
            self.publish(Event("checkpoint", {"step": self.step, "path": str(info.path),
                                              "lora_path": str(info.path / LORA_FILE)}))
        if then:
            self.phase(then, "")

    def _save_lora(self) -> list[Path]:
        """The final LoRA into output_dir. A refused write is reported (the run then ends WRITE_FAILED) and the
        earlier LoRA file, if any, stays (the write is atomic)."""
        from hvtui.core.train.lora import LORA_FILE, save_lora

        try:
            write_guard.inject("lora", self.out / LORA_FILE, self.step)
            return save_lora(self._unwrapped(), self.out, comfy=self.preset.export_comfyui)
        except Exception as e:
            failure = write_guard.classify(e, self.out / LORA_FILE) if write_guard.is_write_error(e) else None
            if failure is None:
                raise
            self.writes.report(failure)
            self.log(f"the final LoRA was not written: {failure}", "warning")
            return []

    def _final_save(self) -> None:
        """LoRA first (the thing people want; rank 0), then the full state (every process)."""
        from hvtui.core.train.lora import LORA_FILE

        if self.step == 0:
            self.log("stopped before the first step: nothing to save")
            return
        if self.step == self.resumed_step and (self.out / LORA_FILE).is_file():
            self.log(f"nothing trained since the checkpoint of step {self.step}"
                     + (f" (max_train_steps = {self.preset.max_train_steps}: raise it to train longer)"
                        if self.step >= self.preset.max_train_steps else "") + "; its LoRA is in place")
            return
        if self.is_main:
            self.phase("saving", "final LoRA")
            paths = self._save_lora()
            if paths:
                self.log("LoRA: " + ", ".join(str(x) for x in paths))
        self._checkpoint(then=None)
        p = self.preset
        if (p.validation_steps and self.last_validated_step != self.step and not self.control.stop_requested
                and p.all_validation_prompts and self.writes.failure is None):
            self._validate_sample(None, then=None)

    def _save_on_failure(self, agreed: bool = True, data: dict | None = None) -> None:
        """Training stopped for a repeated failure: the last good state is still worth keeping. `agreed`:
        every process stops here together (else only this one failed: no collective, rank 0 saves the LoRA).
        `data`: the sampler state to record (after an error inside a step: the state before that step, so a
        resume trains its samples)."""
        if self.step > 0 and self.step != self.last_saved_step:
            distributed = self.coll is not None and self.coll.distributed
            try:
                if self.is_main:
                    self._save_lora()
                if agreed or not distributed:
                    self._checkpoint(then=None, data=data)
            except Exception as e:   # the error being reported matters more
                self.log(f"could not save after the failure: {e}", "warning")

    # ------------------------------------------------------------------ validation
    def _validate_sample(self, cache, then: str | None = "training") -> None:
        """Sample the validation prompts now. A failure is an event; training goes on."""
        if not self.is_main or not self.preset.all_validation_prompts or "vae" not in self.components:
            return
        from hvtui.core.train.validate import ValidationError, Validator

        self.last_validated_step = self.step
        self.phase("validating", f"step {self.step}")
        try:
            if self.validator is None:
                self.validator = Validator(self.preset, self.components, self.cache, self.accelerator.device,
                                           output_dir=self.out, publish=self.publish)
            self.validator.run(self._unwrapped(), self.step)   # publishes a sample event per video
        except ValidationError as e:
            failure = write_guard.classify(e.__cause__, self.out / "samples", at_write_site=False) \
                if e.__cause__ is not None else None
            if failure is not None:   # the disk refused the mp4: the next checkpoint would fail too
                self.writes.report(failure)
            self.log(f"{e.message}; " + ("stopping" if failure else "training goes on")
                     + (f" ({e.hint})" if e.hint else ""), "warning")
        finally:
            release_memory()
            self._unwrapped().train()
        if then:
            self.phase(then, "")


def train(preset, bus, control, options) -> int:
    from hvtui.core.env.cuda_allocator import configure

    allocator = configure()   # before anything starts CUDA in this process (cuda_allocator.py says why)
    trainer = Trainer(preset, bus, control, options)
    trainer.allocator_note = allocator
    return trainer.run()
