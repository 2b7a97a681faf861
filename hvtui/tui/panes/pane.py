"""The contract between the app and its panes: what the app calls on every pane, so it never asks which
pane it holds. A pane gets the active preset as it is on disk, is told when it comes into view (a pane that
works lazily starts its work then), and names the widget that takes the focus, so its own keys work at once."""
from __future__ import annotations

from textual.widget import Widget


class Pane(Widget):
    """A second base of each pane, after its layout container: DatasetPane(Vertical, Pane), ... (Textual reads
    a widget's CSS type names along its first bases only: first, Vertical keeps its layout)."""

    focus_target = ""      # CSS selector of the widget focused when the pane is shown ("": leave the focus)

    def set_preset(self, preset) -> None:
        """The active preset as on disk (None: missing or unreadable)."""

    def shown(self) -> None:
        """The pane came into view, or the preset changed while it is in view."""
