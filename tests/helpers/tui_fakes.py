"""Fakes that drive the TUI in tests: a trainer backend that honours the control object like the real loop
(pause, stop with a final checkpoint, save now, sample now) and a telemetry sampler publishing `gpu` events.
"""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path

from hvtui.core.run import exitcodes
from hvtui.core.run.events import Event, log, phase, state


class FakeBackend:
    """backend(preset, bus, control, options) -> exit code. `gate` lets a test hold the trainer at a step."""

    def __init__(self, max_steps: int = 50, step_time: float = 0.01, fail_at: int | None = None):
        self.max_steps = max_steps
        self.step_time = step_time
        self.fail_at = fail_at
        self.calls: list = []
        self.started = threading.Event()

    def _checkpoint(self, preset, bus, step: int) -> None:
        out = Path(preset.resolve_path(preset.output_dir)) / f"checkpoint-{step}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter_model.safetensors").write_bytes(b"fake")
        bus.publish(Event("checkpoint", {"step": step, "path": str(out), "lora_path": str(out)}))

    def __call__(self, preset, bus, control, options) -> int:
        self.calls.append(preset)
        max_steps = self.max_steps
        bus.publish(Event("run_started", {"preset": str(preset.source), "max_steps": max_steps, "device": "cpu"}))
        bus.publish(state("running"))
        bus.publish(phase("training"))
        self.started.set()
        step = 0
        while step < max_steps:
            if control.stop_requested:
                break

            def on_pause():
                bus.publish(state("paused"))
            control.wait_while_paused(on_pause=on_pause, poll=0.01)
            if control.stop_requested:
                break
            if bus.latest("state").get("state") == "paused":
                bus.publish(state("running"))
            for cmd in sorted(control.take()):
                if cmd == "save":
                    self._checkpoint(preset, bus, step)
                elif cmd == "sample":
                    bus.publish(Event("sample", {"step": step, "path": f"samples/step-{step}.mp4",
                                                 "prompt": "a red square"}))
            time.sleep(self.step_time)
            step += 1
            if self.fail_at is not None and step == self.fail_at:
                bus.publish(Event("error", {"message": "loss is NaN 5 steps in a row", "hint": "lower the LR"}))
                bus.publish(state("failed"))
                bus.publish(Event("finished", {"status": "failed", "exit_code": exitcodes.TRAINING_FAILED,
                                               "step": step}))
                return exitcodes.TRAINING_FAILED
            loss = 1.0 / math.sqrt(step) + 0.05 * math.sin(step)
            bus.publish(Event("step", {"step": step, "max_steps": max_steps, "epoch": 1 + step // 10, "loss": loss,
                                       "lr": 1e-3, "grad_norm": 0.5, "step_time": self.step_time,
                                       "samples_per_s": 1 / self.step_time,
                                       "eta_s": (max_steps - step) * self.step_time,
                                       "mem_allocated": 2 << 30, "mem_reserved": 3 << 30, "mem_peak": 4 << 30}))
            if step % 20 == 0:
                bus.publish(log(f"step {step}: loss {loss:.3f}"))
        stopped = step < max_steps
        bus.publish(state("stopping") if stopped else phase("saving"))
        self._checkpoint(preset, bus, step)
        bus.publish(state("stopped" if stopped else "finished"))
        bus.publish(Event("finished", {"status": "stopped" if stopped else "completed", "exit_code": 0, "step": step}))
        return exitcodes.OK


class FakeTelemetry:
    """Publishes one `gpu` event on start (and on `tick()`); gpus=[] is a machine without a GPU."""

    def __init__(self, bus, gpus: list[dict] | None = None, offload: dict | None = None):
        self.bus, self.gpus, self.offload = bus, gpus if gpus is not None else [], offload
        self.stopped = False

    def start(self):
        self.tick()

    def tick(self):
        data = {"gpus": self.gpus}
        if self.offload:
            data["offload"] = self.offload
        self.bus.publish(Event("gpu", data))

    def stop(self):
        self.stopped = True


H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "mem_used": 30 << 30, "mem_total": 80 << 30, "util": 87,
        "temp": 61, "power": 412}


def no_gpu(bus):
    return FakeTelemetry(bus, gpus=[])


def one_gpu(bus):
    return FakeTelemetry(bus, gpus=[H100], offload={"gpu_bytes": 5 << 30, "host_bytes": 12 << 30,
                                                     "h2d_bytes_per_s": 20 << 30, "wait_s": 0.012})


def fake_editor(new_text: str):
    """A run_editor replacement that rewrites the file as an editor session would."""
    calls = []

    def run(app, path):
        calls.append(Path(path))
        Path(path).write_text(new_text, encoding="utf-8")
        return 0
    run.calls = calls
    return run


PRESET_TEXT = '''# a test preset: comments must survive a save
model_type = "lora"
pretrained_model_name_or_path = "builtin:tiny"
model_flavour = "t2v-480p"
output_dir = "out/{name}"
mixed_precision = "no"
base_model_precision = "no_change"

lora_rank = 8
learning_rate = 1e-3   # peak LR
max_train_steps = 30
checkpointing_steps = 10
seed = 42

[[datasets]]
id = "clips"
type = "local"
dataset_type = "video"
instance_data_dir = "data"
resolution = 64

[datasets.video]
num_frames = 9
'''


def write_presets(directory: Path, names=("alpha", "beta", "gamma")) -> list[Path]:
    """Small valid presets (their own data folder, so validation passes without the demo clips)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    paths = []
    for name in names:
        p = directory / f"{name}.toml"
        p.write_text(PRESET_TEXT.replace("{name}", name), encoding="utf-8")
        paths.append(p)
    return paths


def screen_text(app) -> str:
    """The screen as plain text, one line per row (what a terminal would show)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def wait_for(pilot, condition, timeout: float = 10.0, step: float = 0.05) -> bool:
    """Let the app run until condition() holds (the trainer runs in its own thread)."""
    import asyncio

    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if condition():
            return True
        await pilot.pause(step)
    return condition()


async def edit_field(pilot, key: str, text: str) -> None:
    """Type a new value into a Config pane field (by its dotted key), as a user would: Enter, clear, type."""
    from hvtui.tui.panes.config import ConfigPane

    pilot.app.query_one(ConfigPane).select_field(key)
    await pilot.press("enter", "ctrl+a", "ctrl+k", *text, "enter")
