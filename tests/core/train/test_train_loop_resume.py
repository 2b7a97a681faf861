"""Headless `hvtui --run` killed and resumed (subprocesses, the builtin tiny model on CPU).

- SIGTERM at step k: the run saves and exits 143; `--resume auto` continues with the same step numbers and
  the same losses as an uninterrupted run with the same seed (to 1e-5).
- SIGKILL while a checkpoint is being written (test hook HVTUI_TEST_CHECKPOINT_SLEEP="STEP:SECONDS" sleeps
  inside the write after the temporary folder exists): the previous checkpoint stays complete and
  `--resume auto` uses it.
"""
import signal

import pytest

from hvtui.core.preset.schema import load_preset
from hvtui.core.run.session import RunOptions, Session
from hvtui.core.train import checkpoint as ckpt
from tests.helpers import loop_presets as L

pytestmark = pytest.mark.slow
STEPS = 8

CLIP_COUNT = 3   # the conftest's `clips`


def _preset(tmp_path, clips, name, **kw):
    data, cache = clips
    return L.write_preset(tmp_path / f"{name}.toml", data, cache, tmp_path / name, max_train_steps=STEPS, **kw)


def _in_process(preset_path, resume=None) -> int:
    """The same run without a subprocess (saves the ~10 s of imports a fresh interpreter pays)."""
    s = Session(load_preset(preset_path), options=RunOptions(resume=resume))
    s.start()
    s.join()
    return s.exit_code


def _step_seen(out, k):
    return lambda: any(e.kind == "step" and e.get("step") >= k for e in L.read_events(out)) \
        if (out / "events.jsonl").exists() else False


def test_sigterm_then_resume_matches_an_uninterrupted_run(tmp_path, clips):
    assert _in_process(_preset(tmp_path, clips, "full")) == 0
    expected = L.losses(L.read_events(tmp_path / "full"))
    assert sorted(expected) == list(range(1, STEPS + 1))

    p = _preset(tmp_path, clips, "cut")
    run = L.hvtui("--run", p, env={"HVTUI_TEST_STEP_SLEEP": "0.3"})
    L.wait_for(_step_seen(tmp_path / "cut", 3), proc=run)
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 143, err
    first = L.read_events(tmp_path / "cut")
    k = ckpt.find_newest(tmp_path / "cut").step
    assert 3 <= k < STEPS and first[-1].get("status") == "interrupted"
    assert (tmp_path / "cut" / "pytorch_lora_weights.safetensors").is_file()

    again = L.hvtui("--run", p, "--resume", "auto")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    events = L.read_events(tmp_path / "cut")
    resumed = events[max(i for i, e in enumerate(events) if e.kind == "run_started"):]
    assert resumed[0].get("resume_from").endswith(f"checkpoint-{k:06d}")
    got = L.losses(resumed)
    assert sorted(got) == list(range(k + 1, STEPS + 1))            # same step numbers
    for step, loss in got.items():
        assert loss == pytest.approx(expected[step], abs=1e-5), step
    for step, loss in L.losses(first).items():
        assert loss == pytest.approx(expected[step], abs=1e-5), step


def test_sigkill_during_checkpoint_write_keeps_the_previous_one(tmp_path, clips):
    p = _preset(tmp_path, clips, "kill", checkpointing_steps=2, checkpoints_total_limit=3)
    out_dir = tmp_path / "kill"
    run = L.hvtui("--run", p, env={"HVTUI_TEST_CHECKPOINT_SLEEP": "4:120"})
    tmp = L.wait_for(lambda: list(ckpt.root(out_dir).glob(".tmp-checkpoint-000004-*"))
                     if ckpt.root(out_dir).is_dir() else None, proc=run)
    L.wait_for(lambda: (tmp[0] / ckpt.STATE_FILE).exists(), proc=run)   # inside the write, files half there
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert [c.step for c in ckpt.list_complete(out_dir)] == [2]
    assert not (ckpt.root(out_dir) / "checkpoint-000004").exists()

    assert _in_process(p, resume="auto") == 0
    events = L.read_events(out_dir)
    resumed = events[max(i for i, e in enumerate(events) if e.kind == "run_started"):]
    assert resumed[0].get("resume_from").endswith("checkpoint-000002")
    assert sorted(L.losses(resumed)) == list(range(3, STEPS + 1))
    assert not list(ckpt.root(out_dir).glob(".tmp-*"))              # the remains were cleaned up
    assert [c.step for c in ckpt.list_complete(out_dir)] == [4, 6, 8]
