"""Time from starting `hvtui` in a real terminal (tmux) to its first screen, by polling capture-pane.

    python bench/first_paint.py [--runs 7] [--presets presets] [--size 80x24] [--json]

"first paint": the tab bar and the status line are on screen (the app is up and drew its layout);
"form ready": the Config pane's field table shows the active preset's first section. Each run starts a
fresh interpreter in a new tmux session on a private socket, so nothing is cached in memory between runs
beyond what the OS keeps (run once before measuring to warm the disk cache; the first run is dropped).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tmux(socket: str, *args: str, env=None) -> str:
    return subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", *args], capture_output=True, text=True,
                          env=env, check=True).stdout


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) the process has used so far: a figure other load on the machine
    does not inflate the way it inflates wall time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(presets: Path, width: int, height: int, timeout: float = 30.0) -> dict:
    socket = f"hvtui-bench-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="hvtui-bench-"))
    probe = tmp / "paint.json"
    env = {**os.environ, "HVTUI_CONFIG_DIR": str(tmp / "config"), "XDG_CACHE_HOME": str(tmp / "cache"),
           "TERM": "xterm-256color", "HVTUI_PAINT_PROBE": str(probe)}
    cmd = f"exec {sys.executable} -m hvtui --presets {presets}"   # exec: the pane's pid is hvtui's
    result = {"first_paint_s": None, "first_paint_cpu_s": None, "form_ready_s": None, "polls": 0,
              "probe_cpu_s": None, "probe_wall_s": None}
    t0 = time.perf_counter()
    tmux(socket, "new-session", "-d", "-s", "b", "-x", str(width), "-y", str(height), cmd, env=env)
    pid = int(tmux(socket, "list-panes", "-t", "b", "-F", "#{pane_pid}").split()[0])
    try:
        while time.perf_counter() - t0 < timeout:
            screen = tmux(socket, "capture-pane", "-p", "-t", "b")
            result["polls"] += 1
            now = time.perf_counter() - t0
            if result["first_paint_s"] is None and "F1 Config" in screen and "preset " in screen:
                result["first_paint_s"] = now
                result["first_paint_cpu_s"] = cpu_seconds(pid)
            if "── model" in screen:
                result["form_ready_s"] = now
                if result["first_paint_s"] is None:
                    result["first_paint_s"] = now
                break
            time.sleep(0.005)
        if probe.is_file():   # the app's own note: CPU and wall seconds since its process started
            data = json.loads(probe.read_text())
            result["probe_cpu_s"], result["probe_wall_s"] = data.get("cpu_s"), data.get("wall_s")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--presets", default=str(REPO / "presets"))
    p.add_argument("--size", default="80x24")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is not installed (apt-get install tmux)", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.size.split("x"))
    one_run(Path(args.presets), width, height)          # warm the disk cache; not counted
    runs = [one_run(Path(args.presets), width, height) for _ in range(args.runs)]
    paint = [r["first_paint_s"] for r in runs if r["first_paint_s"] is not None]
    ready = [r["form_ready_s"] for r in runs if r["form_ready_s"] is not None]
    cpu = [r["probe_cpu_s"] for r in runs if r["probe_cpu_s"] is not None]
    inner = [r["probe_wall_s"] for r in runs if r["probe_wall_s"] is not None]
    summary = {
        "runs": args.runs, "size": args.size, "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "first_paint_s": {"median": round(statistics.median(paint), 3), "min": round(min(paint), 3),
                          "max": round(max(paint), 3)} if paint else None,
        "in_app_wall_s": {"median": round(statistics.median(inner), 3), "min": round(min(inner), 3),
                          "max": round(max(inner), 3)} if inner else None,
        "first_paint_cpu_s": {"median": round(statistics.median(cpu), 3), "min": round(min(cpu), 3),
                              "max": round(max(cpu), 3)} if cpu else None,
        "form_ready_s": {"median": round(statistics.median(ready), 3), "min": round(min(ready), 3),
                         "max": round(max(ready), 3)} if ready else None,
        "failed": sum(1 for r in runs if r["first_paint_s"] is None),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        fp, fr = summary["first_paint_s"], summary["form_ready_s"]
        print(f"hvtui first paint at {args.size}, {args.runs} runs, {summary['cpus']} CPUs, "
              f"load {summary['load_avg_1m']}")
        if fp:
            print(f"  first paint  median {fp['median']:.3f} s  (min {fp['min']:.3f}, max {fp['max']:.3f})")
        if summary["first_paint_cpu_s"]:
            c = summary["first_paint_cpu_s"]
            w = summary["in_app_wall_s"]
            if w:
                print(f"  in-app wall at first paint  median {w['median']:.3f} s  "
                      f"(min {w['min']:.3f}, max {w['max']:.3f})")
            print(f"  CPU time by first paint  median {c['median']:.3f} s  (min {c['min']:.3f}, max {c['max']:.3f})")
        if fr:
            print(f"  form ready   median {fr['median']:.3f} s  (min {fr['min']:.3f}, max {fr['max']:.3f})")
        if summary["failed"]:
            print(f"  {summary['failed']} run(s) never painted")
    return 0 if paint and not summary["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
