"""The contract between the app and its panes: what the app calls on every pane, so it never asks which
pane it holds. A pane gets the active preset as it is on disk, is told when it comes into view (a pane that
works lazily starts its work then), and names the widget that takes the focus, so its own keys work at once."""
from __future__ import annotations

from typing import Any, cast

from textual.app import App
from textual.widget import Widget

from hvtui.tui.services import Services


class PaneApp(App):
    """The app's calls a pane may make beyond Textual's App. HvtuiApp builds on this class (through PaneHost);
    a pane reaches it as Pane.host, as the modules that define the app import the panes (no cycle back)."""

    services: Services

    def say(self, message: str, **kwargs: Any) -> None:
        """A toast of plain text: paths and key names like [keys] must not be read as markup."""
        self.notify(message, markup=False, **kwargs)

    def preset_saved(self) -> None:
        """After a save or an editor session: the other panes see the file as it is now (HvtuiApp)."""
        raise NotImplementedError


class Pane(Widget):
    """A second base of each pane, after its layout container: DatasetPane(Vertical, Pane), ... (Textual reads
    a widget's CSS type names along its first bases only: first, Vertical keeps its layout)."""

    focus_target = ""      # CSS selector of the widget focused when the pane is shown ("": leave the focus)

    @property
    def host(self) -> PaneApp:
        """The app this pane is in, typed as the app the panes are written for."""
        return cast(PaneApp, self.app)

    def set_preset(self, preset) -> None:
        """The active preset as on disk (None: missing or unreadable)."""

    def shown(self) -> None:
        """The pane came into view, or the preset changed while it is in view."""
