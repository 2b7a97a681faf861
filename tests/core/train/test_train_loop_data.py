"""The trainer's data order: one bucket and one conditioning kind per batch, seeded, resumable."""
from collections import Counter

import pytest

from hvtui.core.train.data import BucketBatchSampler, group_key

GROUPS = {
    group_key("80x80@9", False): [f"a{i}" for i in range(7)],
    group_key("112x64@9", False): [f"b{i}" for i in range(5)],
    group_key("80x80@9", True): [f"c{i}" for i in range(4)],
}
OWNER = {i: g for g, ids in GROUPS.items() for i in ids}


def take(sampler, n):
    return [sampler.next() for _ in range(n)]


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batches_never_mix_groups(batch_size):
    s = BucketBatchSampler(GROUPS, batch_size, seed=1)
    for b in take(s, 40):
        assert {OWNER[i] for i in b.ids} == {b.group}
        assert len(b.ids) == batch_size


def test_every_sample_once_per_epoch_at_batch_1():
    s = BucketBatchSampler(GROUPS, 1, seed=3)
    n = sum(len(v) for v in GROUPS.values())
    epoch0 = take(s, n)
    assert Counter(i for b in epoch0 for i in b.ids) == Counter(list(OWNER))
    assert {b.epoch for b in epoch0} == {0}
    assert s.next().epoch == 1


def test_seeded_and_epochs_differ():
    a = [b.ids for b in take(BucketBatchSampler(GROUPS, 2, seed=5), 12)]
    b = [b.ids for b in take(BucketBatchSampler(GROUPS, 2, seed=5), 12)]
    c = [b.ids for b in take(BucketBatchSampler(GROUPS, 2, seed=6), 12)]
    assert a == b and a != c
    s = BucketBatchSampler(GROUPS, 1, seed=5)
    assert s.epoch_plan(0) != s.epoch_plan(1)


def test_resume_continues_the_same_order():
    full = BucketBatchSampler(GROUPS, 2, seed=9)
    expected = [b.ids for b in take(full, 25)]
    first = BucketBatchSampler(GROUPS, 2, seed=9)
    got = [b.ids for b in take(first, 11)]
    state = first.state_dict()
    resumed = BucketBatchSampler(GROUPS, 2, seed=9)
    assert resumed.load_state_dict(state) == []
    got += [b.ids for b in take(resumed, 14)]
    assert got == expected


def test_changed_dataset_warns_on_resume():
    s = BucketBatchSampler(GROUPS, 1, seed=0)
    take(s, 3)
    other = BucketBatchSampler({**GROUPS, "x|t2v": ["new"]}, 1, seed=0)
    assert "dataset changed" in other.load_state_dict(s.state_dict())[0]


def test_small_bucket_is_one_short_batch_and_ranks_are_disjoint():
    s = BucketBatchSampler({"g|t2v": ["x", "y"]}, 4, seed=0)
    assert s.next().ids in {("x", "y"), ("y", "x")}
    ranks = [BucketBatchSampler(GROUPS, 1, seed=2, rank=r, world_size=2) for r in range(2)]
    n = ranks[0].batches_per_epoch
    assert n == ranks[1].batches_per_epoch
    ids = [take(r, n) for r in ranks]
    seen = [i for part in ids for b in part for i in b.ids]
    assert len(seen) == len(set(seen)) == 16
