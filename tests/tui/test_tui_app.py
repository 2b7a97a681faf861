"""The Textual app driven by Pilot with a fake trainer backend and fake telemetry."""
from __future__ import annotations

import asyncio
import difflib
import signal
from pathlib import Path

from hvtui.core.run import exitcodes  # noqa: E402
from hvtui.tui.app import HvtuiApp, ssh_without_multiplexer  # noqa: E402
from hvtui.tui.dialogs import ChoiceScreen, DiffScreen  # noqa: E402
from hvtui.tui.panes.config import ChoicePicker, ConfigPane  # noqa: E402
from hvtui.tui.services import Services  # noqa: E402
from hvtui.tui.settings import Settings, load_settings  # noqa: E402
from tests.helpers.tui_fakes import FakeBackend, fake_editor, no_gpu, one_gpu, screen_text, wait_for, write_presets

SIZE = (100, 32)


def quick_scan(preset, progress=None, use_cache=True):
    from hvtui.core.dataset.model import DatasetReport
    return DatasetReport()


def quick_doctor(preset):
    from hvtui.core.env.doctor_report import DoctorReport
    return DoctorReport(preset)


def make_app(tmp_path, backend=None, telemetry=no_gpu, settings=None, theme_dirs=None, **services) -> HvtuiApp:
    """The real panes and validator; a fake trainer and telemetry; instant scan and doctor (their real
    versions are exercised in test_tui_panes.py)."""
    presets = write_presets(tmp_path / "presets")
    services = {"scan_preset": quick_scan, "run_doctor": quick_doctor, **services}
    svc = Services(backend=backend or FakeBackend(max_steps=30, step_time=0.01), telemetry=telemetry, **services)
    app = HvtuiApp(presets, 0, services=svc, settings=settings or Settings(directory=tmp_path / "cfg"),
                   theme_dirs=theme_dirs, env={})
    app.animation_level = "none"     # no tab-underline animation to wait for
    return app


async def ready(pilot) -> None:
    app = pilot.app
    assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)


def run(coro):
    return asyncio.run(coro)


def test_panes_switch_by_f_keys(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            assert app.visible_pane == "config"
            for key, pane in (("f4", "train"), ("f2", "dataset"), ("f3", "environment"), ("f1", "config"),
                              ("less_than_sign", "train"), ("greater_than_sign", "config"),
                              ("greater_than_sign", "dataset")):
                await pilot.press(key)
                assert app.visible_pane == pane
    run(go())


def test_presets_switch_by_brackets_and_digits(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            config = app.query_one(ConfigPane)
            await pilot.press("right_square_bracket")
            assert await wait_for(pilot, lambda: config.path and config.path.stem == "beta")
            await pilot.press("3")
            assert await wait_for(pilot, lambda: config.path.stem == "gamma")
            await pilot.press("left_square_bracket")
            assert await wait_for(pilot, lambda: config.path.stem == "beta")
            await pilot.press("right_square_bracket", "right_square_bracket")   # wraps around
            assert await wait_for(pilot, lambda: config.path.stem == "alpha")
            assert "preset alpha 1/3" in screen_text(app)
    run(go())


def test_switching_preset_during_a_run_asks_first(tmp_path):
    async def go():
        backend = FakeBackend(max_steps=100000, step_time=0.01)
        app = make_app(tmp_path, backend=backend)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.train_state.state == "running")
            await pilot.press("2")
            assert isinstance(app.screen, ChoiceScreen)
            await pilot.press("n")                         # cancel: still on alpha
            await pilot.pause(0.1)
            assert app.query_one(ConfigPane).path.stem == "alpha"
            await pilot.press("2")
            await pilot.press("y")
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).path.stem == "beta")
            assert app.current_run.active                 # the run keeps going
            app.current_run.request("stop")
            assert await wait_for(pilot, lambda: not app.current_run.active)
    run(go())


def test_edit_and_save_a_field_keeps_comments(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            config = app.query_one(ConfigPane)
            path = config.path
            before = path.read_text()
            config.select_field("learning_rate")
            await pilot.press("enter")
            assert config.editing is not None and config.editing.key == "learning_rate"
            await pilot.press("ctrl+a", "ctrl+k", *"5e-05", "enter")   # clear the field, type, commit
            await pilot.pause(0.1)
            assert config.dirty and "● unsaved" in screen_text(app)
            assert path.read_text() == before                     # nothing written before confirming
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, DiffScreen)
            assert "+learning_rate = 5e-05" in app.screen.diff
            await pilot.press("y")
            assert await wait_for(pilot, lambda: path.read_text() != before)
            after = path.read_text()
            changed = [line for line in difflib.ndiff(before.splitlines(), after.splitlines())
                       if line.startswith(("+ ", "- "))]
            assert changed == ["- learning_rate = 1e-3   # peak LR", "+ learning_rate = 5e-05   # peak LR"]
            assert after.startswith("# a test preset: comments must survive a save")
            assert not config.dirty
    run(go())


def test_inline_validation_marks_the_field(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            config = app.query_one(ConfigPane)
            config.select_field("datasets.0.video.num_frames")
            await pilot.press("enter", "ctrl+a", "ctrl+k", *"10", "enter")
            assert await wait_for(pilot, lambda: config.error_count > 0)
            keys = [p.key for p in config.problems if p.severity == "error"]
            assert "datasets[0].video.num_frames" in keys
            text = screen_text(app)
            assert "1 error" in text and "✗" in text
            # a value that is not a number at all never reaches the file
            config.select_field("lora_rank")
            await pilot.press("enter", "ctrl+a", "ctrl+k", *"eight", "enter")
            await pilot.pause(0.1)
            assert "lora_rank" in config.field_errors
            assert config.doc.get("lora_rank") == 8
            await pilot.press("escape")
            assert config.editing is None and "lora_rank" not in config.field_errors
    run(go())


def test_choice_field_uses_a_picker(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            config = app.query_one(ConfigPane)
            config.select_field("optimizer")
            await pilot.press("enter")
            assert isinstance(app.screen, ChoicePicker)
            await pilot.press("home", "enter")            # first choice: adamw
            await pilot.pause(0.1)
            assert config.doc.get("optimizer") == "adamw" and config.working.optimizer == "adamw"
    run(go())


def test_external_editor_reloads_the_file(tmp_path):
    async def go():
        editor = fake_editor("model_type = \"lora\"\npretrained_model_name_or_path = \"builtin:tiny\"\n"
                             "lora_rank = 32\n")
        app = make_app(tmp_path, run_editor=editor)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            config = app.query_one(ConfigPane)
            await pilot.press("e")
            assert await wait_for(pilot, lambda: editor.calls and config.preset is not None
                                  and config.preset.lora_rank == 32)
            assert editor.calls == [config.path]
    run(go())


def test_start_pause_resume_stop(tmp_path):
    async def go():
        backend = FakeBackend(max_steps=100000, step_time=0.005)
        app = make_app(tmp_path, backend=backend)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("s")
            assert app.visible_pane == "train"
            st = app.train_state
            assert await wait_for(pilot, lambda: st.state == "running" and st.step.get("step", 0) > 3)
            await pilot.press("p")
            assert await wait_for(pilot, lambda: st.state == "paused")
            paused_at = st.step["step"]
            await pilot.pause(0.3)
            app.tick()
            assert st.step["step"] <= paused_at + 1           # at most the step in flight finished
            await pilot.press("p")
            assert await wait_for(pilot, lambda: st.state == "running" and st.step["step"] > paused_at + 1)
            await pilot.press("c")                             # checkpoint now
            assert await wait_for(pilot, lambda: len(st.checkpoints) >= 1)
            await pilot.press("v")                             # sample now
            assert await wait_for(pilot, lambda: len(st.samples) >= 1)
            await pilot.press("x")
            assert await wait_for(pilot, lambda: st.state == "stopped" and not app.current_run.active)
            assert st.finished["status"] == "stopped"
            last = st.checkpoints[-1][1]
            assert Path(last, "adapter_model.safetensors").is_file()
            text = screen_text(app)
            assert "STOPPED" in text and "checkpoint-" in text
    run(go())


def test_failed_run_shows_the_error(tmp_path):
    async def go():
        app = make_app(tmp_path, backend=FakeBackend(max_steps=50, step_time=0.001, fail_at=5))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.train_state.state == "failed")
            app.tick()
            await pilot.pause(0.05)
            text = screen_text(app)
            assert "FAILED" in text and "loss is NaN" in text
    run(go())


def test_start_refuses_an_invalid_preset(tmp_path):
    async def go():
        backend = FakeBackend()
        app = make_app(tmp_path, backend=backend)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            path = app.query_one(ConfigPane).path
            path.write_text(path.read_text().replace("num_frames = 9", "num_frames = 10"))
            await pilot.press("s")
            await pilot.pause(0.2)
            assert backend.calls == [] and app.current_run is None
            assert app.visible_pane == "config"
    run(go())


def test_no_gpu_state(tmp_path):
    async def go():
        app = make_app(tmp_path, telemetry=no_gpu)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("f4")
            assert await wait_for(pilot, lambda: app.train_state.gpus == [])
            await pilot.pause(0.3)
            text = screen_text(app)
            assert "No GPU detected" in text and "training runs on the CPU" in text
            assert "s: start" in text
    run(go())


def test_gpu_and_offload_panels(tmp_path):
    async def go():
        app = make_app(tmp_path, telemetry=one_gpu)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("f4")
            assert await wait_for(pilot, lambda: bool(app.train_state.gpus))
            await pilot.pause(0.3)
            text = screen_text(app)
            assert "H100 80GB" in text and "30.0/80.0 GiB" in text and "util 87%" in text
            assert "on GPU" in text and "H2D" in text               # offload counters arrived, panel shown
    run(go())


def test_quit_during_a_run_asks_then_stops_and_saves(tmp_path):
    async def go():
        app = make_app(tmp_path, backend=FakeBackend(max_steps=100000, step_time=0.005))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.train_state.state == "running")
            await pilot.press("q")
            assert isinstance(app.screen, ChoiceScreen)
            await pilot.press("c")                       # cancel: keeps running
            await pilot.pause(0.1)
            assert app.current_run.active and app.is_running
            await pilot.press("q")
            await pilot.press("s")                       # stop and save, then quit
            assert await wait_for(pilot, lambda: not app.is_running)
        assert not app.current_run.active
        assert app.train_state.checkpoints or list((tmp_path / "presets" / "out" / "alpha").glob("checkpoint-*"))
        assert list((tmp_path / "presets" / "out" / "alpha").glob("checkpoint-*/adapter_model.safetensors"))
    run(go())


def test_sigterm_requests_stop_and_exits_143(tmp_path):
    async def go():
        app = make_app(tmp_path, backend=FakeBackend(max_steps=100000, step_time=0.005))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.train_state.state == "running")
            app.on_signal(signal.SIGTERM)
            await pilot.pause(0.1)
        assert app.return_code == exitcodes.SIGTERM or app.exit_code == exitcodes.SIGTERM
        assert app.current_run.session.control.stop_reason == "SIGTERM"
        assert app.current_run.join(10)
    run(go())


def test_keys_remapped_from_settings(tmp_path):
    async def go():
        settings = Settings(directory=tmp_path / "cfg", keys={"run.start": "g", "pane.train": "f9"})
        app = make_app(tmp_path, settings=settings)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("f9")
            assert app.visible_pane == "train"
            assert "F9 Train" in screen_text(app)
            await pilot.press("s")                        # the old key does nothing now
            await pilot.pause(0.1)
            assert app.current_run is None
            await pilot.press("g")
            assert await wait_for(pilot, lambda: app.train_state.finished is not None)
    run(go())


def test_broken_theme_is_reported_and_skipped(tmp_path):
    themes = tmp_path / "themes"
    themes.mkdir()
    (themes / "good.toml").write_text('name = "good"\nprimary = "#336699"\n[variables]\nhvtui-ok = "#00ff00"\n')
    (themes / "bad-colour.toml").write_text('name = "bad"\nprimary = "not-a-colour"\n')
    (themes / "bad-toml.toml").write_text('name = "worse\n')

    async def go():
        app = make_app(tmp_path, theme_dirs=[themes])
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            assert app.theme_names == ["good"]
            assert any("bad-colour.toml" in p and "not-a-colour" in p for p in app.problems)
            assert any("bad-toml.toml" in p and "not valid TOML" in p for p in app.problems)
            messages = [n.message for n in app._notifications]
            assert any("bad-colour.toml" in m for m in messages)
            await pilot.press("t")
            assert app.theme == "good"
    run(go())


def test_themes_cycle_and_palette_lists_presets(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            assert app.theme == "hvtui-dark"
            seen = {app.theme}
            for _ in app.theme_names:
                await pilot.press("t")
                seen.add(app.theme)
            assert {"hvtui-dark", "hvtui-light", "hvtui-high-contrast"} <= seen
            from hvtui.tui.app import HvtuiCommands
            provider = HvtuiCommands(app.screen)
            names = [name for name, _, _ in provider._commands()]
            assert "Preset: gamma" in names and "Theme: hvtui-light" in names and "Start training" in names
            await pilot.press("ctrl+p", *"Preset: gam")        # the real palette: type, pick the first hit
            await pilot.pause(0.5)
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).path.stem == "gamma")
    run(go())


def test_theme_chosen_by_key_is_remembered_with_the_users_comments(tmp_path):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "settings.toml").write_text("# my settings\ntheme = \"hvtui-dark\"\n")

    async def go():
        app = make_app(tmp_path, settings=load_settings(cfg))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("t")
            return app.theme
    chosen = run(go())
    assert chosen != "hvtui-dark"
    text = (cfg / "settings.toml").read_text()
    assert text.startswith("# my settings\n") and f'theme = "{chosen}"' in text
    assert load_settings(cfg).theme == chosen


def test_ssh_banner_rule():
    assert ssh_without_multiplexer({"SSH_CONNECTION": "1 2 3 4", "TERM": "xterm-256color"})
    assert not ssh_without_multiplexer({"SSH_CONNECTION": "1 2 3 4", "TMUX": "/tmp/tmux-0/default,1,0"})
    assert not ssh_without_multiplexer({"SSH_TTY": "/dev/pts/1", "TERM": "screen-256color"})
    assert not ssh_without_multiplexer({"TERM": "xterm"})


def test_ssh_banner_shows(tmp_path):
    async def go():
        presets = write_presets(tmp_path / "presets")
        app = HvtuiApp(presets, 0, services=Services(backend=FakeBackend(), telemetry=no_gpu),
                       settings=Settings(directory=tmp_path), env={"SSH_CONNECTION": "a b c d"})
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            assert "SSH without tmux/screen" in screen_text(app)
    run(go())


def test_quit_with_unsaved_edits_asks(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            config = app.query_one(ConfigPane)
            config.select_field("seed")
            await pilot.press("enter", "ctrl+a", "ctrl+k", "7", "enter")
            assert config.dirty
            await pilot.press("q")
            assert isinstance(app.screen, ChoiceScreen)
            await pilot.press("s")                        # app keys do nothing while a question is open
            await pilot.press("n")
            await pilot.pause(0.1)
            assert app.is_running and app.current_run is None
            await pilot.press("q", "y")
            assert await wait_for(pilot, lambda: not app.is_running)
    run(go())


def test_high_contrast_theme_uses_only_the_16_ansi_colours(tmp_path):
    """On a basic 16-colour terminal every colour on screen must be one the terminal itself defines."""
    async def go():
        settings = Settings(directory=tmp_path / "cfg", theme="hvtui-high-contrast")
        app = make_app(tmp_path, settings=settings, telemetry=one_gpu)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            assert app.theme == "hvtui-high-contrast"
            for pane in ("f1", "f4", "f2"):
                await pilot.press(pane)
                await pilot.pause(0.3)
                kinds = set()
                for strip in app.screen._compositor.render_strips():
                    for segment in strip:
                        for colour in (segment.style.color, segment.style.bgcolor) if segment.style else ():
                            if colour is not None:
                                kinds.add(colour.type.name)
                                assert colour.type.name in ("DEFAULT", "STANDARD"), (pane, colour, segment.text)
                assert "STANDARD" in kinds
    run(go())


def test_unreadable_preset_shows_the_problem_not_a_traceback(tmp_path):
    async def go():
        app = make_app(tmp_path)
        broken = app.presets[1]
        broken.write_text("learning_rate = [oops\n")
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("2")
            config = app.query_one(ConfigPane)
            assert await wait_for(pilot, lambda: config.path == broken and config.preset is None)
            await pilot.pause(0.1)
            text = screen_text(app)
            assert "beta.toml:1: toml: syntax error" in text and "1 error" in text
            await pilot.press("s")
            await pilot.pause(0.1)
            assert app.current_run is None
    run(go())
