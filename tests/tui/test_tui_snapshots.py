"""Screens at a fixed terminal size (80x24, Textual pinned exactly), compared as plain text with the files in
tests/tui/snapshots/. After an intended change of a screen, regenerate them and review the diff:

    HVTUI_UPDATE_SNAPSHOTS=1 python -m pytest tests/tui/test_tui_snapshots.py
"""
from __future__ import annotations

import asyncio
import difflib
import math
import os
import time
from pathlib import Path

import pytest

from hvtui.core.run.bus import Bus  # noqa: E402
from hvtui.core.run.events import Event, log, phase, state  # noqa: E402
from hvtui.core.run.runlog import RunLogWriter  # noqa: E402
from hvtui.tui.app import HvtuiApp  # noqa: E402
from hvtui.tui.panes.config import ConfigPane  # noqa: E402
from hvtui.tui.panes.dataset import DatasetPane  # noqa: E402
from hvtui.tui.services import Services  # noqa: E402
from hvtui.tui.settings import Settings  # noqa: E402
from tests.helpers.tui_fakes import H100, FakeBackend, no_gpu, screen_text, wait_for, write_presets

SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZE = (80, 24)


@pytest.fixture(autouse=True)
def fixed_clock_zone(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def compare(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    if os.environ.get("HVTUI_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no snapshot {path}; create it with HVTUI_UPDATE_SNAPSHOTS=1"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "expected", "actual"))
        pytest.fail(f"screen differs from {path.name}:\n{diff}")


def make_app(presets, tmp_path, telemetry=no_gpu, attach=None, **kwargs) -> HvtuiApp:
    app = HvtuiApp(presets, 0, services=Services(backend=FakeBackend(), telemetry=telemetry, **kwargs),
                   settings=Settings(directory=tmp_path / "cfg"), attach=attach, env={})
    app.animation_level = "none"
    return app


async def settle(pilot) -> None:
    await pilot.pause(0.3)
    pilot.app.tick()
    await pilot.pause(0.1)


def test_snapshot_config_pane(tmp_path):
    async def go():
        app = make_app(write_presets(tmp_path / "presets"), tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await settle(pilot)
            compare("config_80x24", screen_text(app))
    asyncio.run(go())


def test_snapshot_train_idle_without_gpu(tmp_path):
    async def go():
        app = make_app(write_presets(tmp_path / "presets"), tmp_path, telemetry=no_gpu)
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.press("f4")
            assert await wait_for(pilot, lambda: app.train_state.gpus == [])
            await settle(pilot)
            compare("train_idle_no_gpu_80x24", screen_text(app))
    asyncio.run(go())


def write_run(out: Path) -> None:
    """A finished run's events.jsonl with fixed times and values."""
    bus, writer = Bus(), RunLogWriter(out)
    bus.add_sink(writer)
    t0 = 1_700_000_000.0

    def at(e: Event, dt: float) -> Event:
        return Event(e.kind, e.data, t0 + dt)
    bus.publish(at(Event("run_started", {"max_steps": 60, "device": "cuda:0"}), 0))
    bus.publish(at(state("running"), 0))
    bus.publish(at(phase("training", "60 steps to go"), 1))
    for s in range(1, 61):
        loss = 0.4 / math.sqrt(s) + 0.05 * math.sin(1.7 * s) + 0.1
        bus.publish(at(Event("step", {"step": s, "max_steps": 60, "epoch": 1 + s // 20, "loss": loss, "lr": 1e-4,
                                      "grad_norm": 0.25, "step_time": 1.5, "samples_per_s": 0.67,
                                      "eta_s": (60 - s) * 1.5, "mem_allocated": 21 << 30, "mem_reserved": 24 << 30,
                                      "mem_peak": 26 << 30}), 1 + 1.5 * s))
        if s % 30 == 0:
            bus.publish(at(Event("checkpoint", {"step": s, "path": str(out / f"checkpoints/checkpoint-{s:06d}")}),
                           2 + 1.5 * s))
            bus.publish(at(log(f"checkpoint at step {s}"), 2 + 1.5 * s))
    bus.publish(at(Event("gpu", {"gpus": [H100], "offload": {"gpu_bytes": 6 << 30, "host_bytes": 10 << 30,
                                                             "h2d_bytes_per_s": 24 << 30, "wait_s": 0.02}}), 95))
    bus.publish(at(Event("sample", {"step": 60, "path": str(out / "samples/step-000060-0.mp4"), "prompt": "x"}), 96))
    bus.publish(at(state("finished"), 97))
    bus.publish(at(Event("finished", {"status": "completed", "exit_code": 0, "step": 60}), 97))
    writer.close()
    for step in (30, 60):   # what the events name is on disk (the pane lists what is there)
        ckpt = out / f"checkpoints/checkpoint-{step:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "state.json").write_text(f'{{"step": {step}}}')
        (ckpt / "COMPLETE").write_text("")
    (out / "samples").mkdir()
    (out / "samples/step-000060-0.mp4").write_bytes(b"")


def test_snapshot_train_finished_run_attached(tmp_path, monkeypatch):
    write_run(tmp_path / "run")
    monkeypatch.chdir(tmp_path)

    async def go():
        app = make_app([], tmp_path, telemetry=None, attach=Path("run"))
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.train_state.state == "finished")
            await settle(pilot)
            compare("train_finished_80x24", screen_text(app))
    asyncio.run(go())


def test_snapshot_dataset_pane(tmp_path):
    from tests.tui.test_tui_panes import fake_report

    async def go():
        app = make_app(write_presets(tmp_path / "presets"), tmp_path,
                       scan_preset=lambda preset, progress=None, use_cache=True: fake_report())
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.press("f2")
            assert await wait_for(pilot, lambda: app.query_one(DatasetPane).report is not None)
            await settle(pilot)
            compare("dataset_80x24", screen_text(app))
    asyncio.run(go())
