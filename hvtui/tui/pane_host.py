"""The app's side of the pane contract (hvtui.tui.panes.pane): which panes there are, building one when it is
first shown, switching between them, and passing each its preset and its "shown" call. The app knows no pane
by kind here; HvtuiApp builds on this class."""
from __future__ import annotations

import importlib

from textual.widgets import TabbedContent

from hvtui.tui.panes.pane import Pane, PaneApp

# The other panes are built (and their modules imported) when first shown: less work before the first paint.
PANE_CLASSES = {"dataset": ("hvtui.tui.panes.dataset", "DatasetPane"),
                "environment": ("hvtui.tui.panes.environment", "EnvironmentPane"),
                "train": ("hvtui.tui.panes.train", "TrainPane")}
PANES = (("config", "Config", "pane.config"), ("dataset", "Dataset", "pane.dataset"),
         ("environment", "Env", "pane.environment"), ("train", "Train", "pane.train"))


class PaneHost(PaneApp):
    """Panes in tabs, each behind the Pane contract."""

    pane_preset = None      # the active preset as on disk, handed to each pane built (None: missing or unreadable)

    def _new_pane(self, pane: str) -> Pane:
        module, name = PANE_CLASSES[pane]
        widget = getattr(importlib.import_module(module), name)(id=f"{pane}-pane")
        widget.set_preset(self.pane_preset)
        return widget

    def pane(self, pane: str) -> Pane | None:
        """A pane's widget, or None while it has not been shown yet."""
        found = self.query(f"#{pane}-pane")
        widget = found.first() if found else None
        return widget if isinstance(widget, Pane) else None

    def built_panes(self) -> list[tuple[str, Pane]]:
        """The panes shown so far, by name."""
        return [(name, widget) for name, _, _ in PANES if (widget := self.pane(name)) is not None]

    async def ensure_pane(self, pane: str) -> Pane:
        widget = self.pane(pane)
        if widget is None:
            widget = self._new_pane(pane)
            await self.query_one(f"TabPane#{pane}").mount(widget)
        return widget

    def action_show_pane(self, pane: str) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active != pane and self.focused is not None:
            # the focus leaves the pane first: Textual moves a focus that is hidden to the next widget of the
            # same pane, whose focus message then switches back to it
            self.screen.set_focus(None)
        tabs.active = pane

    def action_cycle_pane(self, delta: int) -> None:
        names = [p for p, _, _ in PANES]
        self.action_show_pane(names[(names.index(self.visible_pane) + delta) % len(names)])

    async def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = self.visible_pane
        if pane in PANE_CLASSES:
            await self.ensure_pane(pane)
        # focus the pane's main widget, so its own keys (r: rescan, ctrl+s: save, ...) work at once
        widget = self.pane(pane)
        if widget is not None and widget.focus_target:
            self.query_one(widget.focus_target).focus()
        self._refresh_visible_pane()
        self.refresh_bindings()

    @property
    def visible_pane(self) -> str:
        return self.query_one(TabbedContent).active

    def _refresh_visible_pane(self) -> None:
        widget = self.pane(self.visible_pane)
        if widget is not None:
            widget.shown()

    def action_pane_key(self, pane: str, action: str) -> None:
        getattr(self.pane(pane), f"action_{action}")()

    async def run_pane_action(self, pane: str, action: str) -> None:
        self.action_show_pane(pane)
        widget = await self.ensure_pane(pane)
        getattr(widget, f"action_{action}")()
