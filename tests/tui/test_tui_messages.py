"""Messages a newcomer must be able to read and act on, at 80x24: long problems whole (Config and Dataset
panes), a save of a preset with errors that asks first and names them, pane keys that work whatever has the
focus, and a refused start that points at the Environment pane."""
from __future__ import annotations

import asyncio

from hvtui.core.run import exitcodes  # noqa: E402
from hvtui.core.run.events import Event, state  # noqa: E402
from hvtui.tui.dialogs import DiffScreen  # noqa: E402
from hvtui.tui.panes.config import ConfigPane  # noqa: E402
from tests.helpers.tui_fakes import edit_field, screen_text, wait_for

SIZE = (80, 24)


def region_text(app, selector: str) -> str:
    """What the screen shows inside one widget, its lines joined with single spaces."""
    widget = app.query_one(selector)
    r = widget.region
    lines = screen_text(app).splitlines()[r.y:r.bottom]
    return " ".join(" ".join(line[r.x:r.right].split()) for line in lines).strip()


async def scrolled_text(pilot, selector: str) -> str:
    """Everything a user can read in a scrolling panel, page by page with the keyboard, lines joined."""
    app = pilot.app
    panel = app.query_one(selector)
    panel.focus()
    await pilot.press("home")
    await pilot.pause(0.05)
    r = panel.scrollable_content_region
    seen: dict[int, str] = {}
    while True:
        y = round(panel.scroll_y)
        lines = screen_text(app).splitlines()[r.y:r.bottom]
        for i, line in enumerate(lines):
            seen[y + i] = " ".join(line[r.x:r.right].split())
        if y >= panel.max_scroll_y:
            return " ".join(seen[k] for k in sorted(seen)).strip()
        await pilot.press("pagedown")
        await pilot.pause(0.05)


def flat(text: str) -> str:
    return " ".join(text.split())


def make(tmp_path, **kwargs):
    from tests.tui.test_tui_app import make_app

    return make_app(tmp_path, **kwargs)


async def ready(pilot):
    assert await wait_for(pilot, lambda: pilot.app.query_one(ConfigPane).preset is not None)


def test_a_fields_problem_is_shown_whole_with_its_fix(tmp_path):
    async def go():
        app = make(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            config = app.query_one(ConfigPane)
            await edit_field(pilot, "datasets.0.video.num_frames", "10")
            assert await wait_for(pilot, lambda: config.error_count > 0)
            config.select_field("datasets.0.video.num_frames")
            await pilot.pause(0.1)
            problem = next(p for p in config.problems if p.key == "datasets[0].video.num_frames")
            whole = flat(f"✗ {problem.message}; {problem.fix}")
            assert len(whole) > 60                        # longer than the pane is wide: it must wrap
            assert whole in region_text(app, "#field-info"), region_text(app, "#field-info")
    asyncio.run(go())


def test_saving_a_preset_with_errors_asks_first_and_names_them(tmp_path):
    async def go():
        app = make(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            config = app.query_one(ConfigPane)
            before = config.path.read_text()
            await edit_field(pilot, "datasets.0.video.num_frames", "10")
            assert await wait_for(pilot, lambda: config.error_count > 0)
            await pilot.press("ctrl+s")
            assert await wait_for(pilot, lambda: isinstance(app.screen, DiffScreen))
            await pilot.pause(0.1)
            text = flat(screen_text(app))
            assert "has 1 error after these changes" in text and "Save anyway?" in text
            assert "datasets[0].video.num_frames:" in text and "y: save anyway" in text
            await pilot.press("n")
            assert await wait_for(pilot, lambda: not isinstance(app.screen, DiffScreen))
            assert config.path.read_text() == before and config.dirty
            await pilot.press("ctrl+s", "y")               # confirmed: saved as asked
            assert await wait_for(pilot, lambda: config.path.read_text() != before)
            assert "num_frames = 10" in config.path.read_text()
    asyncio.run(go())


def test_saving_a_valid_preset_does_not_warn(tmp_path):
    async def go():
        app = make(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            app.query_one(ConfigPane)   # the config pane is up
            await edit_field(pilot, "learning_rate", "5e-05")
            await pilot.press("ctrl+s")
            assert await wait_for(pilot, lambda: isinstance(app.screen, DiffScreen))
            assert app.screen.errors == [] and "Save anyway" not in screen_text(app)
    asyncio.run(go())


def dataset_report(long_warning: str, long_caption: str):
    from tests.tui.test_tui_panes import fake_report

    report = fake_report()
    report.warnings.append(long_warning)
    report.buckets[0].samples[0].captions = [long_caption]
    return report


def test_dataset_problems_and_the_selected_clip_are_readable_whole(tmp_path):
    warning = ("clips/a-very-long-folder-name/clip-0001.mp4: 12 clips were upscaled to reach the bucket "
               "resolution; lower resolution in [[datasets]] or add larger clips")
    caption = "a red square moves right across a grey field while the camera slowly pans left " * 2

    async def go():
        app = make(tmp_path, scan_preset=lambda preset, progress=None, use_cache=True:
                   dataset_report(warning, caption.strip()))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("f2")
            assert await wait_for(pilot, lambda: app.pane("dataset") and app.pane("dataset").report is not None)
            await pilot.pause(0.2)
            assert "2 warnings: in full on the right" in screen_text(app)
            squash = lambda text: "".join(text.split())      # noqa: E731  (wrapping may break at a hyphen)
            assert squash(f"! {warning}") in squash(await scrolled_text(pilot, "#discards-scroll"))
            assert flat(caption) in region_text(app, "#clip-info")
    asyncio.run(go())


def test_pane_keys_work_with_the_focus_on_the_tab_bar(tmp_path):
    from textual.widgets import Tabs

    scans, doctors = [], []

    def scan(preset, progress=None, use_cache=True):
        from hvtui.core.dataset.model import DatasetReport
        scans.append(use_cache)
        return DatasetReport()

    def doctor(preset):
        from hvtui.core.env.doctor_report import Check, DoctorReport
        doctors.append(1)
        return DoctorReport(preset, checks=[Check("python", "ok", "3.11")])

    async def go():
        app = make(tmp_path, scan_preset=scan, run_doctor=doctor)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("f2")
            assert await wait_for(pilot, lambda: len(scans) == 1 and not app.pane("dataset").scanning)
            app.query_one(Tabs).focus()
            await pilot.pause(0.05)
            assert isinstance(app.focused, Tabs)
            await pilot.press("r")
            assert await wait_for(pilot, lambda: scans == [True, False])     # a rescan without the cache
            await pilot.press("f3")
            assert await wait_for(pilot, lambda: len(doctors) == 1 and not app.pane("environment").running)
            app.query_one(Tabs).focus()
            await pilot.press("r")
            assert await wait_for(pilot, lambda: len(doctors) == 2)
            assert len(scans) == 2                                           # r went to the visible pane only
            await pilot.press("f1")
            app.query_one(ConfigPane)   # the config pane is up
            await edit_field(pilot, "learning_rate", "5e-05")
            app.query_one(Tabs).focus()
            await pilot.press("ctrl+s")
            assert await wait_for(pilot, lambda: isinstance(app.screen, DiffScreen))
    asyncio.run(go())


def test_a_refused_start_points_to_the_environment_pane(tmp_path):
    def refused(preset, bus, control, options):
        bus.publish(Event("error", {"message": "doctor: transformer: not found",
                                    "hint": "run `hvtui doctor PRESET` to see where hvtui looks for it"}))
        bus.publish(Event("error", {"message": "1 doctor check(s) failed; nothing was trained",
                                    "hint": "hvtui doctor PRESET shows every check"}))
        bus.publish(state("failed"))
        bus.publish(Event("finished", {"status": "failed", "exit_code": exitcodes.DOCTOR_FAILED, "step": 0}))
        return exitcodes.DOCTOR_FAILED

    doctors = []

    def doctor(preset):
        from hvtui.core.env.doctor_report import Check, DoctorReport
        doctors.append(1)
        return DoctorReport(preset, checks=[Check("transformer", "fail", "not found", "set the model path")])

    async def go():
        app = make(tmp_path, backend=refused, run_doctor=doctor)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("f3")
            env = app.pane("environment")
            assert await wait_for(pilot, lambda: env.report is not None and doctors and not env.running)
            await pilot.pause(0.2)
            before = len(doctors)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.train_state.state == "failed")
            await pilot.pause(0.2)
            assert await wait_for(pilot, lambda: "nothing was trained — the Environment pane (F3) shows every check"
                                  in region_text(app, "#train-head"))
            assert any("(the Environment pane (F3) shows where hvtui looks for it)" in m
                       for _, _, _, m in app.train_state.logs)
            assert "hvtui doctor" not in screen_text(app)
            await pilot.press("f3")                          # the checks as they are now, not as before the run
            assert await wait_for(pilot, lambda: len(doctors) > before)
    asyncio.run(go())
