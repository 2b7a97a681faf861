"""Checkpoints that explain themselves (issue 18 / 14): a newest checkpoint that is not whole is said and
passed over; a resume that would reshape the LR schedule says how (and needs --allow-changed); `c` while
paused saves at once and that checkpoint is never pruned; a save after an unexpected error inside a step
records the data position before that step, so the resume trains it and repeats the uninterrupted run."""
import time

import pytest

from hvtui.core.run import exitcodes
from hvtui.core.train import checkpoint as ckpt
from tests.helpers import loop_presets as L
from tests.helpers import reliability_kit as K

pytestmark = pytest.mark.slow
STEPS = 8


CLIP_COUNT = 3   # the conftest's `clips`


def _preset(tmp_path, clips, name="p", **kw):
    data, cache = clips
    kw = {"max_train_steps": STEPS, "checkpointing_steps": 2, "checkpoints_total_limit": 3, **kw}
    return L.write_preset(tmp_path / f"{name}.toml", data, cache, tmp_path / "out", **kw)


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    r = K.run(_preset(root, clips))
    assert r.session.exit_code == 0
    return L.losses(r.events())


@pytest.mark.parametrize("damage, said", [
    ("state.json", "unreadable checkpoint state"),
    ("COMPLETE", "no COMPLETE marker"),
])
def test_a_newest_checkpoint_that_is_not_whole_is_said_and_passed_over(tmp_path, clips, reference, damage, said):
    preset = _preset(tmp_path, clips, max_train_steps=4)
    assert K.run(preset).session.exit_code == 0
    newest = ckpt.find_newest(tmp_path / "out").path
    if damage == "COMPLETE":
        (newest / ckpt.MARKER).unlink()
    else:
        (newest / ckpt.STATE_FILE).write_text("{ not json")
    run = K.run(_preset(tmp_path, clips), resume="auto", allow_changed=True)
    assert run.session.exit_code == 0, run.errors()
    assert any(newest.name in w and said in w for w in run.warnings()), run.warnings()
    started = [e for e in run.events() if e.kind == "run_started"][0]
    assert started.get("resume_from").endswith("checkpoint-000002")
    for step, loss in L.losses(run.events()).items():
        assert loss == pytest.approx(reference[step], abs=1e-6)


def test_raising_max_train_steps_on_a_cosine_run_says_what_it_does_to_the_schedule(tmp_path, clips):
    assert K.run(_preset(tmp_path, clips, lr_scheduler="cosine", max_train_steps=4)).session.exit_code == 0
    longer = _preset(tmp_path, clips, lr_scheduler="cosine", max_train_steps=8)
    refused = K.run(longer, resume="auto")
    assert refused.session.exit_code == exitcodes.RESUME_MISMATCH
    message, hint = refused.errors()[0]
    assert "max_train_steps: 4 -> 8 reshapes the cosine schedule" in message
    assert "learning rate at the resumed step 4: 0 -> 0.001" in message and "--allow-changed" in hint
    allowed = K.run(longer, resume="auto", allow_changed=True)
    assert allowed.session.exit_code == 0
    assert any("reshapes the cosine schedule" in w for w in allowed.warnings())
    assert [e.get("lr") for e in allowed.events() if e.kind == "step"][0] > 0   # as it said: not 0 any more
    # a constant schedule does not depend on max_train_steps: training longer needs no flag
    assert K.run(_preset(tmp_path, clips, "c", max_train_steps=4), fresh=True).session.exit_code == 0
    assert K.run(_preset(tmp_path, clips, "c", max_train_steps=6), resume="auto").session.exit_code == 0


def test_a_checkpoint_asked_for_while_paused_is_written_at_once_and_never_pruned(tmp_path, clips, monkeypatch):
    monkeypatch.setenv("HVTUI_TEST_STEP_SLEEP", "0.3")
    preset = _preset(tmp_path, clips, max_train_steps=12, checkpointing_steps=7, checkpoints_total_limit=1)
    run = K.InProcessRun(preset).start()
    run.wait_for_step(2)
    control = run.session.control
    control.request("pause")
    deadline = time.monotonic() + 60
    while not any(e.kind == "state" and e.get("state") == "paused" for e in run.events()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    paused_at = run.step()
    control.request("save")
    while not any(e.kind == "checkpoint" for e in run.events()):
        assert time.monotonic() < deadline, "no checkpoint while paused"
        time.sleep(0.05)
    saved = [e for e in run.events() if e.kind == "checkpoint"][0]
    assert saved.get("step") == paused_at == run.step()            # written during the pause
    assert run.session.bus.latest("state").get("state") == "paused"
    control.request("resume")
    assert run.join() == 0, run.errors()
    kept = ckpt.list_complete(tmp_path / "out")
    assert [c.step for c in kept] == [paused_at, 12]                # the limit of 1 pruned 7, not the manual one
    assert kept[0].state.get("manual") is True


def test_a_save_after_an_unexpected_error_in_a_step_lets_the_resume_train_that_step(tmp_path, clips, reference,
                                                                                   monkeypatch):
    from hvtui.core.train import step as step_module

    real, calls = step_module.flow_matching_loss, {"n": 0}

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("injected failure inside step 5")
        return real(*args, **kw)

    monkeypatch.setattr(step_module, "flow_matching_loss", failing)
    preset = _preset(tmp_path, clips, checkpointing_steps=0)
    run = K.run(preset)
    assert run.session.exit_code == exitcodes.UNEXPECTED
    newest = ckpt.find_newest(tmp_path / "out")
    assert newest.step == 4
    monkeypatch.setattr(step_module, "flow_matching_loss", real)
    again = K.run(preset, resume="auto")
    assert again.session.exit_code == 0, again.errors()
    got = L.losses(again.events())
    assert sorted(got) == [5, 6, 7, 8]
    for step, loss in got.items():
        assert loss == pytest.approx(reference[step], abs=1e-6), step


def test_a_torch_file_overwritten_with_any_bytes_is_named_damaged(tmp_path):
    """Random bytes make torch's unpickler raise many kinds of error (UnpicklingError, IndexError, ...): each
    one is a damaged file the user is told about, never a crash ("likely a bug")."""
    import random

    rng = random.Random(0)
    kinds = set()
    for i in range(60):
        path = tmp_path / f"optimizer-{i}.pt"
        path.write_bytes(rng.randbytes(4096))
        with pytest.raises(ckpt.CheckpointError, match="damaged") as caught:
            ckpt.read_torch_file(path)
        assert str(path) in str(caught.value)
        kinds.add(str(caught.value).split("(")[1].split(":")[0])
    assert len(kinds) >= 2, kinds   # more than one kind of unpickler error was met and named
