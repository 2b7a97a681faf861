"""Full and read-only disks (issue 18 / 14): every write failure ends the run with the file and the free space
named, exit 6 (a signal's stop keeps its code), the last good checkpoint intact, and no run keeps training
steps it cannot save. A resume after the disk is fixed repeats the uninterrupted run's losses.

Real filesystems where a mount can show it (a small tmpfs, root only; skipped with the reason otherwise), and
the injected faults of write_guard.py (HVTUI_INJECT_WRITE_FAIL) for what a mount cannot reach: an I/O error
on the events file, safetensors' own error type, a quota.
"""
import os
import signal
import stat

import pytest

from hvtui.core.run import exitcodes
from hvtui.core.run.control import FileControl
from hvtui.core.train import checkpoint as ckpt
from tests.helpers import loop_presets as L
from tests.helpers import reliability_kit as K

pytestmark = pytest.mark.slow
STEPS = 12
MOUNT = K.mount_problem()
needs_mount = pytest.mark.skipif(MOUNT is not None, reason=MOUNT or "")




@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory):
    """The losses of the same run, uninterrupted."""
    root = tmp_path_factory.mktemp("reference")
    r = K.run(_preset(root, clips, "ref"))
    assert r.session.exit_code == 0, r.errors()
    return L.losses(r.events())


def _preset(where, clips, name, out=None, **kw):
    data, cache = clips
    kw = {"max_train_steps": STEPS, "checkpointing_steps": 3, "checkpoints_total_limit": 2, **kw}
    return L.write_preset(where / f"{name}.toml", data, cache, out or where / name, **kw)


def _assert_named(run, *fragments):
    message, hint = run.errors()[-1]
    for f in fragments:
        assert f in message, (f, message)
    assert "free" in message and "likely a bug" not in hint and "--resume auto" in hint, (message, hint)
    return message, hint


def _resume_matches(preset, reference, from_step):
    again = K.run(preset, resume="auto")
    assert again.session.exit_code == 0, again.errors()
    got = L.losses(again.events())
    assert sorted(got) == list(range(from_step + 1, STEPS + 1))
    for step, loss in got.items():
        assert loss == pytest.approx(reference[step], abs=1e-6), step


@needs_mount
def test_a_disk_that_fills_mid_training_stops_the_run_named_and_the_resume_repeats_it(tmp_path, clips, reference,
                                                                                    monkeypatch):
    monkeypatch.setenv("HVTUI_TEST_STEP_SLEEP", "0.2")
    with K.tmpfs(tmp_path / "disk") as disk:
        preset = _preset(tmp_path, clips, "full", out=disk / "out")
        run = K.InProcessRun(preset).start()
        filled_at = run.wait_for_step(4)
        filler = K.fill(disk)
        assert run.join() == exitcodes.WRITE_FAILED
        message, hint = _assert_named(run, str(disk))
        assert "No space left on device" in message or "0 B free" in message or "only" in message
        last = run.step()
        assert last <= filled_at + 6, "trained on long after the disk filled"   # ~1 s of 0.2 s steps
        newest = ckpt.find_newest(disk / "out")
        assert f"checkpoint-{newest.step:06d}" in hint and newest.step >= 3
        ckpt.read_checkpoint(newest.path, verify=True)                           # intact, every checksum
        filler.unlink()
        monkeypatch.delenv("HVTUI_TEST_STEP_SLEEP")
        _resume_matches(preset, reference, newest.step)


@needs_mount
def test_an_output_dir_that_turns_read_only_mid_training_is_named_and_its_checkpoints_survive(
        tmp_path, clips, reference, monkeypatch):
    monkeypatch.setenv("HVTUI_TEST_STEP_SLEEP", "0.2")
    preset = _preset(tmp_path, clips, "ro")
    out = tmp_path / "ro"
    run = K.InProcessRun(preset).start()
    run.wait_for_step(4)
    with K.read_only_view(out, tmp_path / "stage"):
        assert run.join() == exitcodes.WRITE_FAILED
        message, hint = _assert_named(run, str(out), "Read-only file system")
        assert "make the folder writable" in hint
    newest = ckpt.find_newest(out)                      # the originals, as the run left them
    ckpt.read_checkpoint(newest.path, verify=True)
    assert run.step() <= newest.step + 3               # it stopped at the first save that failed
    monkeypatch.delenv("HVTUI_TEST_STEP_SLEEP")
    _resume_matches(preset, reference, newest.step)


@needs_mount
def test_a_cache_disk_without_room_is_named_while_caching(tmp_path, clips):
    data, _ = clips
    with K.tmpfs(tmp_path / "cache", nr_inodes=5):   # the root, two folders, two entries: then ENOSPC
        preset = L.write_preset(tmp_path / "c.toml", data, tmp_path / "cache", tmp_path / "out", max_train_steps=2)
        run = K.run(preset)
        assert run.session.exit_code == exitcodes.WRITE_FAILED
        message, hint = _assert_named(run, str(tmp_path / "cache"), "No space left on device", "no free inodes")
        assert "no checkpoint was written yet" in hint
        assert not list((tmp_path / "cache").rglob(".tmp-*"))   # no half entry left behind


@needs_mount
def test_sigterm_with_a_full_disk_keeps_143_names_the_failed_save_and_the_last_checkpoint(tmp_path, clips):
    with K.tmpfs(tmp_path / "disk") as disk:
        out = disk / "out"
        preset = _preset(tmp_path, clips, "term", out=out)
        proc = L.hvtui("--run", preset, env={"HVTUI_TEST_STEP_SLEEP": "0.2"})
        L.wait_for(lambda: ckpt.find_newest(out) is not None if out.is_dir() else False, proc=proc)
        FileControl(out / "control").send("pause")                # hold it still while the disk fills
        L.wait_for(lambda: any(e.kind == "state" and e.get("state") == "paused" for e in L.read_events(out)),
                   proc=proc)
        K.fill(disk)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 143, err
        assert "No space left on device" in err and str(out) in err and "likely a bug" not in err
        newest = ckpt.find_newest(out)
        assert f"the last good checkpoint is {newest.path}" in err
        ckpt.read_checkpoint(newest.path, verify=True)


@needs_mount
def test_a_run_stops_and_saves_while_a_checkpoint_still_fits(tmp_path, clips, reference, monkeypatch):
    monkeypatch.setenv("HVTUI_TEST_STEP_SLEEP", "0.2")
    with K.tmpfs(tmp_path / "disk") as disk:
        preset = _preset(tmp_path, clips, "tight", out=disk / "out")
        run = K.InProcessRun(preset).start()
        run.wait_for_step(4)
        filler = K.fill(disk, leave=1 << 20)   # room for one more checkpoint, not for the margin
        assert run.join() == exitcodes.WRITE_FAILED
        message, hint = run.errors()[-1]
        assert "while a checkpoint still fits" in message and str(disk) in message
        newest = ckpt.find_newest(disk / "out")
        assert newest.step == run.step()                  # saved at the stop: nothing trained is lost
        ckpt.read_checkpoint(newest.path, verify=True)
        filler.unlink()
        monkeypatch.delenv("HVTUI_TEST_STEP_SLEEP")
        _resume_matches(preset, reference, newest.step)


@pytest.mark.parametrize("inject, named, cause", [
    ("events@5:EIO", "events.jsonl", "Input/output error"),
    ("checkpoint@6:safetensors", "checkpoint-000006", "Input/output error"),
    ("checkpoint@6:EDQUOT", "checkpoint-000006", "Disk quota exceeded"),
    ("lora@12:EROFS", "pytorch_lora_weights.safetensors", "Read-only file system"),
])
def test_injected_write_failures_take_the_same_path(tmp_path, clips, reference, monkeypatch, inject, named, cause):
    monkeypatch.setenv("HVTUI_INJECT_WRITE_FAIL", inject)
    preset = _preset(tmp_path, clips, "inj")
    run = K.run(preset)
    assert run.session.exit_code == exitcodes.WRITE_FAILED, run.errors()
    message, hint = _assert_named(run, named, cause)
    newest = ckpt.find_newest(tmp_path / "inj")
    ckpt.read_checkpoint(newest.path, verify=True)
    assert f"checkpoint-{newest.step:06d}" in hint
    trained = run.step()
    assert trained <= int(inject.split("@")[1].split(":")[0]) + 1   # stopped at the next step boundary
    if inject.startswith("events"):   # only the log failed: the stop's own save went through
        assert newest.step == trained
    monkeypatch.delenv("HVTUI_INJECT_WRITE_FAIL")
    if newest.step < STEPS:
        _resume_matches(preset, reference, newest.step)


def test_a_failed_cache_write_is_named_not_a_bug(tmp_path, clips, monkeypatch):
    monkeypatch.setenv("HVTUI_INJECT_WRITE_FAIL", "cache@1:EDQUOT")
    data, _ = clips
    preset = L.write_preset(tmp_path / "q.toml", data, tmp_path / "own-cache", tmp_path / "out", max_train_steps=2)
    run = K.run(preset)
    assert run.session.exit_code == exitcodes.WRITE_FAILED
    _assert_named(run, str(tmp_path / "own-cache"), "Disk quota exceeded")


def test_output_files_follow_the_umask(tmp_path, clips):
    old = os.umask(0o022)
    try:
        data, _ = clips
        preset = L.write_preset(tmp_path / "u.toml", data, tmp_path / "cache", tmp_path / "out", max_train_steps=2,
                                checkpointing_steps=1)
        assert K.run(preset).session.exit_code == 0
    finally:
        os.umask(old)
    files = [f for root in (tmp_path / "out", tmp_path / "cache") for f in root.rglob("*")]
    assert any(f.suffix == ".safetensors" for f in files)
    private = [str(f) for f in files if not f.stat().st_mode & stat.S_IROTH]
    assert not private, private                    # 0644 files, 0755 folders: others on the box can read them


def test_an_events_file_that_cannot_be_opened_is_named_before_training(tmp_path, clips):
    preset = _preset(tmp_path, clips, "ev", max_train_steps=3)
    assert K.run(preset).session.exit_code == 0
    (tmp_path / "ev" / "events.jsonl").unlink()
    (tmp_path / "ev" / "events.jsonl").mkdir()        # what an unwritable events file looks like to open()
    longer = _preset(tmp_path, clips, "ev", max_train_steps=5)
    run = K.run(longer, resume="auto")
    assert run.session.exit_code == exitcodes.WRITE_FAILED
    message, hint = run.errors()[-1]
    assert str(tmp_path / "ev" / "events.jsonl") in message and "Is a directory" in message
    assert "fix that path" in hint and "checkpoint-000003" in hint
    assert not [e for e in run.events() if e.kind == "step"]     # nothing trained that the log could not show
