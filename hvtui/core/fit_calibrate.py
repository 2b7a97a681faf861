"""Calibrate hvtui.core.fit from measured runs: each calibrated constant solved from the peaks of the step of a
run it governs, the median over runs, written as memory_calibration.json (fit.py reads it).

A measured run (bench/preset_memory.py writes them) is the preset it ran, as a dict, and per step of the run
(fit's step names: caching:text, caching:vae, training, validation:denoise, validation:decode, checkpointing)
the peaks torch and NVML saw: {"alloc_gib": max_memory_allocated, "reserved_gib": max_memory_reserved,
"nvml_gib": NVML used}. For each step the estimate's own parts are known exactly (weights from parameter counts,
LoRA from its rank) except one working set, whose constant follows:
  caching:text        text encoding          text_encode_work_gib
  caching:vae         VAE encode             vae_encode_tiled_gib_per_frame (or per pixel-frame untiled)
  training            activations            train_work_per_token (beyond the checkpointed block inputs)
  validation:denoise  denoising              infer_work_per_token
  validation:decode   VAE decode             vae_decode_tiled_gib_per_frame (or per pixel-frame untiled)
and every step gives the CUDA context (NVML - reserved) and its phase's reserved overhead (reserved / allocated
- 1; not checkpointing, which holds the training step's cache by design).
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from hvtui.core import fit as F
from hvtui.core.preset import preset_from_dict

CALIBRATED = {
    "caching:text": ("text encoding", "text_encode_work_gib"),
    "caching:vae": ("VAE encode", "vae_encode"),
    "training": ("activations", "train_work_per_token"),
    "validation:denoise": ("denoising", "infer_work_per_token"),
    "validation:decode": ("VAE decode", "vae_decode"),
}


def _constant(name: str, size_gib: float, est: F.FitEstimate, preset, bucket: F.BucketShape) -> tuple[str, float]:
    """(constant, value) that makes the estimate's part `size_gib` for this run."""
    tiling = bool(preset.vae_enable_tiling)
    if name == "text_encode_work_gib":
        return name, size_gib
    if name == "train_work_per_token":
        return name, size_gib * F.GiB / (est.batch_size * est.tokens) - F.CKPT_PER_TOKEN
    val = F.validation_shape(preset, bucket)
    if name == "infer_work_per_token":
        s_val = val.video_tokens + F.TEXT_TOKENS_TYPICAL + (F.IMAGE_TOKENS if preset.is_i2v else 0)
        return name, size_gib * F.GiB / s_val
    shape = bucket if name == "vae_encode" else val
    if tiling:
        return f"{name}_tiled_gib_per_frame", size_gib / max(shape.frames, 1)
    return f"{name}_untiled_bytes_per_pixel_frame", size_gib * F.GiB / (shape.width * shape.height * shape.frames)


def solve(runs: list[dict], source: str, base_file: Path | None = None) -> dict:
    """The calibration (fit.DEFAULT_CALIBRATION's format) that fits `runs`; constants no run measured keep the
    base calibration's value."""
    cal = F.calibration(base_file)
    samples: dict = defaultdict(list)
    for run in runs:
        preset = preset_from_dict(run["preset"])
        bucket = F.largest_bucket(preset, scan=False)
        est = F.estimate_memory(preset, bucket, calibration_file=base_file)
        for step, m in run.get("steps", {}).items():
            e = est.phase(step)
            alloc, reserved, nvml = m.get("alloc_gib"), m.get("reserved_gib"), m.get("nvml_gib")
            if e is None or not alloc:
                continue
            if reserved and nvml:
                samples["cuda_context_gib"].append(nvml - reserved)
                if step != "checkpointing":
                    samples[("reserved_overhead", step.split(":")[0])].append(reserved / alloc - 1)
            if step in CALIBRATED:
                part, const = CALIBRATED[step]
                known = e.allocated_gib - e.parts.get(part, 0.0)
                name, value = _constant(const, alloc - known, est, preset, bucket)
                samples[name].append(value)
    out = json.loads(json.dumps(cal))
    for key, values in samples.items():
        value = max(0.0, statistics.median(values))
        if isinstance(key, tuple):
            out[key[0]][key[1]] = round(value, 4)
        else:
            out[key] = round(value, 4) if key.endswith("_gib") or "per_frame" in key else round(value, 1)
    out["source"] = source
    out["runs"] = len(runs)
    return out


def write(calibration: dict, path: Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(calibration, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
