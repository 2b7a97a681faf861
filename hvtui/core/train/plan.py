"""The run plan: what a run will cache, train, save and resume, and why, decided before any model loads.

preflight.py makes it from the preset, the dataset scan, the checkpoint chosen for resuming and the cache keys
(file checks only). The run logs `describe()` when it starts; anything that wants to say what a run will do
before it loads (the TUI, `hvtui doctor`) can make and show the same plan.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunPlan:
    output_dir: Path
    num_processes: int
    train_batch_size: int              # per process
    gradient_accumulation_steps: int
    learning_rate: float
    mixed_precision: str               # what training computes in ("fp16" becomes "no" without a GPU)
    max_train_steps: int
    resume: Any                        # checkpoint.CheckpointInfo, or None for a new run
    resume_reason: str
    changed: tuple[str, ...]           # settings changed since that checkpoint (--allow-changed)
    cache: Any                         # latent_cache.CachePlan: what is on disk, what must be encoded
    checkpointing_steps: int           # 0: only the final save
    checkpoints_total_limit: int | None
    lora_files: tuple[Path, ...]       # the final LoRA (and its ComfyUI copy)
    validation_steps: int              # 0: no validation samples
    validation_prompts: int

    @property
    def first_step(self) -> int:
        return (self.resume.step if self.resume is not None else 0) + 1

    @property
    def global_batch(self) -> int:
        return self.train_batch_size * self.num_processes * self.gradient_accumulation_steps

    def describe(self) -> list[str]:
        """The plan as log lines, one per decision."""
        return [self._train_line(), self._batch_line(), self._cache_line(), self._save_line(),
                self._samples_line()]

    def _train_line(self) -> str:
        start = (f"plan: resume {self.resume.path.name} at step {self.resume.step} ({self.resume_reason})"
                 if self.resume is not None else f"plan: {self.resume_reason}")
        if self.first_step > self.max_train_steps:
            return f"{start}; nothing left to train (max_train_steps = {self.max_train_steps})"
        n = self.max_train_steps - self.first_step + 1
        changed = f"; changed since the checkpoint: {len(self.changed)} setting(s)" if self.changed else ""
        return f"{start}; train steps {self.first_step} to {self.max_train_steps} ({n} optimizer steps){changed}"

    def _batch_line(self) -> str:
        return (f"global batch: {self.train_batch_size} per process x {self.num_processes} process(es) x "
                f"{self.gradient_accumulation_steps} gradient accumulation = {self.global_batch} sample(s) per "
                f"optimizer step; learning_rate {self.learning_rate:g} is used as set (hvtui does not scale it "
                "with the number of processes or the global batch)")

    def _cache_line(self) -> str:
        c = self.cache
        clips, captions = len(c.samples), len(c.text_paths)
        failed = f"; {len(c.failed)} clip(s) left out (they failed to decode before)" if c.failed else ""
        if not c.todo_latents and not c.todo_text:
            return f"plan: cache: all {clips} clip(s) and {captions} caption(s) are cached{failed}"
        return (f"plan: cache: encode {len(c.todo_latents)} of {clips} clip(s) and {len(c.todo_text)} of {captions} "
                f"caption(s) (the rest is cached; an entry found damaged is encoded again){failed}")

    def _save_line(self) -> str:
        lora = ", ".join(str(f) for f in self.lora_files)
        if not self.checkpointing_steps:
            return f"plan: save: a checkpoint at the end only; the LoRA to {lora}"
        keep = f", the newest {self.checkpoints_total_limit} kept" if self.checkpoints_total_limit else ""
        return (f"plan: save: a checkpoint every {self.checkpointing_steps} steps{keep}, and at the end; "
                f"the LoRA to {lora}")

    def _samples_line(self) -> str:
        if not self.validation_steps or not self.validation_prompts:
            return "plan: validation samples: none (validation_steps or validation prompts not set)"
        return (f"plan: validation samples: {self.validation_prompts} prompt(s) every {self.validation_steps} "
                f"steps and at the end, into {self.output_dir / 'samples'}")
