"""The remaining-time estimate (hvtui.core.run.eta): steady when step times vary, counting checkpoints and
validation, and written the same way by the console line and the TUI (which only show `eta_s`)."""
from __future__ import annotations

import random

from hvtui.core.run.eta import WINDOW, EtaClock, format_duration
from hvtui.core.run.events import Event
from hvtui.core.run.headless import progress_text


def test_mixed_bucket_step_times_do_not_swing_the_estimate():
    """Two buckets, 1 s and 2 s a step, drawn in random order: successive estimates stay within a few
    percent of each other, and the rate settles near the true mean."""
    rng = random.Random(0)
    clock = EtaClock(max_steps=400)
    etas, rates = [], []
    for step in range(1, 401):
        clock.step_done(rng.choice((1.0, 2.0)) * rng.uniform(0.9, 1.1))
        etas.append(clock.remaining(step))
        rates.append(clock.rate)
    for i in range(10, 300):
        # one step done takes about one step's time off; the rest of the change is the rate moving
        assert abs(etas[i] - (etas[i - 1] - rates[i])) <= 0.06 * etas[i - 1], (i + 1, etas[i - 1], etas[i])
    assert 1.3 < clock.rate < 1.7
    # what the earlier estimate (the mean of the last 20 steps) did on the same draws: it moved far more
    rng = random.Random(0)
    times = [rng.choice((1.0, 2.0)) * rng.uniform(0.9, 1.1) for _ in range(400)]
    window_means = [sum(times[i - 20:i]) / 20 for i in range(21, 300)]
    smooth_rates = []
    clock = EtaClock(max_steps=400)
    for i, dt in enumerate(times[:300], start=1):
        clock.step_done(dt)
        if i >= 21:
            smooth_rates.append(clock.rate)
    spread = lambda xs: max(xs) / min(xs)   # noqa: E731
    assert spread(smooth_rates[WINDOW:]) < spread(window_means[WINDOW:])


def test_the_first_step_warms_up_and_is_left_out():
    clock = EtaClock(max_steps=10)
    assert clock.remaining(0) is None
    clock.step_done(30.0)                    # compilation, allocator: not what the next steps cost
    assert clock.remaining(1) == 9 * 30.0     # all there is so far
    clock.step_done(1.0)
    assert clock.rate == 1.0 and clock.remaining(2) == 8.0
    clock.step_done(3.0)
    assert clock.rate == 2.0                  # a plain mean while there are few steps


def test_checkpoints_and_validation_still_due_are_counted():
    clock = EtaClock(max_steps=100, checkpoint_every=10, validation_every=25)
    assert clock.due("checkpoint", 0) == 9      # 10..90: the last step saves at the end anyway
    assert clock.due("validation", 0) == 4      # 25, 50, 75, 100
    assert clock.due("checkpoint", 50) == 4 and clock.due("validation", 50) == 2
    assert clock.due("validation", 100) == 0
    clock.step_done(5.0)
    clock.step_done(1.0)
    clock.pause_done("checkpoint", 4.0)
    clock.pause_done("validation", 10.0)
    assert clock.remaining(50) == 50 * 1.0 + 4 * 4.0 + 2 * 10.0
    assert EtaClock(100).due("checkpoint", 0) == 0      # no schedule: nothing due


def test_console_and_tui_write_the_same_eta():
    from hvtui.tui.train_state import format_duration as tui_format

    assert tui_format is format_duration
    assert format_duration(59) == "59s" and format_duration(61) == "1m01s" and format_duration(7300) == "2h01m"
    assert format_duration(None) == "--" and format_duration(None, unknown="?") == "?"
    line = progress_text(Event("step", {"step": 3, "max_steps": 10, "loss": 0.5, "eta_s": 75.0}), None, "training")
    assert "ETA 1m15s" in line
