"""Atomic checkpoints: complete marker, keep-last-N, newest-complete lookup, exact optimizer/RNG restore.

Test hook (env): HVTUI_TEST_CHECKPOINT_SLEEP="STEP:SECONDS" sleeps inside the write of the checkpoint for
STEP after its temporary folder exists (used by the SIGKILL test in test_train_loop_run.py).
"""
import json
import random

import numpy as np
import pytest
import torch

from hvtui.core.train import checkpoint as ckpt
from hvtui.core.train.optim import OptimizerError, build_optimizer, build_scheduler


def _model():
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 3)
    opt = build_optimizer("adamw", m.parameters(), 1e-2)
    sch = build_scheduler("constant_with_warmup", opt, 3, 10)
    return m, opt, sch


def _train(m, opt, sch, n):
    for _ in range(n):
        loss = m(torch.randn(2, 4)).pow(2).mean()
        loss.backward()
        opt.step()
        sch.step()
        opt.zero_grad()
    return loss.item()


def _save(tmp_path, step, m, opt, sch, limit=2):
    def write_lora(d):
        torch.save(m.state_dict(), d / "weights.pt")
    return ckpt.save(tmp_path, step, write_lora=write_lora, optimizer=opt, scheduler=sch,
                     state={"summary": {"train_batch_size": 1}, "data": {"epoch": 0, "index": step}}, limit=limit)


def test_save_restore_continues_exactly(tmp_path):
    m, opt, sch = _model()
    _train(m, opt, sch, 4)
    info = _save(tmp_path, 4, m, opt, sch)
    assert (info.path / ckpt.MARKER).is_file() and info.path.name == "checkpoint-000004"
    expected = [_train(m, opt, sch, 1) for _ in range(3)]

    m2, opt2, sch2 = _model()
    m2.load_state_dict(torch.load(info.path / "weights.pt"))
    ckpt.load_states(ckpt.find_newest(tmp_path), opt2, sch2)
    got = [_train(m2, opt2, sch2, 1) for _ in range(3)]
    assert got == expected           # same RNG (torch.randn inputs), optimizer moments and LR schedule
    assert sch2.get_last_lr() == sch.get_last_lr()


def test_rng_states_round_trip():
    state = ckpt.capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_keep_last_n_and_ignore_incomplete(tmp_path):
    m, opt, sch = _model()
    for step in (2, 4, 6):
        _save(tmp_path, step, m, opt, sch, limit=2)
    assert [c.step for c in ckpt.list_complete(tmp_path)] == [4, 6]
    # an interrupted write: a temporary folder and a renamed one without the marker
    tmp = ckpt.begin(tmp_path, 8)
    (tmp / "optimizer.pt").write_bytes(b"partial")
    broken = ckpt.root(tmp_path) / "checkpoint-000010"
    broken.mkdir()
    assert ckpt.find_newest(tmp_path).step == 6
    assert ckpt.resolve_resume(tmp_path, "auto").step == 6
    with pytest.raises(ckpt.CheckpointError, match="incomplete"):
        ckpt.resolve_resume(tmp_path, str(broken))
    assert ckpt.clean_temporaries(tmp_path) == [tmp]
    assert ckpt.resolve_resume(tmp_path, None) is None


def test_same_step_saved_twice_replaces(tmp_path):
    m, opt, sch = _model()
    _save(tmp_path, 3, m, opt, sch)
    _train(m, opt, sch, 1)
    _save(tmp_path, 3, m, opt, sch)
    assert [c.step for c in ckpt.list_complete(tmp_path)] == [3]
    assert not [p for p in ckpt.root(tmp_path).iterdir() if p.name.startswith(".")]
    assert json.loads((ckpt.root(tmp_path) / "checkpoint-000003" / ckpt.STATE_FILE).read_text())["step"] == 3


def test_compare_summary():
    saved = {"train_batch_size": 1, "learning_rate": 1e-4, "lora_rank": 8, "buckets": ["a"]}
    changed, incompatible = ckpt.compare_summary(saved, {**saved, "train_batch_size": 2, "lora_rank": 16})
    assert changed == ["train_batch_size: 1 -> 2"]
    assert incompatible == ["lora_rank: 8 -> 16"]
    assert ckpt.compare_summary(saved, dict(saved)) == ([], [])


def test_optimizer_names():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer("adamw_bf16", p, 1e-3), torch.optim.AdamW)
    from transformers.optimization import Adafactor

    assert isinstance(build_optimizer("adafactor", p, 1e-3), Adafactor)
    for name in ("adamw8bit", "prodigy"):
        try:
            build_optimizer(name, p, 1e-3)
        except OptimizerError as e:
            assert "pip install" in str(e)
    with pytest.raises(OptimizerError, match="unknown optimizer"):
        build_optimizer("sgd", p, 1e-3)
