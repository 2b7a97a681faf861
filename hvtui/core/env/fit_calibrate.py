"""Calibrate hvtui.core.env.fit from measured runs: each constant solved from the measurements of the one step it
governs, the median over runs, written as memory_calibration.json (fit.py reads it) with its evidence.

A measured run (bench/preset_memory.py writes them) is the preset it ran, as a dict, the allocator's mode
("expandable_segments_seen" in the training step's segments, else "expandable" as asked; runs before bench
version 2 ran without expandable segments), what the trainer reported
(training tokens, attention-cache blocks) and per step of the run (fit's step names) the peaks torch and NVML saw:
{"alloc_gib": max_memory_allocated, "reserved_gib": max_memory_reserved, "nvml_gib": NVML used}.

In every step the estimate's resident set is exact (parameter counts, LoRA size), so the step's measured working
set is alloc - resident, and one constant follows from it:
  caching:text        text_encode_work_gib = working set (every prompt is padded to the same length)
  caching:vae         vae_encode_tiled_gib_per_frame = working set / frames (untiled: per pixel-frame)
  training            train_work_per_token = (working set - block inputs - attention cache - masks) / tokens
  validation:denoise  infer_work_per_token = working set / tokens
  validation:decode   vae_decode_tiled_gib_per_frame = working set / frames (untiled: per pixel-frame)
From the same step's reserved and NVML peaks: fragmentation[mode][step] = (reserved - alloc) / working set
(not checkpointing: it holds the training step's segments by design), and from every step cuda_context_gib =
NVML - reserved. So a step's constants rest only on that step's own measurements: fixing one preset's training
cannot move another's caching. Constants no run measured keep the base calibration's value (evidence n = 0).

Bench version 1 (the 2026-12-03 call) switched to "validation:denoise" before the validator gave training's
segments back, so that step's reserved and NVML peaks are training's: they are not used (its allocated peak is).
"""
from __future__ import annotations

import json
import re
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from hvtui.core.env import fit as F
from hvtui.core.preset.schema import preset_from_dict

CACHE_LOG = re.compile(r"attention cache: (\d+)/\d+ blocks keep attention output at (\d+) tokens")
# steps whose reserved / NVML peaks a bench version's labelling got wrong
UNRELIABLE_RESERVED = {1: {"validation:denoise"}}
BENCH_VERSION = 2


def run_facts(run: dict) -> dict:
    """What a measured run's trainer reported: training tokens and attention-cache blocks (older results: parsed
    from the attention-cache log line; absent for offload runs, which keep no attention), the allocator mode."""
    tokens, blocks = run.get("train_tokens"), run.get("attention_cache_blocks")
    if tokens is None or blocks is None:
        for e in run.get("events", []):
            m = CACHE_LOG.search(str(e.get("message", "")))
            if m:
                blocks = int(m.group(1)) if blocks is None else blocks
                tokens = int(m.group(2)) if tokens is None else tokens
    seen = run.get("expandable_segments_seen")   # what torch's segments said, over what the run asked for
    return {"train_tokens": tokens, "attention_cache_blocks": blocks,
            "expandable": bool(run.get("expandable", False) if seen is None else seen),
            "bench_version": int(run.get("bench_version", 1))}


def estimate_for_run(run: dict, calibration_file: Path | None = None) -> F.FitEstimate:
    """The estimate of exactly what the run ran: its preset, bucket, allocator mode and trainer-reported sizes."""
    preset = preset_from_dict(run["preset"])
    bucket = F.largest_bucket(preset, scan=False)
    facts = run_facts(run)
    text = None
    if facts["train_tokens"]:
        text = facts["train_tokens"] - bucket.video_tokens - (F.IMAGE_TOKENS if preset.is_i2v else 0)
    return F.estimate_memory(preset, bucket, calibration_file=calibration_file, expandable=facts["expandable"],
                             text_tokens=text, cache_blocks=facts["attention_cache_blocks"])


def _unit_constant(step: str, work_gib: float, est: F.FitEstimate, preset) -> tuple[str, float]:
    """(constant, value) that makes the estimate's working set of `step` equal `work_gib`."""
    tiling = bool(preset.vae_enable_tiling)
    bucket = F.largest_bucket(preset, scan=False)
    if step == "caching:text":
        return "text_encode_work_gib", work_gib
    if step == "training":
        e = est.phase(step)
        assert e is not None    # every estimate has a training phase
        known = sum(v for k, v in e.parts.items() if k in e.work and k != "block working set")
        return "train_work_per_token", (work_gib - known) * F.GiB / (est.batch_size * est.tokens)
    if step == "caching:vae":
        name, shape = "vae_encode", bucket
    else:
        val = F.validation_shape(preset, bucket)
        assert val is not None  # the estimate has validation steps only when the preset validates (a shape)
        if step == "validation:denoise":
            return "infer_work_per_token", work_gib * F.GiB / F.denoise_tokens(preset, val)
        name, shape = "vae_decode", val
    if tiling:
        return f"{name}_tiled_gib_per_frame", work_gib / max(shape.frames, 1)
    return f"{name}_untiled_bytes_per_pixel_frame", work_gib * F.GiB / (shape.width * shape.height * shape.frames)


UNIT_STEPS = ("caching:text", "caching:vae", "training", "validation:denoise", "validation:decode")


def solve(runs: list[dict], source: str, base: dict | None = None) -> dict:
    """The calibration (fit.DEFAULT_CALIBRATION's format plus "evidence") that fits `runs`; constants they do not
    measure keep `base`'s value (default: fit's priors, so the result depends on the runs alone)."""
    base = base if base is not None else F.calibration(priors=True)
    samples: dict = defaultdict(list)

    def add(key, value: float, run: dict) -> None:
        samples[key].append((value, run.get("name", "?")))

    for run in runs:
        if not run.get("steps"):
            continue
        preset = preset_from_dict(run["preset"])
        est = estimate_for_run(run)   # its resident parts and sizes: no calibrated constant enters them
        facts = run_facts(run)
        mode = F.EXPANDABLE if facts["expandable"] else F.FIXED
        unreliable = UNRELIABLE_RESERVED.get(facts["bench_version"], set())
        for step, m in run["steps"].items():
            e = est.phase(step) if step in F.STEPS else None
            alloc, reserved, nvml = m.get("alloc_gib"), m.get("reserved_gib"), m.get("nvml_gib")
            if e is None or not alloc:
                continue
            work = alloc - e.resident_gib
            if step in UNIT_STEPS and work > 0:
                add(*_unit_constant(step, work, est, preset), run)
            if step in unreliable or not (reserved and nvml):
                continue
            add("cuda_context_gib", nvml - reserved, run)
            if step in UNIT_STEPS and work > 0.05:   # a working set this small says nothing about fragmentation
                add(("fragmentation", mode, step), max(0.0, (reserved - alloc) / work), run)

    out = json.loads(json.dumps({k: v for k, v in base.items() if k not in ("evidence", "runs")}))
    evidence = {}
    for key, values in sorted(samples.items(), key=lambda kv: str(kv[0])):
        value = statistics.median(v for v, _ in values)
        if isinstance(key, tuple):
            out[key[0]][key[1]][key[2]] = round(value, 4)
            name = ".".join(key)
        else:
            out[key] = round(value, 4) if key.endswith("_gib") or "per_frame" in key else round(value, 1)
            name = key
        evidence[name] = {"n": len(values), "runs": [r for _, r in values],
                          "values": [round(v, 4 if abs(v) < 100 else 1) for v, _ in values]}
    for key in ("cuda_context_gib", "text_encode_work_gib", "vae_encode_tiled_gib_per_frame",
                "vae_encode_untiled_bytes_per_pixel_frame", "train_work_per_token", "infer_work_per_token",
                "vae_decode_tiled_gib_per_frame", "vae_decode_untiled_bytes_per_pixel_frame"):
        evidence.setdefault(key, {"n": 0, "runs": [], "values": [], "prior": base.get(key)})
    for mode, steps in out["fragmentation"].items():
        for step, value in steps.items():
            evidence.setdefault(f"fragmentation.{mode}.{step}", {"n": 0, "runs": [], "values": [], "prior": value})
    out.update(source=source, runs=len([r for r in runs if r.get("steps")]), evidence=evidence)
    return out


def measured_peak(run: dict) -> float:
    """The run's NVML peak: what a user's nvidia-smi shows at worst, over every stretch of the run the bench
    sampled (loading and the moments between steps too, not only the estimated steps)."""
    stretches = {**run.get("steps", {}), **(run.get("all_steps") or {})}
    return max((m.get("nvml_gib") or 0.0) for m in stretches.values())


def peak_error(run: dict, calibration_file: Path | None = None) -> float:
    """The estimate's whole-run peak vs the measured one, in percent."""
    measured = measured_peak(run)
    return (estimate_for_run(run, calibration_file).peak_gib - measured) / measured * 100


def leave_one_preset_out(runs: list[dict]) -> dict[str, float]:
    """Each run's peak error with a calibration solved WITHOUT any run of its preset: how the estimate does on a
    preset it never saw (run label -> percent)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in dict.fromkeys(r["name"] for r in runs):
            others = [r for r in runs if r["name"] != name]
            if not others:
                continue
            path = write(solve(others, "leave one preset out"), Path(tmp) / "calibration.json")
            for r in runs:
                if r["name"] == name:
                    label = f"{name}{'' if run_facts(r)['expandable'] else ' (no expandable segments)'}"
                    out[f"{label} [{r.get('result_file', 'this call')}]"] = round(peak_error(r, path), 1)
    return out


def write(calibration: dict, path: Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(calibration, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
