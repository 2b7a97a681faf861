"""Every question the app asks fits an 80x24 terminal with every button whole on the screen: the unsaved
edits questions (start, switch preset, quit) and the GPU count on a multi-GPU machine."""
from __future__ import annotations

import asyncio

from hvtui.tui.dialogs import ChoiceScreen  # noqa: E402
from hvtui.tui.panes.config import ConfigPane  # noqa: E402
from tests.helpers.tui_fakes import edit_field, screen_text, wait_for

SIZE = (80, 24)


def assert_whole(app) -> None:
    screen = app.screen
    assert isinstance(screen, ChoiceScreen)
    text = screen_text(app)
    for button in screen.query("Button"):
        r = button.region
        label = str(button.label)
        assert r.x >= 0 and r.y >= 0 and r.right <= SIZE[0] and r.bottom <= SIZE[1], (label, r)
        assert label in text, f"{label!r} not whole on screen:\n{text}"


def test_every_question_fits_80x24(tmp_path):
    from tests.tui.test_tui_app import make_app

    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.query_one(ConfigPane).preset is not None)
            config = app.query_one(ConfigPane)
            await edit_field(pilot, "learning_rate", "5e-05")
            assert await wait_for(pilot, lambda: config.dirty)
            asked = []
            for key in ("s", "2", "q"):          # start, switch preset, quit: each with unsaved edits
                await pilot.press(key)
                assert await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen))
                await pilot.pause(0.1)
                assert_whole(app)
                asked.append(app.screen.title_text)
                await pilot.press("escape")
                assert await wait_for(pilot, lambda: not isinstance(app.screen, ChoiceScreen))
            assert asked == ["Unsaved edits", "Switch to beta?", "Unsaved edits"]
            # a machine with 8 GPUs: the GPU question (no run starts: escape)
            app.services.backend, app.services.gpu_count = None, lambda: 8
            app._launch(config.preset, __import__("hvtui.core.run.session", fromlist=["RunOptions"]).RunOptions())
            assert await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen))
            await pilot.pause(0.1)
            assert_whole(app)
            assert [v for _, _, v in app.screen.choices] == [1, 2, 4, 8]
            await pilot.press("escape")
            assert await wait_for(pilot, lambda: not isinstance(app.screen, ChoiceScreen))
            assert app.current_run is None
    asyncio.run(go())


def test_buttons_stand_in_a_row_only_when_they_fit():
    assert ChoiceScreen.fits_in_a_row(["y: Switch", "n: Cancel"], 64)
    assert not ChoiceScreen.fits_in_a_row(["s: Save and start", "d: Start with the saved file", "n: Cancel"], 64)
