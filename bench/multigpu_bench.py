"""Data-parallel scaling: hvtui's own data-parallel training step (torchrun), on 1, 2 and 4 GPUs in one command.

    python bench/multigpu_bench.py                 # 848x480x61, batch 1 per GPU, 1 / 2 / 4 GPUs (those present)
    GPUS="1 2 4 8" STEPS=8 python bench/multigpu_bench.py
    COMPILE=0 python bench/multigpu_bench.py       # without regional compilation (shorter warm-up)
    TINY=1 python bench/multigpu_bench.py          # CPU check of the script: tiny model, 1 and 2 gloo processes

Each N runs `python -m torch.distributed.run --standalone --nproc_per_node N bench/multigpu_bench.py --worker`.
A worker is the trainer minus the dataset: the full-size HunyuanVideo 1.5 transformer with random bf16 weights
built directly on its GPU (the same seed on every rank), `lora.add_lora`, `speed.prepare_transformer`, the
trainer's Accelerator and preparation (run_setup.fresh_accelerator, run_setup.prepare_for_training: autocast,
no DDP wrapper, rank 0's LoRA broadcast), and the optimizer step is the trainer's own `train_step.TrainStep`
(collate, sigmas, flow-matching loss, backward, the one agreement collective, in-place gradient averaging,
clipping, optimizer), fed by a synthetic cache
of cached-latent-shaped items (120 text tokens, t2v) and hvtui's bucket sampler (rank r takes batches
r, r+N, ...). The first WARMUP steps (compile, attention-cache measuring) are not timed.
samples/s = N x batch / s per step; scaling = samples/s over the 1-GPU row; peak memory per GPU = the
largest over ranks of torch's peak allocated (after warm-up) and of NVML's used memory (sampled at 50 Hz).
As in bench/gpu_bench.py, a card with more than 80 GB is capped at 79 GiB so figures are what 80 GB allows.
Rows go to $OUT/multigpu.jsonl (one per N), worker logs to $OUT/multigpu_N<n>.log; the table is printed last.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINY = os.environ.get("TINY") == "1"
OUT = Path(os.environ.get("OUT") or "/tmp/hvtui-bench")
STEPS = int(os.environ.get("STEPS", "3" if TINY else "5"))       # timed steps per N
WARMUP = int(os.environ.get("WARMUP", "1" if TINY else "2"))
W, H, F = (64, 48, 5) if TINY else (int(os.environ.get("W", "848")), int(os.environ.get("H", "480")),
                                    int(os.environ.get("F", "61")))
TEXT_TOKENS = 4 if TINY else 120
CAP_GIB = 79.0


# ------------------------------------------------------------------------------------------------ worker
class SyntheticCache:
    """CacheIndex.load's interface: a fixed random item per sample id (latents [32,T,h,w], 120 text tokens)."""

    def __init__(self, d_txt: int, d_txt2: int, d_img: int):
        self.d = (d_txt, d_txt2, d_img)

    def load(self, entry, generator=None, caption_dropout: float = 0.0) -> dict:
        import torch

        g = torch.Generator().manual_seed(int(entry.sample_id[1:]))
        d_txt, d_txt2, d_img = self.d
        return {"latents": torch.randn(32, (F - 1) // 4 + 1, H // 16, W // 16, generator=g),
                "text": torch.randn(TEXT_TOKENS, d_txt, generator=g), "text_2": torch.zeros(0, d_txt2),
                "image": torch.zeros(0, d_img), "sample_id": entry.sample_id, "caption": ""}


def build_transformer(device):
    import torch
    from diffusers import HunyuanVideo15Transformer3DModel

    torch.manual_seed(0)   # every rank builds the same frozen weights (only the LoRA is broadcast)
    kw = dict(num_layers=3, num_attention_heads=2, attention_head_dim=64, text_embed_dim=64, text_embed_2_dim=32,
              image_embed_dim=32, rope_axes_dim=(16, 24, 24)) if TINY else {}
    with torch.device(device):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        tr = HunyuanVideo15Transformer3DModel(**kw)
        torch.set_default_dtype(prev)
    return tr


def worker() -> None:
    import torch
    from gpu_bench import NvmlPeak  # this script's folder is on sys.path (run as a script, also by torchrun)

    from hvtui.core.preset.schema import Preset
    from hvtui.core.train import lora, optim, run_setup
    from hvtui.core.train.collectives import Collectives
    from hvtui.core.train.context import Training
    from hvtui.core.train.data import BucketBatchSampler, group_key
    from hvtui.core.train.failures import Injector
    from hvtui.core.train.train_step import TrainStep

    cuda = torch.cuda.is_available() and not TINY
    preset = Preset(lora_rank=16, gradient_checkpointing=True, train_batch_size=1, gradient_accumulation_steps=1,
                    mixed_precision="bf16" if cuda else "no", max_grad_norm=1.0)
    acc = run_setup.fresh_accelerator(preset.mixed_precision, 1, cpu=not cuda)
    coll = Collectives(acc)
    dev = acc.device
    cap = None
    if cuda:
        total = torch.cuda.get_device_properties(dev).total_memory
        if total > (CAP_GIB + 2) * 2**30:
            torch.cuda.set_per_process_memory_fraction(CAP_GIB * 2**30 / total, dev)
            cap = int(CAP_GIB * 2**30)
    else:
        torch.set_num_threads(1)
    def log(*a):
        print(f"[rank {acc.process_index}]", *a, flush=True)
    t = time.perf_counter()
    tr = build_transformer(dev)
    params = lora.add_lora(tr, preset)
    log(f"built {sum(p.numel() for p in tr.parameters()) / 1e9:.3f}B params in {time.perf_counter() - t:.1f}s")
    try:
        from hvtui.core.train.speed import prepare_transformer
    except ImportError:
        prepare_transformer = None
    speed = None
    if prepare_transformer is not None:
        compile_blocks = None if os.environ.get("COMPILE", "1") != "0" else False   # None: the preset's
        speed = prepare_transformer(tr, preset, dev, gpu_memory_bytes=cap, compile_blocks=compile_blocks,
                                    publish=lambda e: log(e.data.get("message", e.data)))
    opt = optim.build_optimizer(preset.optimizer, params, preset.learning_rate, dev.type)
    sch = optim.build_scheduler("constant", opt, 0, 10**6)
    model, opt = run_setup.prepare_for_training(acc, tr, opt, params, coll)

    # the trainer's step, minus dataset scanning and caching
    n_items = acc.num_processes * (WARMUP + STEPS)
    ids = [f"s{i}" for i in range(n_items)]
    from types import SimpleNamespace

    sampler = BucketBatchSampler({group_key(f"{W}x{H}@{F}", False): ids}, 1, preset.seed,
                                 rank=acc.process_index, world_size=acc.num_processes)
    training = Training(model, opt, sch, params, sampler, {i: SimpleNamespace(sample_id=i) for i in ids})
    train_step = TrainStep(preset, acc, coll, training, Injector(acc.process_index))
    base = getattr(model, "module", model)
    cache = SyntheticCache(base.config.text_embed_dim, base.config.text_embed_2_dim, base.config.image_embed_dim)

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)
        coll.barrier()

    times, losses = [], []
    warm_peak = None
    with NvmlPeak(acc.local_process_index if cuda else 0) as nv:
        for i in range(WARMUP + STEPS):
            if i == WARMUP and cuda:
                warm_peak = torch.cuda.max_memory_allocated(dev)
                torch.cuda.reset_peak_memory_stats(dev)
            sync()
            t0 = time.perf_counter()
            result = train_step(cache, i + 1, 0)
            sync()
            times.append(time.perf_counter() - t0)
            losses.append(result.loss)
            log(f"step {i}: {times[-1]:.3f}s loss {result.loss:.4f} {result.status}")
    timed = times[WARMUP:] or times
    mine = {"rank": acc.process_index, "s_per_step": statistics.median(timed), "times": [round(x, 3) for x in times],
            "peak_alloc_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if cuda else None,
            "warmup_peak_alloc_gib": round(warm_peak / 2**30, 2) if warm_peak is not None else None,
            "nvml_peak_gib": round(nv.peak / 2**30, 2) if cuda else None,
            "finite": all(x == x and abs(x) != float("inf") for x in losses),
            "lora_grad_mib": round(sum(q.numel() * 4 for q in params) / 2**20, 1),
            "speed": speed.stats() if speed is not None and hasattr(speed, "stats") else None}
    rows = coll.gather_objects(mine)
    if acc.is_main_process:
        n = acc.num_processes
        s = max(r["s_per_step"] for r in rows)    # the step ends when the slowest rank's all-reduce does
        row = {"gpus": n, "device": torch.cuda.get_device_name(dev) if cuda else "cpu", "shape": f"{W}x{H}x{F}",
               "batch_per_gpu": 1, "s_per_step": round(s, 3), "samples_per_s": round(n / s, 4),
               "peak_alloc_gib": max((r["peak_alloc_gib"] or 0) for r in rows) if cuda else None,
               "nvml_peak_gib": max((r["nvml_peak_gib"] or 0) for r in rows) if cuda else None,
               "finite": all(r["finite"] for r in rows), "ranks": rows,
               "torch": torch.__version__}
        with open(OUT / "multigpu.jsonl", "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        print("RESULT", json.dumps({k: v for k, v in row.items() if k != "ranks"}), flush=True)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ parent
def gpu_count() -> int:
    from hvtui.core.train.multi_gpu import gpu_count as count

    return count()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    results = OUT / "multigpu.jsonl"
    results.unlink(missing_ok=True)
    available = 2 if TINY else gpu_count()
    wanted = [int(x) for x in os.environ.get("GPUS", "1 2" if TINY else "1 2 4").split()]
    counts = [n for n in wanted if n <= max(available, 1)]
    skipped = [n for n in wanted if n not in counts]
    print(f"multigpu bench: {W}x{H}x{F}, batch 1 per GPU, {STEPS} timed steps after {WARMUP} warm-up; "
          f"GPUs {counts}" + (f" (skipped {skipped}: {available} available)" if skipped else ""), flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OUT=str(OUT))
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), env.get("PYTHONPATH", "")) if x)
    env.setdefault("OMP_NUM_THREADS", "1" if TINY else "4")
    for n in counts:
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               str(Path(__file__).resolve()), "--worker"]
        with open(OUT / f"multigpu_N{n}.log", "w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:   # everything to the log; results and errors to the console too
                log.write(line)
                if line.startswith("RESULT") or "Error" in line or "error" in line.lower()[:40]:
                    print(f"  N={n}: {line.rstrip()}", flush=True)
            proc.wait()
        print(f"  N={n}: exit {proc.returncode} in {time.perf_counter() - t:.0f}s (log {OUT}/multigpu_N{n}.log)",
              flush=True)
    rows = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    one = next((r for r in rows if r["gpus"] == 1), None)
    print("\n| GPUs | device | shape | s/step | samples/s | scaling vs 1 GPU | efficiency | peak alloc GiB/GPU "
          "| NVML peak GiB/GPU | vs 1-GPU peak | loss finite |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["gpus"]):
        scale = r["samples_per_s"] / one["samples_per_s"] if one else None
        mem = (f"{r['peak_alloc_gib'] - one['peak_alloc_gib']:+.2f}" if one and r.get("peak_alloc_gib") is not None
               and one.get("peak_alloc_gib") is not None else "")
        scaling = f"{scale:.2f}x" if scale else ""
        efficiency = f"{scale / r['gpus']:.0%}" if scale else ""
        print(f"| {r['gpus']} | {r['device']} | {r['shape']} | {r['s_per_step']} | {r['samples_per_s']} | "
              f"{scaling} | {efficiency} | "
              f"{r.get('peak_alloc_gib')} | {r.get('nvml_peak_gib')} | {mem} | {r['finite']} |")
    missing = [n for n in counts if n not in {r["gpus"] for r in rows}]
    if missing:
        print(f"no result for {missing} GPU(s): see {OUT}/multigpu_N<n>.log")
    print("goals (issue 8): 2 GPUs >= 1.9x, 4 GPUs >= 3.7x, peak memory per GPU no higher than 1 GPU")
    return 1 if missing else 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker()
    else:
        raise SystemExit(main())
