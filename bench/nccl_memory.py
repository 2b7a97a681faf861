"""GPU memory NCCL itself takes in a data-parallel run (outside torch's allocator, so only NVML sees it), and
the time of hvtui's gradient all-reduce, under a few NCCL settings. 2 processes, one per GPU.

    python bench/nccl_memory.py            # every variant below; rows to $OUT/nccl_memory.jsonl

A worker creates its CUDA context, reads NVML's used memory of its GPU, joins the NCCL process group and
runs what the trainer runs (an agreement all-reduce, a broadcast_object, Collectives.average_gradients_ over
LORA_MIB of fp32 gradients in hvtui's pieces, 20 times), then reads NVML again. The difference is NCCL's
memory plus the allocator's cached 64 MiB flattening pieces (about 0.1 GiB; not freed, as in training): what
a data-parallel process holds beyond a single-GPU one. One host only: between hosts NCCL's figures differ.
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
OUT = Path(os.environ.get("OUT") or "/tmp/hvtui-bench")
LORA_MIB = float(os.environ.get("LORA_MIB", "108"))   # rank-16 LoRA of the 8.3B transformer (multigpu_bench)
VARIANTS = {
    "default": {},
    "buffsize 1 MiB": {"NCCL_BUFFSIZE": str(2**20)},
    "max 4 channels": {"NCCL_MAX_NCHANNELS": "4"},
    "simple protocol": {"NCCL_PROTO": "Simple"},
    "4 channels + 1 MiB + simple": {"NCCL_MAX_NCHANNELS": "4", "NCCL_BUFFSIZE": str(2**20), "NCCL_PROTO": "Simple"},
    "no cuMem": {"NCCL_CUMEM_ENABLE": "0"},
}


def worker() -> None:
    from types import SimpleNamespace

    import pynvml
    import torch
    import torch.distributed as dist

    from hvtui.core.train.collectives import Collectives

    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    dev = torch.device("cuda", local)
    torch.cuda.set_device(dev)
    grads = [torch.randn(2048 * 16, device=dev) for _ in range(int(LORA_MIB * 2**20 / 4 / (2048 * 16)))]
    torch.cuda.synchronize()
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(local)
    before = pynvml.nvmlDeviceGetMemoryInfo(h).used
    dist.init_process_group("nccl", device_id=dev)
    coll = Collectives(SimpleNamespace(num_processes=dist.get_world_size(), process_index=rank, device=dev))
    coll.sum([1.0, 2.0])
    coll.broadcast_object({"x": 1})
    params = [SimpleNamespace(grad=g) for g in grads]
    times = []
    for _ in range(20):
        torch.cuda.synchronize()
        t = time.perf_counter()
        coll.average_gradients_(params)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    after = pynvml.nvmlDeviceGetMemoryInfo(h).used
    rows = coll.gather_objects({"rank": rank, "nccl_gib": round((after - before) / 2**30, 3),
                                "allreduce_ms": round(statistics.median(times[2:]) * 1e3, 2)})
    if rank == 0:
        print("ROW", json.dumps(rows), flush=True)
    dist.destroy_process_group()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    res = OUT / "nccl_memory.jsonl"
    res.unlink(missing_ok=True)
    print(f"| NCCL setting | NCCL memory GiB/GPU (NVML) | all-reduce of {LORA_MIB:g} MiB, ms (median) |\n|---|---|---|")
    for name, extra in VARIANTS.items():
        env = {**os.environ, **extra, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              str(Path(__file__).resolve()), "--worker"], env=env, capture_output=True, text=True,
                             timeout=300)
        line = next((x for x in run.stdout.splitlines() if x.startswith("ROW")), None)
        if line is None:
            print(f"| {name} | failed: {run.stderr[-300:]!r} | |")
            continue
        rows = json.loads(line[4:])
        row = {"variant": name, "env": extra, "nccl_gib": max(r["nccl_gib"] for r in rows),
               "allreduce_ms": max(r["allreduce_ms"] for r in rows), "lora_mib": LORA_MIB}
        with open(res, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"| {name} | {row['nccl_gib']} | {row['allreduce_ms']} |", flush=True)
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker()
    else:
        raise SystemExit(main())
