"""Environment and model-asset checks, run before anything heavy is loaded.

`run_doctor(preset)` answers: where does every component come from (hvtui.core.env.assets), is it whole (config
class names, tokenizer files, every safetensors shard's header), what is this machine (GPU through NVML,
package versions through importlib.metadata: torch is never imported here), and does the run fit in GPU
memory (hvtui.core.env.fit). Each answer is a Check: ok / warn / fail, a detail line and a hint a user can act
on. `hvtui doctor` exits 3 when any check fails; `--run` and the TUI's environment pane show the same list.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from hvtui.core.env.assets import (
    resolve_components,
)
from hvtui.core.env.doctor_model import (
    check_model_root,
    check_sampling,
    component_checks,
    fold_missing_components,
    source_checks,
)
from hvtui.core.env.doctor_report import FAIL, OK, WARN, Check, DoctorReport, real_model
from hvtui.core.env.doctor_system import (
    check_base_precision,
    check_disk,
    check_gpu,
    check_host_memory,
    check_packages,
    check_python,
    check_session,
    check_torch_build,
    package_versions,
)
from hvtui.core.env.fit import FitEstimate, GiB, card_for, estimate_memory, largest_bucket
from hvtui.core.env.nvml import NvmlInfo
from hvtui.core.formatting import gib
from hvtui.core.preset.schema import Preset

# ------------------------------------------------------------------------------------------- fit

def check_fit(est: FitEstimate, preset: Preset, info: NvmlInfo | None) -> Check:
    """The whole run's peak (hvtui.core.env.fit: every phase as NVML sees it) against this machine's GPU."""
    where = f" (largest bucket from the {est.bucket_source})" if est.bucket_source else ""
    if est.builtin:
        return Check("fit", OK, est.breakdown(), group="fit")
    peak_words = est.peak_words()
    gpus = info.visible_gpus if info and info.available else []
    if not gpus:
        hint = f"run on a machine with an NVIDIA GPU of {card_for(est.peak_gib)} or more"
        alt = _offload_alternative(est, preset)
        if alt is not None:
            hint += f"; with enable_group_offload = true about {alt.peak_gib:.1f} GiB ({card_for(alt.peak_gib)})"
        return Check("fit", FAIL, f"no GPU found; the run needs about {peak_words}: {est.breakdown()}{where}",
                     hint, "fit")
    cap = min(g.mem_total or 0 for g in gpus)
    free = min(g.mem_free if g.mem_free is not None else (g.mem_total or 0) for g in gpus)
    name = gpus[0].name
    # what the run needs: the attention cache is left out, it only fills what the card has left (speed.py)
    peak = (est.required_gib or est.peak_gib) * GiB
    detail = f"about {peak_words} of {gib(cap)} on {name}: {est.breakdown()}{where}"
    if peak > cap:
        return Check("fit", FAIL, detail, _fit_hint(est, preset, cap), "fit")
    if peak > 0.92 * cap:
        return Check("fit", WARN, "tight: " + detail, _fit_hint(est, preset, 0.92 * cap), "fit")
    if peak > free:
        return Check("fit", WARN, detail + f"; only {gib(free)} free now ({gib(cap - free)} used by other processes)",
                     "stop the other GPU processes (nvidia-smi lists them)", "fit")
    return Check("fit", OK, detail, group="fit")


def check_trackers(preset: Preset, env: Mapping[str, str]) -> list[Check]:
    """report_to's trackers: installed (they are optional extras), and for W&B, a login (else the run logs
    offline). Nothing is imported: find_spec, the environment and ~/.netrc only."""
    from hvtui.core.run.trackers import missing_packages, wandb_credentials, wanted

    names = wanted(preset.report_to)
    if not names:
        return []
    missing = missing_packages(preset.report_to)
    if missing:
        return [Check("trackers", WARN, f"report_to = {preset.report_to}: {', '.join(n for n, _ in missing)} not "
                      "installed; the run trains without it", "pip install " + " ".join(f"'{x}'" for _, x in missing),
                      "system")]
    mode = env.get("WANDB_MODE", "").strip().lower()
    if "wandb" in names and mode not in ("offline", "dryrun", "disabled") and not wandb_credentials(env):
        return [Check("trackers", WARN, "no W&B login: the run logs to wandb offline (OUTPUT_DIR/wandb/)",
                      "run `wandb login` (or set WANDB_API_KEY); `wandb sync DIR` uploads an offline run later",
                      "system")]
    return [Check("trackers", OK, ", ".join(names) + (f" (WANDB_MODE={mode})" if "wandb" in names and mode else ""),
                  group="system")]


def check_preset(preset: Preset, env) -> Check:
    """The preset's own errors (what `hvtui check` says): the doctor is never "ready" for a preset --run refuses."""
    from hvtui.core.preset.check import validate_for_run

    problems = validate_for_run(preset, dict(env))
    errors = [q for q in problems if q.is_error]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return Check("preset", FAIL, f"{len(errors)} error(s): {errors[0]}{more}",
                     "hvtui check PRESET lists them with their lines", "preset")
    warned = len(problems)
    return Check("preset", OK, "valid" + (f", {warned} warning(s) (hvtui check PRESET)" if warned else ""),
                 group="preset")




def _offload_alternative(est: FitEstimate, preset: Preset) -> FitEstimate | None:
    """The same run with block offload, when it is off and would lower the peak; never a hint for what is on."""
    if est.offload:
        return None
    alt = estimate_memory(preset, _shape(est), offload=True)
    return alt if alt.peak_gib < est.peak_gib - 0.5 else None


def _fit_hint(est: FitEstimate, preset: Preset, budget: float) -> str:
    """What lowers each phase that is over `budget` (bytes), from the same estimate the detail quotes."""
    hints = []
    over = [p for p in est.phases if p.nvml_gib * GiB > budget and p.name != "checkpointing"]
    for phase in over:
        if phase.name == "caching":
            if not preset.vae_enable_tiling and "VAE encode" in phase.parts:
                hints.append(f"caching needs ~{phase.nvml_gib:.1f} GiB: set vae_enable_tiling = true")
            else:
                hints.append(f"caching needs ~{phase.nvml_gib:.1f} GiB ({phase.note}): cache on a larger GPU and "
                             "copy the cache folders")
        elif phase.name == "training":
            fixes = []
            if not est.gradient_checkpointing:
                fixes.append("set gradient_checkpointing = true")
            alt = _offload_alternative(est, preset)
            alt_train = alt.phase("training") if alt is not None else None
            if alt is not None and alt_train is not None:
                fixes.append(f"set enable_group_offload = true (training then ~{alt_train.nvml_gib:.1f} "
                             f"GiB, the run's peak ~{alt.peak_gib:.1f} GiB)")
            fixes.append(f"lower resolution / num_frames (largest bucket {est.bucket})")
            if est.batch_size > 1:
                fixes.append("train_batch_size = 1 with gradient_accumulation_steps")
            hints.append(f"training needs ~{phase.nvml_gib:.1f} GiB: " + ", or ".join(fixes))
        elif phase.name == "validation":
            fixes = ["lower validation_resolution / validation_num_video_frames"]
            if not preset.vae_enable_tiling:
                fixes.insert(0, "set vae_enable_tiling = true")
            fixes.append("set validation_steps = 0")
            hints.append(f"validation sampling needs ~{phase.nvml_gib:.1f} GiB ({phase.note}): " + ", or ".join(fixes))
    return "; ".join(hints)


def _shape(est: FitEstimate):
    from hvtui.core.env.fit import BucketShape
    w, rest = est.bucket.split("x")
    h, f = rest.split("@")
    return BucketShape(int(w), int(h), int(f), est.bucket_source)




# ------------------------------------------------------------------------------------------- entry point

def run_doctor(preset: Preset, system: bool = True, *, env: Mapping[str, str] | None = None,
               gpu: NvmlInfo | None = None, scan: bool = True, processes: int = 1) -> DoctorReport:
    """All checks for a preset. `gpu` replaces the NVML query (tests); `scan` lets the fit estimate use the
    dataset scan for the largest bucket (else the preset's resolution / num_frames); `processes`: a
    data-parallel run's process count (the fit adds NCCL's buffers)."""
    env = os.environ if env is None else env
    report = DoctorReport(preset)

    def run(name: str, group: str, fn, *args) -> list[Check]:
        # a preset with odd values (check.py reports them) must give a check, never a traceback
        try:
            out = fn(*args)
        except Exception as e:
            return [Check(name, WARN, f"could not check: {type(e).__name__}: {e}", "run `hvtui check PRESET`",
                          group)]
        return out if isinstance(out, list) else [out]

    if system:
        if gpu is None:
            from hvtui.core.env.nvml import query
            gpu = query(env)
        report.gpu = gpu
        versions = package_versions()
        report.checks += [check_python(), check_packages(versions), check_gpu(gpu, real_model(preset)),
                          check_torch_build(versions.get("torch"), gpu)]
        report.checks += run("base precision", "system", check_base_precision, preset, gpu)
        report.checks += run("host memory", "system", check_host_memory, preset)
        report.checks += run("disk", "system", check_disk, preset)
        report.checks.append(check_session(env))
        report.checks += run("trackers", "system", check_trackers, preset, env)
    report.checks += run("preset", "preset", check_preset, preset, env)
    model = run("model", "model", check_model_root, preset, env)
    report.checks += model
    try:
        report.components = resolve_components(preset, env)
    except Exception as e:
        report.checks.append(Check("components", FAIL, f"cannot resolve: {type(e).__name__}: {e}",
                                   "run `hvtui check PRESET` and fix the model keys", "model"))
    sources = source_checks(report.components)
    unfound = [c for c in report.components if not c.found and not c.builtin]
    if model and model[0].status == FAIL and unfound:   # one cause, one row
        fold_missing_components(model[0], unfound, preset)
        root = preset.resolve_path(preset.pretrained_model_name_or_path)
        inside = [c for c in sources if root is not None and str(root) + os.sep in c.detail]
        if inside:
            model[0].detail += "; " + ", ".join(c.detail.split(":", 1)[0] for c in inside) + " point(s) inside it"
            sources = [c for c in sources if c not in inside]
    report.checks += sources
    for comp in report.components:
        if comp not in unfound or not (model and model[0].status == FAIL):
            report.checks += run(comp.name, "model", component_checks, comp, preset)
    report.checks += [c for c in run("sampling", "model", check_sampling, preset, env) if c is not None]
    try:
        gpus = report.gpu.visible_gpus if report.gpu is not None and report.gpu.available else []
        card = min((g.mem_total or 0) for g in gpus) / GiB if gpus else None   # the cache sizes itself to it
        report.fit = estimate_memory(preset, largest_bucket(preset, scan=scan), processes=processes,
                                     card_gib=card or None)
    except Exception as e:   # a preset too broken to estimate: check.py reports why
        report.checks.append(Check("fit", WARN, f"no estimate: {type(e).__name__}: {e}",
                                   "run `hvtui check PRESET` first", "fit"))
    else:
        if system:
            report.checks.append(check_fit(report.fit, preset, report.gpu))
    return report
