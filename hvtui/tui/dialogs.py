"""Small modal questions: a choice between a few labelled keys, and a diff to confirm before saving."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ChoiceScreen(ModalScreen):
    """Dismisses with the chosen value, or None on escape. choices: (key, label, value).

    It fits an 80x24 terminal with every button visible: the buttons stand in a row when they fit the
    dialog's width, else one per line, and a long message scrolls inside the dialog."""

    WIDTH = 64
    DEFAULT_CSS = """
    ChoiceScreen { align: center middle; }
    ChoiceScreen > Vertical { width: 64; max-width: 95%; height: auto; max-height: 100%; border: thick $primary;
                              background: $surface; padding: 0 1; }
    ChoiceScreen #choice-title { text-style: bold; margin-bottom: 1; }
    ChoiceScreen #choice-scroll { height: auto; max-height: 12; }
    ChoiceScreen #choice-buttons { height: auto; margin-top: 1; }
    ChoiceScreen #choice-buttons.-row { layout: horizontal; }
    ChoiceScreen #choice-buttons.-row Button { margin-right: 2; }
    ChoiceScreen #choice-buttons.-column Button { width: 100%; }
    """
    BINDINGS = [Binding("escape", "choose_none", "Cancel", show=False)]

    def __init__(self, title: str, message: str, choices: list[tuple[str, str, object]]):
        super().__init__()
        self.title_text, self.message, self.choices = title, message, choices

    BUTTON_MIN_WIDTH = 16          # Textual's Button min-width

    @classmethod
    def fits_in_a_row(cls, labels: list[str], width: int) -> bool:
        inner = width - 2 - 2          # thick border, padding
        need = sum(max(len(label) + 2, cls.BUTTON_MIN_WIDTH) for label in labels) + 2 * (len(labels) - 1)
        return need <= inner

    def compose(self) -> ComposeResult:
        labels = [f"{key}: {label}" for key, label, _ in self.choices]
        width = min(self.WIDTH, int(self.app.size.width * 0.95))
        with Vertical():
            yield Static(Text(self.title_text), id="choice-title")
            with VerticalScroll(id="choice-scroll"):
                yield Static(Text(self.message), id="choice-message")
            with Vertical(id="choice-buttons", classes="-row" if self.fits_in_a_row(labels, width) else "-column"):
                for i, label in enumerate(labels):
                    yield Button(Text(label), id=f"choice-{i}", variant="primary" if i == 0 else "default",
                                 compact=True)

    def on_mount(self) -> None:
        self.query_one("#choice-0", Button).focus()

    def on_key(self, event) -> None:
        for key, _, value in self.choices:
            if event.key == key:
                event.stop()
                self.dismiss(value)
                return

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.choices[int((event.button.id or "").removeprefix("choice-"))][2])

    def action_choose_none(self) -> None:
        self.dismiss(None)


class DiffScreen(ModalScreen):
    """Shows a unified diff; dismisses True to save (y), False to cancel (n / escape). With `errors` (the
    preset's validation errors after the edit) it says so first and lists them whole: a preset with errors
    is saved only when the user confirms it."""

    DEFAULT_CSS = """
    DiffScreen { align: center middle; }
    DiffScreen > Vertical { width: 90%; height: 85%; border: thick $primary; background: $surface; padding: 0 1; }
    DiffScreen #diff-title { text-style: bold; height: auto; }
    DiffScreen VerticalScroll { height: 1fr; }
    DiffScreen #diff-errors { color: $hvtui-fail; margin-bottom: 1; }
    DiffScreen #diff-keys { height: 1; color: $foreground-muted; }
    """
    BINDINGS = [Binding("y", "answer(True)", "Save"), Binding("n,escape", "answer(False)", "Cancel")]

    def __init__(self, path: str, diff: str, errors: list[str] | tuple = ()):
        super().__init__()
        self.path, self.diff, self.errors = path, diff, list(errors)

    def compose(self) -> ComposeResult:
        from rich.syntax import Syntax  # pygments: only when a diff is shown, not at start-up

        n = len(self.errors)
        with Vertical():
            if n:
                title = (f"{self.path} has {n} error{'s' * (n != 1)} after these changes: `hvtui check` and a run "
                         "refuse it until they are fixed. Save anyway?")
            else:
                title = f"Save {self.path}? Changes (comments and order are kept):"
            yield Static(Text(title), id="diff-title")
            with VerticalScroll():
                if n:
                    yield Static(Text("\n".join(f"✗ {e}" for e in self.errors)), id="diff-errors")
                theme = "ansi_dark" if self.app.current_theme.dark else "ansi_light"
                yield Static(Syntax(self.diff, "diff", theme=theme, word_wrap=False), id="diff-text")
            yield Static(Text(("y: save anyway" if n else "y: save") + "   n / escape: cancel"), id="diff-keys")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)
