"""The few collective operations the trainer needs to keep its processes in step (data-parallel runs).

Every decision that changes what a process does next (stop, save, skip a step, abort) is agreed through one
of these calls, so no process is left waiting in a collective the others never reach. With one process
they return their input and touch nothing. Values travel as float64 tensors on the accelerator's device
(NCCL needs CUDA tensors; gloo takes CPU ones).
"""
from __future__ import annotations

import os

import torch

# NCCL's own GPU memory per process (outside torch's allocator: only NVML sees it), measured with
# bench/nccl_memory.py on one host of 2x H200: 0.98 GiB with NCCL's defaults, 0.57 GiB with these, while the
# all-reduce of a rank-16 LoRA's 108 MiB of gradients (once per optimizer step) took 7.6 ms instead of 7.9 ms.
# Between hosts fewer channels may lower bandwidth; at ~100 MiB a step that costs little.
LEAN_NCCL = {"NCCL_MAX_NCHANNELS": "4", "NCCL_BUFFSIZE": str(2**20), "NCCL_PROTO": "Simple"}
BUCKET_BYTES = 64 * 2**20   # gradients travel flattened in pieces of this size: few calls, a small copy


def lean_nccl_defaults(environ=os.environ) -> dict[str, str]:
    """Set LEAN_NCCL's variables the user has not set (before the process group starts); returns those set."""
    added = {k: v for k, v in LEAN_NCCL.items() if k not in environ}
    environ.update(added)
    return added


class Collectives:
    def __init__(self, accelerator=None):
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.device = accelerator.device if accelerator is not None else torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def _reduce(self, values, op: str) -> list[float]:
        values = [float(v) for v in values]
        if not self.distributed:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op={"max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}[op])
        return t.tolist()

    def max(self, values) -> list[float]:
        return self._reduce(values, "max")

    def sum(self, values) -> list[float]:
        return self._reduce(values, "sum")

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on any (doubles as a barrier)."""
        return self.max([1.0 if flag else 0.0])[0] > 0

    def mean(self, value: float) -> float:
        return self.sum([value])[0] / self.world

    def barrier(self) -> None:
        self.any(False)

    def broadcast_(self, tensors, src: int = 0) -> None:
        """Copy `src`'s values into every process's `tensors` (parameters: their .data), in place."""
        self._flat_collective([q.detach() for q in tensors], "broadcast", src)

    def average_gradients_(self, params) -> None:
        """Replace each parameter's .grad by its mean over the processes, in place. Every process passes the
        same parameters in the same order, each with a gradient (the caller agrees which, see loop)."""
        self._flat_collective([q.grad for q in params], "mean")

    def _flat_collective(self, tensors, op: str, src: int = 0) -> None:
        """Run `op` over `tensors` in flattened pieces of up to BUCKET_BYTES (one dtype and device a piece):
        hundreds of small LoRA tensors cost a few calls, and the extra memory is one piece."""
        if not self.distributed or not tensors:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        def run(piece):
            flat = _flatten_dense_tensors(piece)
            if op == "mean":
                flat.div_(self.world)   # before the sum: scaled fp16-run gradients stay far from overflow
                dist.all_reduce(flat)
            else:
                dist.broadcast(flat, src=src)
            for t, v in zip(piece, _unflatten_dense_tensors(flat, piece), strict=True):
                t.copy_(v)

        piece: list[torch.Tensor] = []
        size = 0
        for t in tensors:
            n = t.numel() * t.element_size()
            if piece and (size + n > BUCKET_BYTES or t.dtype != piece[0].dtype or t.device != piece[0].device):
                run(piece)
                piece, size = [], 0
            piece.append(t)
            size += n
        run(piece)

    def broadcast_object(self, obj, src: int = 0):
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def gather_objects(self, obj) -> list:
        """Every process's `obj`, in rank order, on every process."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out
