"""GPU benchmark: hvtui's training step vs the plain reference loop, full-size HunyuanVideo 1.5 transformer.

Random bf16 weights built directly on the GPU (no download), LoRA r16 on the block attention projections
(hvtui.core.train.lora.add_lora), full gradient checkpointing, batch 1, 120 valid text tokens, t2v.
hvtui's step is the trainer's: step.collate, then step.loss_and_gradients (sigmas, noise, flow-matching loss
under bf16 autocast, backward) and step.apply_update (grad clipping, the preset's optimizer from
optim.build_optimizer), after speed.prepare_transformer.

    python bench/gpu_bench.py A    # 848x480x61: hvtui default, no attention cache, offload, reference, VAE
    python bench/gpu_bench.py B    # 848x480x121, 1280x720x61 (hvtui + reference), 1280x720x121 (hvtui)
    TINY=1 python bench/gpu_bench.py A   # CPU smoke test of the script itself (tiny widths, no timings)

On a card with more than 80 GB the allocator is capped at 79 GiB so every figure is what an 80 GB card allows.
MFU = FLOP / time / 790e12, FLOP = 6*N*S_vid + 16*S^2*2048*54 (REFERENCE.md: N = 2.72e9 per-video-token
matmul params, linear work with frozen weights incl. recompute; attention fwd + recompute + bwd = 4 x
4*S^2*d*L; S = video + text tokens). The same useful-work FLOP is used for every case, so MFU compares
directly (the attention cache skips part of the recompute, which this count includes).
Results: one JSON line per case in $OUT/bench_<part>.jsonl, a table printed last.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hvtui.core.preset.schema import Preset  # noqa: E402
from hvtui.core.train import lora, optim, speed, step  # noqa: E402

TINY = os.environ.get("TINY") == "1"
CUDA = torch.cuda.is_available() and not TINY
DEV = torch.device("cuda" if CUDA else "cpu")
OUT = Path(os.environ.get("OUT") or "/tmp/hvtui-bench")
PEAK_TFLOPS = 790.0
CAP_GIB = 79.0
TEXT_TOKENS = 4 if TINY else 120
ROWS: list[dict] = []


def log(*a):
    print(*a, flush=True)
    with open(OUT / "log.txt", "a") as f:
        print(*a, file=f)


def record(row: dict) -> None:
    ROWS.append(row)
    with open(OUT / f"bench_{PART}.jsonl", "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    log("RESULT", json.dumps(row, default=str))


def tokens(w, h, f):
    return ((f - 1) // 4 + 1) * (h // 16) * (w // 16)


def flop(w, h, f, text=120):
    s_vid = tokens(w, h, f)
    s = s_vid + text
    return 6 * 2.72e9 * s_vid + 16 * s * s * 2048 * 54


class NvmlPeak:
    """Samples NVML used memory every 20 ms (what nvidia-smi shows, allocator + context + fragmentation) of GPU
    `index` (default: torch's current device; multigpu_bench passes each worker's local rank)."""

    def __init__(self, index: int | None = None):
        self.peak = 0
        self._stop = threading.Event()
        self.h = None
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nv = pynvml
            if index is None:
                index = torch.cuda.current_device() if CUDA else 0
            self.h = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            pass

    def used(self):
        return self.nv.nvmlDeviceGetMemoryInfo(self.h).used if self.h else 0

    def __enter__(self):
        self.peak = self.used()
        self._stop.clear()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.used())

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join()
        self.peak = max(self.peak, self.used())


def gib(x):
    return round(x / 2**30, 2)


def mem():
    if not CUDA:
        return {}
    return dict(peak_alloc_gib=gib(torch.cuda.max_memory_allocated()),
                peak_reserved_gib=gib(torch.cuda.max_memory_reserved()))


def build_transformer():
    from diffusers import HunyuanVideo15Transformer3DModel

    t = time.perf_counter()
    torch.manual_seed(0)
    kw = dict(num_layers=3, num_attention_heads=2, attention_head_dim=64, text_embed_dim=64, text_embed_2_dim=32,
              image_embed_dim=32, rope_axes_dim=(16, 24, 24)) if TINY else {}
    with torch.device(DEV):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        tr = HunyuanVideo15Transformer3DModel(**kw)
        torch.set_default_dtype(prev)
    log(f"built transformer {sum(p.numel() for p in tr.parameters()) / 1e9:.3f}B params "
        f"in {time.perf_counter() - t:.1f}s")
    return tr


def make_batches(w, h, f, n, seed=0):
    """Fixed data per step (same for every case at a shape): cached-latent-shaped items through collate."""
    g = torch.Generator().manual_seed(seed)
    d_txt = 64 if TINY else 3584
    out = []
    for _ in range(n):
        item = dict(latents=torch.randn(32, (f - 1) // 4 + 1, h // 16, w // 16, generator=g),
                    text=torch.randn(TEXT_TOKENS, d_txt, generator=g),
                    text_2=torch.zeros(0, 32 if TINY else 1472), image=torch.zeros(0, 32 if TINY else 1152))
        batch = step.collate([item])
        out.append((batch, int(g.initial_seed()) + 1000 + len(out)))
    return out


def timed_step(tr, params, opt, preset, batch, seed) -> tuple[float, float, float]:
    """One trainer step, the trainer's own two calls (step.loss_and_gradients: sigmas + noise from `seed`,
    flow-matching loss under bf16 autocast, backward; step.apply_update: clipping, optimizer), timed between CUDA
    syncs: (seconds, loss, grad norm)."""
    gen = torch.Generator().manual_seed(seed)
    if CUDA:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = step.loss_and_gradients(tr, batch, preset, gen,
                                   forward_context=lambda: torch.autocast(DEV.type, dtype=torch.bfloat16, enabled=CUDA))
    _, _, gnorm = step.apply_update(params, opt, None, preset.max_grad_norm)
    opt.zero_grad(set_to_none=True)
    if CUDA:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, loss, gnorm


def hvtui_steps(tr, params, preset, batches, label, extra=None):
    """The trainer's step (see module doc) over `batches`; step 1 is warm-up (compile, cache measuring)."""
    opt = optim.build_optimizer(preset.optimizer, params, preset.learning_rate, DEV.type)
    times, losses = [], []
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    warm_mem = {}
    with NvmlPeak() as nv:
        for i, (batch, seed) in enumerate(batches):
            if i == 1 and CUDA:
                warm_mem = mem()
                torch.cuda.reset_peak_memory_stats()
            seconds, loss, _ = timed_step(tr, params, opt, preset, batch, seed)
            times.append(seconds)
            losses.append(loss)
            log(f"  {label} step {i}: {times[-1]:.2f}s loss {losses[-1]:.4f}")
    timed = times[1:] if len(times) > 1 else times
    row = dict(case=label, times=[round(x, 3) for x in times], s_per_step=round(statistics.median(timed), 3),
               warmup_s=round(times[0] - statistics.median(timed), 1) if len(times) > 1 else None,
               losses=[round(x, 5) for x in losses], finite=all(x == x and abs(x) != float("inf") for x in losses),
               **mem(), warmup_peak_alloc_gib=warm_mem.get("peak_alloc_gib"), nvml_peak_gib=gib(nv.peak))
    row.update(extra or {})
    del opt
    return row


def lora_cpu(tr):
    return {k: v.detach().float().cpu().clone() for k, v in lora.lora_state_dict(tr).items()}


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def with_mfu(row, w, h, f):
    fl = flop(w, h, f, TEXT_TOKENS)
    row.update(shape=f"{w}x{h}x{f}", video_tokens=tokens(w, h, f), tflop_per_step=round(fl / 1e12, 1),
               mfu=round(fl / row["s_per_step"] / (PEAK_TFLOPS * 1e12), 3) if row.get("s_per_step") else None)
    return row


def env():
    import diffusers

    info = dict(case="env", torch=torch.__version__, diffusers=diffusers.__version__, part=PART,
                date=time.strftime("%Y-%m-%d %H:%M:%S"))
    if CUDA:
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, total_gib=gib(p.total_memory))
        if p.total_memory > (CAP_GIB + 2) * 2**30:
            torch.cuda.set_per_process_memory_fraction(CAP_GIB * 2**30 / p.total_memory)
            info["allocator_cap_gib"] = CAP_GIB
        x = torch.empty(2**30, dtype=torch.uint8).pin_memory()
        y = torch.empty_like(x, device=DEV)
        y.copy_(x, non_blocking=True)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(4):
            y.copy_(x, non_blocking=True)
        torch.cuda.synchronize()
        info["h2d_pinned_gbps"] = round(4 * 2**30 / (time.perf_counter() - t) / 1e9, 1)
        del x, y
        best, timings = speed.measure_attention_backends(DEV)
        info["attention_backend_auto"] = best
        info["attention_fwd_bwd_ms_s16384"] = {k: (round(v * 1e3, 2) if isinstance(v, float) else v)
                                               for k, v in timings.items()}
    record(info)
    return info


def bench_preset(**kw):
    return Preset(lora_rank=16, gradient_checkpointing=True, **kw)


def free():
    import gc

    gc.collect()
    if CUDA:
        torch.cuda.empty_cache()


def part_a():
    if CUDA:
        attention_accuracy()
    w, h, f = (64, 48, 5) if TINY else (848, 480, 61)
    n = 3 if TINY else 5
    preset = bench_preset()
    batches = make_batches(w, h, f, n)
    tr = build_transformer()
    params = lora.add_lora(tr, preset)
    init = lora_cpu(tr)
    big = CUDA and torch.cuda.get_device_properties(0).total_memory > (CAP_GIB + 2) * 2**30
    cap = int(CAP_GIB * 2**30) if big else None
    t = time.perf_counter()
    handle = speed.prepare_transformer(tr, preset, DEV, gpu_memory_bytes=cap, publish=lambda e: log("  event:", e.data))
    prep_s = time.perf_counter() - t

    try:
        row = hvtui_steps(tr, params, preset, batches, "hvtui default", dict(prepare_s=round(prep_s, 2)))
    except Exception as e:   # e.g. compile failing on this stack: record it, go on uncompiled
        import traceback
        traceback.print_exc()
        record(dict(case="hvtui default", shape=f"{w}x{h}x{f}", error=repr(e)[:300]))
        handle.remove()
        free()
        handle = speed.prepare_transformer(tr, preset, DEV, gpu_memory_bytes=cap, compile_blocks=False)
        lora.set_lora_state_dict(tr, {k: v.to(DEV) for k, v in init.items()})
        row = hvtui_steps(tr, params, preset, batches, "hvtui default (not compiled)")
    row["speed"] = handle.stats()
    record(with_mfu(row, w, h, f))
    lora_default = lora_cpu(tr)

    lora.set_lora_state_dict(tr, {k: v.to(DEV) for k, v in init.items()})
    handle.set_cache_share(0.0)
    row = hvtui_steps(tr, params, preset, batches, "hvtui no attention cache")
    row["speed"] = handle.stats()
    record(with_mfu(row, w, h, f))
    lora_nocache = lora_cpu(tr)
    nocache_s = row["s_per_step"]

    # the same run again: cuDNN attention's backward is not deterministic, this is the run-to-run floor
    lora.set_lora_state_dict(tr, {k: v.to(DEV) for k, v in init.items()})
    row = hvtui_steps(tr, params, preset, batches, "hvtui no attention cache, repeat")
    record(with_mfu(row, w, h, f))
    lora_repeat = lora_cpu(tr)

    handle.remove()
    lora.set_lora_state_dict(tr, {k: v.to(DEV) for k, v in init.items()})
    off_preset = bench_preset(enable_group_offload=True, group_offload_use_stream=True)
    free()
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    handle = speed.prepare_transformer(tr, off_preset, DEV, gpu_memory_bytes=cap)
    prep_s = time.perf_counter() - t
    setup_mem = mem()
    row = hvtui_steps(tr, params, off_preset, batches, "hvtui offload", dict(prepare_s=round(prep_s, 2),
                                                                            setup_peak=setup_mem))
    row["speed"] = handle.stats()
    lora_off = lora_cpu(tr)
    moved = max_diff(lora_nocache, init)
    row["vs_no_offload"] = dict(
        step_time_ratio=round(row["s_per_step"] / nocache_s, 3), lora_moved=moved,
        max_abs_diff_offload_vs_nocache=max_diff(lora_off, lora_nocache),
        max_abs_diff_repeat_vs_nocache_noise_floor=max_diff(lora_repeat, lora_nocache),
        max_abs_diff_default_vs_nocache=max_diff(lora_default, lora_nocache),
        params_never_updated=sum(1 for k in init if torch.equal(lora_off[k], init[k])),
        plain_never_updated=sum(1 for k in init if torch.equal(lora_nocache[k], init[k])), of=len(init))
    record(with_mfu(row, w, h, f))
    handle.remove()
    del tr, params, handle
    free()

    if not TINY:
        import reference_loop

        model, lp = reference_loop.build(DEV)
        with NvmlPeak() as nv:
            r = reference_loop.run(model, lp, w, h, f, 4, DEV,
                                   on_step=lambda i, t, loss: log(f"  reference step {i}: {t:.2f}s loss {loss:.4f}"))
        r.update(case="reference padded", **mem(), nvml_peak_gib=gib(nv.peak))
        record(with_mfu(r, w, h, f))
        del model, lp
        free()
        vae_bench()


def vae_bench():
    """One 848x480x61 clip through hvtui's cache path (conditioning.configure_tiling + encode_video)."""
    import numpy as np
    from diffusers import AutoencoderKLHunyuanVideo15

    from hvtui.core.train import conditioning

    with torch.device(DEV):
        torch.set_default_dtype(torch.bfloat16)
        vae = AutoencoderKLHunyuanVideo15().eval()
        torch.set_default_dtype(torch.float32)
    frames = np.random.default_rng(0).integers(0, 256, size=(61, 480, 848, 3), dtype=np.uint8)
    for tile in (conditioning.TILE_SAMPLE, 128):
        conditioning.configure_tiling(vae, True, tile=tile)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(2):
            torch.cuda.synchronize()
            t = time.perf_counter()
            lat = conditioning.encode_video(vae, frames, DEV, torch.bfloat16)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        record(dict(case=f"vae tiled encode tile {tile}", shape="848x480x61", s=round(times[-1], 3),
                    latent=list(lat["mean"].shape), peak_alloc_gib=gib(torch.cuda.max_memory_allocated()),
                    default=(tile == conditioning.TILE_SAMPLE)))
    del vae
    free()


def attention_accuracy(seq=8192, heads=16, dim=128):
    """Out and q/k/v gradients of each attention path vs an fp32 math reference on the same bf16 inputs."""
    from diffusers.models import attention_dispatch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from hvtui.core.train import attention_cache as ac

    g = torch.Generator(device=DEV).manual_seed(0)
    q, k, v, go = (torch.randn(1, seq, heads, dim, device=DEV, dtype=torch.bfloat16, generator=g) for _ in range(4))
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def run(fn, dtype=None):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        out = fn(*[x.to(dtype) if dtype else x for x in leaves])
        out.backward(go.to(out.dtype))
        return [out.detach().float()] + [x.grad.float() for x in leaves]

    def bshd(kernel):
        def fn(a, b, c):
            with sdpa_kernel(kernel):
                return sdpa(a.transpose(1, 2), b.transpose(1, 2), c.transpose(1, 2)).transpose(1, 2)
        return fn

    def cached(kernel):
        def fn(a, b, c):
            store = ac.AttentionStore()
            with torch.no_grad():
                ac.attention(a, b, c, store, 0, "store", kernel)
            return ac.attention(a, b, c, store, 0, "reuse", kernel)
        return fn

    ref = run(bshd(SDPBackend.MATH), torch.float32)
    res = {}
    for name, fn in [("sdpa flash", bshd(SDPBackend.FLASH_ATTENTION)), ("sdpa cudnn", bshd(SDPBackend.CUDNN_ATTENTION)),
                     ("diffusers _native_cudnn",
                      lambda a, b, c: attention_dispatch.dispatch_attention_fn(a, b, c, backend="_native_cudnn")),
                     ("hvtui cached flash", cached("flash")), ("hvtui cached cudnn", cached("cudnn")),
                     ("hvtui compute cudnn",
                      lambda a, b, c: ac.attention(a, b, c, ac.AttentionStore(), 0, "compute", "cudnn"))]:
        try:
            got = run(fn)
            res[name] = [float(f"{((x - r).norm() / r.norm()).item():.2e}") for x, r in zip(got, ref, strict=False)]
        except Exception as e:
            res[name] = repr(e)[:160]
    record(dict(case="attention accuracy vs fp32 (rel err out, dq, dk, dv)", seq=seq, **res))
    free()


def part_b():
    if CUDA:
        attention_accuracy()
    shapes = [(64, 48, 9, 3), (96, 64, 5, 3)] if TINY else [(848, 480, 121, 3), (1280, 720, 61, 3), (1280, 720, 121, 2)]
    preset = bench_preset()
    tr = build_transformer()
    params = lora.add_lora(tr, preset)
    big = CUDA and torch.cuda.get_device_properties(0).total_memory > (CAP_GIB + 2) * 2**30
    cap = int(CAP_GIB * 2**30) if big else None
    handle = speed.prepare_transformer(tr, preset, DEV, gpu_memory_bytes=cap, publish=lambda e: log("  event:", e.data))
    for w, h, f, n in shapes:
        try:
            row = hvtui_steps(tr, params, preset, make_batches(w, h, f, n), "hvtui default")
            row["speed"] = handle.stats()
            record(with_mfu(row, w, h, f))
        except torch.OutOfMemoryError as e:
            record(dict(case="hvtui default", shape=f"{w}x{h}x{f}", error=f"OOM: {str(e)[:200]}"))
            free()
    handle.remove()
    del tr, params, handle
    free()
    if TINY:
        return
    import reference_loop

    model, lp = reference_loop.build(DEV)
    for w, h, f, _n in shapes[:2]:
        try:
            with NvmlPeak() as nv:
                r = reference_loop.run(model, lp, w, h, f, 2, DEV,
                                       on_step=lambda i, t, lo: log(f"  reference step {i}: {t:.2f}s loss {lo:.4f}"))
            r.update(case="reference padded", **mem(), nvml_peak_gib=gib(nv.peak))
            record(with_mfu(r, w, h, f))
        except torch.OutOfMemoryError as e:
            record(dict(case="reference padded", shape=f"{w}x{h}x{f}", error=f"OOM: {str(e)[:200]}"))
            free()


def table():
    log("\n| case | shape | s/step | warm-up s | MFU | peak alloc GiB | peak reserved GiB | NVML peak GiB "
        "| loss finite |")
    log("|---|---|---|---|---|---|---|---|---|")
    for r in ROWS:
        if r["case"] == "env" or "error" in r or r["case"].startswith("vae"):
            continue
        log(f"| {r['case']} | {r.get('shape')} | {r.get('s_per_step')} | {r.get('warmup_s', '')} | {r.get('mfu')} | "
            f"{r.get('peak_alloc_gib')} | {r.get('peak_reserved_gib')} | {r.get('nvml_peak_gib')} "
            f"| {r.get('finite')} |")
    for r in ROWS:
        if "error" in r:
            log(f"| {r['case']} | {r.get('shape')} | {r['error'][:80]} |")
        elif r["case"].startswith("vae"):
            log(f"VAE {r['case']}: {r['s']} s, peak {r['peak_alloc_gib']} GiB")
        elif "vs_no_offload" in r:
            log("offload vs no offload:", json.dumps(r["vs_no_offload"]))
    for r in ROWS:
        if r["case"].startswith("attention accuracy"):
            log(r["case"], json.dumps({k: v for k, v in r.items() if k != "case"}))
    for ref in [r for r in ROWS if r["case"] == "reference padded" and r.get("s_per_step")]:
        hv = [r for r in ROWS
              if r["case"] == "hvtui default" and r.get("shape") == ref["shape"] and r.get("s_per_step")]
        if hv:
            log(f"{ref['shape']} speed-up vs reference (same call): {ref['s_per_step'] / hv[0]['s_per_step']:.2f}x")


if __name__ == "__main__":
    PART = sys.argv[1] if len(sys.argv) > 1 else "A"
    OUT.mkdir(parents=True, exist_ok=True)
    env_info = env()
    log(json.dumps(env_info))
    try:
        part_a() if PART == "A" else part_b()
    finally:
        table()
