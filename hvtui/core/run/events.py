"""Event records: everything the trainer tells the world. One shape, one `kind`, JSON-friendly data.

The trainer publishes them on the bus; the JSONL run log, the console line and the TUI are views of them.
Kinds and the keys their `data` carries (all optional unless noted):
  run_started   preset, output_dir, max_steps, flavour, device, resume_from, resume_step, global_batch
  phase         phase (loading|caching|training|validating|saving|done), detail
  progress      phase, done, total, what              -- caching and other long work
  step          step, max_steps, epoch, loss, loss_smooth, lr, grad_norm, step_time, samples_per_s,
                eta_s, mem_allocated, mem_reserved, mem_peak (bytes), sample_ids
  gpu           gpus: [{index, name, mem_used, mem_total, util, temp, power}], offload: {...}
  state         state (idle|running|paused|stopping|stopped|finished|failed)
  checkpoint    step, path, lora_path
  sample        step, path, prompt, index (of the prompt), sheet (the contact sheet PNG beside the mp4, if written)
  tracker       name (tensorboard|wandb), status (logging|offline|failed|finished), where (a folder or URL),
                message -- an experiment tracker started, fell back, gave up or ended (trackers.py)
  log           level (info|warning|error), message
  error         message, hint
  finished      status (completed|stopped|interrupted|failed), exit_code, step
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
KINDS = ("run_started", "phase", "progress", "step", "gpu", "state", "checkpoint", "sample", "log", "error",
         "finished", "tracker")
PHASES = ("loading", "caching", "training", "validating", "saving", "done")


@dataclass(frozen=True)
class Event:
    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "time": round(self.time, 3), **self.data}, default=str)

    @classmethod
    def from_json(cls, line: str) -> Event:
        obj = json.loads(line)
        kind = obj.pop("kind")
        t = obj.pop("time", 0.0)
        return cls(kind, obj, t)


def log(message: str, level: str = "info") -> Event:
    return Event("log", {"level": level, "message": message})


def phase(name: str, detail: str = "") -> Event:
    return Event("phase", {"phase": name, "detail": detail})


def progress(phase_name: str, done: int, total: int, what: str = "") -> Event:
    return Event("progress", {"phase": phase_name, "done": done, "total": total, "what": what})


def state(name: str) -> Event:
    return Event("state", {"state": name})
