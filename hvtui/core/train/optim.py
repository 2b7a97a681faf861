"""Optimizer names from the preset -> well-kept implementations, and the LR schedule.

hvtui writes no optimizer of its own: each name maps to a maintained implementation, or to a clear error
that says what to install. The schedule comes from diffusers (`get_scheduler`), warmup included.
"""
from __future__ import annotations

from collections.abc import Iterable

WEIGHT_DECAY = 0.01   # torch's AdamW default; the preset has no key for it yet


class OptimizerError(Exception):
    """An optimizer that cannot be built here (a package missing, an unknown name): message says the fix."""


def build_optimizer(name: str, params: Iterable, lr: float, device_type: str = "cpu"):
    import torch

    params = [p for p in params if p.requires_grad]
    if not params:
        raise OptimizerError("no trainable parameters: the LoRA was not added to the transformer")
    if name in ("adamw", "adamw_bf16"):
        # fused kernels exist for CUDA tensors only; LoRA weights stay fp32 (adamw_bf16 keeps that name for
        # SimpleTuner presets: the base weights are bf16, the trained ones are not).
        fused = device_type == "cuda" and all(p.is_cuda and p.is_floating_point() for p in params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY, fused=fused or None)
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise OptimizerError("optimizer = \"adamw8bit\" needs bitsandbytes: pip install bitsandbytes "
                                 "(or set optimizer = \"adamw\")") from None
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=WEIGHT_DECAY)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # a fixed LR from the preset (relative_step off), so the schedule below drives it like the others
        return Adafactor(params, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise OptimizerError("optimizer = \"prodigy\" needs prodigyopt: pip install prodigyopt "
                                 "(or set optimizer = \"adamw\")") from None
        return Prodigy(params, lr=lr, weight_decay=WEIGHT_DECAY)
    raise OptimizerError(f"unknown optimizer {name!r}; valid: adamw, adamw_bf16, adamw8bit, adafactor, prodigy")


def build_scheduler(name: str, optimizer, warmup_steps: int, total_steps: int):
    """diffusers' schedules; `step()` is called once per optimizer step (not per micro-batch or per GPU)."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=max(total_steps, 1))
