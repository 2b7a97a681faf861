"""One live run per output_dir (issue 18): a second run, --fresh and --resume are refused while a run holds
the folder, clearly and without writing anything there; the lock dies with its process (SIGKILL included);
attach says who holds it."""
import os
import signal
import time

import pytest

from hvtui.core.run import exitcodes
from hvtui.core.train import checkpoint as ckpt
from hvtui.core.train.run_lock import LOCK_FILE, RunLock, RunLocked, holder
from tests.helpers import loop_presets as L
from tests.helpers import reliability_kit as K

STEPS = 8




def _preset(tmp_path, clips, name="p", **kw):
    data, cache = clips
    kw = {"max_train_steps": STEPS, "checkpointing_steps": 2, **kw}
    return L.write_preset(tmp_path / f"{name}.toml", data, cache, tmp_path / "out", **kw)


def test_a_second_run_fresh_and_resume_are_refused_while_a_run_holds_the_folder(tmp_path, clips, monkeypatch):
    out = tmp_path / "out"
    first = K.InProcessRun(_preset(tmp_path, clips), fresh=True)
    monkeypatch.setenv("HVTUI_TEST_STEP_SLEEP", "0.25")
    first.start()
    first.wait_for_step(3)
    assert holder(out).pid == os.getpid()
    monkeypatch.delenv("HVTUI_TEST_STEP_SLEEP")
    events_before = (out / "events.jsonl").read_text()
    for options in ({}, {"fresh": True}, {"resume": "auto"}):
        second = K.run(_preset(tmp_path, clips, "second"), **options)
        assert second.session.exit_code == exitcodes.INVALID, options
        message, hint = second.errors()[0]
        assert "is in use by a live run" in message and f"pid {os.getpid()}" in message, message
        assert "--fresh and --resume are refused while it runs" in hint
        assert not [e for e in second.events() if e.kind in ("step", "run_started")]
        assert not list(out.glob("previous-*"))          # --fresh moved nothing of the live run
    assert (out / "events.jsonl").read_text().startswith(events_before)   # only the live run appended
    assert first.join() == 0, first.errors()
    events = L.read_events(out)
    assert [e.kind for e in events].count("run_started") == 1            # one run in its events file
    assert [c.step for c in ckpt.list_complete(out)][-1] == STEPS
    assert holder(out) is None                                           # released at the end


def test_the_lock_dies_with_its_process_and_resume_auto_goes_on(tmp_path, clips):
    out = tmp_path / "out"
    preset = _preset(tmp_path, clips)
    proc = L.hvtui("--run", preset, env={"HVTUI_TEST_STEP_SLEEP": "0.3"})
    L.wait_for(lambda: ckpt.find_newest(out) is not None if out.is_dir() else False, proc=proc)
    assert holder(out).pid == proc.pid and "--run" in holder(out).command
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert holder(out) is None                                           # no stale lock to clear by hand
    again = K.run(preset, resume="auto")
    assert again.session.exit_code == 0, again.errors()
    assert [e.get("step") for e in again.events() if e.kind == "finished"] == [STEPS]


def test_two_runs_started_together_train_once(tmp_path, clips):
    preset = _preset(tmp_path, clips)
    a = L.hvtui("--run", preset, env={"HVTUI_TEST_STEP_SLEEP": "0.1"})
    time.sleep(0.5)
    b = L.hvtui("--run", preset, env={"HVTUI_TEST_STEP_SLEEP": "0.1"})
    (_, err_a), (_, err_b) = a.communicate(timeout=600), b.communicate(timeout=600)
    assert sorted([a.returncode, b.returncode]) == [0, exitcodes.INVALID], (err_a, err_b)
    loser = err_a if a.returncode else err_b
    assert "is in use by a live run" in loser and "Traceback" not in loser
    events = L.read_events(tmp_path / "out")
    assert [e.kind for e in events].count("run_started") == 1
    assert sorted(L.losses(events)) == list(range(1, STEPS + 1))


def test_the_lock_itself(tmp_path):
    out = tmp_path / "new" / "out"
    a = RunLock(out)
    a.acquire()
    with pytest.raises(RunLocked) as e:
        RunLock(out).acquire()
    assert f"pid {os.getpid()}" in str(e.value)
    a.release(discard=True)                   # a refused start: the folders and the file it made are gone
    assert not (tmp_path / "new").exists()
    out.mkdir(parents=True)
    (out / LOCK_FILE).write_text('{"pid": 1, "host": "x", "started": 0, "command": "earlier"}\n')
    before = ((out / LOCK_FILE).read_bytes(), (out / LOCK_FILE).stat().st_mtime_ns)
    b = RunLock(out)
    b.acquire()
    assert holder(out).pid == os.getpid()
    b.release(discard=True)                   # put back as it was: a refused start writes nothing
    assert ((out / LOCK_FILE).read_bytes(), (out / LOCK_FILE).stat().st_mtime_ns) == before
    assert holder(out) is None


def test_attach_says_who_holds_the_folder_and_accepts_a_run_still_starting(tmp_path):
    from hvtui.tui.runs import AttachedRun, attach_problem

    out = tmp_path / "out"
    lock = RunLock(out)
    lock.acquire()                            # a run that holds the folder, events not written yet
    try:
        assert attach_problem(out) is None
        first = AttachedRun(out).poll()
        assert first[0].kind == "log" and f"pid {os.getpid()}" in first[0].get("message")
    finally:
        lock.release()
    assert attach_problem(out) is None        # nobody holds it yet: the Train pane waits for a run that is starting
    (tmp_path / "file").write_text("x")
    assert "a file, not a folder" in attach_problem(tmp_path / "file")
