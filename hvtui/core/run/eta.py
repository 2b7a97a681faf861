"""The run's remaining time: estimated once, in the trainer, and carried by every step event (`eta_s`); the
TUI, the console line and events.jsonl only show it.

A step's time varies (buckets of different sizes drawn in random order, other work on the machine), so the
rate is smoothed: a plain mean over the first steps, then an exponential average over about WINDOW steps.
The estimate then moves by about 1/WINDOW of a step's variation per update instead of jumping with each
bucket. Work between steps that recurs on a schedule (checkpoints, validation samples) is counted too: its
measured cost times how often it is still due.
"""
from __future__ import annotations

WINDOW = 50          # steps the smoothed rate mostly remembers


class EtaClock:
    def __init__(self, max_steps: int, checkpoint_every: int = 0, validation_every: int = 0):
        self.max_steps = max_steps
        self.every = {"checkpoint": checkpoint_every or 0, "validation": validation_every or 0}
        self.cost: dict[str, float] = {}     # seconds one such pause took (smoothed like the steps)
        self.rate: float | None = None       # smoothed seconds per step
        self.seen = 0                        # steps timed since this process started training
        self.counted = 0                     # of them, in the average

    def step_done(self, seconds: float) -> None:
        """One optimizer step took `seconds`. The first one after a start or resume warms up (compilation,
        the allocator, caches) and is left out, unless it is all there is."""
        self.seen += 1
        if self.seen == 1:
            self.rate = seconds
            return
        self.counted += 1
        weight = max(1.0 / self.counted, 2.0 / (WINDOW + 1))
        self.rate = seconds if self.counted == 1 or self.rate is None else self.rate + weight * (seconds - self.rate)

    def pause_done(self, kind: str, seconds: float) -> None:
        """A scheduled pause between steps ('checkpoint' or 'validation') took `seconds`."""
        before = self.cost.get(kind)
        self.cost[kind] = seconds if before is None else 0.5 * (before + seconds)

    def due(self, kind: str, step: int) -> int:
        """How many `kind` pauses come after `step`: checkpoints at multiples of their interval before the
        last step (the last step saves anyway), validation at every multiple up to and including it."""
        n = self.every.get(kind, 0)
        if n <= 0:
            return 0
        last = self.max_steps - 1 if kind == "checkpoint" else self.max_steps
        return max(0, last // n - step // n)

    def remaining(self, step: int) -> float | None:
        """Seconds until `max_steps`, or None before any step was timed."""
        if self.rate is None:
            return None
        left = max(0, self.max_steps - step) * self.rate
        return left + sum(cost * self.due(kind, step) for kind, cost in self.cost.items())


def format_duration(seconds: float | None, unknown: str = "--") -> str:
    """How the console line and the TUI write a duration: 59s, 1m01s, 2h01m."""
    if seconds is None or seconds != seconds or seconds < 0:
        return unknown
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
