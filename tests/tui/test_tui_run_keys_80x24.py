"""The run keys at 80x24 (the size the tmux newcomer test uses): what a key asked for shows in the Train pane
and nothing covers it. Pressing c (checkpoint) or x (stop) used to raise a toast at the bottom right, over the
"checkpoints & samples" box where the checkpoint it acknowledged appears, for 3 seconds; a run that answered
sooner had its checkpoint hidden (the tmux test saw "checkpoint-" missing after a stop)."""
from __future__ import annotations

import asyncio
import re

from tests.helpers.tui_fakes import FakeBackend, screen_text, wait_for
from tests.tui.test_tui_app import make_app, ready

SIZE = (80, 24)


def outputs_box(text: str) -> str:
    """The rows of the "checkpoints & samples" box as drawn: what lies right of its left border."""
    rows = text.splitlines()
    top = next(i for i, row in enumerate(rows) if "checkpoints & samples" in row)
    left = rows[top].index("╭", rows[top].index("╮"))     # the second box on that row
    return "\n".join(row[left:] for row in rows[top:top + 6])


def test_checkpoint_and_stop_keys_leave_the_outputs_box_readable(tmp_path):
    async def go():
        app = make_app(tmp_path, backend=FakeBackend(max_steps=100000, step_time=0.02))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            toasts: list[str] = []
            app.notify = lambda message, **kwargs: toasts.append(message)     # toasts sit at the bottom right
            await pilot.press("f4", "s")
            st = app.train_state
            assert await wait_for(pilot, lambda: st.state == "running" and st.step.get("step", 0) >= 3)
            await pilot.press("c")
            assert await wait_for(pilot, lambda: st.checkpoints)
            await pilot.pause(0.3)                   # a few redraws; well within a toast's 3 s
            text = screen_text(app)
            box = outputs_box(text)
            assert re.search(r"ckpt \d+ checkpoint-\d+", box), text
            assert "checkpoint requested" in text, text     # the key was acknowledged, in the pane's head
            assert not toasts, f"a toast covers the bottom right: {toasts}"
            await pilot.press("x")
            assert await wait_for(pilot, lambda: st.state == "stopped" and len(st.checkpoints) == 2)
            await pilot.pause(0.3)
            text = screen_text(app)
            box = outputs_box(text)
            assert len(re.findall(r"ckpt \d+ checkpoint-\d+", box)) == 2, text
            assert "STOPPED" in text
            assert not toasts, f"a toast covers the bottom right: {toasts}"
    asyncio.run(go())
