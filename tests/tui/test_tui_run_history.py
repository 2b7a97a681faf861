"""The run that is already in an output_dir: read from its events.jsonl and its checkpoint folder, shown by
the Train pane at start-up and by `--attach`; the resume question says what that run is."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hvtui.core.run.bus import Bus  # noqa: E402
from hvtui.core.run.events import Event, phase, state  # noqa: E402
from hvtui.core.run.history import RunFollower  # noqa: E402
from hvtui.core.run.runlog import RunLogWriter  # noqa: E402
from hvtui.tui.dialogs import ChoiceScreen  # noqa: E402
from hvtui.tui.panes.config import ConfigPane  # noqa: E402
from hvtui.tui.resume_question import describe_run, resume_question  # noqa: E402
from hvtui.tui.train_state import TrainState  # noqa: E402
from tests.helpers.tui_fakes import screen_text, wait_for, write_presets


def write_process(out: Path, *, first: int, last: int, max_steps: int, resume_from: str | None = None,
                  end: str | None = "completed", checkpoints=(), started: bool = True) -> None:
    """One process's part of events.jsonl, as the trainer writes it (header, then events)."""
    bus, writer = Bus(), RunLogWriter(out)
    bus.add_sink(writer)
    bus.publish(state("running"))
    bus.publish(phase("loading", "scanning datasets"))
    if started:
        bus.publish(Event("run_started", {"max_steps": max_steps, "device": "cpu", "resume_from": resume_from}))
        bus.publish(phase("training"))
        for s in range(first, last + 1):
            bus.publish(Event("step", {"step": s, "max_steps": max_steps, "loss": 1.0 / s, "eta_s": max_steps - s}))
            if s in checkpoints:
                path = out / "checkpoints" / f"checkpoint-{s:06d}"
                path.mkdir(parents=True)
                (path / "state.json").write_text(json.dumps({"step": s}))
                (path / "COMPLETE").write_text("")
                bus.publish(Event("checkpoint", {"step": s, "path": str(path)}))
    else:   # refused before training, as hvtui versions before one-run-per-file wrote it
        bus.publish(Event("error", {"message": "holds an earlier run", "hint": "--resume auto"}))
    if end:
        bus.publish(state({"completed": "finished"}.get(end, end)))
        bus.publish(Event("finished", {"status": end, "exit_code": 0 if started else 2, "step": last}))
    writer.close()


def fold(path: Path, follower: RunFollower | None = None) -> TrainState:
    st = TrainState()
    follower = follower or RunFollower(path)
    while True:
        st.apply(follower.poll())
        if follower.caught_up:
            return st


# ------------------------------------------------------------------ reading the file

def test_follower_reads_headers_partial_lines_and_a_replaced_file(tmp_path):
    path = tmp_path / "events.jsonl"
    f = RunFollower(path)
    assert f.poll() == [] and f.caught_up                       # no file yet: waiting, not an error
    path.write_text('{"schema": 1, "hvtui_events": true, "pid": 42, "time": 1.0}\n'
                    '{"kind": "log", "time": 2.0, "level": "info", "message": "caf\u00e9"}\n{"kind": "st')
    got = f.poll()
    assert [e.kind for e in got] == ["process_start", "log"] and f.pid == 42
    assert got[1].get("message") == "café"
    with open(path, "a") as fh:
        fh.write('ate", "time": 3.0, "state": "running"}\n')
    assert [e.kind for e in f.poll()] == ["state"]
    moved = tmp_path / "previous.jsonl"
    os.replace(path, moved)                                      # a fresh start moves the earlier file aside
    assert f.poll() == []
    path.write_text('{"schema": 1, "hvtui_events": true, "pid": 7, "time": 5.0}\n')
    assert [e.kind for e in f.poll()] == ["process_start"] and f.pid == 7


def test_follower_reads_a_long_file_in_slices_without_breaking_characters(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = [json.dumps({"kind": "log", "time": float(i), "level": "info", "message": "ü" * (i % 7)})
             for i in range(500)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    f = RunFollower(path, max_read=333)                       # an odd size: slices split characters
    seen, polls = [], 0
    while not f.caught_up or polls == 0:
        seen += f.poll()
        polls += 1
    assert polls > 10 and [e.get("message") for e in seen] == ["ü" * (i % 7) for i in range(500)]


# ------------------------------------------------------------------ folding several processes

def test_a_refused_start_does_not_hide_the_run_in_the_folder(tmp_path):
    out = tmp_path / "out"
    write_process(out, first=1, last=30, max_steps=30, checkpoints=(10, 20, 30))
    write_process(out, first=0, last=0, max_steps=30, started=False, end="failed")
    st = fold(out / "events.jsonl")
    assert st.state == "finished" and st.step["step"] == 30 and len(st.steps) == 30
    assert st.finished["status"] == "completed" and st.error is None
    assert any("ended before training" in m for _, _, _, m in st.logs)
    assert describe_run(st) == "that finished at step 30 of 30"


def test_a_resume_continues_the_history_and_a_new_run_replaces_it(tmp_path):
    out = tmp_path / "out"
    write_process(out, first=1, last=25, max_steps=40, end="stopped", checkpoints=(20,))
    write_process(out, first=21, last=40, max_steps=40, resume_from=str(out / "checkpoints/checkpoint-000020"))
    st = fold(out / "events.jsonl")
    assert st.steps == list(range(1, 41))          # steps 21-25 redone after the resume: counted once
    assert st.state == "finished" and [c[0] for c in st.checkpoints] == [20]
    generation = st.generation
    write_process(out, first=1, last=5, max_steps=50, end=None)     # a new run is starting in the same file
    follower = RunFollower(out / "events.jsonl")
    st = fold(out / "events.jsonl", follower)
    assert st.steps == [1, 2, 3, 4, 5] and st.state == "running" and st.started["max_steps"] == 50
    assert st.checkpoints == [] and st.generation > generation
    assert st.logs == type(st.logs)()                # the earlier runs' log lines went with them


def test_a_run_whose_process_vanished_reads_as_interrupted(tmp_path):
    from hvtui.tui.runs import AttachedRun

    out = tmp_path / "out"
    write_process(out, first=1, last=7, max_steps=30, end=None, checkpoints=(5,))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    text = (out / "events.jsonl").read_text().replace(f'"pid": {os.getpid()}', f'"pid": {dead.pid}')
    (out / "events.jsonl").write_text(text)
    run = AttachedRun(out)
    st = TrainState()
    st.apply(run.poll())
    assert st.state == "running" and run.active
    old = time.time() - 60                           # the file has been quiet for a minute
    os.utime(out / "events.jsonl", (old, old))
    st.apply(run.poll())
    assert st.state == "interrupted" and not run.active
    assert "ended at step 7 of 30 without a final event" in describe_run(st)


# ------------------------------------------------------------------ the resume question

def test_resume_question_names_the_run_and_the_checkpoint(tmp_path):
    out = tmp_path / "out"
    write_process(out, first=1, last=30, max_steps=30, checkpoints=(10, 20, 30))
    st = fold(out / "events.jsonl")
    q = resume_question(out, out / "checkpoints/checkpoint-000030", 30, 30, st)
    assert "finished at step 30 of 30" in q.message and "trains nothing more" in q.message
    assert [key for key, _, _ in q.choices] == ["f", "n"]      # nothing to resume: no resume button
    q = resume_question(out, out / "checkpoints/checkpoint-000030", 30, 50, st)
    assert "checkpoint-000030 (step 30)" in q.message and "trains 20 more steps to 50" in q.message
    assert q.choices[0] == ("r", "Resume from step 30", str(out / "checkpoints/checkpoint-000030"))
    assert "previous-TIME/" in q.message


# ------------------------------------------------------------------ in the app

def app_on(tmp_path, **kwargs):
    from tests.tui.test_tui_snapshots import make_app

    return make_app(write_presets(tmp_path / "presets"), tmp_path, **kwargs)


def test_train_pane_shows_the_run_in_the_output_dir_at_start_up(tmp_path):
    out = tmp_path / "presets" / "out" / "alpha"        # the test presets' output_dir
    write_presets(tmp_path / "presets")
    write_process(out, first=1, last=20, max_steps=20, checkpoints=(10, 20))
    import shutil
    shutil.rmtree(out / "checkpoints" / "checkpoint-000010")   # pruned since: not listed

    async def go():
        app = app_on(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.press("f4")
            assert await wait_for(pilot, lambda: app.train_state.state == "finished")
            await pilot.pause(0.3)
            text = screen_text(app)
            assert "FINISHED" in text and "step 20/20" in text and "IDLE" not in text
            assert "ckpt 20 checkpoint-000020" in text and "checkpoint-000010" not in text
            assert "none yet" not in text and "s: start (resume it or start fresh)" in text
            assert len(app.train_state.steps) == 20                       # the loss history is charted
            await pilot.press("]")                                          # another preset: its own (empty) dir
            assert await wait_for(pilot, lambda: app.train_state.state == "idle" and not app.train_state.steps)
    asyncio.run(go())


def test_resume_dialog_fits_80x24_and_says_what_it_resumes(tmp_path):
    out = tmp_path / "presets" / "out" / "alpha"
    write_presets(tmp_path / "presets")
    write_process(out, first=1, last=17, max_steps=30, end="stopped", checkpoints=(10, 17))

    async def go():
        app = app_on(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            assert await wait_for(pilot, lambda: app.train_state.state == "stopped")
            await pilot.press("s")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen))
            await pilot.pause(0.2)
            text = screen_text(app)
            assert "was stopped at step 17 of 30" in text and "checkpoint-000017 (step 17)" in text
            for label in ("r: Resume from step 17", "f: Start fresh", "n: Cancel"):
                assert label in text, text
            # each button lies whole inside the screen
            for button in app.screen.query("Button"):
                r = button.region
                assert r.width >= len(str(button.label)) and r.right <= 80 and r.bottom <= 24 and r.y >= 0
            await pilot.press("n")
            assert await wait_for(pilot, lambda: not isinstance(app.screen, ChoiceScreen))
    asyncio.run(go())


def test_attach_waits_for_a_run_that_is_starting(tmp_path, monkeypatch):
    out = tmp_path / "not-yet"
    monkeypatch.chdir(tmp_path)

    async def go():
        from tests.tui.test_tui_snapshots import make_app

        app = make_app([], tmp_path, telemetry=None, attach=out)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.3)
            assert "waiting for a run in" in screen_text(app)
            write_process(out, first=1, last=3, max_steps=30, end=None)
            assert await wait_for(pilot, lambda: app.train_state.step.get("step") == 3)
            assert await wait_for(pilot, lambda: "step 3/30" in screen_text(app) and "waiting" not in screen_text(app))
            os.replace(out / "events.jsonl", tmp_path / "earlier.jsonl")   # a fresh start moves it aside
            write_process(out, first=1, last=2, max_steps=8, end=None)
            assert await wait_for(pilot, lambda: app.train_state.started.get("max_steps") == 8)
            assert app.train_state.steps == [1, 2]
    asyncio.run(go())


def test_no_start_beside_a_run_another_process_is_training_here(tmp_path):
    out = tmp_path / "presets" / "out" / "alpha"
    write_presets(tmp_path / "presets")
    write_process(out, first=1, last=4, max_steps=30, end=None, checkpoints=(4,))   # its writer (us) is alive
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    text = (out / "events.jsonl").read_text().replace(f'"pid": {os.getpid()}', f'"pid": {helper.pid}')
    (out / "events.jsonl").write_text(text)
    started = []

    def backend(preset, bus, control, options):
        started.append(options)
        return 0

    async def go():
        from tests.tui.test_tui_app import make_app

        app = make_app(tmp_path, backend=backend)
        async with app.run_test(size=(80, 24)) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            assert await wait_for(pilot, lambda: app.train_state.state == "running")
            await pilot.press("s")
            await pilot.pause(0.3)
            assert not isinstance(app.screen, ChoiceScreen) and started == []
            assert any(f"pid {helper.pid}" in str(n.message) for n in app._notifications)
    try:
        asyncio.run(go())
    finally:
        helper.kill()
        helper.wait()

