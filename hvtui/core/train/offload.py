"""Training-aware streaming of frozen transformer-block weights from pinned host memory.

Why not diffusers' group offloading: it hooks forward only and re-points weights at host copies snapshotted
when it was applied, so trainable LoRA weights inside offloaded blocks silently stop updating
(REFERENCE.md trap 3). Here only *frozen* block parameters move: LoRA weights, their gradients and the
optimizer state never leave the GPU, and frozen weights are never copied back (they do not change).

How: every frozen block parameter gets one host copy in a pinned buffer. On the GPU a small pool of slots
(default 2) holds the blocks in use; a parameter's `.data` points at its slot while its block is resident and
at a one-element NaN placeholder of the right shape otherwise (so a block run without this class's help
fails loudly instead of using stale weights). The caller tells the offloader when a block starts and ends
(`before_block` / `after_block`, see speed.py) and in which phase:
  forward    - under gradient checkpointing: nothing is saved for backward, so the block is released at
               once (the last block stays: its recompute comes first in backward)
  recompute  - inside backward (checkpoint recompute); blocks run in reverse, and once block i starts
               recomputing, block i+1's backward has been queued, so i+1 is released then
  inference  - no grad: released after the forward
The next block (i+1 in forward, i-1 in backward) is copied on a side stream while the current one computes.
Slots are reused only after an event recorded on the compute stream says their previous occupant is done.

Quantized weights (base_model_precision int8-torchao / fp8-torchao, quantize.py) are torchao tensors: what
moves is what they hold (`qdata` and `scale`, swapped on the torchao tensor itself), so the stream carries the
quantized bytes, half of bf16's.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

ALIGN = 256   # bytes; keeps every host view aligned for fast DMA


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _chunk_plan(sizes: list[int], cap: int = 4 << 30) -> tuple[int, list[int]]:
    """Pack per-block byte sizes into pinned chunks. torch's pinned allocator rounds every request up to a
    power of two, so chunks are powers of two and filled greedily; pick the chunk size that wastes least."""
    largest, total = max(sizes), sum(sizes)
    best = None
    k = max(20, math.ceil(math.log2(largest)))
    while True:
        c = 1 << k
        chunks, used = [], 0
        for i, s in enumerate(sizes):
            if used + s > c:
                chunks.append(i)
                used = 0
            used += s
        n_chunks = len(chunks) + 1
        waste = n_chunks * c - total
        if best is None or waste < best[0]:
            best = (waste, c, chunks)
        if c >= min(cap, max(total, largest)):
            break
        k += 1
    return best[1], best[2]


class _Leaf:
    """One plain tensor the offloader moves: a plain parameter's `.data`, or an inner tensor of a torchao
    tensor (`weight.qdata`, `weight.scale`), re-pointed on the object that holds it."""
    __slots__ = ("owner", "attr")

    def __init__(self, owner, attr: str):
        self.owner, self.attr = owner, attr

    def get(self) -> torch.Tensor:
        return getattr(self.owner, self.attr)

    def set(self, t: torch.Tensor) -> None:
        setattr(self.owner, self.attr, t)


def _leaves(params) -> list[_Leaf]:
    out = []
    for p in params:
        flatten = getattr(p, "__tensor_flatten__", None)   # a tensor subclass (torchao): its inner tensors
        out += [_Leaf(p, name) for name in flatten()[0]] if flatten is not None else [_Leaf(p, "data")]
    return out


@dataclass
class _Slot:
    tensors: list[torch.Tensor]
    occupant: int | None = None
    loading: bool = False
    ready: Any = None         # torch.cuda.Event (None on the CPU): copy into this slot done (side stream)
    free: Any = None          # torch.cuda.Event (None on the CPU): compute stream done with the previous occupant
    last_use: int = 0


@dataclass
class _Block:
    params: list[_Leaf]                       # the frozen tensors that move
    host: list[torch.Tensor]                  # pinned host copies, same order as params
    placeholders: list[torch.Tensor]
    signature: tuple
    nbytes: int
    slot: _Slot | None = None


@dataclass
class OffloadStats:
    h2d_bytes: int = 0
    copies: int = 0
    copy_s: float = 0.0        # GPU time spent copying (side stream), from events
    wait_s: float = 0.0        # GPU time the compute stream stalled waiting for a copy, from events
    sync_loads: int = 0        # onloads that were not prefetched in time to be queued ahead
    pending: list = field(default_factory=list)   # (kind, start_event, end_event, bytes)


class BlockOffloader:
    """Streams the frozen parameters of `blocks` (an nn.ModuleList) between pinned host memory and `device`."""

    def __init__(self, blocks: Sequence[torch.nn.Module], device, slots: int = 2, stream: bool = True,
                 pin: bool | None = None):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.n = len(blocks)
        self.n_slots = max(2, int(slots))
        self.stats_ = OffloadStats()
        self._clock = 0
        self._pools: dict[tuple, list[_Slot]] = {}
        self._current: int | None = None
        # side stream: copies overlap compute; without it they queue on the compute stream (correct, slower)
        self._stream = torch.cuda.Stream(self.device) if self.cuda and stream else None
        pin = self.cuda if pin is None else pin

        leaves = [_leaves(p for p in b.parameters() if not p.requires_grad) for b in blocks]
        sizes = [max(ALIGN, sum(_align(_nbytes(leaf.get())) for leaf in ls)) for ls in leaves]
        chunk, breaks = _chunk_plan(sizes)
        self.host_buffers: list[torch.Tensor] = []
        starts = [0] + breaks
        ends = breaks + [self.n]
        block_views: list[torch.Tensor] = []
        for a, b in zip(starts, ends, strict=True):
            size = sum(sizes[a:b])
            buf = torch.empty(size, dtype=torch.uint8, pin_memory=pin)
            self.host_buffers.append(buf)
            off = 0
            for i in range(a, b):
                block_views.append(buf[off:off + sizes[i]])
                off += sizes[i]
        self.host_bytes = sum(_nbytes(b) for b in self.host_buffers)

        self.blocks: list[_Block] = []
        for ls, flat in zip(leaves, block_views, strict=True):
            host, holders, off = [], [], 0
            ps = [leaf.get() for leaf in ls]
            for p in ps:
                nb = _nbytes(p)
                view = flat[off:off + nb].view(p.dtype).view(p.shape)
                view.copy_(p)   # the only device->host copy ever made of these weights
                host.append(view)
                holders.append(self._placeholder(p))
                off += _align(nb)
            sig = tuple((tuple(p.shape), p.dtype) for p in ps)
            blk = _Block(ls, host, holders, sig, sum(_nbytes(p) for p in ps))
            for leaf, h in zip(blk.params, blk.placeholders, strict=True):
                leaf.set(h)
            del ps   # this block's device copies go now, not after the last block
            self.blocks.append(blk)
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    # ---------------------------------------------------------------- plumbing
    def _placeholder(self, p: torch.Tensor) -> torch.Tensor:
        fill = float("nan") if p.dtype.is_floating_point else 0
        one = torch.full((1,) * max(p.dim(), 1), fill, dtype=p.dtype, device=self.device)
        return one.expand(p.shape) if p.dim() else one.view(())

    def _event(self, timing: bool = False):
        return torch.cuda.Event(enable_timing=timing) if self.cuda else None

    def _pool(self, sig: tuple, like: _Block) -> list[_Slot]:
        pool = self._pools.get(sig)
        if pool is None:
            pool = [self._new_slot(like) for _ in range(self.n_slots)]
            self._pools[sig] = pool
        return pool

    def _new_slot(self, like: _Block) -> _Slot:
        slot = _Slot([torch.empty(h.shape, dtype=h.dtype, device=self.device) for h in like.host])
        if self.cuda:   # the memory may be recycled from tensors the compute stream still reads
            slot.free = self._event()
            slot.free.record(torch.cuda.current_stream(self.device))
        return slot

    def _acquire(self, i: int) -> _Slot:
        blk = self.blocks[i]
        pool = self._pool(blk.signature, blk)
        free = [s for s in pool if s.occupant is None]
        if not free:   # evict the least recently used resident block that is not running now
            victims = [s for s in pool if not s.loading and s.occupant != self._current]
            if victims:
                self.release(min(victims, key=lambda s: s.last_use).occupant)
                free = [s for s in pool if s.occupant is None]
        if not free:   # should not happen with one block of lookahead; grow rather than break
            pool.append(self._new_slot(blk))
            free = [pool[-1]]
        return free[0]

    # ---------------------------------------------------------------- the three verbs
    def prefetch(self, i: int) -> None:
        """Start copying block i's frozen weights to the GPU (side stream); no-op if resident or loading."""
        if not 0 <= i < self.n or self.blocks[i].slot is not None:
            return
        blk = self.blocks[i]
        slot = self._acquire(i)
        slot.occupant, slot.loading = i, True
        blk.slot = slot
        if not self.cuda:
            for dst, src in zip(slot.tensors, blk.host, strict=True):
                dst.copy_(src)
            self.stats_.h2d_bytes += blk.nbytes
            self.stats_.copies += 1
            return
        stream = self._stream or torch.cuda.current_stream(self.device)
        with torch.cuda.stream(stream):
            if self._stream is not None and slot.free is not None:
                stream.wait_event(slot.free)
            t0, t1 = self._event(True), self._event(True)
            t0.record(stream)
            for dst, src in zip(slot.tensors, blk.host, strict=True):
                dst.copy_(src, non_blocking=True)
            t1.record(stream)
            slot.ready = None
            if self._stream is not None:
                slot.ready = self._event()
                slot.ready.record(stream)
        self.stats_.h2d_bytes += blk.nbytes
        self.stats_.copies += 1
        self.stats_.pending.append(("copy", t0, t1, blk.nbytes))
        if len(self.stats_.pending) > 2048:   # without a telemetry reader, keep the event list bounded
            self._drain()

    def onload(self, i: int) -> None:
        """Make block i resident for work queued next on the current stream."""
        blk = self.blocks[i]
        if blk.slot is None:
            self.stats_.sync_loads += 1
            self.prefetch(i)
        slot = blk.slot
        assert slot is not None   # prefetch gave it one
        if slot.loading:
            if slot.ready is not None:
                stream = torch.cuda.current_stream(self.device)
                w0, w1 = self._event(True), self._event(True)
                w0.record(stream)
                stream.wait_event(slot.ready)
                w1.record(stream)
                self.stats_.pending.append(("wait", w0, w1, 0))
            slot.loading = False
            for p, t in zip(blk.params, slot.tensors, strict=True):
                p.set(t)
        self._clock += 1
        slot.last_use = self._clock

    def release(self, i: int | None) -> None:
        """Point block i's frozen params back at placeholders; its slot is reusable once the compute stream
        has finished the work queued so far."""
        if i is None:
            return
        blk = self.blocks[i]
        slot = blk.slot
        if slot is None:
            return
        if slot.loading:   # prefetched but never used: the copy must still finish before reuse
            if slot.ready is not None:
                torch.cuda.current_stream(self.device).wait_event(slot.ready)
            slot.loading = False
        for p, h in zip(blk.params, blk.placeholders, strict=True):
            p.set(h)
        if self.cuda:
            slot.free = self._event()
            slot.free.record(torch.cuda.current_stream(self.device))
        slot.occupant = None
        blk.slot = None

    def release_all(self) -> None:
        for i in range(self.n):
            self.release(i)

    # ---------------------------------------------------------------- the schedule (see module doc)
    def before_block(self, i: int, phase: str) -> None:
        self._current = i
        if phase == "recompute":
            for j in range(i + 1, self.n):   # their backward is queued: free the slots for what comes next
                if self.blocks[j].slot is not None:
                    self.release(j)
            self.onload(i)
            self.prefetch(i - 1)
        else:
            self.onload(i)
            self.prefetch(i + 1)

    def after_block(self, i: int, phase: str) -> None:
        self._current = None
        if phase == "inference" or (phase == "forward" and i != self.n - 1):
            self.release(i)

    def resident(self) -> list[int]:
        """Blocks holding a GPU slot (loaded or being copied)."""
        return [i for i, b in enumerate(self.blocks) if b.slot is not None]

    # ---------------------------------------------------------------- reporting and teardown
    def _drain(self) -> None:
        keep = []
        for kind, a, b, nb in self.stats_.pending:
            if b.query():
                dt = a.elapsed_time(b) / 1000.0
                if kind == "copy":
                    self.stats_.copy_s += dt
                else:
                    self.stats_.wait_s += dt
            else:
                keep.append((kind, a, b, nb))
        self.stats_.pending = keep

    def gpu_bytes(self) -> int:
        return sum(_nbytes(t) for pool in self._pools.values() for s in pool for t in s.tensors)

    def stats(self) -> dict:
        """Counters for telemetry: bytes on GPU (slots) vs host, H2D volume and rate, time stalled."""
        if self.cuda:
            self._drain()
        s = self.stats_
        return {"blocks": self.n, "slots": sum(len(p) for p in self._pools.values()),
                "gpu_bytes": self.gpu_bytes(), "host_bytes": self.host_bytes,
                "h2d_bytes": s.h2d_bytes, "copies": s.copies,
                "h2d_bytes_per_s": round(s.h2d_bytes / s.copy_s) if s.copy_s else None,
                "copy_s": round(s.copy_s, 4), "wait_s": round(s.wait_s, 4), "sync_loads": s.sync_loads,
                "resident": self.resident()}

    def restore(self) -> None:
        """Put every frozen weight back on the device as an ordinary parameter and drop the host copies."""
        self.release_all()
        for blk in self.blocks:
            for p, h in zip(blk.params, blk.host, strict=True):
                p.set(h.to(self.device, copy=True))
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.blocks, self.host_buffers, self._pools = [], [], {}

