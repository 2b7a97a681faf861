"""The Config pane's file actions: save (the diff shown first, comments kept), revert, and the preset opened
in $EDITOR with a reload on return. ConfigPane builds on this class; the form itself is in panes/config.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hvtui.tui.dialogs import ChoiceScreen, DiffScreen
from hvtui.tui.panes.pane import Pane
from hvtui.tui.services import Services


class PresetFileActions(Pane):
    """What ConfigPane does with the file on disk; the state named here is ConfigPane's."""

    path: Path | None
    doc: Any                # the preset's TOML document (None: the file could not be parsed for editing)
    dirty: bool
    edit_note: str
    field_errors: dict
    problems: list

    @property
    def services(self) -> Services:
        return self.host.services

    async def load(self, path: Path | None) -> None:
        raise NotImplementedError       # ConfigPane

    def _show_head(self) -> None:
        raise NotImplementedError       # ConfigPane

    def action_save(self) -> None:
        path = self.path
        if self.doc is None or path is None:        # (a document is only opened from a file)
            self.host.say(self.edit_note or "nothing to save", severity="warning")
            return
        if self.field_errors:
            self.host.say("fix the field marked ✗ first", severity="error")
            return
        diff = self.doc.diff()
        if not diff.strip():
            self.dirty = False
            self._show_head()
            self.host.say("no changes to save")
            return

        def answered(save: bool | None) -> None:
            if save:
                self.doc.save()
                self.dirty = False
                self._show_head()
                self.host.say(f"saved {path.name}")
                self.host.preset_saved()
        errors = [f"{p.key}: {p.message}; {p.fix}" for p in self.problems if p.severity == "error"]
        self.app.push_screen(DiffScreen(str(path), diff, errors), answered)

    def action_revert(self) -> None:
        self.app.call_later(self.load, self.path)

    def action_edit_external(self) -> None:
        if self.path is None:
            return

        def go(answer) -> None:
            if answer:
                self.app.call_later(self._run_editor)
        if self.dirty:
            self.app.push_screen(ChoiceScreen("Unsaved edits", "Open the file in $EDITOR and drop the edits "
                                              "made here?", [("y", "Open editor", True), ("n", "Cancel", False)]), go)
        else:
            go(True)

    async def _run_editor(self) -> None:
        path = self.path
        if path is None:
            return
        status = self.services.run_editor(self.app, path)
        await self.load(path)
        self.host.preset_saved()
        if status:
            self.host.say(f"editor exited with status {status}", severity="warning")
        else:
            self.host.say(f"reloaded {path.name}")
