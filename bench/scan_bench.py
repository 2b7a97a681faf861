"""Dataset scan benchmark: first scan (empty metadata cache) and rescan (nothing changed) of N small clips.

    python bench/scan_bench.py                       # 1,000 clips first scan + 10,000 clips rescan
    python bench/scan_bench.py --first 2000 --rescan 0
    python bench/scan_bench.py --first 0 --rescan 0 --real 1000   # the real-world-clip corpus, copied to 1,000

`--real N`: the corpus of tests/helpers/clip_corpus.py (every codec and container this PyAV encodes, rotation, pixel
aspect, variable frame rate, odd sizes, a broken stream, non-videos), its files copied round-robin to N files.

Clips: DISTINCT small synthetic clips (PyAV, hvtui.core.dataset.synth: 64-128 px, 12-30 fps, 9-33 frames, mp4 and a
few webm, each with a .txt caption) copied round-robin to N files, since writing 10,000 H.264 clips would
take minutes and a header read costs the same for a copy. Files were just written, so they are in the page
cache: this measures the scanner, not the disk. Prints a markdown table row for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hvtui.core.dataset.probe import probe_video  # noqa: E402
from hvtui.core.dataset.scan import scan_preset  # noqa: E402
from hvtui.core.dataset.synth import write_clip  # noqa: E402
from hvtui.core.preset.schema import DatasetSpec, Preset, VideoSpec  # noqa: E402

VARIANTS = [  # width, height, fps, frames, suffix
    (64, 64, 24, 17, ".mp4"), (96, 64, 30, 33, ".mp4"), (64, 96, 12, 9, ".mp4"), (128, 72, 24, 25, ".mp4"),
    (80, 48, 16, 13, ".mp4"), (48, 80, 20, 21, ".mp4"), (64, 64, 30, 29, ".mp4"), (112, 64, 24, 13, ".mp4"),
    (64, 64, 12, 9, ".webm"), (96, 64, 24, 17, ".webm"),
]


def make_dataset(root: Path, n: int) -> None:
    src = root / "_src"
    protos = [write_clip(src / f"proto{i}{sfx}", w, h, fps, frames)
              for i, (w, h, fps, frames, sfx) in enumerate(VARIANTS)]
    clips = root / "clips"
    for i in range(n):
        proto = protos[i % len(protos)]
        sub = clips / f"part{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto, sub / f"clip{i:06d}{proto.suffix}")
        (sub / f"clip{i:06d}.txt").write_text(f"clip number {i}\n", encoding="utf-8")
    shutil.rmtree(src)


def make_real_dataset(root: Path, n: int) -> tuple[int, int]:
    """The real-world-clip corpus copied round-robin to n files: (distinct files, expected kept per copy set)."""
    from tests.helpers.clip_corpus import build_corpus  # the repo root is on sys.path (above)

    corpus = build_corpus(root / "_src")
    protos = [corpus.root / c.name for c in corpus.clips if (corpus.root / c.name).is_file()
              and not (corpus.root / c.name).is_symlink()]
    clips = root / "clips"
    for i in range(n):
        proto = protos[i % len(protos)]
        sub = clips / f"part{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto, sub / f"clip{i:06d}{proto.suffix}")
        (sub / f"clip{i:06d}.txt").write_text(f"clip number {i}\n", encoding="utf-8")
    shutil.rmtree(root / "_src")
    return len(protos), sum(1 for c in corpus.clips if c.kept and (corpus.root / c.name).is_file())


def preset_for(root: Path) -> Preset:
    spec = DatasetSpec(id="bench", instance_data_dir=str(root / "clips"), resolution=64,
                       cache_dir=str(root / "cache"), video=VideoSpec(num_frames=9))
    return Preset(datasets=[spec], train_batch_size=1)


def cli_rescan(root: Path) -> tuple[float, float]:
    """`hvtui buckets` in a new process on the (cached) dataset: (scan seconds it reports, wall seconds)."""
    preset = root / "bench.toml"
    preset.write_text(f"""pretrained_model_name_or_path = "builtin:tiny"
output_dir = "{root / 'out'}"
[[datasets]]
id = "bench"
instance_data_dir = "{root / 'clips'}"
cache_dir = "{root / 'cache'}"
resolution = 64
[datasets.video]
num_frames = 9
""", encoding="utf-8")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "hvtui", "buckets", str(preset)], capture_output=True, text=True,
                         check=True).stdout
    wall = time.perf_counter() - t
    scan = float(re.search(r"\(([0-9.]+) s\)\s*$", out).group(1))
    return scan, wall


def header_baseline(root: Path, n: int = 300) -> float:
    files = sorted((root / "clips").rglob("*.mp4"))[:n]
    t = time.perf_counter()
    for f in files:
        probe_video(str(f))
    return len(files) / (time.perf_counter() - t)


def run_real(base: Path, n: int) -> list[str]:
    import av

    root = base / "real"
    kinds, _ = make_real_dataset(root, n)
    preset = preset_for(root)
    firsts = []
    for _ in range(3):
        t = time.perf_counter()
        report = scan_preset(preset, use_cache=False)
        firsts.append(time.perf_counter() - t)
        assert report.datasets[0].probed + report.clips_discarded >= n - 1
    t = time.perf_counter()
    report = scan_preset(preset, use_cache=True)
    again = time.perf_counter() - t
    first = min(firsts)
    return [f"| real-clip corpus ({kinds} kinds of file), {n:,} files, PyAV {av.__version__} | first scan "
            f"{first:.2f} s (best of 3: {', '.join(f'{x:.2f}' for x in firsts)}) | {n / first:,.0f} files/s | "
            f"{report.clips_kept:,} kept, {report.clips_discarded:,} discarded; rescan {again:.3f} s "
            f"({n / again:,.0f} files/s) |"]


def run(n_first: int, n_rescan: int, keep: bool, n_real: int = 0) -> list[str]:
    rows = []
    base = Path(tempfile.mkdtemp(prefix="hvtui-scan-bench-"))
    try:
        if n_real:
            rows += run_real(base, n_real)
        if n_first:
            root = base / "first"
            t = time.perf_counter()
            make_dataset(root, n_first)
            print(f"wrote {n_first:,} clips in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            preset = preset_for(root)
            firsts = []
            for _ in range(3):          # use_cache=False: every file is probed again, as on a first scan
                t = time.perf_counter()
                report = scan_preset(preset, use_cache=False)
                firsts.append(time.perf_counter() - t)
                assert report.clips_kept == n_first, (report.clips_kept, report.warnings, report.errors)
                assert report.datasets[0].probed == n_first
            first = min(firsts)
            t = time.perf_counter()
            report = scan_preset(preset, use_cache=True)
            again = time.perf_counter() - t
            base_rate = header_baseline(root)
            rows.append(f"| first scan, {n_first:,} clips | {first:.2f} s (best of 3; "
                        f"{', '.join(f'{x:.2f}' for x in firsts)}) | {n_first / first:,.0f} clips/s | "
                        f"single-process header read: {base_rate:,.0f} files/s; rescan {again:.3f} s |")
        if n_rescan:
            root = base / "rescan"
            t = time.perf_counter()
            make_dataset(root, n_rescan)
            print(f"wrote {n_rescan:,} clips in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            preset = preset_for(root)
            t = time.perf_counter()
            report = scan_preset(preset, use_cache=True)
            first = time.perf_counter() - t
            times, cpu = [], []
            for _ in range(5):
                t, c = time.perf_counter(), time.process_time()
                report = scan_preset(preset, use_cache=True)
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            assert report.clips_kept == n_rescan and report.datasets[0].cached == n_rescan
            cli_scan, cli_wall = cli_rescan(root)
            rows.append(f"| rescan, {n_rescan:,} unchanged clips | {min(times):.3f} s (best of 5; median "
                        f"{sorted(times)[2]:.3f}; CPU {min(cpu):.3f} s) | {n_rescan / min(times):,.0f} clips/s | "
                        f"first scan of these {first:.2f} s ({n_rescan / first:,.0f} clips/s) |")
            rows.append(f"| `hvtui buckets` rescan, {n_rescan:,} clips, fresh process | scan {cli_scan:.3f} s "
                        f"(as the report prints it) | {n_rescan / cli_scan:,.0f} clips/s | whole command "
                        f"{cli_wall:.2f} s wall, with interpreter start, imports and validation |")
    finally:
        if keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", type=int, default=1000, help="clips for the first-scan run (0: skip)")
    ap.add_argument("--rescan", type=int, default=10000, help="clips for the rescan run (0: skip)")
    ap.add_argument("--real", type=int, default=0, help="files for the real-world-clip corpus run (0: skip)")
    ap.add_argument("--keep", action="store_true", help="keep the generated clips")
    a = ap.parse_args()
    load0 = " ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = run(a.first, a.rescan, a.keep, a.real)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.machine()} {cpus} CPU cores, {platform.python_implementation()} "
          f"{platform.python_version()}; date {datetime.date.today()}; command: python bench/scan_bench.py "
          f"--first {a.first} --rescan {a.rescan} --real {a.real}; load average before/after: {load0} / "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| run | time | rate | notes |")
    print("|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
