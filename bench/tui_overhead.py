"""Does the TUI slow training? The same GPU training step, headless and inside the TUI with the Train pane open.

One process: the full-size HunyuanVideo 1.5 transformer with random bf16 weights on the GPU and LoRA r16
(gpu_bench.build_transformer / make_batches / bench_preset, hvtui's lora.add_lora and speed.prepare_transformer,
compiled blocks unless COMPILE=0), one warm-up (compile), then segments of STEPS timed steps that alternate

  headless  hvtui.core.run.headless.run_headless(preset, backend=...): exactly `hvtui --run`, a Session thread
            trains while the main thread joins and prints progress;
  tui       the real HvtuiApp (real panes, real NVML telemetry service) with a backend service, rendered at
            120x40 into a driver that encodes every frame as terminal output and discards it; the Train pane
            (loss chart, GPU panel, log) is open and pulls the bus at ~4 Hz while the run started from the
            app (action_start_run: validation, Session) trains.

Both modes run the same backend: the trainer's step (step.sample_sigmas / flow_matching_loss under bf16
autocast, backward, grad clipping, the preset's optimizer), timed with cuda.synchronize on both sides,
publishing real `step` events and `gpu` telemetry (core.telemetry.TelemetrySampler at 1 Hz) on the bus.
The model, optimizer state and compiled graphs carry over from segment to segment.

    python bench/tui_overhead.py                 # 848x480x61, 2 warm-up steps, 4 segments x 6 steps
    TINY=1 python bench/tui_overhead.py          # CPU check of the script (tiny widths, 3 steps a segment)
    env: STEPS (per segment), WARMUP, COMPILE=0|1, MODES=headless,tui,headless,tui

Results: JSON rows in $OUT/tui_overhead.jsonl (one per segment, then the summary), a table printed last.
Overhead = median s/step inside the TUI / median s/step headless (all timed steps of each mode).
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_bench as gb  # noqa: E402

from hvtui.core.env.telemetry import TelemetrySampler  # noqa: E402
from hvtui.core.run import exitcodes  # noqa: E402
from hvtui.core.run.events import Event, phase, state  # noqa: E402
from hvtui.core.train import lora, optim, speed  # noqa: E402

TINY, CUDA, DEV, OUT = gb.TINY, gb.CUDA, gb.DEV, gb.OUT
STEPS = int(os.environ.get("STEPS") or (3 if TINY else 6))
WARMUP = int(os.environ.get("WARMUP") or 2)
COMPILE = os.environ.get("COMPILE", "1") != "0" and CUDA
MODES = (os.environ.get("MODES") or "headless,tui,headless,tui").split(",")
SHAPE = (64, 48, 5) if TINY else (848, 480, 61)
SIZE = (120, 40)
ROWS: list[dict] = []


def log(*a):
    """To the real stdout even while Textual redirects sys.stdout, and to $OUT/log.txt."""
    text = " ".join(str(x) for x in a)
    sys.__stdout__.write(text + "\n")
    sys.__stdout__.flush()
    with open(OUT / "log.txt", "a") as f:
        print(text, file=f)


def record(row: dict) -> None:
    ROWS.append(row)
    with open(OUT / "tui_overhead.jsonl", "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    log("RESULT", json.dumps(row, default=str))


PRESET_TEXT = """# bench/tui_overhead.py: a valid preset for the app and `--run`; the bench backend trains its own model
model_type = "lora"
pretrained_model_name_or_path = "builtin:tiny"
model_flavour = "t2v-480p"
output_dir = "out"
lora_rank = 16
max_train_steps = {steps}
checkpointing_steps = 100000

[[datasets]]
id = "clips"
type = "local"
dataset_type = "video"
instance_data_dir = "data"
resolution = 64

[datasets.video]
num_frames = 9
"""


class Trainer:
    """The model, optimizer and batches, kept across segments; `backend` is a Session backend of STEPS steps."""

    def __init__(self):
        w, h, f = SHAPE
        self.preset = gb.bench_preset()
        self.batches = gb.make_batches(w, h, f, 2)
        self.tr = gb.build_transformer()
        self.params = lora.add_lora(self.tr, self.preset)
        t = time.perf_counter()
        self.handle = speed.prepare_transformer(self.tr, self.preset, DEV, compile_blocks=COMPILE,
                                                publish=lambda e: log("  event:", e.data))
        self.prepare_s = time.perf_counter() - t
        self.opt = optim.build_optimizer(self.preset.optimizer, self.params, self.preset.learning_rate, DEV.type)
        self.n = 0                      # steps run so far (all segments)
        self.times: list[float] = []    # the current segment's step times
        self.losses: list[float] = []

    def one_step(self) -> tuple[float, float, float]:
        """gpu_bench's timed trainer step: (seconds, loss, grad norm)."""
        batch, seed = self.batches[self.n % len(self.batches)]
        result = gb.timed_step(self.tr, self.params, self.opt, self.preset, batch, seed + self.n)
        self.n += 1
        return result

    def backend(self, preset, bus, control, options) -> int:
        """Session backend: STEPS steps, publishing what the real loop publishes per step."""
        self.times, self.losses = [], []
        bus.publish(Event("run_started", {"preset": str(preset.source), "max_steps": STEPS, "device": str(DEV),
                                          "flavour": "t2v-480p", "output_dir": "bench"}))
        bus.publish(state("running"))
        bus.publish(phase("training", f"{STEPS} steps to go"))
        sampler = TelemetrySampler(bus, interval=1.0, device=DEV if CUDA else None).start()
        try:
            for i in range(1, STEPS + 1):
                if control.stop_requested:
                    break
                control.take()
                dt, loss, gnorm = self.one_step()
                self.times.append(dt)
                self.losses.append(loss)
                data = {"step": i, "max_steps": STEPS, "epoch": 1, "loss": loss, "loss_smooth": loss,
                        "lr": self.preset.learning_rate, "grad_norm": gnorm, "step_time": dt,
                        "samples_per_s": 1 / dt, "eta_s": dt * (STEPS - i), "sample_ids": [f"clip-{self.n}"]}
                if CUDA:
                    data.update(mem_allocated=torch.cuda.memory_allocated(), mem_reserved=torch.cuda.memory_reserved(),
                                mem_peak=torch.cuda.max_memory_allocated())
                bus.publish(Event("step", data))
        finally:
            sampler.stop()
        bus.publish(state("finished"))
        bus.publish(phase("done", "completed"))
        bus.publish(Event("finished", {"status": "completed", "exit_code": exitcodes.OK, "step": len(self.times)}))
        return exitcodes.OK


def sink_driver():
    """A driver that is not headless, so Textual encodes every frame as terminal output (the work a real
    terminal session costs, short of the write), and counts the bytes instead of writing them."""
    from textual.drivers.headless_driver import HeadlessDriver

    class SinkDriver(HeadlessDriver):
        written = 0
        frames = 0

        @property
        def is_headless(self) -> bool:
            return False

        def write(self, data: str) -> None:
            SinkDriver.written += len(data)
            SinkDriver.frames += 1

    return SinkDriver


def run_headless_segment(preset_path: Path, trainer: Trainer) -> dict:
    from hvtui.core.run.headless import run_headless

    code = run_headless(str(preset_path), backend=trainer.backend)
    return {"exit_code": code}


async def run_tui_segment(preset_path: Path, trainer: Trainer, cfg: Path) -> dict:
    from hvtui.tui.app import HvtuiApp
    from hvtui.tui.panes.config import ConfigPane
    from hvtui.tui.runs import LocalRun
    from hvtui.tui.services import Services
    from hvtui.tui.settings import Settings

    driver = sink_driver()
    app = HvtuiApp([preset_path], 0, services=Services(backend=trainer.backend), settings=Settings(directory=cfg),
                   env={})
    app.driver_class = driver

    async def until(cond, timeout: float, poll: float = 0.05):
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise TimeoutError("the app did not get there")
            await asyncio.sleep(poll)

    info: dict = {}
    async with app.run_test(headless=False, size=SIZE, notifications=True):
        await until(lambda: app.query_one(ConfigPane).preset is not None, 60)
        app.action_show_pane("train")            # the live view is up before the first step
        await until(lambda: app.pane("train") is not None and app.pane("train").ready, 30)
        app.action_start_run()                   # as the start key does: validate, then a Session thread
        await until(lambda: isinstance(app.current_run, LocalRun), 30)
        frames0 = driver.frames
        t0 = time.monotonic()
        await until(lambda: not app.current_run.active, 3600, poll=0.25)   # the app alone keeps the loop busy
        await asyncio.sleep(0.5)                 # one more poll: the final events reach the view
        info = {"exit_code": app.current_run.exit_code, "visible_pane": app.visible_pane,
                "view_state": app.train_state.state, "view_steps": len(app.train_state.steps),
                "view_gpus": len(app.train_state.gpus), "view_gpu_note": app.train_state.gpu_note,
                "frames_per_s": round((driver.frames - frames0) / max(time.monotonic() - t0, 1e-9), 2),
                "terminal_bytes": driver.written}
    return info


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    import textual

    env = dict(case="env", torch=torch.__version__, textual=textual.__version__, device=str(DEV), tiny=TINY,
               compile=COMPILE, steps_per_segment=STEPS, warmup_steps=WARMUP, modes=MODES,
               shape="x".join(map(str, SHAPE)), size=SIZE, date=time.strftime("%Y-%m-%d %H:%M:%S"))
    if CUDA:
        env["gpu"] = torch.cuda.get_device_properties(0).name
    record(env)
    tmp = Path(tempfile.mkdtemp(prefix="hvtui-tui-bench-"))
    (tmp / "data").mkdir()
    preset_path = tmp / "bench.toml"
    preset_path.write_text(PRESET_TEXT.format(steps=STEPS), encoding="utf-8")

    trainer = Trainer()
    t = time.perf_counter()
    warm = [trainer.one_step()[0] for _ in range(WARMUP)]
    record(dict(case="warm-up", times=[round(x, 3) for x in warm], total_s=round(time.perf_counter() - t, 1),
                prepare_s=round(trainer.prepare_s, 2), speed=trainer.handle.stats()))

    for i, mode in enumerate(MODES):
        t = time.perf_counter()
        if mode == "headless":
            info = run_headless_segment(preset_path, trainer)
        elif mode == "tui":
            info = asyncio.run(run_tui_segment(preset_path, trainer, tmp / "cfg"))
        else:
            raise SystemExit(f"MODES: unknown mode {mode!r} (headless or tui)")
        times = trainer.times
        record(dict(case="segment", index=i, mode=mode, times=[round(x, 4) for x in times],
                    median_s=round(statistics.median(times), 4) if times else None,
                    losses=[round(x, 4) for x in trainer.losses], wall_s=round(time.perf_counter() - t, 1), **info))
        if len(times) != STEPS or info.get("exit_code") != 0:
            log(f"segment {i} ({mode}) ran {len(times)}/{STEPS} steps, exit {info.get('exit_code')}")

    per_mode = {m: [x for r in ROWS if r["case"] == "segment" and r["mode"] == m for x in r["times"]]
                for m in ("headless", "tui")}
    # steady: without each segment's first step (the app is still drawing its first frames of the run)
    steady = {m: [x for r in ROWS if r["case"] == "segment" and r["mode"] == m for x in r["times"][1:]]
              for m in ("headless", "tui")}
    med = {m: statistics.median(v) if v else None for m, v in per_mode.items()}
    med_steady = {m: statistics.median(v) if v else None for m, v in steady.items()}
    ratio = med["tui"] / med["headless"] if med["tui"] and med["headless"] else None
    record(dict(case="summary", median_s={m: round(v, 4) if v else None for m, v in med.items()},
                mean_s={m: round(statistics.fmean(v), 4) if v else None for m, v in per_mode.items()},
                steps={m: len(v) for m, v in per_mode.items()},
                median_steady_s={m: round(v, 4) if v else None for m, v in med_steady.items()},
                tui_over_headless_steady=(round(med_steady["tui"] / med_steady["headless"], 4)
                                          if med_steady["tui"] and med_steady["headless"] else None),
                tui_over_headless=round(ratio, 4) if ratio else None,
                within_2_percent=(ratio <= 1.02) if ratio else None))
    table()
    return 0


def table():
    log("\n| segment | mode | steps | median s/step | min | max | view frames/s |")
    log("|---|---|---|---|---|---|---|")
    for r in ROWS:
        if r["case"] == "segment" and r["times"]:
            log(f"| {r['index']} | {r['mode']} | {len(r['times'])} | {r['median_s']:.4f} | {min(r['times']):.4f} | "
                f"{max(r['times']):.4f} | {r.get('frames_per_s', '')} |")
    s = ROWS[-1]
    if s["case"] == "summary":
        log(f"median s/step: headless {s['median_s']['headless']}, tui {s['median_s']['tui']}; "
            f"tui/headless = {s['tui_over_headless']} (goal <= 1.02: {s['within_2_percent']}); "
            f"without each segment's first step: {s['tui_over_headless_steady']}")


if __name__ == "__main__":
    sys.exit(main())
