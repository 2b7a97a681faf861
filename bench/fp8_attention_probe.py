#!/usr/bin/env python3
"""FP8 attention probe for hvtui's joint self-attention shape (H200 / sm90).

Question it answers: is FP8 attention (forward AND backward) fast enough to get
hvtui's ``fp8-torchao`` step to <= 0.85x of bf16, and how accurate is it?

Cases (each isolated: an exception is recorded and the run goes on):
  ref_bf16_cudnn / ref_bf16_flash  torch SDPA in bf16 (CUDNN_ATTENTION / FLASH_ATTENTION)
  cudnn_fp8_o{bf16,fp16,fp8}       nvidia-cudnn-frontend sdpa_fp8 + sdpa_fp8_backward,
                                   q/k/v/dO in fp8 e4m3 (per-tensor current scaling),
                                   O and dQ/dK/dV in the named dtype
  torch_fp8_quantized              torch's experimental FP8 SDPA (forward only), if usable
  acc_*                            accuracy at a shorter sequence vs fp32 and vs bf16 cuDNN

Layout: every q/k/v/O/dO/dQ/dK/dV buffer is stored BSHD (B, S, H, D contiguous) and
presented as the logical [B, H, S, D] view (strides S*H*D, D, H*D, 1), which is what
a model produces after its QKV projection + transpose(1, 2). torch SDPA gets the same
strided views, so both sides read the same memory layout.

Output: JSON lines in $OUT/fp8_attention.jsonl (OUT defaults to ./out), one per case,
written as each case finishes; a summary table is printed last.

  python3 bench/fp8_attention_probe.py            # full run on the GPU (< ~3 min)
  python3 bench/fp8_attention_probe.py --dry      # CPU self-check: parse/imports/cases
"""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import traceback

T0 = time.time()
RESULTS: list[dict] = []
ACC_GRAPHS: dict = {}  # (S, otype) -> CudnnFp8Attention reused by both accuracy input sets
OUT_FILE = None

FP8_MAX = 448.0  # largest finite float8_e4m3fn
DO_SCALE = 1e-3  # dO ~ N(0,1) * this (--do-scale): on the H200 dQ/dK underflowed to zero at 1e-3, 7 % off at 1


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def record(case: str, **fields) -> dict:
    rec = {"case": case, **fields}
    RESULTS.append(rec)
    if OUT_FILE is not None:
        # Append per case so a crash (e.g. a cuDNN abort) still leaves the earlier results.
        with open(OUT_FILE, "a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")
    return rec


def err_fields(exc: BaseException) -> dict:
    tb = traceback.format_exc().strip().splitlines()
    return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:1500], "traceback_tail": tb[-8:]}


def run_case(case: str, fn, **extra):
    """Run one case; any exception becomes an error record and the probe goes on."""
    log(f"case {case} ...")
    try:
        fields = fn() or {}
        rec = record(case, **{"status": "ok", **extra, **fields})
        log(f"case {case}: ok {short(rec)}")
        return rec
    except Exception as exc:  # noqa: BLE001 -- a probe must survive every case
        rec = record(case, **{**extra, **err_fields(exc)})
        log(f"case {case}: ERROR {rec['error'][:300]}")
        return rec


def short(rec: dict) -> str:
    keys = ("ms_fwd", "ms_bwd", "ms_fwdbwd", "tflops_fwd", "tflops_bwd", "plan_fwd", "plan_bwd")
    return " ".join(f"{k}={rec[k]}" for k in keys if k in rec)


# --------------------------------------------------------------------------------------
# environment / imports
# --------------------------------------------------------------------------------------


def import_torch():
    try:
        import torch  # noqa: F401

        return torch
    except Exception as exc:  # noqa: BLE001
        log(f"torch import failed: {exc}")
        return None


def cudnn_lib_dir(torch) -> str | None:
    """Directory of the libcudnn.so.9 that torch uses, so the frontend loads the SAME one."""
    # 1) the library torch already mapped (libtorch_cuda links libcudnn.so.9)
    try:
        if torch is not None and torch.cuda.is_available():
            torch.backends.cudnn.version()  # forces cuDNN to load if it is lazy
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.strip().split(" ")[-1]
                if os.path.basename(path).startswith("libcudnn.so"):
                    return os.path.dirname(path)
    except Exception:  # noqa: BLE001
        pass
    # 2) the nvidia-cudnn-cu1x wheel next to torch (a namespace package: no __file__)
    try:
        import nvidia.cudnn as nc

        for p in list(getattr(nc, "__path__", [])):
            if glob.glob(os.path.join(p, "lib", "libcudnn.so.*")):
                return os.path.join(p, "lib")
    except Exception:  # noqa: BLE001
        pass
    return None


def import_cudnn_frontend(torch, env: dict):
    """Import nvidia-cudnn-frontend against torch's cuDNN.

    Why LD_LIBRARY_PATH: cudnn/__init__.py dlopens libcudnn from (1) LD_LIBRARY_PATH
    entries, read from os.environ at import time, then (2) sysconfig purelib
    nvidia/cudnn/lib, then (3) plain "libcudnn.so.9". When the frontend is installed
    with --target elsewhere, (2) can miss; prepending torch's own lib dir makes (1)
    hit the same library torch uses (one libcudnn per process).
    """
    libdir = cudnn_lib_dir(torch)
    env["cudnn_lib_dir"] = libdir
    if libdir:
        os.environ["LD_LIBRARY_PATH"] = libdir + os.pathsep + os.environ.get("LD_LIBRARY_PATH", "")
    import cudnn

    env["cudnn_frontend_version"] = getattr(cudnn, "__version__", None)
    env["cudnn_frontend_file"] = getattr(cudnn, "__file__", None)
    for name in ("backend_version", "backend_version_string"):
        try:
            env[f"cudnn_{name}"] = getattr(cudnn, name)()
        except Exception as exc:  # noqa: BLE001
            env[f"cudnn_{name}"] = f"error: {exc}"
    return cudnn


def optional_modules(env: dict) -> None:
    # The frontend's METADATA lists these, but the classic graph path (backend engines)
    # should not need them; recorded so a failure can be tied to a missing one.
    for mod in ("cuda.bindings.driver", "cutlass", "tvm_ffi"):
        try:
            importlib.util.find_spec(mod.split(".")[0])
            importlib.import_module(mod)
            env[f"have_{mod}"] = True
        except Exception as exc:  # noqa: BLE001
            env[f"have_{mod}"] = f"no ({type(exc).__name__})"


# --------------------------------------------------------------------------------------
# shapes / flops / timing
# --------------------------------------------------------------------------------------


def bshd_strides(S: int, H: int, D: int) -> tuple:
    return (S * H * D, D, H * D, 1)


def flops_fwd(B, H, S, D) -> float:
    return 4.0 * B * H * S * S * D


def tflops(flops: float, ms: float | None):
    return None if not ms else round(flops / (ms * 1e-3) / 1e12, 1)


def bench(torch, fn, warmup: int, iters: int) -> dict:
    """Median of `iters` CUDA-event timings after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return {"median": round(statistics.median(times), 4), "min": round(min(times), 4), "max": round(max(times), 4)}


def rel_err(torch, out, ref) -> float:
    out = out.float()
    ref = ref.float()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-30))


def make_bshd(torch, B, H, S, D, dtype, device, scale=1.0, gen=None):
    """Random N(0,1)*scale stored BSHD, returned as the [B,H,S,D] view."""
    x = torch.randn(B, S, H, D, device=device, dtype=torch.float32, generator=gen) * scale
    return x.to(dtype).transpose(1, 2)


def empty_bshd(torch, B, H, S, D, dtype, device):
    return torch.empty(B, S, H, D, device=device, dtype=dtype).transpose(1, 2)


# --------------------------------------------------------------------------------------
# FP8 per-tensor current scaling
# --------------------------------------------------------------------------------------


def quantize_fp8(torch, x):
    """x (any float, any strides) -> (fp8 e4m3 tensor with x's strides, descale [1,1,1,1] f32).

    Current scaling: scale = 448 / amax(x), computed on the GPU (no host sync), so the
    timing of this function is the real per-step quantization overhead.
    """
    amax = x.abs().amax().float().clamp_min(1e-12)
    scale = FP8_MAX / amax
    xq = torch.empty_like(x, dtype=torch.float8_e4m3fn)
    # clamp: rounding may push |x*scale| a hair over 448 and e4m3fn has no inf (-> NaN)
    xq.copy_((x.float() * scale).clamp_(-FP8_MAX, FP8_MAX))
    return xq, (1.0 / scale).reshape(1, 1, 1, 1)


def scalar4(torch, value, device):
    return torch.full((1, 1, 1, 1), float(value), dtype=torch.float32, device=device)


# --------------------------------------------------------------------------------------
# cuDNN frontend FP8 graphs
# --------------------------------------------------------------------------------------

# Fixed uids: execute() takes {uid: tensor}, mirroring NVIDIA's test/python/sdpa/fp8.py.
FWD = dict(
    q=1, k=2, v=3, o=4, stats=5, descale_q=6, descale_k=7, descale_v=8, descale_s=9,
    scale_s=10, scale_o=11, amax_s=12, amax_o=13,
)
BWD = dict(
    q=101, k=102, v=103, o=104, dO=105, stats=106,
    descale_q=107, descale_k=108, descale_v=109, descale_o=110, descale_dO=111, descale_s=112, descale_dP=113,
    scale_s=114, scale_dQ=115, scale_dK=116, scale_dV=117, scale_dP=118,
    dQ=119, dK=120, dV=121, amax_dQ=122, amax_dK=123, amax_dV=124, amax_dP=125,
)


def cudnn_dtype(cudnn, name: str):
    return {
        "bf16": cudnn.data_type.BFLOAT16,
        "fp16": cudnn.data_type.HALF,
        "fp8": cudnn.data_type.FP8_E4M3,
        "f32": cudnn.data_type.FLOAT,
    }[name]


def fp8_fwd_graph(cudnn, handle, B, H, S, D, otype: str, attn_scale: float):
    """sdpa_fp8 graph: fp8 q/k/v in, O in `otype`, Stats (fp32 log-sum-exp) for the backward."""
    F8, F32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    g = cudnn.pygraph(io_data_type=F8, intermediate_data_type=F32, compute_data_type=F32, handle=handle)
    st = bshd_strides(S, H, D)
    q = g.tensor(uid=FWD["q"], dim=(B, H, S, D), stride=st, data_type=F8)
    k = g.tensor(uid=FWD["k"], dim=(B, H, S, D), stride=st, data_type=F8)
    v = g.tensor(uid=FWD["v"], dim=(B, H, S, D), stride=st, data_type=F8)
    sc = {n: g.tensor(uid=FWD[n], dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=F32)
          for n in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o")}
    o, stats, amax_s, amax_o = g.sdpa_fp8(
        q=q, k=k, v=v,
        descale_q=sc["descale_q"], descale_k=sc["descale_k"], descale_v=sc["descale_v"],
        descale_s=sc["descale_s"], scale_s=sc["scale_s"], scale_o=sc["scale_o"],
        generate_stats=True, attn_scale=attn_scale, use_causal_mask=False,
    )
    o.set_uid(FWD["o"]).set_output(True).set_dim((B, H, S, D)).set_stride(st).set_data_type(cudnn_dtype(cudnn, otype))
    stats.set_uid(FWD["stats"]).set_output(True).set_dim((B, H, S, 1)).set_stride((H * S, S, 1, 1)).set_data_type(F32)
    for t, n in ((amax_s, "amax_s"), (amax_o, "amax_o")):
        t.set_uid(FWD[n]).set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(F32)
    return g


def fp8_bwd_graph(cudnn, handle, B, H, S, D, otype: str, attn_scale: float):
    """sdpa_fp8_backward graph: fp8 q/k/v/dO, O in `otype`; dQ/dK/dV in `otype`."""
    F8, F32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    OT = cudnn_dtype(cudnn, otype)
    g = cudnn.pygraph(io_data_type=F8, intermediate_data_type=F32, compute_data_type=F32, handle=handle)
    st = bshd_strides(S, H, D)
    q = g.tensor(uid=BWD["q"], dim=(B, H, S, D), stride=st, data_type=F8)
    k = g.tensor(uid=BWD["k"], dim=(B, H, S, D), stride=st, data_type=F8)
    v = g.tensor(uid=BWD["v"], dim=(B, H, S, D), stride=st, data_type=F8)
    o = g.tensor(uid=BWD["o"], dim=(B, H, S, D), stride=st, data_type=OT)
    dO = g.tensor(uid=BWD["dO"], dim=(B, H, S, D), stride=st, data_type=F8)
    stats = g.tensor(uid=BWD["stats"], dim=(B, H, S, 1), stride=(H * S, S, 1, 1), data_type=F32)
    names = ("descale_q", "descale_k", "descale_v", "descale_o", "descale_dO", "descale_s", "descale_dP",
             "scale_s", "scale_dQ", "scale_dK", "scale_dV", "scale_dP")
    sc = {n: g.tensor(uid=BWD[n], dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=F32) for n in names}
    dQ, dK, dV, amax_dQ, amax_dK, amax_dV, amax_dP = g.sdpa_fp8_backward(
        q=q, k=k, v=v, o=o, dO=dO, stats=stats, **sc,
        attn_scale=attn_scale, use_causal_mask=False, use_deterministic_algorithm=False,
    )
    for t, n in ((dQ, "dQ"), (dK, "dK"), (dV, "dV")):
        t.set_uid(BWD[n]).set_output(True).set_dim((B, H, S, D)).set_stride(st).set_data_type(OT)
    for t, n in ((amax_dQ, "amax_dQ"), (amax_dK, "amax_dK"), (amax_dV, "amax_dV"), (amax_dP, "amax_dP")):
        t.set_uid(BWD[n]).set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(F32)
    return g


def finalize_graph(cudnn, g) -> str:
    """validate -> operation graph -> heuristics A (+FALLBACK) -> build; returns the plan name."""
    g.validate()
    g.build_operation_graph()
    g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    g.check_support()
    g.build_plans()
    try:
        idx = getattr(g, "_plan_index", 0)
        return f"{g.get_plan_name_at_index(idx)} (#{idx} of {g.get_execution_plan_count()})"
    except Exception as exc:  # noqa: BLE001
        return f"? ({type(exc).__name__}: {exc})"[:200]


class CudnnFp8Attention:
    """Built fwd+bwd graphs plus preallocated buffers for one (S, otype)."""

    def __init__(self, torch, cudnn, handle, B, H, S, D, otype, attn_scale, device):
        self.torch, self.cudnn, self.handle = torch, cudnn, handle
        self.B, self.H, self.S, self.D, self.otype = B, H, S, D, otype
        self.device = device
        t0 = time.time()
        self.g_fwd = fp8_fwd_graph(cudnn, handle, B, H, S, D, otype, attn_scale)
        self.plan_fwd = finalize_graph(cudnn, self.g_fwd)
        self.build_s_fwd = round(time.time() - t0, 2)
        t0 = time.time()
        self.g_bwd = fp8_bwd_graph(cudnn, handle, B, H, S, D, otype, attn_scale)
        self.plan_bwd = finalize_graph(cudnn, self.g_bwd)
        self.build_s_bwd = round(time.time() - t0, 2)
        u8 = torch.uint8
        self.ws_fwd = torch.empty(max(1, self.g_fwd.get_workspace_size()), dtype=u8, device=device)
        self.ws_bwd = torch.empty(max(1, self.g_bwd.get_workspace_size()), dtype=u8, device=device)
        tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}[otype]
        self.o = empty_bshd(torch, B, H, S, D, tdt, device)
        self.dq = empty_bshd(torch, B, H, S, D, tdt, device)
        self.dk = empty_bshd(torch, B, H, S, D, tdt, device)
        self.dv = empty_bshd(torch, B, H, S, D, tdt, device)
        self.stats = torch.empty(B, H, S, 1, dtype=torch.float32, device=device)
        f = lambda v: scalar4(torch, v, device)  # noqa: E731
        self.amax = {n: f(0.0) for n in ("s", "o", "dQ", "dK", "dV", "dP")}
        # Output scales: 1 for bf16/fp16 outputs (unused there); fp8 outputs get delayed scales.
        self.scale_s, self.descale_s = f(1.0), f(1.0)
        self.scale_o, self.descale_o = f(1.0), f(1.0)
        self.scale_dP, self.descale_dP = f(1.0), f(1.0)
        self.scale_dQ, self.scale_dK, self.scale_dV = f(1.0), f(1.0), f(1.0)
        self.desc_dQ, self.desc_dK, self.desc_dV = f(1.0), f(1.0), f(1.0)

    def set_scale_s(self, s: float):
        self.scale_s.fill_(s)
        self.descale_s.fill_(1.0 / s)

    def bind(self, qq, dq_, kq, dk_, vq, dv_, dOq, ddO):
        """Fix the variant packs for one set of quantized inputs (tensors must stay alive)."""
        self.pack_fwd = {
            FWD["q"]: qq, FWD["k"]: kq, FWD["v"]: vq,
            FWD["descale_q"]: dq_, FWD["descale_k"]: dk_, FWD["descale_v"]: dv_,
            FWD["descale_s"]: self.descale_s, FWD["scale_s"]: self.scale_s, FWD["scale_o"]: self.scale_o,
            FWD["o"]: self.o, FWD["stats"]: self.stats, FWD["amax_s"]: self.amax["s"], FWD["amax_o"]: self.amax["o"],
        }
        self.pack_bwd = {
            BWD["q"]: qq, BWD["k"]: kq, BWD["v"]: vq, BWD["o"]: self.o, BWD["dO"]: dOq, BWD["stats"]: self.stats,
            BWD["descale_q"]: dq_, BWD["descale_k"]: dk_, BWD["descale_v"]: dv_, BWD["descale_o"]: self.descale_o,
            BWD["descale_dO"]: ddO, BWD["descale_s"]: self.descale_s, BWD["descale_dP"]: self.descale_dP,
            BWD["scale_s"]: self.scale_s, BWD["scale_dQ"]: self.scale_dQ, BWD["scale_dK"]: self.scale_dK,
            BWD["scale_dV"]: self.scale_dV, BWD["scale_dP"]: self.scale_dP,
            BWD["dQ"]: self.dq, BWD["dK"]: self.dk, BWD["dV"]: self.dv,
            BWD["amax_dQ"]: self.amax["dQ"], BWD["amax_dK"]: self.amax["dK"], BWD["amax_dV"]: self.amax["dV"],
            BWD["amax_dP"]: self.amax["dP"],
        }

    def fwd(self):
        self.g_fwd.execute(self.pack_fwd, self.ws_fwd, handle=self.handle)

    def bwd(self):
        self.g_bwd.execute(self.pack_bwd, self.ws_bwd, handle=self.handle)

    def calibrate(self) -> dict:
        """Delayed scaling for dP (and O/dQ/dK/dV when they are fp8): one pass with
        scale 1 reads the amaxes, then scale = 448/amax. Returns what it set."""
        torch = self.torch
        for t in (self.scale_o, self.descale_o, self.scale_dP, self.descale_dP, self.scale_dQ, self.scale_dK,
                  self.scale_dV, self.desc_dQ, self.desc_dK, self.desc_dV):
            t.fill_(1.0)  # pass 1 runs unscaled, whatever an earlier calibration left
        self.fwd()
        torch.cuda.synchronize()
        info = {"amax_s": float(self.amax["s"]), "amax_o_pass1": float(self.amax["o"])}
        if self.otype == "fp8":
            a = float(self.amax["o"])
            if math.isfinite(a) and a > 0:
                self.scale_o.fill_(FP8_MAX / a)
                self.descale_o.fill_(a / FP8_MAX)
            self.fwd()  # O must be rewritten with its real scale before the backward reads it
        self.bwd()
        torch.cuda.synchronize()
        a = float(self.amax["dP"])
        info["amax_dP_pass1"] = a
        if math.isfinite(a) and a > 0:
            self.scale_dP.fill_(FP8_MAX / a)
            self.descale_dP.fill_(a / FP8_MAX)
        else:
            info["dP_scale_note"] = "amax_dP not usable; dP scale left at 1"
        if self.otype == "fp8":
            for n, s, d in (("dQ", self.scale_dQ, self.desc_dQ), ("dK", self.scale_dK, self.desc_dK),
                            ("dV", self.scale_dV, self.desc_dV)):
                a = float(self.amax[n])
                info[f"amax_{n}_pass1"] = a
                if math.isfinite(a) and a > 0:
                    s.fill_(FP8_MAX / a)
                    d.fill_(a / FP8_MAX)
        info["scale_dP"] = float(self.scale_dP)
        info["scale_s"] = float(self.scale_s)
        return info

    def dp_scale_sweep(self, base_scale: float, mults, err_fn) -> dict:
        """Re-run the backward with scale_dP = base_scale * m for each m; err_fn(outputs) -> errors.

        Why: NVIDIA's reference model scales the quantized dS = P*(dP-D)*attn_scale by a
        scale derived from amax(dP = dO V^T); dS is ~max(P) times smaller, and at S=25696
        P ~ 1/S, so that scale may push dS into e4m3 underflow. The sweep shows which
        scale the kernel's dQ/dK accuracy actually wants. Restores the calibrated scale."""
        torch = self.torch
        keep = (float(self.scale_dP), float(self.descale_dP))
        out = {}
        for m in mults:
            sc = base_scale * m
            self.scale_dP.fill_(sc)
            self.descale_dP.fill_(1.0 / sc)
            self.bwd()
            torch.cuda.synchronize()
            out[f"x{m:g}"] = {"scale_dP": sc, "amax_dP": float(self.amax["dP"]), **err_fn(list(self.outputs_f32()))}
        self.scale_dP.fill_(keep[0])
        self.descale_dP.fill_(keep[1])
        return out

    def outputs_f32(self):
        """O, dQ, dK, dV dequantized to fp32 (fp8 outputs times their descale)."""
        if self.otype == "fp8":
            return (self.o.float() * self.descale_o.reshape(()), self.dq.float() * self.desc_dQ.reshape(()),
                    self.dk.float() * self.desc_dK.reshape(()), self.dv.float() * self.desc_dV.reshape(()))
        return self.o.float(), self.dq.float(), self.dk.float(), self.dv.float()


# --------------------------------------------------------------------------------------
# the probe
# --------------------------------------------------------------------------------------


def main() -> int:
    global OUT_FILE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="CPU self-check at a tiny size; no GPU needed")
    ap.add_argument("--seq", type=int, default=25440 + 256, help="timing sequence (video 25440 + text 256)")
    ap.add_argument("--acc-seq", type=int, default=4096, help="sequence for the accuracy runs")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--do-scale", type=float, default=1e-3, help="dO ~ N(0,1) times this")
    ap.add_argument("--otypes", default="bf16,fp16,fp8", help="cuDNN FP8 output dtypes to try, in order")
    ap.add_argument("--scale-s", type=float, default=FP8_MAX,
                    help="FP8 scale of the softmax P in [0,1]; NVIDIA tests use 64, torch's wrapper 256")
    ap.add_argument("--budget-s", type=float, default=170.0, help="skip optional cases past this wall time")
    ap.add_argument("--out", default=os.environ.get("OUT", "./out"))
    args = ap.parse_args()
    global DO_SCALE
    DO_SCALE = args.do_scale

    os.makedirs(args.out, exist_ok=True)
    OUT_FILE = os.path.join(args.out, "fp8_attention.jsonl" if not args.dry else "fp8_attention_dry.jsonl")
    open(OUT_FILE, "w").close()
    log(f"writing {OUT_FILE}")

    env: dict = {"python": sys.version.split()[0], "argv": sys.argv[1:]}
    torch = import_torch()
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["device"] = torch.cuda.get_device_name()
            env["capability"] = list(torch.cuda.get_device_capability())
        try:
            env["torch_cudnn_version"] = torch.backends.cudnn.version()
        except Exception as exc:  # noqa: BLE001
            env["torch_cudnn_version"] = f"error: {exc}"
    optional_modules(env)
    cudnn = None
    try:
        cudnn = import_cudnn_frontend(torch, env)
        env["cudnn_frontend_import"] = "ok"
    except Exception as exc:  # noqa: BLE001
        env["cudnn_frontend_import"] = f"{type(exc).__name__}: {exc}"[:500]
    record("env", **env)
    log("env: " + json.dumps(env, default=str))

    if args.dry:
        return dry_run(args, torch, cudnn)

    if torch is None or not torch.cuda.is_available():
        log("no CUDA: nothing to time (use --dry for the CPU self-check)")
        summary()
        return 1

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 reference must be real fp32
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    B, H, S, D = args.batch, args.heads, args.seq, args.dim
    attn_scale = 1.0 / math.sqrt(D)
    F_fwd = flops_fwd(B, H, S, D)
    F_bwd = 2.5 * F_fwd
    common = {"B": B, "H": H, "S": S, "D": D, "layout": "BSHD storage, [B,H,S,D] view"}

    handle = None
    if cudnn is not None:
        try:
            handle = cudnn.create_handle()
            handle._ordinal = torch.cuda.current_device()  # spares a cuda-python device lookup
            cudnn.set_stream(handle, torch.cuda.current_stream().cuda_stream)
        except Exception as exc:  # noqa: BLE001
            record("cudnn_handle", **err_fields(exc))
            handle = None

    gen = torch.Generator(device=dev).manual_seed(0)
    q = make_bshd(torch, B, H, S, D, torch.bfloat16, dev, gen=gen)
    k = make_bshd(torch, B, H, S, D, torch.bfloat16, dev, gen=gen)
    v = make_bshd(torch, B, H, S, D, torch.bfloat16, dev, gen=gen)
    dO = make_bshd(torch, B, H, S, D, torch.bfloat16, dev, scale=DO_SCALE, gen=gen)

    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ref_ms: dict = {}
    full_ref: dict = {}  # bf16 cuDNN O/dQ/dK/dV at full size: the fp8 outputs are compared to it
    DP_MULTS = (1, 8, 64, 512, 4096)

    # ---- case 1: bf16 torch SDPA references --------------------------------------------
    def ref_case(backend):
        def fn():
            with sdpa_kernel(backend):
                with torch.no_grad():
                    t_f = bench(torch, lambda: F.scaled_dot_product_attention(q, k, v, scale=attn_scale),
                                args.warmup, args.iters)
                qg, kg, vg = (x.detach().requires_grad_(True) for x in (q, k, v))
                out = F.scaled_dot_product_attention(qg, kg, vg, scale=attn_scale)
                # backward alone: replay autograd on one retained forward graph
                t_b = bench(torch, lambda: torch.autograd.grad(out, (qg, kg, vg), dO, retain_graph=True),
                            args.warmup, args.iters)
                out = None  # free the retained graph

                def fb():
                    o = F.scaled_dot_product_attention(qg, kg, vg, scale=attn_scale)
                    torch.autograd.grad(o, (qg, kg, vg), dO)

                t_fb = bench(torch, fb, args.warmup, args.iters)
                if backend == SDPBackend.CUDNN_ATTENTION:
                    o = F.scaled_dot_product_attention(qg, kg, vg, scale=attn_scale)
                    full_ref["bf16"] = [o.detach()] + list(torch.autograd.grad(o, (qg, kg, vg), dO))
                    del o
            ref_ms[backend.name] = t_fb["median"]
            return {"ms_fwd": t_f["median"], "ms_bwd": t_b["median"], "ms_fwdbwd": t_fb["median"],
                    "tflops_fwd": tflops(F_fwd, t_f["median"]), "tflops_bwd": tflops(F_bwd, t_b["median"]),
                    "tflops_fwdbwd": tflops(F_fwd + F_bwd, t_fb["median"]),
                    "timings": {"fwd": t_f, "bwd": t_b, "fwdbwd": t_fb}}
        return fn

    run_case("ref_bf16_cudnn", ref_case(SDPBackend.CUDNN_ATTENTION), **common)
    run_case("ref_bf16_flash", ref_case(SDPBackend.FLASH_ATTENTION), **common)
    torch.cuda.empty_cache()

    # ---- case 2: cuDNN frontend FP8 fwd+bwd --------------------------------------------
    # Quantization overhead per step: q,k,v amax+cast before the forward, dO before the
    # backward. Where only FP8 outputs build (sm90, cuDNN 9.19), O/dQ/dK/dV would also need converting to
    # bf16 afterwards: not timed here.
    def quant_case():
        t_qkv = bench(torch, lambda: [quantize_fp8(torch, x) for x in (q, k, v)], args.warmup, args.iters)
        t_do = bench(torch, lambda: quantize_fp8(torch, dO), args.warmup, args.iters)
        return {"ms_quant_qkv": t_qkv["median"], "ms_quant_dO": t_do["median"]}

    qrec = run_case("fp8_quantize_overhead", quant_case, **common)
    quant_ms = (qrec.get("ms_quant_qkv") or 0.0) + (qrec.get("ms_quant_dO") or 0.0)

    qq, dq_ = quantize_fp8(torch, q)
    kq, dk_ = quantize_fp8(torch, k)
    vq, dv_ = quantize_fp8(torch, v)
    dOq, ddO = quantize_fp8(torch, dO)

    otypes = [o.strip() for o in args.otypes.split(",") if o.strip()]
    built: dict = {}
    sweep_done: list = []  # the dP-scale sweep runs for the first output type that builds
    for ot in otypes:
        case = f"cudnn_fp8_o{ot}"
        if cudnn is None or handle is None:
            record(case, status="skipped",
                   reason="cudnn frontend unavailable: " + str(env.get("cudnn_frontend_import")), **common)
            continue
        if time.time() - T0 > args.budget_s:
            record(case, status="skipped", reason="time budget", **common)
            continue

        def fp8_case(ot=ot):
            att = CudnnFp8Attention(torch, cudnn, handle, B, H, S, D, ot, attn_scale, dev)
            att.set_scale_s(args.scale_s)
            att.bind(qq, dq_, kq, dk_, vq, dv_, dOq, ddO)
            cal = att.calibrate()
            t_f = bench(torch, att.fwd, args.warmup, args.iters)
            t_b = bench(torch, att.bwd, args.warmup, args.iters)
            t_fb = bench(torch, lambda: (att.fwd(), att.bwd()), args.warmup, args.iters)
            built[ot] = True
            ref = ref_ms.get("CUDNN_ATTENTION")
            res = {
                "otype": ot, "dQdKdV_dtype": ot, "scale_s": args.scale_s,
                "plan_fwd": att.plan_fwd, "plan_bwd": att.plan_bwd,
                "build_s_fwd": att.build_s_fwd, "build_s_bwd": att.build_s_bwd,
                "workspace_bytes": [att.ws_fwd.numel(), att.ws_bwd.numel()],
                "ms_fwd": t_f["median"], "ms_bwd": t_b["median"], "ms_fwdbwd": t_fb["median"],
                "ms_fwdbwd_plus_quant": round(t_fb["median"] + quant_ms, 4),
                "tflops_fwd": tflops(F_fwd, t_f["median"]), "tflops_bwd": tflops(F_bwd, t_b["median"]),
                "tflops_fwdbwd": tflops(F_fwd + F_bwd, t_fb["median"]),
                "calibration": cal, "timings": {"fwd": t_f, "bwd": t_b, "fwdbwd": t_fb},
            }
            if ref:
                res["ratio_vs_bf16_cudnn_fwdbwd"] = round(t_fb["median"] / ref, 3)
                res["ratio_vs_bf16_cudnn_incl_quant"] = round((t_fb["median"] + quant_ms) / ref, 3)
            # full-size accuracy vs bf16 cuDNN (P ~ 1/S is smallest here: the fp8 worst case)
            names = ("O", "dQ", "dK", "dV")

            def err_full(outs):
                r = full_ref.get("bf16")
                fin = all(bool(torch.isfinite(t).all()) for t in outs)
                if r is None:
                    return {"finite": fin}
                return {"finite": fin, "relerr_vs_bf16": {n: round(rel_err(torch, a, b), 5)
                                                          for n, a, b in zip(names, outs, r, strict=True)}}

            att.fwd()
            att.bwd()
            torch.cuda.synchronize()
            res.update(err_full(list(att.outputs_f32())))
            if not sweep_done:
                sweep_done.append(True)
                base = float(att.scale_dP)
                res["dP_scale_sweep_full"] = att.dp_scale_sweep(base, DP_MULTS, err_full)
            att = None
            torch.cuda.empty_cache()
            return res

        run_case(case, fp8_case, **common)

    # ---- case 3: torch's experimental FP8 SDPA (forward only) --------------------------
    run_case("torch_fp8_quantized",
             lambda: torch_quantized_case(torch, args, q, k, v, attn_scale, F_fwd, ref_ms), **common)

    qq = kq = vq = dOq = None
    full_ref.clear()
    torch.cuda.empty_cache()

    # ---- accuracy at a shorter sequence -------------------------------------------------
    for label, qk_scale in (("n01", 1.0), ("qk_x3", 3.0)):
        if time.time() - T0 > args.budget_s:
            record(f"acc_{label}", status="skipped", reason="time budget")
            continue
        accuracy(torch, cudnn, handle, args, label, qk_scale, otypes, built, attn_scale, dev, DP_MULTS)

    summary()
    return 0


def torch_quantized_case(torch, args, q, k, v, attn_scale, F_fwd, ref_ms):
    """torch.nn.attention.experimental._scaled_dot_product_attention_quantized.

    torch's wrapper routes PER_HEAD descales to FA3 (needs the external flash_attn_3
    kernels registered) and, in newer torch, PER_TENSOR to a cuDNN op; it is
    forward-only either way. Records what exists, then times whatever runs."""
    info: dict = {}
    mod = importlib.import_module("torch.nn.attention.experimental._scaled_dot_product_attention_quantized")
    fn = mod._scaled_dot_product_attention_quantized
    DT = mod.DescaleType
    info["descale_types"] = [m.name for m in DT]
    info["aten_ops"] = [n for n in dir(torch.ops.aten) if "quantized" in n and "attention" in n]
    try:
        import torch.nn.attention as tna

        info["flash_impls"] = list(tna.list_flash_attention_impls())
    except Exception as exc:  # noqa: BLE001
        info["flash_impls"] = f"error: {exc}"
    B, H = q.shape[0], q.shape[1]
    qq, dq_ = quantize_fp8(torch, q)
    kq, dk_ = quantize_fp8(torch, k)
    vq, dv_ = quantize_fp8(torch, v)
    attempts = {}

    def timed(call):
        with torch.no_grad():
            out = call()
            torch.cuda.synchronize()
            t = bench(torch, call, args.warmup, args.iters)
        return out, t

    if "PER_TENSOR" in info["descale_types"]:
        try:
            call = lambda: fn(qq, kq, vq, scale=attn_scale, q_descale=dq_, k_descale=dk_, v_descale=dv_,  # noqa: E731
                              q_descale_type=DT.PER_TENSOR, k_descale_type=DT.PER_TENSOR, v_descale_type=DT.PER_TENSOR)
            out, t = timed(call)
            attempts["PER_TENSOR_cudnn"] = {"ms_fwd": t["median"], "tflops_fwd": tflops(F_fwd, t["median"]),
                                            "out_dtype": str(out.dtype)}
        except Exception as exc:  # noqa: BLE001
            attempts["PER_TENSOR_cudnn"] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
    # PER_HEAD goes to FA3; activating it needs the flash_attn_3 kernels (not in torch).
    try:
        import torch.nn.attention as tna

        try:
            tna.activate_flash_attention_impl("FA3")
            attempts["FA3_activate"] = "ok"
        except Exception as exc:  # noqa: BLE001
            attempts["FA3_activate"] = f"{type(exc).__name__}: {exc}"[:400]
        ph = lambda d: d.reshape(1, 1).expand(B, H).contiguous()  # noqa: E731  per-head descale (B, H_kv)
        call = lambda: fn(qq, kq, vq, scale=attn_scale, q_descale=ph(dq_), k_descale=ph(dk_), v_descale=ph(dv_))  # noqa: E731
        out, t = timed(call)
        attempts["PER_HEAD_fa3"] = {"ms_fwd": t["median"], "tflops_fwd": tflops(F_fwd, t["median"]),
                                    "out_dtype": str(out.dtype)}
    except Exception as exc:  # noqa: BLE001
        attempts["PER_HEAD_fa3"] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
    finally:
        try:
            import torch.nn.attention as tna

            tna.restore_flash_attention_impl(False)
        except Exception:  # noqa: BLE001
            pass
    info["attempts"] = attempts
    best = [a["ms_fwd"] for a in attempts.values() if isinstance(a, dict) and "ms_fwd" in a]
    if best:
        info["ms_fwd"] = min(best)
        info["tflops_fwd"] = tflops(F_fwd, info["ms_fwd"])
    else:
        info["note"] = "no FP8 torch path ran (see attempts)"
    return info


def accuracy(torch, cudnn, handle, args, label, qk_scale, otypes, built, attn_scale, dev, dp_mults):
    """Rel. errors of O, dQ, dK, dV at --acc-seq vs an fp32 reference and vs bf16 cuDNN.

    Inputs are bf16 N(0,1) (q,k times `qk_scale` to sharpen the softmax), dO ~ N(0,1) * --do-scale.
    fp32 reference: torch MATH SDPA on the bf16 inputs upcast to fp32 (TF32 off)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, H, S, D = args.batch, args.heads, args.acc_seq, args.dim
    common = {"B": B, "H": H, "S": S, "D": D, "inputs": label, "qk_scale": qk_scale}
    gen = torch.Generator(device=dev).manual_seed(1)
    q = make_bshd(torch, B, H, S, D, torch.bfloat16, dev, scale=qk_scale, gen=gen)
    k = make_bshd(torch, B, H, S, D, torch.bfloat16, dev, scale=qk_scale, gen=gen)
    v = make_bshd(torch, B, H, S, D, torch.bfloat16, dev, gen=gen)
    dO = make_bshd(torch, B, H, S, D, torch.bfloat16, dev, scale=DO_SCALE, gen=gen)
    refs: dict = {}

    def grads(backend, dtype):
        qg, kg, vg = (x.detach().to(dtype).requires_grad_(True) for x in (q, k, v))
        with sdpa_kernel(backend):
            o = F.scaled_dot_product_attention(qg, kg, vg, scale=attn_scale)
        dq, dk, dv = torch.autograd.grad(o, (qg, kg, vg), dO.to(dtype))
        return [t.detach().float() for t in (o, dq, dk, dv)]

    def ref32():
        refs["f32"] = grads(SDPBackend.MATH, torch.float32)
        # The tensors FP8 backward quantizes, in fp32: dP = dO V^T and dS = P*(dP-D)*attn_scale.
        # Recorded next to the kernel's amax_dP so the first run shows which one it reports.
        with torch.no_grad():
            qf, kf, vf, dOf = (x.float() for x in (q, k, v, dO))
            p = torch.softmax(qf @ kf.transpose(-1, -2) * attn_scale, dim=-1)
            dP = dOf @ vf.transpose(-1, -2)
            Dr = (refs["f32"][0] * dOf).sum(-1, keepdim=True)
            ds = p * (dP - Dr)
            refs["amax_ref"] = {"P": float(p.amax()), "dP": float(dP.abs().amax()),
                                "dS_no_attn_scale": float(ds.abs().amax()), "dS": float(ds.abs().amax()) * attn_scale}
            del p, dP, ds
        return {"amax_ref": refs["amax_ref"]}

    def ref_bf16():
        refs["bf16"] = grads(SDPBackend.CUDNN_ATTENTION, torch.bfloat16)
        return errs(refs["bf16"])

    names = ("O", "dQ", "dK", "dV")

    def errs(outs):
        res = {}
        for ref_name in ("f32", "bf16"):
            r = refs.get(ref_name)
            if r is None or r is outs:
                continue
            res[f"relerr_vs_{ref_name}"] = {n: round(rel_err(torch, a, b), 5)
                                            for n, a, b in zip(names, outs, r, strict=True)}
        return res

    run_case(f"acc_{label}_ref_f32", ref32, **common)
    run_case(f"acc_{label}_bf16_cudnn", ref_bf16, **common)

    if cudnn is None or handle is None:
        record(f"acc_{label}_cudnn_fp8", status="skipped", reason="cudnn frontend unavailable", **common)
    else:
        qq, dq_ = quantize_fp8(torch, q)
        kq, dk_ = quantize_fp8(torch, k)
        vq, dv_ = quantize_fp8(torch, v)
        dOq, ddO = quantize_fp8(torch, dO)
        # Only the output types that built at full size (or all, if none did: the error may differ).
        todo = [ot for ot in otypes if built.get(ot)] or otypes
        for ot in todo:
            if time.time() - T0 > args.budget_s:
                record(f"acc_{label}_cudnn_fp8_o{ot}", status="skipped", reason="time budget", **common)
                continue
            att_holder = {}

            def build(ot=ot, att_holder=att_holder):
                # graphs depend only on shape/dtype: build once per (S, otype), rebind per input set
                key = (S, ot)
                if key not in ACC_GRAPHS:
                    ACC_GRAPHS[key] = CudnnFp8Attention(torch, cudnn, handle, B, H, S, D, ot, attn_scale, dev)
                att_holder["att"] = ACC_GRAPHS[key]
                att_holder["att"].bind(qq, dq_, kq, dk_, vq, dv_, dOq, ddO)
                return {"plan_fwd": att_holder["att"].plan_fwd, "plan_bwd": att_holder["att"].plan_bwd}

            if run_case(f"acc_{label}_cudnn_fp8_o{ot}_build", build, **common).get("status") != "ok":
                continue
            att = att_holder["att"]
            # scale_s variants only on the first type and plain inputs: P's fp8 scale is a free knob
            s_list = [args.scale_s] + ([256.0, 64.0] if (ot == todo[0] and label == "n01") else [])
            for s in dict.fromkeys(s_list):
                def one(att=att, s=s, ot=ot):
                    att.set_scale_s(s)
                    cal = att.calibrate()
                    att.fwd()
                    att.bwd()
                    torch.cuda.synchronize()
                    res = {"calibration": cal, **errs(list(att.outputs_f32()))}
                    if ot == todo[0] and s == args.scale_s:
                        base = float(att.scale_dP)
                        mults = list(dp_mults)
                        am = refs.get("amax_ref", {})
                        for key in ("dS", "dS_no_attn_scale"):
                            if am.get(key):
                                # the multiple of the calibrated scale that maps amax(ref key) to 448
                                mults.append(round(FP8_MAX / am[key] / base, 3))
                        res["dP_scale_sweep"] = att.dp_scale_sweep(base, mults, errs)
                    return res

                run_case(f"acc_{label}_cudnn_fp8_o{ot}_s{int(s)}", one, otype=ot, scale_s=s, **common)
            del att, att_holder

    # torch's experimental per-tensor cuDNN FP8 forward, if this torch has it
    def tq():
        mod = importlib.import_module("torch.nn.attention.experimental._scaled_dot_product_attention_quantized")
        DT = mod.DescaleType
        if "PER_TENSOR" not in [m.name for m in DT]:
            return {"status_note": "no PER_TENSOR descale in this torch"}
        qq, dq_ = quantize_fp8(torch, q)
        kq, dk_ = quantize_fp8(torch, k)
        vq, dv_ = quantize_fp8(torch, v)
        with torch.no_grad():
            o = mod._scaled_dot_product_attention_quantized(
                qq, kq, vq, scale=attn_scale, q_descale=dq_, k_descale=dk_, v_descale=dv_,
                q_descale_type=DT.PER_TENSOR, k_descale_type=DT.PER_TENSOR, v_descale_type=DT.PER_TENSOR)
        return {f"relerr_O_vs_{n}": round(rel_err(torch, o, refs[n][0]), 5) for n in ("f32", "bf16") if n in refs}

    run_case(f"acc_{label}_torch_fp8_quantized_fwd", tq, **common)
    refs.clear()
    torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------
# dry run (CPU) and summary
# --------------------------------------------------------------------------------------


def dry_run(args, torch, cudnn) -> int:
    """Tiny CPU self-check: the helpers run, the graphs can be described, cases listed."""
    B, H, S, D = 1, 2, 64, 128
    if torch is not None:
        def cpu_bits():
            x = make_bshd(torch, B, H, S, D, torch.bfloat16, "cpu")
            xq, d = quantize_fp8(torch, x)
            back = xq.float() * d.reshape(())
            o = torch.nn.functional.scaled_dot_product_attention(x.float(), x.float(), x.float(),
                                                                 scale=1 / math.sqrt(D))
            return {"quant_relerr": round(rel_err(torch, back, x), 5), "fp8_strides": list(xq.stride()),
                    "sdpa_out": list(o.shape), "flops_fwd_full": flops_fwd(1, 16, 25696, 128)}
        run_case("dry_cpu_helpers", cpu_bits)
        try:
            mod = importlib.import_module("torch.nn.attention.experimental._scaled_dot_product_attention_quantized")
            record("dry_torch_quantized_sdpa", status="present", descale_types=[m.name for m in mod.DescaleType])
        except Exception as exc:  # noqa: BLE001
            record("dry_torch_quantized_sdpa", **err_fields(exc))
    if cudnn is not None:
        # Describe the graphs without a GPU: node construction is pure Python; validate()
        # may need the backend (no libcudnn/GPU here), so its outcome is only reported.
        for ot in [o.strip() for o in args.otypes.split(",") if o.strip()]:
            def desc(ot=ot):
                res = {}
                for name, mk in (("fwd", fp8_fwd_graph), ("bwd", fp8_bwd_graph)):
                    g = mk(cudnn, None, B, H, S, D, ot, 1 / math.sqrt(D))
                    res[f"{name}_nodes"] = len(getattr(g, "_nodes", []))
                    try:
                        g.validate()
                        res[f"{name}_validate"] = "ok"
                    except Exception as exc:  # noqa: BLE001
                        res[f"{name}_validate"] = f"{type(exc).__name__}: {exc}"[:200]
                return res
            run_case(f"dry_cudnn_graph_o{ot}", desc)
    cases = ["ref_bf16_cudnn", "ref_bf16_flash", "fp8_quantize_overhead"]
    cases += [f"cudnn_fp8_o{o}" for o in args.otypes.split(",")] + ["torch_fp8_quantized"]
    cases += [f"acc_{lbl}_*" for lbl in ("n01", "qk_x3")]
    would = {
        "cases": cases,
        "torch": torch is not None,
        "cudnn_frontend": cudnn is not None,
        "note": "on the GPU box all cases run; each failure is recorded and skipped",
    }
    record("dry_plan", **would)
    log("would run: " + json.dumps(would))
    summary()
    return 0


def summary() -> None:
    print("\n=== summary (ms are medians; ratio = fp8 fwd+bwd / bf16 cuDNN fwd+bwd) ===", flush=True)
    hdr = (f"{'case':34s} {'status':7s} {'S':>6s} {'fwd':>8s} {'bwd':>8s} {'f+b':>8s} "
           f"{'TF/s f':>7s} {'TF/s b':>7s} {'ratio':>6s} {'+quant':>6s}  note")
    print(hdr)
    print("-" * len(hdr))
    for r in RESULTS:
        if r["case"] == "env":
            continue
        def g(k, fmt="{:8.2f}", r=r):
            v = r.get(k)
            return fmt.format(v) if isinstance(v, (int, float)) else " " * len(fmt.format(0))
        note = ""
        if r.get("status") == "error":
            note = r.get("error", "")[:110]
        elif "relerr_vs_f32" in r or "relerr_vs_bf16" in r:
            parts = []
            for ref in ("f32", "bf16"):
                e = r.get(f"relerr_vs_{ref}")
                if e:
                    parts.append(f"vs {ref}: " + " ".join(f"{k}={v:.3g}" for k, v in e.items()))
            note = "; ".join(parts)
        elif "ms_quant_qkv" in r:
            note = f"quant qkv {r['ms_quant_qkv']:.3f} ms, dO {r['ms_quant_dO']:.3f} ms"
        elif r.get("reason"):
            note = r["reason"][:110]
        elif r.get("attempts"):
            note = json.dumps(r["attempts"])[:110]
        elif r.get("plan_fwd"):
            note = f"plans: {str(r['plan_fwd'])[:40]} | {str(r['plan_bwd'])[:40]}"
        print(f"{r['case'][:34]:34s} {str(r.get('status', ''))[:7]:7s} "
              f"{g('S', '{:6d}')} {g('ms_fwd')} {g('ms_bwd')} {g('ms_fwdbwd')} "
              f"{g('tflops_fwd', '{:7.0f}')} {g('tflops_bwd', '{:7.0f}')} {g('ratio_vs_bf16_cudnn_fwdbwd', '{:6.3f}')} "
              f"{g('ratio_vs_bf16_cudnn_incl_quant', '{:6.3f}')}  {note}")
    print(f"\nresults: {OUT_FILE}  (total {time.time() - T0:.1f}s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
