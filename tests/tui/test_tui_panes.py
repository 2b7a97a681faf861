"""Dataset, Environment and attached Train panes, and the resume question, driven by Pilot."""
from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest

from hvtui.core.run.bus import Bus  # noqa: E402
from hvtui.core.run.events import Event, log, state  # noqa: E402
from hvtui.core.run.runlog import RunLogWriter  # noqa: E402
from hvtui.tui.app import HvtuiApp  # noqa: E402
from hvtui.tui.dialogs import ChoiceScreen  # noqa: E402
from hvtui.tui.panes.config import ConfigPane  # noqa: E402
from hvtui.tui.panes.dataset import DatasetPane  # noqa: E402
from hvtui.tui.panes.environment import EnvironmentPane  # noqa: E402
from hvtui.tui.services import Services, Unavailable  # noqa: E402
from hvtui.tui.settings import Settings  # noqa: E402
from tests.helpers.repo_paths import REPO
from tests.helpers.tui_fakes import FakeBackend, no_gpu, screen_text, wait_for, write_presets

SIZE = (100, 32)


def make_app(tmp_path, presets=None, **kwargs) -> HvtuiApp:
    presets = presets or write_presets(tmp_path / "presets")
    attach = kwargs.pop("attach", None)
    services = Services(**{"backend": FakeBackend(), "telemetry": no_gpu, **kwargs})
    app = HvtuiApp(presets, 0, services=services, settings=Settings(directory=tmp_path / "cfg"), attach=attach,
                   env={})
    app.animation_level = "none"
    return app


def fake_report():
    from hvtui.core.dataset.model import Bucket, DatasetReport, Discard, Sample

    def sample(name, w, h, frames, repeats=0):
        return Sample(id=f"clips/{name}", path=Path(f"/d/{name}"), dataset_id="clips", captions=[f"a {name}"],
                      width=w, height=h, frames=frames, fps_in=30.0, fps_out=24.0, frame_indices=list(range(frames)),
                      repeats=repeats, source_width=w * 2, source_height=h * 2, source_frames=90, relpath=name)
    wide = Bucket("848x480@61", 848, 480, 61, [sample("a.mp4", 848, 480, 61), sample("b.mp4", 848, 480, 61, 1)])
    tall = Bucket("480x848@33", 480, 848, 33, [sample("c.mp4", 480, 848, 33)])
    discards = {"too_short": [Discard("clips", Path("/d/s.mp4"), "s.mp4", "too_short", "12 frames < min_frames 33")],
                "no_caption": [Discard("clips", Path("/d/n.mp4"), "n.mp4", "no_caption", "no n.txt")]}
    return DatasetReport(buckets=[wide, tall], discarded=discards, warnings=["one clip was upscaled"])


def test_dataset_pane_scans_in_a_worker_with_progress(tmp_path):
    gate = threading.Event()
    calls = []

    def scan(preset, progress=None, use_cache=True):
        calls.append(use_cache)
        progress(1, 4, "a.mp4")
        gate.wait(10)                       # hold the worker: the UI must stay responsive meanwhile
        progress(4, 4, "c.mp4")
        return fake_report()

    async def go():
        app = make_app(tmp_path, scan_preset=scan)
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.press("f2")
            pane = app.query_one(DatasetPane)
            assert await wait_for(pilot, lambda: "scanning 1/4" in screen_text(app))
            await pilot.press("f1")                     # keys still work while scanning
            assert app.visible_pane == "config"
            await pilot.press("f2")
            gate.set()
            assert await wait_for(pilot, lambda: pane.report is not None)
            await pilot.pause(0.1)
            text = screen_text(app)
            assert "3 clips kept, 2 discarded, 2 buckets, 4 samples/epoch" in text
            assert "848x480@61" in text and "75%" in text and "25%" in text      # share of samples per epoch
            assert "too few frames (1)" in text and "12 frames < min_frames 33" in text
            assert "a.mp4" in text and "b.mp4" in text and "c.mp4" not in text.split("clips in")[1]
            table = app.query_one("#bucket-table")
            table.focus()
            await pilot.press("down")                   # select the second bucket: its clips are listed
            await pilot.pause(0.1)
            assert "c.mp4" in screen_text(app).split("clips in")[1]
            await pilot.press("r")                      # rescan ignores the cache
            assert await wait_for(pilot, lambda: calls == [True, False] and not pane.scanning)
    asyncio.run(go())


def test_dataset_pane_reports_scanner_errors(tmp_path):
    def scan(preset, progress=None, use_cache=True):
        raise Unavailable("the dataset scanner is not available in this build")

    async def go():
        app = make_app(tmp_path, scan_preset=scan)
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.press("f2")
            assert await wait_for(pilot, lambda: "not available in this build" in screen_text(app))
    asyncio.run(go())


@pytest.mark.skipif(not (REPO / "presets" / "demo-data").is_dir(), reason="demo clips not in this checkout")
def test_dataset_pane_with_the_real_scanner_on_the_demo_clips(tmp_path):
    presets = tmp_path / "presets"
    shutil.copytree(REPO / "presets", presets)

    async def go():
        app = make_app(tmp_path, presets=[presets / "demo.toml"])
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.press("f2")
            pane = app.query_one(DatasetPane)
            assert await wait_for(pilot, lambda: pane.report is not None, timeout=60)
            assert pane.report.clips_kept > 0
            assert f"{pane.report.clips_kept} clips kept" in screen_text(app)
    asyncio.run(go())


def test_the_preset_list_shows_long_names_whole(tmp_path):
    """The shipped t2v-480p-24gb-int8 was cut to 't2v-480p-24gb-int' by a fixed 22-cell list."""
    long = "t2v-480p-24gb-int8-long"

    async def go(width: int) -> str:
        app = make_app(tmp_path / str(width), presets=write_presets(tmp_path / str(width), ("a", long)))
        async with app.run_test(size=(width, 24)) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.pause(0.1)
            return screen_text(app)

    assert f"2. {long}" in asyncio.run(go(120))
    assert f"2. {long}" not in (narrow := asyncio.run(go(80))) and "field" in narrow  # 30 % at most: the form first


def test_environment_pane_shows_checks_components_and_fit(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.press("f3")
            pane = app.query_one(EnvironmentPane)
            assert await wait_for(pilot, lambda: pane.report is not None, timeout=60)
            await pilot.pause(0.1)
            text = screen_text(app)
            assert "ok," in text and "failed" in text
            assert "python" in text and "transformer" in text and "built in code" in text
            fit = str(pane.query_one("#fit").content)          # below the fold at this size
            assert "peak" in fit and "GiB" in fit
            first = pane.report
            await pilot.press("r")
            assert await wait_for(pilot, lambda: pane.report is not first, timeout=60)
    asyncio.run(go())


def test_resume_question_when_a_checkpoint_exists(tmp_path):
    presets = write_presets(tmp_path / "presets")
    ckpt = tmp_path / "presets" / "out" / "alpha" / "checkpoints" / "checkpoint-000010"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text('{"step": 10}')
    (ckpt / "COMPLETE").write_text("")
    seen = []

    def backend(preset, bus, control, options):
        seen.append((options.resume, options.fresh))
        bus.publish(Event("finished", {"status": "completed", "exit_code": 0}))
        return 0

    async def go():
        app = make_app(tmp_path, presets=presets, backend=backend)
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.press("s")
            assert isinstance(app.screen, ChoiceScreen) and "checkpoint-000010" in app.screen.message
            await pilot.press("r")
            assert await wait_for(pilot, lambda: seen == [(str(ckpt), False)])
            assert await wait_for(pilot, lambda: app.train_state.state == "finished")
            await pilot.press("s", "f")     # start fresh this time: the trainer moves the earlier run aside
            assert await wait_for(pilot, lambda: seen == [(str(ckpt), False), (None, True)])
    asyncio.run(go())


def test_attach_follows_events_and_sends_commands(tmp_path):
    out = tmp_path / "run"
    bus = Bus()
    writer = RunLogWriter(out)
    bus.add_sink(writer)
    bus.publish(Event("run_started", {"max_steps": 100, "device": "cuda:0", "output_dir": str(out)}))
    bus.publish(state("running"))
    bus.publish(Event("phase", {"phase": "training"}))
    for s in range(1, 6):
        bus.publish(Event("step", {"step": s, "max_steps": 100, "loss": 1.0 / s, "lr": 1e-4, "eta_s": 95 - s}))

    async def go():
        app = make_app(tmp_path, attach=out)
        async with app.run_test(size=SIZE) as pilot:
            assert app.visible_pane == "train"
            st = app.train_state
            assert await wait_for(pilot, lambda: st.step.get("step") == 5)
            assert f"attached {out}" in screen_text(app)
            bus.publish(Event("step", {"step": 6, "max_steps": 100, "loss": 0.1}))   # the run goes on
            assert await wait_for(pilot, lambda: st.step.get("step") == 6)
            await pilot.press("c", "v", "p", "x")          # save now, sample now, pause, stop
            await pilot.pause(0.1)
            commands = sorted(p.suffix for p in (out / "control").iterdir())
            assert commands == [".pause", ".sample", ".save", ".stop"]
            await pilot.press("s")                        # cannot start a run that another process owns
            await pilot.pause(0.1)
            assert not (out / "control" / "x.start").exists()
            bus.publish(log("saved checkpoint"))
            bus.publish(state("stopped"))
            bus.publish(Event("finished", {"status": "stopped", "exit_code": 0, "step": 6}))
            assert await wait_for(pilot, lambda: st.state == "stopped")
            await pilot.press("q")                        # no question: the run is not ours
            assert await wait_for(pilot, lambda: not app.is_running)
        writer.close()
    asyncio.run(go())
