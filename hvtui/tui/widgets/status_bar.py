"""One line above the footer: active preset (n/N), run state, step and loss, attach target."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; text-wrap: nowrap; text-overflow: ellipsis; background: $panel; color: $foreground;
                padding: 0 1; }
    """

    def show(self, preset: str, index: int, count: int, state: str, detail: str = "", attached: str = "") -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        if attached:
            t.append("attached ", style="bold")
            t.append(attached)
        else:
            t.append("preset ", style="dim")
            t.append(preset or "(none)", style="bold")
            if count:
                t.append(f" {index + 1}/{count}", style="dim")
        t.append("  │  ", style="dim")
        t.append(state, style="bold")
        if detail:
            t.append("  " + detail)
        self.update(t)
