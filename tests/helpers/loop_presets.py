"""Presets and clips for the trainer-loop tests: the builtin tiny model, 80x80x9 PyAV clips (the 80x80@9 bucket at
resolution 64), a shared cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.repo_paths import REPO

DEMO_DATA = REPO / "presets" / "demo-data"

BASE = dict(
    pretrained_model_name_or_path="builtin:tiny", model_flavour="t2v-480p", mixed_precision="no",
    base_model_precision="no_change", lora_rank=4, max_train_steps=6, train_batch_size=1,
    learning_rate=2e-3, optimizer="adamw", lr_scheduler="constant", seed=7, checkpointing_steps=0,
    checkpoints_total_limit=2, validation_steps=0, gradient_checkpointing=False,
)


def write_clips(folder: Path, n: int = 2) -> Path:
    from hvtui.core.dataset.synth import write_clip

    folder.mkdir(parents=True, exist_ok=True)
    looks = [("square", "red", "right"), ("circle", "blue", "down"), ("square", "green", "left")]
    for i in range(n):
        shape, colour, direction = looks[i % len(looks)]
        write_clip(folder / f"clip{i}.mp4", 80, 80, 24, 9, shape=shape, colour=colour, direction=direction)
        (folder / f"clip{i}.txt").write_text(f"a {colour} {shape} moves {direction}\n")
    return folder


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v))


def write_preset(path: Path, data: Path, cache: Path, out: Path, **overrides) -> Path:
    keys = {**BASE, "output_dir": str(out), **overrides}
    lines = [f"{k} = {_toml(v)}" for k, v in keys.items()]
    lines += ["", "[[datasets]]", 'id = "clips"', f"instance_data_dir = {_toml(str(data))}",
              'caption_strategy = "textfile"', "resolution = 64", f"cache_dir = {_toml(str(cache / 'latents'))}",
              "[datasets.video]", "num_frames = 9", "",
              "[[datasets]]", 'id = "text-embeds"', 'dataset_type = "text_embeds"', "default = true",
              f"cache_dir = {_toml(str(cache / 'text'))}", ""]
    path.write_text("\n".join(lines))
    return path


def read_events(out: Path) -> list:
    from hvtui.core.run.history import read_events as read

    return read(out / "events.jsonl")


def losses(events) -> dict[int, float]:
    return {e.get("step"): e.get("loss") for e in events if e.kind == "step"}


def hvtui(*args, env=None, **kw) -> subprocess.Popen:
    e = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "hvtui", *map(str, args)], cwd=REPO, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(predicate, timeout: float = 240.0, proc: subprocess.Popen | None = None, poll: float = 0.05):
    end = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended ({proc.returncode}) before the condition:\n{out}\n{err}")
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(poll)
