"""The TUI's multi-GPU hook: with more than one GPU, starting a run asks how many to use; more than one
starts `hvtui --run --gpus N` as a launched run the UI attaches to (a fake here: no processes)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from hvtui.tui import run_control as run_control_module
from hvtui.tui.app import HvtuiApp  # noqa: E402
from hvtui.tui.dialogs import ChoiceScreen  # noqa: E402
from hvtui.tui.panes.config import ConfigPane  # noqa: E402
from hvtui.tui.services import Services  # noqa: E402
from hvtui.tui.settings import Settings  # noqa: E402
from tests.helpers.tui_fakes import no_gpu, wait_for, write_presets


class FakeLaunched:
    started: list = []

    def __init__(self, preset, gpus, options=None):
        self.preset, self.gpus, self.options = preset, gpus, options
        self.output_dir = Path(preset.resolve_path(preset.output_dir))
        self.log_path = self.output_dir / "hvtui-run.log"
        self.attached, self.active, self.exit_code = True, True, None

    def start(self):
        FakeLaunched.started.append(self)

    def poll(self):
        return []

    def request(self, command, reason=""):
        pass


def _app(tmp_path, gpus: int) -> HvtuiApp:
    from hvtui.core.dataset.model import DatasetReport
    from hvtui.core.env.doctor_report import DoctorReport

    svc = Services(backend=None, telemetry=no_gpu, gpu_count=lambda: gpus,
                   scan_preset=lambda preset, progress=None, use_cache=True: DatasetReport(),
                   run_doctor=lambda preset: DoctorReport(preset))
    app = HvtuiApp(write_presets(tmp_path / "presets"), 0, services=svc,
                   settings=Settings(directory=tmp_path / "cfg"), env={})
    app.animation_level = "none"
    return app


def test_several_gpus_ask_how_many_and_launch_the_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(run_control_module, "LaunchedRun", FakeLaunched)
    FakeLaunched.started = []

    async def go():
        app = _app(tmp_path, gpus=4)
        async with app.run_test(size=(100, 32)) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen))
            assert [c[2] for c in app.screen.choices] == [1, 2, 4]
            await pilot.press("escape")                      # cancel: nothing starts
            assert await wait_for(pilot, lambda: not isinstance(app.screen, ChoiceScreen))
            assert not FakeLaunched.started and app.current_run is None
            await pilot.press("s")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen))
            await pilot.press("4")
            assert await wait_for(pilot, lambda: FakeLaunched.started)
            run = FakeLaunched.started[0]
            assert run.gpus == 4 and app.current_run is run and app.visible_pane == "train"
    asyncio.run(go())
