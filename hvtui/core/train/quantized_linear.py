"""The modules quantize.py puts in place: `QuantizedLinear` (a Linear holding a torchao weight) and the FP8
matmul with input gradients (`Float8Matmul`), for base_model_precision int8-torchao / fp8-torchao.

Defined at import time on purpose: torch.compile cannot trace a class being defined, and a graph break the
first time only would make the forward and the checkpoint recompute run different code (their saved tensors
would then differ, which gradient checkpointing refuses).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

FP8 = torch.float8_e4m3fn


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def rowwise_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] -> (float8 e4m3 [M, K], fp32 scale [M, 1]) with x ~= q * scale: one scale per row from its
    absolute maximum (torchao's rowwise float8 recipe). The floor keeps all-zero rows (zero gradients) finite
    instead of 0/0 (pytorch/ao#3356). Under torch.compile this fuses into one pass over x."""
    top = torch.finfo(FP8).max   # looked up here: a module-level float trips dynamo inside autograd.Function
    x = x.float()
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / top
    return (x / scale).clamp(-top, top).to(FP8), scale


@torch.library.custom_op("hvtui::scaled_mm", mutates_args=())
def scaled_mm(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
              out_dtype: torch.dtype, fast_accum: bool) -> torch.Tensor:
    """`torch._scaled_mm` (a [M, K] @ b [K, N], float8, per-row scales) with its layout rules met here: a
    row-major, b column-major. As an opaque op, torch.compile keeps the fused scaling around it but cannot
    hand it operands in another layout (inductor picks the layout of fused intermediates by their inputs, and
    its own lowering of `_scaled_mm` only checks, it does not convert)."""
    if a.stride(-1) != 1:
        a = a.contiguous()
    if b.stride(0) != 1:
        b = b.t().contiguous().t()
    return torch._scaled_mm(a, b, scale_a=scale_a.contiguous(), scale_b=scale_b.contiguous(), out_dtype=out_dtype,
                            use_fast_accum=fast_accum)


@scaled_mm.register_fake
def _(a, b, scale_a, scale_b, out_dtype, fast_accum):
    return a.new_empty((a.shape[0], b.shape[1]), dtype=out_dtype)


class Float8Matmul(torch.autograd.Function):
    """y = x @ (q * s)^T + b with q the float8 weight [out, in] and s its per-row scale [out, 1], on FP8
    tensor cores. Forward: x is scaled per row and `_scaled_mm(xq, q^T)` rescales by both scales.
    Input gradient: dx = dy @ (s * q) = (dy * s^T) @ q, so the weight's scale folds into dy before dy is
    scaled per row, and the same float8 weight serves. The weight is frozen: no weight gradient, and nothing
    is saved but the weight itself."""

    @staticmethod
    def forward(ctx, x, q, s, bias, out_dtype):
        x2 = x.reshape(-1, x.shape[-1])
        xq, xs = rowwise_fp8(x2)
        # CUDA's per-row-scaled kernels answer in bf16 only: other compute dtypes are cast from it
        y = scaled_mm(xq, q.t(), xs, s.reshape(1, -1), torch.bfloat16, True).to(out_dtype)
        if bias is not None:
            y = y + bias.to(out_dtype)
        ctx.save_for_backward(q, s)
        ctx.in_shape, ctx.in_dtype = x.shape, x.dtype
        return y.reshape(*x.shape[:-1], q.shape[0])

    @staticmethod
    def backward(ctx, dy):
        q, s = ctx.saved_tensors
        d2 = dy.reshape(-1, dy.shape[-1]).float() * s.reshape(1, -1)
        dq, ds = rowwise_fp8(d2)
        ones = torch.ones((1, q.shape[1]), dtype=torch.float32, device=q.device)
        # q [out, in] is the second operand as it is stored: scaled_mm reads it transposed (column-major). The
        # gradient's matmul accumulates exactly (no fast accumulation), as in torchao's float8 training.
        dx = scaled_mm(dq, q, ds, ones, torch.bfloat16, False)
        return dx.reshape(ctx.in_shape).to(ctx.in_dtype), None, None, None, None


def float8_linear(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, bias: torch.Tensor | None = None):
    """`Float8Matmul` on x (any leading dims); the output in the autocast dtype when autocast is on."""
    return Float8Matmul.apply(x, q, s, bias, autocast_dtype(x) or x.dtype)


class QuantizedLinear(torch.nn.Linear):
    """An nn.Linear whose weight is a torchao tensor (so PEFT gives it its torchao LoRA layer). It casts its
    input as autocast casts a plain Linear's (torchao's linear answers in the input's dtype, which would
    leave fp32 activations where bf16 ones are expected: twice the bytes, and attention kernels refuse them),
    then runs torchao's weight-only linear, or the FP8 matmul where `fp8_compute` is set."""

    fp8_compute = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = autocast_dtype(x)
        if dtype is not None and x.dtype != dtype:
            x = x.to(dtype)
        if self.fp8_compute:
            w: Any = self.weight   # torchao's float8 tensor (quantize.py): rowwise fp8 data and its scales
            return float8_linear(x, w.qdata, w.scale, self.bias)
        return F.linear(x, self.weight, self.bias)
