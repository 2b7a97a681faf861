"""The few collective operations the trainer needs to keep its processes in step (data-parallel runs).

Every decision that changes what a process does next (stop, save, skip a step, abort) is agreed through one
of these calls, so no process is left waiting in a collective the others never reach. With one process
they return their input and touch nothing. Values travel as float64 tensors on the accelerator's device
(NCCL needs CUDA tensors; gloo takes CPU ones).
"""
from __future__ import annotations

import torch


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
