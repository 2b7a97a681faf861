"""The order in which cached samples are trained: bucket-aware, seeded, resumable.

A batch holds samples of one group only (same bucket, same conditioning kind: t2v and i2v never mix), because
the latents must stack and the transformer decides t2v/i2v over the whole batch. Each epoch's plan is a pure
function of (seed, epoch, the groups), so a checkpoint only needs (epoch, index) to continue exactly. With
W processes, rank r takes batches r, r+W, r+2W, ... of the same plan; the processes step together, so they
all stand at the same index of their share and one (epoch, index) describes all of them. Resuming with
another W continues at the same place in the epoch's plan (the plan is trimmed to a multiple of W, so the
sample order differs from there on).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batch:
    group: str              # "bucket_key|t2v" or "bucket_key|i2v"
    ids: tuple[str, ...]    # sample ids (cache entry ids), in batch order
    epoch: int
    index: int              # position of this batch (of this rank's share) in the epoch plan


def group_key(bucket_key: str, i2v: bool) -> str:
    return f"{bucket_key}|{'i2v' if i2v else 't2v'}"


def fingerprint(groups: dict[str, list[str]]) -> str:
    h = hashlib.sha256()
    for g in sorted(groups):
        h.update(g.encode())
        for i in groups[g]:
            h.update(b"\0" + i.encode())
    return h.hexdigest()[:16]


class BucketBatchSampler:
    """`groups`: group key -> item ids (an id appears once per repeat). `next()` never ends: epochs follow."""

    def __init__(self, groups: dict[str, list[str]], batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        self.groups = {g: list(ids) for g, ids in sorted(groups.items()) if ids}
        if not self.groups:
            raise ValueError("no samples to train on")
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.index = 0          # next batch of this rank's share of the current epoch
        self._plan: list[tuple[str, tuple[str, ...]]] | None = None
        self.fingerprint = fingerprint(self.groups)

    # --- the plan
    def epoch_plan(self, epoch: int) -> list[tuple[str, tuple[str, ...]]]:
        """All batches of one epoch (every rank's), shuffled; a pure function of (seed, epoch, groups)."""
        rng = np.random.default_rng([self.seed, epoch, 0x6876])
        batches: list[tuple[str, tuple[str, ...]]] = []
        for g, ids in self.groups.items():
            order = [ids[i] for i in rng.permutation(len(ids))]
            if len(order) < self.batch_size:
                # a bucket smaller than one batch still trains, as one short batch
                batches.append((g, tuple(order)))
                continue
            full = len(order) - len(order) % self.batch_size   # the rest comes first in another epoch
            batches += [(g, tuple(order[i:i + self.batch_size])) for i in range(0, full, self.batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.world_size > 1:
            # every rank takes the same number of batches per epoch (collectives must match)
            usable = max(len(batches) - len(batches) % self.world_size, self.world_size)
            batches = (batches * self.world_size)[:usable]
        return batches

    def _share(self) -> list[tuple[str, tuple[str, ...]]]:
        if self._plan is None:
            self._plan = self.epoch_plan(self.epoch)[self.rank::self.world_size]
        return self._plan

    @property
    def batches_per_epoch(self) -> int:
        return len(self.epoch_plan(0)[self.rank::self.world_size])

    def next(self) -> Batch:
        share = self._share()
        if self.index >= len(share):
            self.epoch += 1
            self.index = 0
            self._plan = None
            share = self._share()
        g, ids = share[self.index]
        b = Batch(g, ids, self.epoch, self.index)
        self.index += 1
        return b

    # --- resume
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "batch_size": self.batch_size,
                "world_size": self.world_size, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict) -> list[str]:
        """Continue where a checkpoint stopped. Returns warnings (the data changed since)."""
        warnings = []
        self.epoch, self.index = int(state.get("epoch", 0)), int(state.get("index", 0))
        self._plan = None
        saved_world = int(state.get("world_size", self.world_size) or 1)
        if saved_world != self.world_size:
            position = self.index * saved_world          # batches of the epoch plan already trained
            self.index = -(-position // self.world_size)  # round up: no batch is trained twice
            warnings.append(f"the checkpoint was trained by {saved_world} process(es), this run has "
                            f"{self.world_size}: epoch {self.epoch} continues after batch {position} of its plan, "
                            f"shared among {self.world_size} process(es) (a different sample order from here on)")
        if state.get("fingerprint") != self.fingerprint:
            warnings.append("the dataset changed since this checkpoint (samples added, removed or re-bucketed): "
                            "the data order continues from the same epoch, not the same sample")
        if self.index > len(self._share()):
            self.index = len(self._share())
        return warnings
