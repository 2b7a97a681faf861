"""Setting a run up once its plan is made: the accelerator and the process group (`start`), and, after caching,
the trained model with its optimizer, schedule and sampler (`build_training`).

Built on `accelerate.Accelerator` (process group, device placement, mixed precision, gradient accumulation,
seed) without its DDP wrapper: hvtui averages the LoRA gradients itself (train_step.py). Every process starts
from rank 0's LoRA. The learning rate is the preset's, never scaled with the number of processes.
"""
from __future__ import annotations

import os

import torch

from hvtui.core.preset.schema import BUILTIN_TINY
from hvtui.core.run import exitcodes
from hvtui.core.run.events import Event
from hvtui.core.train import checkpoint as ckpt
from hvtui.core.train.context import RunContext, Training
from hvtui.core.train.failures import Abort
from hvtui.core.train.multi_gpu import dist_env
from hvtui.core.train.plan import RunPlan

DIST_TIMEOUT_S = 7200    # a collective may wait this long: rank 0 validating, the slowest rank caching
SUPPORTED_DISTRIBUTED = ("NO", "MULTI_GPU", "MULTI_CPU")   # accelerate's DistributedType values hvtui runs under


def fresh_accelerator(mixed_precision: str, grad_accum: int, cpu: bool):
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
    (`evaluation_mode` is accelerate's switch for that): gradients are averaged by train_step.py.
    Every process starts from rank 0's LoRA: the frozen base is the same everywhere (same files, seeded
    tiny model), but the LoRA's random init ran after each rank's own share of caching."""
    model = acc.prepare_model(transformer, device_placement=False, evaluation_mode=True)
    optimizer = acc.prepare_optimizer(optimizer, device_placement=False)
    coll.broadcast_(params)
    return model, optimizer


def start(ctx: RunContext, plan: RunPlan, allocator_note: str = "") -> None:
    """The accelerator (joining the process group), the seed, run_started and the plan in the log."""
    from accelerate.utils import set_seed

    from hvtui.core.train.collectives import Collectives

    p = ctx.preset
    cuda = torch.cuda.is_available()
    ctx.accelerator = acc = fresh_accelerator(plan.mixed_precision, p.gradient_accumulation_steps, cpu=not cuda)
    if acc.distributed_type.value not in SUPPORTED_DISTRIBUTED:
        raise Abort(exitcodes.INVALID, f"accelerate is configured for {acc.distributed_type.value}; hvtui trains "
                    "a LoRA data-parallel only (its gradients are averaged by hvtui, the model is not sharded)",
                    "use `accelerate launch --multi_gpu ...`, `hvtui --run PRESET --gpus N`, or torchrun, "
                    "or set distributed_type: MULTI_GPU in your accelerate config")
    if not cuda and p.pretrained_model_name_or_path == BUILTIN_TINY:
        # the tiny model's tensors are too small to split: on a small CPU, intra-op threads only add
        # synchronisation (measured on 2 cores: ~40 ms/step with 1 thread, ~350 ms with 2 under load)
        ctx.threads = torch.get_num_threads()
        torch.set_num_threads(1)
    ctx.is_main = acc.is_main_process
    ctx.coll = Collectives(acc)
    set_seed(p.seed)
    resume = plan.resume
    ctx.publish(Event("run_started", {
        "preset": str(p.source) if p.source else "", "output_dir": str(ctx.out),
        "max_steps": p.max_train_steps, "flavour": p.model_flavour, "device": str(acc.device),
        "resume_from": str(resume.path) if resume else None, "resume_step": resume.step if resume else None,
        "global_batch": p.train_batch_size * p.gradient_accumulation_steps * acc.num_processes,
        "num_processes": acc.num_processes, "mixed_precision": plan.mixed_precision}))
    for line in plan.describe():
        ctx.log(line)
    if cuda and allocator_note:
        ctx.log(allocator_note)
    if acc.num_processes > 1:
        _log_data_parallel(ctx, cuda)
    if ctx.is_main:
        for gone in ckpt.clean_temporaries(ctx.out):
            ctx.log(f"removed {gone}: the remains of a checkpoint write that was interrupted")


def _log_data_parallel(ctx: RunContext, cuda: bool) -> None:
    from hvtui.core.train.collectives import LEAN_NCCL

    acc = ctx.accelerator
    ctx.log(f"data-parallel: {acc.num_processes} processes ({acc.distributed_type.value.lower()}, "
            f"{'NCCL' if cuda else 'gloo'}); rank 0 writes events and checkpoints, every rank its RNG state")
    if cuda:
        ours = any(os.environ.get(k) == v for k, v in LEAN_NCCL.items())
        ctx.log("NCCL: " + " ".join(f"{k}={os.environ.get(k)}" for k in LEAN_NCCL)
                + (" (hvtui's defaults where you set none: ~0.4 GiB less GPU memory per process)" if ours else ""))


def start_telemetry(ctx: RunContext) -> None:
    """NVML and allocator samples on rank 0 of a GPU run (telemetry.py)."""
    if torch.cuda.is_available() and ctx.is_main:
        from hvtui.core.env.telemetry import TelemetrySampler

        ctx.telemetry = TelemetrySampler(ctx.bus, device=ctx.accelerator.device).start()


def prepare_transformer(ctx: RunContext):
    """The transformer as it trains: quantized when the preset asks, with its LoRA, on the device (or offloaded)
    with hvtui's speed-ups (speed.py). Returns (transformer, LoRA parameters, speed handle)."""
    from hvtui.core.train import quantize
    from hvtui.core.train.lora import add_lora
    from hvtui.core.train.speed import prepare_transformer as speed_up

    p, device = ctx.preset, ctx.accelerator.device
    transformer = ctx.components["transformer"]
    if quantize.is_quantized(p.base_model_precision):
        ctx.phase("loading", f"quantizing the transformer ({p.base_model_precision})")
        try:   # block by block on the device (with offload, speed.prepare_transformer then moves them to the host)
            quantize.quantize_transformer(transformer, p.base_model_precision, device, publish=ctx.publish)
        except quantize.QuantizationError as e:   # doctor catches these first; `--run` reached here anyway
            raise Abort(exitcodes.DOCTOR_FAILED, e.message, e.hint) from None
    params = add_lora(transformer, p)
    if not p.enable_group_offload:
        transformer.to(device)     # with offload, speed.prepare_transformer places the blocks itself
    handle = speed_up(transformer, p, device, publish=ctx.publish)
    if ctx.telemetry is not None:
        ctx.telemetry.extra = handle.stats
    n = sum(q.numel() for q in params)
    ctx.log(f"LoRA rank {p.lora_rank} on {p.lora_targets}: {n:,} trainable parameters")
    return transformer, params, handle


def build_training(ctx: RunContext, cache) -> Training:
    """After caching: the transformer, its optimizer and schedule prepared by accelerate, and the sampler over
    the cache's entries."""
    from hvtui.core.train.optim import OptimizerError, build_optimizer, build_scheduler

    p, acc = ctx.preset, ctx.accelerator
    transformer, params, handle = prepare_transformer(ctx)
    try:
        optimizer = build_optimizer(p.optimizer, params, p.learning_rate, acc.device.type)
    except OptimizerError as e:
        raise Abort(exitcodes.INVALID, str(e), "change optimizer in the preset or install the package") from None
    scheduler = build_scheduler(p.lr_scheduler, optimizer, p.lr_warmup_steps, p.max_train_steps)
    model, optimizer = prepare_for_training(acc, transformer, optimizer, params, ctx.coll)
    entries, sampler = _sampler(ctx, cache)
    return Training(model, optimizer, scheduler, params, sampler, entries, handle)


def _sampler(ctx: RunContext, cache):
    """Sample id -> cache entry, and the bucket sampler over them (repeats count; this rank's share)."""
    from hvtui.core.train.data import BucketBatchSampler, group_key

    groups: dict[str, list[str]] = {}
    entries = {}
    for e in cache.entries:
        entries[e.sample_id] = e
        g = group_key(e.bucket_key, bool(getattr(e, "i2v", ctx.preset.is_i2v)))
        groups.setdefault(g, []).extend([e.sample_id] * (1 + int(getattr(e, "repeats", 0) or 0)))
    acc = ctx.accelerator
    return entries, BucketBatchSampler(groups, ctx.preset.train_batch_size, ctx.preset.seed,
                                       rank=acc.process_index, world_size=acc.num_processes)
