"""Where the run logs besides events.jsonl: one line per the run's `tracker` events (core/trackers.py), e.g.
"tensorboard out/demo/tensorboard/demo · wandb offline out/demo/wandb/offline-run-…". Hidden when the run
uses no tracker."""
from __future__ import annotations

import os

from rich.text import Text
from textual.widgets import Static

STATUS_STYLE = {"failed": "bold red", "offline": "yellow"}


def shown_path(where: str) -> str:
    """A folder relative to the current one when it is below it (what a user types); URLs as they are."""
    if "://" in where or not where:
        return where
    try:
        rel = os.path.relpath(where)
    except ValueError:
        return where
    return where if rel.startswith("..") else rel


class TrackerLine(Static):
    DEFAULT_CSS = """
    TrackerLine { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; display: none; }
    TrackerLine.-on { display: block; }
    """

    def show(self, trackers: dict[str, dict]) -> None:
        self.set_class(bool(trackers), "-on")
        if not trackers:
            return
        t = Text("logs to ", style="dim", no_wrap=True, overflow="ellipsis")
        for i, (name, d) in enumerate(trackers.items()):
            status = d.get("status", "")
            if i:
                t.append(" · ", style="dim")
            t.append(name, style="bold")
            if status in ("offline", "failed"):
                t.append(f" {status}", style=STATUS_STYLE[status])
            if status == "failed":
                t.append(f": {d.get('message', '')}", style="dim")
            else:
                t.append(f" {shown_path(str(d.get('where', '')))}")
        self.update(t)
