"""Quantized frozen base weights: `base_model_precision` = "int8-torchao" or "fp8-torchao".

What is quantized: every `nn.Linear` inside the transformer's 54 dual-stream blocks (attention projections,
MLPs, AdaLN modulation): 98 % of the weights. Embedders, token refiner and output head (0.17 B params) stay in
the unquantized dtype, as do biases and norms. The weights become torchao tensors (`torchao.quantize_`):
  int8-torchao  `Int8WeightOnlyConfig`: int8 per output channel (fp32 scale); the matmul dequantizes to the
                activation dtype (torchao's weight-only linear). Half the bytes of bf16, about bf16's speed.
  fp8-torchao   `Float8WeightOnlyConfig`: float8 e4m3 per output channel. On GPUs with FP8 tensor cores
                (compute capability 8.9+) the video-stream linears (the large matmuls) run in FP8: activations
                are scaled per token as they come (dynamic rowwise scaling), `torch._scaled_mm` computes the
                forward and the input gradient (`Float8Matmul`). The other linears dequantize like int8.
Everything else (the LoRA weights, their gradients, the optimizer) stays in fp32/bf16: PEFT wraps each
quantized Linear with its torchao-aware LoRA layer (`peft.tuners.lora.torchao.TorchaoLoraLinear`), and the
frozen base passes gradients to its input through the quantized matmul.

Quantization happens once per run, after caching, block by block on the training device: one block's
unquantized weights are there at a time, never the whole model (the model waits in host memory while the
encoders cache). With group offload, offload.py then moves the quantized blocks to pinned host memory and
streams the quantized bytes (torchao tensors' inner `qdata` / `scale`).
The saved LoRA is the usual full-precision file: it loads onto the bf16 model.

This module's top level imports no torch (the doctor, fit and validation read its facts); torch and torchao
are imported by the functions that quantize.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import cast

from hvtui.core.formatting import human_bytes

MODES = ("int8-torchao", "fp8-torchao")
TORCHAO_MIN = "0.18"          # the torchao whose kernels are built for torch >= 2.11 (pyproject.toml)
TORCH_MIN = "2.11"
FP8_MIN_CAPABILITY = (8, 9)   # Ada (RTX 40xx, L4, L40S) and Hopper (H100, H200) or newer: FP8 tensor cores
FP8_GPUS = "RTX 40xx, L4, L40S, H100, H200, B200"
INT8_ALTERNATIVE = ('use base_model_precision = "int8-torchao" (int8 weights, bf16 matmuls: the same memory, '
                    'runs on any GPU and the CPU) or "bf16"')
# video-stream linears of a block: the matmuls with one row per video token (25k at 480p x 61). The text
# stream (a few hundred rows) and the AdaLN modulation (one row) are too small for FP8 to pay its scaling.
FP8_COMPUTE_LINEARS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "ff.net.0.proj", "ff.net.2")


class QuantizationError(Exception):
    """The preset's quantized mode cannot run here; `hint` names what to use instead."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


def is_quantized(precision: str) -> bool:
    return precision in MODES


def block_bytes_per_param(precision: str) -> float:
    """Bytes per transformer-block parameter in GPU (or pinned host) memory: 1 for the quantized modes (the
    per-channel fp32 scales add 4 bytes per 2,048-8,192 weights: under 0.2 %), 2 for bf16."""
    return 1.0 if is_quantized(precision) else 2.0


def fp8_hardware_problem(gpus: list[tuple[str, tuple[int, int] | None]]) -> str | None:
    """Why FP8 matmuls cannot run on these GPUs ([(name, compute capability)]; empty = no CUDA GPU), or
    None. A capability NVML could not tell is not a problem here (the run checks the kernel itself)."""
    if not gpus:
        return ("fp8-torchao runs its matmuls on FP8 tensor cores (NVIDIA compute capability "
                f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]}+: {FP8_GPUS}); this machine has no CUDA GPU")
    old = [(n, cc) for n, cc in gpus if cc is not None and tuple(cc) < FP8_MIN_CAPABILITY]
    if old:
        name, cc = old[0]
        return (f"{name} (compute capability {cc[0]}.{cc[1]}) has no FP8 tensor cores; fp8-torchao needs "
                f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]}+ ({FP8_GPUS})")
    return None


# ------------------------------------------------------------------------------------------- torch side
def import_torchao():
    """torchao, imported without its import-time chatter (its CUDA extensions failing to load on a CPU box,
    torch's pytree deprecation notes): those say nothing a user can act on. Raises QuantizationError when it
    is missing."""
    quiet = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(max(q.level, logging.ERROR))
    try:
        import torchao
    except Exception as e:   # missing, or built for another torch (its import fails in various ways)
        raise QuantizationError(f"torchao cannot be imported ({e})",
                                f'pip install "torchao>={TORCHAO_MIN}", or use base_model_precision = "bf16"') from None
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    return torchao


def fp8_self_check(device) -> str | None:
    """Run the FP8 matmul (forward and input gradient) once on `device`; the error text if this GPU / torch
    build cannot, else None. `_scaled_mm` with per-row scales needs compute capability 8.9+ and a recent
    cuBLAS / CUTLASS."""
    import torch

    from hvtui.core.train.quantized_linear import float8_linear, rowwise_fp8

    try:
        g = torch.Generator(device=device).manual_seed(0)
        w = torch.randn(64, 32, device=device, generator=g)
        q, s = rowwise_fp8(w)
        x = torch.randn(16, 32, device=device, generator=g, requires_grad=True)
        y = float8_linear(x, q, s)
        y.sum().backward()
        ref = x.detach() @ (q.float() * s).t()
        err = float((y.detach().float() - ref).norm() / ref.norm())   # detached: torch warns on a graph's scalar
        assert x.grad is not None
        if not err < 0.1 or not torch.isfinite(x.grad).all():
            return f"the FP8 matmul gave wrong results on this device (relative error {err:.3f})"
    except Exception as e:   # a missing kernel / unsupported capability: the message is the answer
        lines = str(e).strip().splitlines()
        return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"
    return None


@dataclass
class QuantizeReport:
    mode: str
    blocks: int
    linears: int
    fp8_compute: int          # linears whose matmuls run in FP8
    bytes_before: int         # the quantized linears' weights before
    bytes_after: int          # ... and after (quantized data + scales)
    seconds: float
    device: str

    def line(self) -> str:
        compute = (f"; {self.fp8_compute} video-stream linears run their matmuls in FP8"
                   if self.fp8_compute else "")
        return (f"quantized {self.linears} linear layers of {self.blocks} transformer blocks to {self.mode} on "
                f"{self.device} in {self.seconds:.1f}s: {human_bytes(self.bytes_before)} -> "
                f"{human_bytes(self.bytes_after)}"
                f"{compute}")


def tensor_bytes(t) -> int:
    """Bytes a (possibly torchao) tensor holds: its inner tensors for a torchao tensor."""
    inner = getattr(t, "__tensor_flatten__", None)
    if inner is not None:
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def module_bytes(module) -> int:
    """Bytes of a module's parameters and buffers, quantized ones counted as stored."""
    return sum(tensor_bytes(p) for p in module.parameters()) + sum(tensor_bytes(b) for b in module.buffers())


def quantize_transformer(transformer, mode: str, device, *, fp8_compute=None, publish=None) -> QuantizeReport:
    """Quantize the transformer blocks' linears in place, block by block on `device` (module doc); the
    quantized blocks stay there (group offload then moves them to pinned host memory, offload.py).

    fp8_compute (fp8 mode): None = on for CUDA devices, after a kernel self-check; True / False force it
    (tests run the FP8 matmul on the CPU; a benchmark can switch it off). Raises QuantizationError when the
    mode cannot run here (fp8 on the CPU, FP8 matmuls failing on this GPU)."""
    import torch

    if mode not in MODES:
        raise QuantizationError(f"base_model_precision = {mode!r} is not a quantized mode", f"one of {MODES}")
    device = torch.device(device)
    torchao = import_torchao()
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, PerRow

    model = getattr(transformer, "module", transformer)
    if mode == "fp8-torchao":
        if fp8_compute is None:
            if device.type != "cuda":
                raise QuantizationError(fp8_hardware_problem([]) or "FP8 needs a CUDA GPU", INT8_ALTERNATIVE)
            problem = fp8_self_check(device)
            if problem is not None:
                name = torch.cuda.get_device_name(device)
                cc = torch.cuda.get_device_capability(device)
                raise QuantizationError(f"FP8 matmuls do not run on {name} (compute capability {cc[0]}.{cc[1]}): "
                                        f"{problem}", INT8_ALTERNATIVE)
            fp8_compute = True
        # set_inductor_config=False: torchao would switch on inductor's coordinate-descent autotuning for the
        # whole process (longer compiles, other bf16 numbers); hvtui's compile settings stay the same
        config = Float8WeightOnlyConfig(granularity=PerRow(), set_inductor_config=False)
    else:
        fp8_compute = False
        config = Int8WeightOnlyConfig(granularity=PerRow(), set_inductor_config=False)
    from hvtui.core.train.quantized_linear import QuantizedLinear

    t0 = time.perf_counter()
    n_linear = n_fp8 = before = after = 0
    blocks = model.transformer_blocks
    for block in blocks:
        block.to(device)
        linears = {name: m for name, m in block.named_modules() if type(m) is torch.nn.Linear}
        before += sum(tensor_bytes(m.weight) for m in linears.values())
        torchao.quantize_(block, config, filter_fn=lambda m, fqn: type(m) is torch.nn.Linear)
        for name, m in linears.items():
            m.__class__ = QuantizedLinear   # the same module and parameters, with an autocast-aware forward
            fits = m.in_features % 16 == 0 and m.out_features % 16 == 0   # _scaled_mm's shape rule
            if fp8_compute and fits and name in FP8_COMPUTE_LINEARS:
                cast(QuantizedLinear, m).fp8_compute = True
                n_fp8 += 1
            after += tensor_bytes(m.weight)
        n_linear += len(linears)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    report = QuantizeReport(mode, len(blocks), n_linear, n_fp8, before, after, time.perf_counter() - t0,
                            str(device))
    if publish is not None:
        from hvtui.core.run import events

        publish(events.log(report.line()))
    return report
