"""One optimizer step of the trainer: `TrainStep(...)(cache, step, attempt) -> StepResult`.

`gradient_accumulation_steps` micro-batches, each through step.loss_and_gradients (the code bench/ times),
then step.apply_update. Everything random in a micro-batch (dropout, the posterior sample, caption choice and
dropout, sigmas, noise) comes from generators seeded by (seed, step, slot, attempt), so a resumed run repeats
an uninterrupted one and a retried step draws new noise.

Data-parallel (module doc of loop.py): the slot of a micro-batch is its place in the global batch,
`micro * world + rank`. The model is not wrapped in DDP: each process runs its micro-batches without talking
to the others, then ONE collective (`agree_and_average`) agrees on the step's outcome and which LoRA tensors
have gradients, and only when every process succeeded are the gradients averaged in place. So the gradients
exist only from backward to the optimizer step, as on one GPU, and an OOM in a backward pass is skipped like
any other (no process is inside an all-reduce by then). An OOM after the agreement (averaging, clipping, the
optimizer's first allocation of its state: small next to the freed activations) is not caught: it ends the
run, and the launcher stops the other processes.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from hvtui.core.train.context import Training

OK, NONFINITE, OOM, DAMAGED = 0, 1, 2, 3   # a step's local outcome; across processes: OOM, then damaged, then NaN


def derived_seed(*parts) -> int:
    """A 63-bit seed from any parts: independent streams per (seed, step, micro-batch, rank, purpose)."""
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


@dataclass
class StepResult:
    """status: ok | nonfinite | oom | damaged | overflow (failures.StepFailures decides what follows);
    `what` failed (a non-finite "loss" or "gradient norm", the damaged entry); `ids`: this process's samples
    (the loop gathers every process's on a failure)."""
    status: str
    what: str
    ids: list[str]
    loss: float
    grad_norm: float
    epoch: int


def agree_and_average(coll, params, outcome: int, loss_sum: float) -> tuple[int, float]:
    """One collective: the step's outcome (an OOM anywhere beats a damaged entry anywhere, which beats a
    non-finite loss anywhere), the loss over the global batch, and which LoRA tensors got a gradient on some
    process (the others keep none, as on one process: the optimizer skips them). Then, if every process
    succeeded, the mean gradient."""
    counts = coll.sum([outcome == OOM, outcome == NONFINITE, loss_sum, outcome == DAMAGED]
                      + [q.grad is not None for q in params])
    if counts[0]:
        return OOM, loss_sum
    if counts[3]:
        return DAMAGED, loss_sum
    if counts[1]:
        return NONFINITE, loss_sum
    synced = [q for q, n in zip(params, counts[4:], strict=True) if n]
    for q in synced:
        if q.grad is None:
            q.grad = torch.zeros_like(q)
    coll.average_gradients_(synced)
    return OK, counts[2] / coll.world


def _collate_and_clear(items: list) -> dict:
    """step.collate, then empty `items`: the batch becomes the only owner of the loaded tensors."""
    from hvtui.core.train.step import collate

    batch = collate(items)
    items.clear()
    return batch


class TrainStep:
    """The trainer's optimizer step over `training`, on `accelerator` (its accumulate / backward / clipping),
    agreeing through `coll`. `injector`: failures.Injector (the NaN / OOM test hooks)."""

    def __init__(self, preset, accelerator, coll, training: Training, injector):
        self.preset, self.acc, self.coll, self.training, self.inject = preset, accelerator, coll, training, injector

    def __call__(self, cache, step: int, attempt: int) -> StepResult:
        from hvtui.core.train import step as step_module
        from hvtui.core.train.cache_verify import CacheEntryDamaged, discard

        p, acc, t = self.preset, self.acc, self.training
        batches = [t.sampler.next() for _ in range(p.gradient_accumulation_steps)]
        ids = [i for b in batches for i in b.ids]
        loss_sum, outcome, damaged = 0.0, OK, ""
        for micro, b in enumerate(batches):
            with acc.accumulate(t.model):
                if outcome != OK:
                    continue   # keep accelerate's micro-batch counter aligned with the step
                slot = micro * acc.num_processes + acc.process_index   # its place in the global batch
                try:
                    value = self._micro_batch(cache, b.ids, step, slot, attempt)
                except torch.OutOfMemoryError:
                    outcome = OOM
                    continue
                except CacheEntryDamaged as e:
                    outcome, damaged = DAMAGED, f"{e} (sample {b.ids})"
                    discard(e.path)
                    continue
                if not math.isfinite(value):
                    outcome = NONFINITE
                    continue
                loss_sum += value / len(batches)
        if self.coll.distributed:
            outcome, loss_sum = agree_and_average(self.coll, t.params, outcome, loss_sum)
        status, what = {OK: ("ok", ""), NONFINITE: ("nonfinite", "loss"), OOM: ("oom", ""),
                        DAMAGED: ("damaged", damaged or "a cache entry another process read is damaged")}[outcome]
        grad_norm = float("nan")
        if status == "ok":
            status, what, grad_norm = step_module.apply_update(t.params, t.optimizer, t.scheduler, p.max_grad_norm,
                                                               clip=acc.clip_grad_norm_, scaler=acc.scaler)
        for q in t.params:
            q.grad = None
        return StepResult(status, what, ids, loss_sum, grad_norm, batches[-1].epoch)

    def _micro_batch(self, cache, sample_ids, step: int, slot: int, attempt: int) -> float:
        """One micro-batch's loss; its gradients accumulate in .grad (none for a non-finite loss). Dropout & co.,
        then the posterior sample, caption choice and caption dropout, then sigmas and noise: all drawn from
        generators seeded by (seed, step, slot, attempt)."""
        from hvtui.core.train import step as step_module

        p, inject = self.preset, self.inject
        inject.oom(step)
        torch.manual_seed(derived_seed(p.seed, step, slot, attempt, "global"))
        gd = torch.Generator().manual_seed(derived_seed(p.seed, step, slot, attempt, "data"))
        items = [cache.load(self.training.entries[i], generator=gd, caption_dropout=p.caption_dropout_probability)
                 for i in sample_ids]
        g = torch.Generator().manual_seed(derived_seed(p.seed, step, slot, attempt, "noise"))

        def nan_hook(loss):   # the NaN test hook (failures.Injector)
            return loss * float("nan") if inject.nan(step) else loss

        # the collated batch is passed without a name here, so loss_and_gradients can free it before backward
        value = step_module.loss_and_gradients(self.training.model, _collate_and_clear(items), p, g,
                                               backward=self.acc.backward,
                                               loss_hook=nan_hook if inject.nan_at == step else None)
        if math.isfinite(value):
            inject.oom(step, "backward")
        return value
