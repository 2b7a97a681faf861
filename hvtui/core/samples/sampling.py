"""How validation samples are drawn: guidance scale, step count and flow shift, from the checkpoint's own configs.

Each HunyuanVideo 1.5 checkpoint comes with its sampling settings:
  diffusers layout  guider/guider_config.json (ClassifierFreeGuidance `guidance_scale`: 6.0, 1.0 for the
                    CFG-distilled checkpoints, as diffusers' conversion script writes them) and
                    scheduler/scheduler_config.json (`shift`)
  Tencent's tree    no guider file: Tencent's PIPELINE_CONFIGS (hyvideo/commons/__init__.py) per transformer
                    version, the table below; generate.py samples 50 steps unless the table says otherwise
The step-distilled i2v checkpoint samples 12 steps (Tencent's table); diffusers stores no step count, so that
comes from the table too. A preset's `validation_guidance` / `validation_num_inference_steps` override these;
a guidance above 1 on a CFG-distilled checkpoint gets a warning (it was distilled to sample without CFG).

Reads small JSON files only (no torch): the doctor, the trainer's loader and the validator share it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hvtui.core.env.assets import transformer_version
from hvtui.core.preset.schema import BUILTIN_TINY, FLAVOUR_SHIFT, Preset

TENCENT_STEPS = 50
# Tencent's PIPELINE_CONFIGS: transformer version -> (guidance_scale, flow_shift, num_inference_steps)
CHECKPOINT_DEFAULTS = {
    "480p_t2v": (6.0, 5.0, TENCENT_STEPS), "480p_i2v": (6.0, 5.0, TENCENT_STEPS),
    "720p_t2v": (6.0, 9.0, TENCENT_STEPS), "720p_i2v": (6.0, 7.0, TENCENT_STEPS),
    "480p_t2v_distilled": (1.0, 5.0, TENCENT_STEPS), "480p_i2v_distilled": (1.0, 5.0, TENCENT_STEPS),
    "720p_t2v_distilled": (1.0, 9.0, TENCENT_STEPS), "720p_i2v_distilled": (1.0, 7.0, TENCENT_STEPS),
    "480p_i2v_step_distilled": (1.0, 7.0, 12),
}


@dataclass
class SamplingSettings:
    guidance: float
    guidance_source: str
    steps: int
    steps_source: str
    shift: float
    shift_source: str
    checkpoint_guidance: float         # what the checkpoint's guider says, whatever the preset sets

    @property
    def cfg_distilled(self) -> bool:
        return self.checkpoint_guidance <= 1.0

    @property
    def uses_cfg(self) -> bool:
        return self.guidance > 1.0

    def warning(self) -> str:
        """Non-empty when the preset asks for CFG on a checkpoint distilled to sample without it."""
        if self.cfg_distilled and self.uses_cfg:
            return (f"validation_guidance = {self.guidance:g} on a CFG-distilled checkpoint (its guider says "
                    f"{self.checkpoint_guidance:g}: it samples without classifier-free guidance); samples will look "
                    "over-saturated or broken")
        return ""

    def describe(self) -> str:
        cfg = f"guidance {self.guidance:g} ({self.guidance_source}" + ("" if self.uses_cfg else ": no CFG") + ")"
        return (f"{cfg}, {self.steps} steps ({self.steps_source}), flow shift {self.shift:g} "
                f"({self.shift_source})")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_configs(preset: Preset, env=None) -> tuple[dict, dict]:
    """(guider config, scheduler config) of the preset's model folder, empty when it has none."""
    if preset.pretrained_model_name_or_path == BUILTIN_TINY:
        return {}, {}
    try:
        import os

        from hvtui.core.env.assets import resolve_components

        comps = {c.name: c for c in resolve_components(preset, os.environ if env is None else env)}
    except Exception:   # an unusable model folder: the doctor says why; the table still answers
        return {}, {}
    sched = comps.get("scheduler")
    if sched is None or sched.path is None:
        return {}, {}
    return _read(sched.path.parent / "guider" / "guider_config.json"), _read(sched.path / "scheduler_config.json")


def sampling_settings(preset: Preset, env=None) -> SamplingSettings:
    version = transformer_version(preset.model_flavour)
    t_guidance, t_shift, t_steps = CHECKPOINT_DEFAULTS.get(version, (6.0, FLAVOUR_SHIFT[preset.model_flavour],
                                                                     TENCENT_STEPS))
    table = f"Tencent's defaults for {version}"
    guider, scheduler = _model_configs(preset, env)
    checkpoint_guidance, g_source = t_guidance, table
    if isinstance(guider.get("guidance_scale"), (int, float)):
        checkpoint_guidance, g_source = float(guider["guidance_scale"]), "the checkpoint's guider/guider_config.json"
    shift, s_source = t_shift, table
    if scheduler.get("_class_name") == "FlowMatchEulerDiscreteScheduler" and isinstance(scheduler.get("shift"),
                                                                                       (int, float)):
        shift, s_source = float(scheduler["shift"]), "the checkpoint's scheduler_config.json"
    guidance = checkpoint_guidance
    if preset.validation_guidance is not None:
        guidance, g_source = float(preset.validation_guidance), "validation_guidance in the preset"
    steps, st_source = t_steps, table
    if preset.validation_num_inference_steps is not None:
        steps, st_source = int(preset.validation_num_inference_steps), "validation_num_inference_steps"
    return SamplingSettings(guidance, g_source, steps, st_source, shift, s_source, checkpoint_guidance)
