"""Before anything heavy loads: the checks that can refuse a run, and the run plan (plan.py).

Order (the loop calls them): the preset (exit 2) -> the doctor's failing checks (exit 3) -> the datasets'
scan (exit 2) -> the checkpoint to resume (resume.py; exit 5 if it would change the run) -> `make_plan`.
`check_shared_folders` runs once the processes of a data-parallel run can talk (run_setup.start).
"""
from __future__ import annotations

from hvtui.core.run import events, exitcodes
from hvtui.core.run.events import Event
from hvtui.core.train.context import RunContext
from hvtui.core.train.failures import Abort
from hvtui.core.train.plan import RunPlan
from hvtui.core.train.resume import ResumeChoice


def check_preset(ctx: RunContext) -> None:
    """The preset's problems: warnings go to the log, errors stop the run before anything else."""
    from hvtui.core.preset.check import validate_for_run

    problems = validate_for_run(ctx.preset)
    errors = [q for q in problems if q.is_error]
    for q in problems:
        if not q.is_error:
            ctx.log(str(q), "warning")
    if errors:
        for q in errors:
            ctx.publish(Event("error", {"message": str(q), "hint": q.fix}))
        raise Abort(exitcodes.INVALID, f"the preset has {len(errors)} problem(s); nothing was trained",
                    "fix them (hvtui check PRESET lists them) and run again")


def check_doctor(ctx: RunContext) -> None:
    """The doctor's checks for this preset on this machine; a failing one stops the run."""
    from hvtui.core.env.doctor import run_doctor

    report = run_doctor(ctx.preset, system=True, processes=ctx.dist.world_size)
    failed = [c for c in report.checks if c.status == "fail"]
    for c in report.checks:
        # system warnings (no GPU on the CPU demo, not in tmux) are for `hvtui doctor`, not every run
        if c.status == "warn" and getattr(c, "group", "") != "system":
            ctx.log(f"doctor: {c.name}: {c.detail}" + (f" ({c.hint})" if c.hint else ""), "warning")
    if failed:
        for c in failed:
            ctx.publish(Event("error", {"message": f"doctor: {c.name}: {c.detail}", "hint": c.hint}))
        raise Abort(exitcodes.DOCTOR_FAILED, f"{len(failed)} doctor check(s) failed; nothing was trained",
                    "hvtui doctor PRESET shows every check")


def scan(ctx: RunContext):
    """The datasets' scan report (buckets and samples); no usable sample stops the run."""
    from hvtui.core.dataset.scan import scan_preset

    def progress(done: int, total: int, what: str = "") -> None:
        ctx.publish(events.progress("scanning", done, total, what))

    ctx.phase("loading", "scanning datasets")
    report = scan_preset(ctx.preset, progress=progress)
    for w in report.warnings:
        ctx.log(w, "warning")
    if report.errors or not report.samples:
        for e in report.errors:
            ctx.publish(Event("error", {"message": e, "hint": "hvtui buckets PRESET explains each clip"}))
        raise Abort(exitcodes.INVALID, "no usable training samples" if not report.errors else
                    "the datasets cannot be used", "hvtui buckets PRESET explains the fate of every clip")
    n = sum(len(b.samples) for b in report.buckets)
    ctx.log(f"{n} clips in {len(report.buckets)} bucket(s): " +
            ", ".join(f"{b.key} x{len(b.samples)}" for b in report.buckets))
    return report


def make_plan(ctx: RunContext, report, resume: ResumeChoice) -> RunPlan:
    """What this run will do (plan.py). The cache part comes from the cache keys alone: no model is loaded."""
    import torch

    from hvtui.core.train.components import ModelLoadError, model_info
    from hvtui.core.train.latent_cache import plan_cache
    from hvtui.core.train.lora import COMFY_FILE, LORA_FILE

    p = ctx.preset
    mixed_precision = p.mixed_precision
    if not torch.cuda.is_available() and mixed_precision == "fp16":
        ctx.log("mixed_precision fp16 needs a GPU; training in fp32 on the CPU", "warning")
        mixed_precision = "no"
    try:
        cache = plan_cache(p, report, model_info(p))
    except ModelLoadError as e:
        raise Abort(exitcodes.TRAINING_FAILED, f"cannot load the model: {e.message}", e.hint) from None
    return RunPlan(
        output_dir=ctx.out, num_processes=ctx.dist.world_size, train_batch_size=p.train_batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps, learning_rate=p.learning_rate,
        mixed_precision=mixed_precision, max_train_steps=p.max_train_steps, resume=resume.checkpoint,
        resume_reason=resume.reason, changed=resume.changed, cache=cache,
        checkpointing_steps=p.checkpointing_steps, checkpoints_total_limit=p.checkpoints_total_limit,
        lora_files=(ctx.out / LORA_FILE,) + ((ctx.out / COMFY_FILE,) if p.export_comfyui else ()),
        validation_steps=p.validation_steps, validation_prompts=len(p.all_validation_prompts))


def check_shared_folders(ctx: RunContext) -> None:
    """Data-parallel: output_dir and every cache folder must be one folder for all processes."""
    from hvtui.core.train.latent_cache import cache_dirs
    from hvtui.core.train.shared_disk import unseen_folders

    latent, text = cache_dirs(ctx.preset)
    problems = unseen_folders(ctx.coll, [ctx.out, *latent.values(), text])
    if problems:
        raise Abort(exitcodes.INVALID, "the run's folders are not shared by all processes:\n  "
                    + "\n  ".join(problems),
                    "with several hosts, put output_dir and every cache_dir on a disk all hosts mount "
                    "(NFS or similar), at the same path")
