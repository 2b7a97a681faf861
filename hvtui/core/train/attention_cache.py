"""Keep a block's attention output from the forward pass so its checkpoint recompute skips attention.

With full gradient checkpointing every block runs forward twice (forward, then recompute in backward).
Attention is ~74% of the FLOPs at 480p x 61 (REFERENCE.md), and its forward costs the same both times.
Keeping attention's output and log-sum-exp (2 bytes x tokens x 2048 + 4 bytes x tokens x 16 per block,
~106 MB at 480p x 61) lets the recompute rebuild q, k, v (cheap matmuls, needed by attention's backward)
and take the output from the store instead of running the kernel again. The backward is the kernel's own
(flash attention backward from saved output + log-sum-exp), so the gradients are the ones SDPA gives.

speed.py decides which blocks keep their output (a memory budget) and tells this module, per block call,
which phase it is in; `attention()` is what the block's attention processor calls instead of diffusers'
`dispatch_attention_fn`. It runs eagerly (a graph break inside compiled blocks) because it keeps state.
"""
from __future__ import annotations

import torch


class AttentionStore:
    """Block index -> (output, logsumexp, kernel extras) kept from forward until that block's recompute."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple] = {}
        self.hits = 0
        self.stores = 0
        self.peak_bytes = 0

    def put(self, key: int, value: tuple) -> None:
        self.entries[key] = value
        self.stores += 1
        self.peak_bytes = max(self.peak_bytes, self.bytes())

    def pop(self, key: int):
        value = self.entries.pop(key, None)
        if value is not None:
            self.hits += 1
        return value

    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for v in self.entries.values() for t in v[:2])

    def clear(self) -> None:
        self.entries.clear()


def supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Kernels with a separate forward/backward that we can call: flash or cuDNN on CUDA (fp16/bf16, head
    dim <= 128, no mask), the CPU flash kernel (tests)."""
    if not (q.dim() == 4 and q.shape == k.shape == v.shape):
        return False
    if q.is_cuda:
        return q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 128 and q.shape[-1] % 8 == 0
    return q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64, torch.bfloat16)


def _forward(qt, kt, vt, kernel: str):
    """Inputs [B, H, S, D] (views); returns out [B, H, S, D], lse, and what the backward needs."""
    if not qt.is_cuda:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt, 0.0, False)
        return out, lse, (), ()
    if kernel == "cudnn":   # cuDNN wants contiguous [B, H, S, D] (diffusers' note: wrong results otherwise)
        out, lse, cq, ck, mq, mk, seed, offset, _ = torch.ops.aten._scaled_dot_product_cudnn_attention(
            qt.contiguous(), kt.contiguous(), vt.contiguous(), None, True, 0.0, False, False)
        return out, lse, (cq, ck, seed, offset), (mq, mk)
    out, lse, cq, ck, mq, mk, seed, offset, _ = torch.ops.aten._scaled_dot_product_flash_attention(
        qt, kt, vt, 0.0, False, False)
    return out, lse, (cq, ck, seed, offset), (mq, mk)


def _backward(grad, qt, kt, vt, out, lse, tensors, ints, kernel: str):
    if not qt.is_cuda:
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad, qt, kt, vt, out, lse, 0.0, False)
    cq, ck, seed, offset = tensors
    mq, mk = ints
    if kernel == "cudnn":
        # torch caches cuDNN's backward graph keyed by the q/k/v layout only, with out's and grad's strides
        # baked in: pass exactly the layouts SDPA's own backward passes (q/k/v contiguous [B, H, S, D], out as
        # the forward made it, grad as a [B, H, S, D] view of [B, S, H, D] memory), or a graph built for the
        # other layout reads grad with the wrong strides (measured: 141% error in dq/dk/dv).
        return torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
            grad, qt.contiguous(), kt.contiguous(), vt.contiguous(), out, lse,
            seed, offset, None, cq, ck, mq, mk, 0.0, False)
    return torch.ops.aten._scaled_dot_product_flash_attention_backward(
        grad, qt, kt, vt, out, lse, cq, ck, mq, mk, 0.0, False, seed, offset)


class _StoredAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(d)) v over [B, S, H, D] inputs; mode "store" keeps the output, "reuse" takes it,
    "compute" does neither (blocks outside the cache run the same kernels, so every training call of the
    kernel uses one layout)."""

    @staticmethod
    def forward(ctx, q, k, v, store: AttentionStore, key: int, mode: str, kernel: str):
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
        hit = store.pop(key) if mode == "reuse" else None
        if hit is None:
            out, lse, tensors, ints = _forward(qt, kt, vt, kernel)
        else:
            out, lse, tensors, ints = hit
        if mode == "store":
            store.put(key, (out.detach(), lse, tensors, ints))
        ctx.save_for_backward(q, k, v, out, lse, *tensors)
        ctx.ints, ctx.kernel = ints, kernel
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse, *tensors = ctx.saved_tensors
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
        g = grad.contiguous().transpose(1, 2)   # [B, H, S, D] view of [B, S, H, D] memory
        dq, dk, dv = _backward(g, qt, kt, vt, out, lse, tensors, ctx.ints, ctx.kernel)
        return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), None, None, None, None


def attention(q, k, v, store: AttentionStore, key: int, mode: str, kernel: str = "flash") -> torch.Tensor:
    """[B, S, H, D] in, [B, S, H, D] out (diffusers' dispatch layout). kernel: "flash" or "cudnn" (CUDA)."""
    return _StoredAttention.apply(q, k, v, store, key, mode, kernel)


def _grad(x: torch.Tensor) -> torch.Tensor:
    """x.grad after a backward pass that reached x."""
    assert x.grad is not None
    return x.grad


def self_check(device, kernel: str, seq: int = 2048, heads: int = 16, dim: int = 128) -> tuple[bool, str]:
    """Store-then-reuse and plain compute through `kernel` must give SDPA's output and gradients. Run once
    before training: these are private aten ops, so a torch change that breaks them turns the cache off
    instead of training on wrong gradients. On CUDA, SDPA's own cuDNN backward runs first at the same
    shape, so a graph it caches is the one our calls meet (the failure mode described in `_backward`)."""
    try:
        dev = torch.device(device)
        g = torch.Generator(device=dev).manual_seed(0)
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        q, k, v, grad = (torch.randn(1, seq, heads, dim, device=dev, dtype=dtype, generator=g) for _ in range(4))
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def through(fn):
            leaves = [x.clone().requires_grad_() for x in (q, k, v)]
            out = fn(*leaves)
            out.backward(grad)
            return [out.detach().float()] + [_grad(x).float() for x in leaves]

        def sdpa_bshd(a, b, c):
            return sdpa(a.transpose(1, 2), b.transpose(1, 2), c.transpose(1, 2)).transpose(1, 2)

        if dev.type == "cuda":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                ref = through(sdpa_bshd)
            if kernel == "cudnn":
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    through(sdpa_bshd)   # prime torch's cuDNN graph cache the way SDPA does
        else:
            ref = through(sdpa_bshd)

        store = AttentionStore()

        def stored(a, b, c):
            with torch.no_grad():
                attention(a, b, c, store, 0, "store", kernel)
            return attention(a, b, c, store, 0, "reuse", kernel)

        errs = {}
        for name, fn in (("compute", lambda a, b, c: attention(a, b, c, store, 1, "compute", kernel)),
                         ("reuse", stored)):
            got = through(fn)
            errs[name] = max(((x - r).norm() / r.norm()).item() for x, r in zip(got, ref, strict=True))
        ok = store.hits == 1 and max(errs.values()) < 2e-2
        return ok, f"{kernel}: max rel err vs SDPA: compute {errs['compute']:.1e}, reuse {errs['reuse']:.1e}"
    except Exception as e:   # noqa: BLE001 - any failure means: don't use these kernels
        return False, f"{kernel}: {type(e).__name__}: {str(e)[:160]}"
