"""GPU benchmark for base_model_precision bf16 vs fp8-torchao vs int8-torchao (hvtui.core.train.quantize).

One call, full-size HunyuanVideo 1.5 transformer with random bf16 weights built on the GPU (seed 0: the same
weights for every mode), 848x480x61 (25,440 video tokens + 120 text tokens), batch 1, t2v, LoRA r16 on the
attention projections (same init for every mode), full gradient checkpointing, hvtui's defaults
(compiled blocks, cuDNN attention through hvtui's kernels, attention cache). The step is the trainer's
(gpu_bench.timed_step: step.loss_and_gradients under bf16 autocast, step.apply_update: clipping, AdamW), 20 steps
per mode on the same data, sigmas and noise. Each quantized mode starts where the trainer starts: the bf16 model in
host memory, quantized block by block onto the GPU (timed).

    python3 bench/quant_bench.py            # on the lent H200 (about 8 minutes)
    TINY=1 python3 bench/quant_bench.py     # CPU: the same code path at tiny size (fp8 matmuls on the CPU)
    MODES=int8-torchao python3 bench/quant_bench.py   # one mode (and its extra rows) only

Rows (one JSON line each in $OUT/quant.jsonl, a table printed last):
  env; GEMMs at the block's shapes, forward + input gradient: bf16, hvtui's FP8 matmul run eagerly (its
  scaling unfused: compiled blocks fuse it), and the two FP8 matmuls alone (the ceiling);
  bf16 / fp8-torchao / int8-torchao: s/step (median of steps 2-20), first step (compile), peak allocated,
  NVML peak, transformer weight bytes, quantize time and peak, the 20 losses and their mean;
  bf16 with the attention cache of the earlier default (40 of 54 blocks), to show what keeping every block gains;
  int8-torchao with the allocator capped at 24 GiB and no offload (a 24 GB card), with expandable segments as
  every hvtui run allocates (the rows before it use torch's default segments).
The allocator is capped at 79 GiB for the three main rows (what an 80 GB card allows), as in gpu_bench.py.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hvtui.core.run.headless import quiet_libraries  # noqa: E402

quiet_libraries()   # before diffusers is imported: it imports torchao, which is chatty on import
import gpu_bench as G  # noqa: E402  (TINY, CUDA, DEV, OUT come from the same environment)

from hvtui.core.env import fit  # noqa: E402
from hvtui.core.train import lora, quantize, speed  # noqa: E402

TINY, CUDA, DEV, OUT = G.TINY, G.CUDA, G.DEV, G.OUT
STEPS = int(os.environ.get("STEPS") or (3 if TINY else 20))
EXTRA_STEPS = 2 if TINY else 4          # cache-share variants: 1 re-measuring step + the timed ones
ALL_MODES = ("bf16", "fp8-torchao", "int8-torchao")   # int8 last: its 24 GiB row sets expandable segments for good
MODES = tuple(m for m in ALL_MODES if m in (os.environ.get("MODES") or ",".join(ALL_MODES)).split(","))   # a subset
BUDGET_S = float(os.environ.get("BUDGET_S") or 420)   # the cache-share rows are skipped past this (one call < 10 min)
OLD_BF16_CACHE_SHARE = 0.75            # the attention cache's bf16 share before every block kept its own
CARD_24GB = 24 * 2**30
RTX4090_TOTAL = 24564 * 2**20           # what NVML reports as total on a 24 GB card
SHAPE = (64, 48, 5) if TINY else (848, 480, 61)
T0 = time.perf_counter()
ROWS: list[dict] = []


def record(row: dict) -> None:
    row["elapsed_s"] = round(time.perf_counter() - T0, 1)
    ROWS.append(row)
    with open(OUT / "quant.jsonl", "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    G.log("RESULT", json.dumps(row, default=str))


def over_budget(what: str) -> bool:
    if time.perf_counter() - T0 > BUDGET_S:
        record(dict(case=what, skipped=f"over the {BUDGET_S:.0f} s budget"))
        return True
    return False


def env() -> None:
    import diffusers
    import peft

    torchao = quantize.import_torchao()
    info = dict(case="env", torch=torch.__version__, torchao=torchao.__version__, diffusers=diffusers.__version__,
                peft=peft.__version__,
                date=time.strftime("%Y-%m-%d %H:%M:%S"), shape="x".join(map(str, SHAPE)), steps=STEPS)
    if CUDA:
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, capability=f"{p.major}.{p.minor}", total_gib=G.gib(p.total_memory))
        fp8 = quantize.fp8_self_check(DEV)
        info["fp8_self_check"] = fp8 or "ok"
    record(info)


def cap_allocator(gib: float | None) -> None:
    if not CUDA:
        return
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total) if gib else 1.0)


# ------------------------------------------------------------------------------------------ GEMMs
def gemms() -> None:
    """bf16 F.linear vs hvtui's FP8 matmul (rowwise scaling of the input / gradient included), forward +
    input gradient, frozen weight, at the block's video-stream shapes and its text-stream shapes."""
    from hvtui.core.train.quantized_linear import float8_linear, rowwise_fp8, scaled_mm

    tokens = 256 if TINY else 25440
    shapes = [(tokens, 2048, 2048, "attention projection (video)"), (tokens, 2048, 8192, "MLP up (video)"),
              (tokens, 8192, 2048, "MLP down (video)"), (256, 2048, 2048, "attention projection (text, 256)"),
              (256, 2048, 8192, "MLP up (text, 256)")]
    if TINY:
        shapes = [(m, k // 16, n // 16, what) for m, k, n, what in shapes]
    reps = 2 if TINY else 20
    for m, k, n, what in shapes:
        g = torch.Generator(device=DEV).manual_seed(0)
        w = torch.randn(n, k, device=DEV, generator=g, dtype=torch.bfloat16) * 0.02
        q, s = rowwise_fp8(w)
        x = torch.randn(m, k, device=DEV, generator=g, dtype=torch.bfloat16).requires_grad_()
        dy = torch.randn(m, n, device=DEV, generator=g, dtype=torch.bfloat16)
        xq, xs = rowwise_fp8(x.detach())
        dq, ds = rowwise_fp8(dy)
        ones = torch.ones((1, k), device=DEV)

        # gemms_only: the two FP8 matmuls alone, operands already scaled: the ceiling. This iteration's tensors
        # are bound as defaults; the functions are deleted with them at the iteration's end.
        def gemms_only(xq=xq, q=q, xs=xs, s=s, dq=dq, ds=ds, ones=ones):
            scaled_mm(xq, q.t(), xs, s.reshape(1, -1), torch.bfloat16, True)
            scaled_mm(dq, q, ds, ones, torch.bfloat16, False)

        def timed(fn, backward=True, x=x, dy=dy):
            for i in range(reps + 1):
                if i == 1:
                    sync()
                    t = time.perf_counter()
                y = fn()
                if backward:
                    y.backward(dy)
                    x.grad = None
            sync()
            return (time.perf_counter() - t) / reps

        out = {"bf16": timed(lambda x=x, w=w: torch.nn.functional.linear(x, w)),
               "fp8": timed(lambda x=x, q=q, s=s: float8_linear(x, q, s)),
               "fp8_gemms_only": timed(gemms_only, backward=False)}
        flop = 2 * 2 * m * k * n   # forward + input gradient
        record(dict(case="gemm", what=what, m=m, k=k, n=n, **{f"{key}_ms": round(v * 1e3, 3) for key, v in out.items()},
                    fp8_over_bf16=round(out["fp8"] / out["bf16"], 3),
                    fp8_gemms_only_over_bf16=round(out["fp8_gemms_only"] / out["bf16"], 3),
                    bf16_tflops=round(flop / out["bf16"] / 1e12, 1), fp8_tflops=round(flop / out["fp8"] / 1e12, 1),
                    fp8_gemms_only_tflops=round(flop / out["fp8_gemms_only"] / 1e12, 1)))
        del w, q, s, x, dy, xq, dq, gemms_only, timed
    G.free()


def sync():
    if CUDA:
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ the runs
def build(mode: str):
    """The transformer as the trainer has it when training starts: bf16, quantized block by block from host
    memory for the quantized modes, LoRA added (same init), on the device."""
    G.free()
    tr = G.build_transformer()   # seed 0: the same weights every time
    info: dict = {"mode": mode}
    if mode != "bf16":
        tr.to("cpu")   # the trainer loads to host memory and quantizes when training starts
        G.free()
        if CUDA:
            torch.cuda.reset_peak_memory_stats()
        fp8_compute = True if (TINY and mode == "fp8-torchao") else None   # CPU: tiny proof only
        rep = quantize.quantize_transformer(tr, mode, DEV, fp8_compute=fp8_compute,
                                            publish=lambda e: G.log("  event:", e.data))
        info.update(quantize_s=round(rep.seconds, 2), quantized_linears=rep.linears, fp8_matmul_linears=rep.fp8_compute,
                    quantize_peak_alloc_gib=G.gib(torch.cuda.max_memory_allocated()) if CUDA else None)
    info["transformer_weight_gib"] = G.gib(quantize.module_bytes(tr))
    info["block_weight_gib"] = G.gib(quantize.module_bytes(tr.transformer_blocks))
    preset = G.bench_preset(base_model_precision=mode)
    torch.manual_seed(1)
    params = lora.add_lora(tr, preset)
    tr.to(DEV)
    return tr, params, preset, info


def run_mode(mode: str, batches, cap) -> tuple:
    tr, params, preset, info = build(mode)
    handle = speed.prepare_transformer(tr, preset, DEV, gpu_memory_bytes=cap,
                                       publish=lambda e: G.log("  event:", e.data))
    row = G.hvtui_steps(tr, params, preset, batches, mode, info)
    row["mean_loss"] = round(statistics.fmean(row["losses"]), 5)
    row["speed"] = handle.stats()
    record(G.with_mfu(row, *SHAPE))
    return tr, params, preset, handle, row


def cache_variant(tr, params, preset, handle, batches, share: float, label: str) -> None:
    """The same model and compiled graphs with another attention-cache share (its first step re-measures)."""
    if over_budget(label):
        return
    handle.set_cache_share(share)
    row = G.hvtui_steps(tr, params, preset, batches[:EXTRA_STEPS], label)
    row["speed"] = handle.stats()
    record(G.with_mfu(row, *SHAPE))
    handle.set_cache_share(fit.ATTENTION_CACHE_SHARE)


def card_24gb(tr, params, preset, handle, batches) -> None:
    """int8 on a 24 GB card: the allocator capped at 24 GiB, no offload, the cache re-measured under the cap, and
    the allocator in the mode every hvtui run sets (expandable segments, core/env/cuda_allocator.py): without it
    this row ran out of memory at step 1 with 3.4 GiB cached but unallocated (BENCHMARKS, 2026-12-03). The rows
    before keep torch's default segments, as the GPU section's figures were measured."""
    from hvtui.core.env import cuda_allocator

    label = f"{preset.base_model_precision}, allocator capped at 24 GiB, no offload, expandable segments"
    G.free()   # the earlier rows' segments go back; the segments allocated from here on are expandable
    G.log(cuda_allocator.configure())
    cap_allocator(24)
    handle.gpu_memory_bytes = CARD_24GB
    handle.set_cache_share(fit.ATTENTION_CACHE_SHARE)
    n = EXTRA_STEPS + 2
    try:
        row = G.hvtui_steps(tr, params, preset, batches[:n], label)
        row.update(speed=handle.stats(), fits_24gb_card_nvml=(row.get("nvml_peak_gib") or 0) * 2**30 <= RTX4090_TOTAL)
    except torch.OutOfMemoryError as e:
        row = dict(case=label, error=f"OOM: {str(e)[:300]}")
    record(G.with_mfu(row, *SHAPE) if "s_per_step" in row else row)
    cap_allocator(None)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    env()
    if "fp8-torchao" in MODES:
        gemms()
    cap = None
    if CUDA and torch.cuda.get_device_properties(0).total_memory > (G.CAP_GIB + 2) * 2**30:
        cap_allocator(G.CAP_GIB)
        cap = int(G.CAP_GIB * 2**30)
    batches = G.make_batches(*SHAPE, STEPS)
    results = {}
    for mode in MODES:
        try:
            tr, params, preset, handle, row = run_mode(mode, batches, cap)
        except Exception as e:   # record it and go on to the next mode: one call must bring back all it can
            import traceback

            traceback.print_exc()
            record(dict(case=mode, error=f"{type(e).__name__}: {str(e)[:400]}"))
            G.free()
            continue
        results[mode] = row
        if mode == "bf16":
            cache_variant(tr, params, preset, handle, batches, OLD_BF16_CACHE_SHARE,
                          "bf16, attention kept in 40 of 54 blocks (bf16's default until 2026-12-03)")
        elif mode == "int8-torchao":
            card_24gb(tr, params, preset, handle, batches)
        handle.remove()
        del tr, params, handle
        torch._dynamo.reset()   # the next mode compiles its own graphs; drop this one's guards and code
        G.free()
    verdict(results)


def verdict(results: dict) -> None:
    bf, fp8, int8 = (results.get(m) for m in ("bf16", "fp8-torchao", "int8-torchao"))
    out: dict = {"case": "acceptance"}
    if bf and fp8:
        out["fp8_step_over_bf16"] = round(fp8["s_per_step"] / bf["s_per_step"], 3)
        out["fp8_mean_loss_rel_diff"] = round(abs(fp8["mean_loss"] - bf["mean_loss"]) / bf["mean_loss"], 4)
    if bf and int8:
        out["int8_step_over_bf16"] = round(int8["s_per_step"] / bf["s_per_step"], 3)
        out["int8_mean_loss_rel_diff"] = round(abs(int8["mean_loss"] - bf["mean_loss"]) / bf["mean_loss"], 4)
    if int8:
        out["int8_transformer_weight_gib"] = int8["transformer_weight_gib"]
    record(out)
    G.log("\n| case | s/step | first step s | MFU | peak alloc GiB | NVML peak GiB | weights GiB | quantize s "
          "| mean loss |")
    G.log("|---|---|---|---|---|---|---|---|---|")
    for r in ROWS:
        if r["case"] in ("env", "gemm", "acceptance"):
            continue
        if "error" in r or "skipped" in r:
            G.log(f"| {r['case']} | {r.get('error') or r.get('skipped')} |")
            continue
        G.log(f"| {r['case']} | {r['s_per_step']} | {r.get('warmup_s')} | {r.get('mfu')} | {r.get('peak_alloc_gib')} | "
              f"{r.get('nvml_peak_gib')} | {r.get('transformer_weight_gib', '')} | {r.get('quantize_s', '')} | "
              f"{r.get('mean_loss', '')} |")
    for r in ROWS:
        if r["case"] == "gemm":
            G.log(f"gemm {r['what']} {r['m']}x{r['k']}x{r['n']} (fwd + input grad): bf16 {r['bf16_ms']} ms "
                  f"({r['bf16_tflops']} TFLOP/s), fp8 eager {r['fp8_ms']} ms (x{r['fp8_over_bf16']}), fp8 matmuls "
                  f"alone {r['fp8_gemms_only_ms']} ms ({r['fp8_gemms_only_tflops']} TFLOP/s, "
                  f"x{r['fp8_gemms_only_over_bf16']})")
    G.log("acceptance (fp8 step <= 0.85x bf16, fp8 mean loss within 2 %, int8 weights <= 9 GiB): " + json.dumps(out))


if __name__ == "__main__":
    main()
