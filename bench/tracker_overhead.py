"""What does report_to cost a training step? The headless demo with and without experiment trackers.

Two measurements:

  runs   `hvtui --run` on the demo preset (presets/demo.toml: tiny model, CPU or GPU, 120 steps, validation
         samples at 60 and 120) once per mode per round, modes interleaved round by round so load drift hits them
         alike; a shared cache (the first run of the first round caches, every other run reuses it). Per run:
         the median `step_time` of its step events (step 1 left out: warm-up), and the training wall time per
         step (first to last step event, which includes everything between steps: publishing, checkpoints, the
         validation samples and, with trackers, their background thread competing for the CPU / GIL).
         And the CPU seconds (user + system) the whole `hvtui --run` process used: unlike wall times, other load
         on the machine barely moves them, so `tracker - none` is what the tracker costs the run (its imports,
         start, per-step logging, media, finish; W&B's own service process is not counted).
  micro  in one process: a TrackerSink per tracker fed N step events as fast as possible: what publishing costs
         the trainer's thread (it only queues), and how long the tracker's worker needs per step (what it takes
         from the machine in the background).

W&B runs offline (WANDB_MODE=offline): what is timed is hvtui's side, not a network.

    python bench/tracker_overhead.py                      # 3 rounds of none,tensorboard,wandb,all + micro
    python bench/tracker_overhead.py --rounds 1 --steps 20 --micro-steps 100      # quick check
Results: JSON rows in bench/results/DATE-HOST-tracker-overhead.jsonl (or --out), a table printed last.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def demo_preset(folder: Path, cache: Path, report_to: str, steps: int) -> Path:
    import tomlkit

    doc = tomlkit.parse((REPO / "presets" / "demo.toml").read_text())
    doc["output_dir"] = str(folder / "out")
    doc["report_to"] = report_to
    doc["max_train_steps"] = steps
    doc["validation_steps"] = max(1, steps // 2)
    doc["checkpointing_steps"] = max(1, steps // 3)
    for table in doc["datasets"]:
        if table.get("instance_data_dir"):
            table["instance_data_dir"] = str(REPO / "presets" / table["instance_data_dir"])
        if table.get("cache_dir"):
            table["cache_dir"] = str(cache / table["id"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo.toml"
    path.write_text(tomlkit.dumps(doc))
    return path


def one_run(root: Path, cache: Path, mode: str, steps: int, index: int) -> dict:
    from hvtui.core.run.history import read_events

    folder = root / f"{mode}-{index}"
    preset = demo_preset(folder, cache, mode, steps)
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    load0 = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hvtui", "--run", str(preset)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    events = read_events(folder / "out" / "events.jsonl")
    steps_ev = [e for e in events if e.kind == "step"]
    times = [e.get("step_time") for e in steps_ev[1:]]
    train_wall = (steps_ev[-1].time - steps_ev[0].time) / max(1, len(steps_ev) - 1)
    trackers = sorted({e.get("name") for e in events if e.kind == "tracker"})
    return {"kind": "run", "mode": mode, "round": index, "steps": len(steps_ev),
            "median_step_time_s": statistics.median(times), "train_wall_per_step_s": train_wall,
            "process_wall_s": round(wall, 2), "process_cpu_s": round(cpu, 2), "trackers": trackers,
            "load_before": round(load0, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def micro(mode: str, n: int, root: Path) -> dict:
    """Publish n step events into a sink for `mode`; time the publishing and the worker's drain."""
    os.environ["WANDB_MODE"] = "offline"
    from hvtui.core.preset.schema import Preset
    from hvtui.core.run.bus import Bus
    from hvtui.core.run.events import Event
    from hvtui.core.run.trackers import TrackerSink

    out = root / f"micro-{mode}"
    bus = Bus()
    started = []
    bus.add_sink(lambda e: started.append(e) if e.kind == "tracker" else None)
    sink = TrackerSink(Preset(report_to=mode, output_dir=str(out)), out, bus.publish)
    bus.add_sink(sink)
    bus.publish(Event("run_started", {"device": "cpu"}))
    while not started:              # the tracker is up: what follows is logging only
        time.sleep(0.01)
    data = {"loss": 0.5, "loss_smooth": 0.5, "lr": 1e-4, "grad_norm": 0.3, "step_time": 0.05, "samples_per_s": 20.0,
            "eta_s": 10.0, "epoch": 1, "max_steps": n, "sample_ids": [0]}
    publish = []
    t0 = time.perf_counter()
    for s in range(1, n + 1):
        a = time.perf_counter()
        bus.publish(Event("step", {**data, "step": s}))
        publish.append(time.perf_counter() - a)
    while sink._q.qsize():
        time.sleep(0.001)
    drained = time.perf_counter() - t0
    bus.publish(Event("finished", {"status": "completed", "exit_code": 0}))
    sink.close(60)
    return {"kind": "micro", "mode": mode, "steps": n, "publish_us_median": statistics.median(publish) * 1e6,
            "publish_us_max": max(publish) * 1e6, "worker_ms_per_step": drained / n * 1e3,
            "load": round(os.getloadavg()[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--modes", default="none,tensorboard,wandb,all")
    ap.add_argument("--micro-steps", type=int, default=500)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    modes = args.modes.split(",")
    host = socket.gethostname().split(".")[0]
    out = Path(args.out or REPO / "bench" / "results" / f"{time.strftime('%Y-%m-%d')}-{host}-tracker-overhead.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    machine = {"kind": "machine", "date": time.strftime("%Y-%m-%d %H:%M"), "host": host, "cpus": os.cpu_count(),
               "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
               "torch": torch.__version__, "cuda": torch.cuda.is_available(),
               "command": " ".join([Path(sys.executable).name, *sys.argv])}
    rows = [machine]
    with tempfile.TemporaryDirectory(prefix="hvtui-tracker-bench-") as tmp:
        root, cache = Path(tmp), Path(tmp) / "cache"
        one_run(root, cache, "none", min(args.steps, 4), -1)          # fills the cache; not counted
        for r in range(args.rounds):
            for mode in modes:
                row = one_run(root, cache, mode, args.steps, r)
                rows.append(row)
                print(json.dumps(row), flush=True)
        for mode in [m for m in modes if m != "none"]:
            row = micro(mode, args.micro_steps, root)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"\n{machine['date']}  {host}: {machine['cpus']} CPUs, torch {machine['torch']}, cuda {machine['cuda']}")
    print(f"{'mode':<12} {'median step_time':>17} {'train wall/step':>16} {'process CPU':>12} {'load (min-max)':>15}")
    base = None
    for mode in modes:
        runs = [r for r in rows if r.get("kind") == "run" and r["mode"] == mode]
        st = statistics.median(r["median_step_time_s"] for r in runs)
        tw = statistics.median(r["train_wall_per_step_s"] for r in runs)
        cpu = statistics.median(r["process_cpu_s"] for r in runs)
        loads = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
        base = base or (st, tw, cpu)
        print(f"{mode:<12} {st * 1e3:>14.1f} ms {tw * 1e3:>13.1f} ms {cpu:>10.1f} s {min(loads):>7.2f}-{max(loads):.2f}"
              f"   (CPU {cpu - base[2]:+.1f} s = {(cpu - base[2]) / args.steps * 1e3:+.1f} ms/step)")
    for r in rows:
        if r.get("kind") == "micro":
            print(f"micro {r['mode']:<11} publish {r['publish_us_median']:.1f} us (max {r['publish_us_max']:.0f}), "
                  f"worker {r['worker_ms_per_step']:.2f} ms/step")
    print(f"rows: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
