"""The data-parallel step's agreement and gradient averaging (train_step.agree_and_average), with two real
gloo processes: mixed dtypes, tiny flattening pieces (so several all-reduces run), tensors with a gradient on
some processes only, and one on none."""
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hvtui.core.train import collectives, train_step
from hvtui.core.train.collectives import Collectives

SHAPES = [(3, 4), (5,), (2, 2), (7,), (4, 3)]
DTYPES = [torch.float32, torch.float32, torch.bfloat16, torch.float32, torch.float64]


def _grad(rank: int, i: int):
    """Process `rank`'s gradient of tensor i, or None: tensor 1 only on rank 0, tensor 3 on no rank."""
    if (i == 1 and rank == 1) or i == 3:
        return None
    g = torch.Generator().manual_seed(100 * rank + i)
    return torch.randn(SHAPES[i], generator=g).to(DTYPES[i])


def _worker(rank, init, outcome_of, results):
    collectives.BUCKET_BYTES = 40    # a few elements a piece: the pieces and dtype breaks are exercised
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        coll = Collectives(SimpleNamespace(num_processes=2, process_index=rank, device=torch.device("cpu")))
        params = []
        for i, (shape, dtype) in enumerate(zip(SHAPES, DTYPES, strict=True)):
            q = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
            q.grad = _grad(rank, i)
            params.append(q)
        outcome, loss = train_step.agree_and_average(coll, params, outcome_of[rank], 1.5 + rank)
        # plain lists: tensors sent through a queue live in shared memory that dies with this process
        results.put((rank, outcome, loss, [None if q.grad is None else (str(q.grad.dtype), q.grad.double().tolist())
                                           for q in params]))
    finally:
        dist.destroy_process_group()


def _run(tmp_path, outcome_of):
    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_worker, args=(f"file://{tmp_path / 'store'}", outcome_of, results), nprocs=2,
                       start_method="spawn")
    got = {r[0]: r[1:] for r in (results.get() for _ in range(2))}
    return {rank: (outcome, loss, [None if g is None else (g[0], torch.tensor(g[1], dtype=torch.float64))
                                   for g in grads]) for rank, (outcome, loss, grads) in got.items()}


def test_gradients_are_averaged_in_place_and_missing_ones_count_as_zero(tmp_path):
    got = _run(tmp_path, {0: train_step.OK, 1: train_step.OK})
    for rank in (0, 1):
        outcome, loss, grads = got[rank]
        assert outcome == train_step.OK and loss == pytest.approx(2.0)       # (1.5 + 2.5) / 2
        for i, g in enumerate(grads):
            if i == 3:
                assert g is None                                       # no process had one: the optimizer skips it
                continue
            parts = [_grad(r, i) for r in (0, 1)]
            want = sum(p.double() for p in parts if p is not None) / 2   # a missing gradient counts as zero
            tol = 1e-2 if DTYPES[i] == torch.bfloat16 else 1e-6
            assert g[0] == str(DTYPES[i]) and torch.allclose(g[1], want, atol=tol), i
    # the same everywhere
    assert all(torch.equal(a[1], b[1]) for a, b in zip(got[0][2], got[1][2], strict=True) if a is not None)


@pytest.mark.parametrize("outcomes, expected", [((train_step.NONFINITE, train_step.OK), train_step.NONFINITE),
                                                ((train_step.NONFINITE, train_step.OOM), train_step.OOM)])
def test_a_failure_anywhere_is_everyones_and_nothing_is_averaged(tmp_path, outcomes, expected):
    got = _run(tmp_path, dict(enumerate(outcomes)))
    for rank in (0, 1):
        outcome, _, grads = got[rank]
        assert outcome == expected
        assert all(g is None if _grad(rank, i) is None else torch.equal(g[1], _grad(rank, i).double())
                   for i, g in enumerate(grads))                       # untouched: the caller drops them
