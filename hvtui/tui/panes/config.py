"""Config pane: the presets (list on the left), the active preset's fields grouped by section with inline
validation from the same validator `hvtui check` uses, save (diff shown first; comments kept), and
$EDITOR with a reload on return.

The fields are rows of one table (a widget per field made switching presets take seconds); Enter edits
the highlighted field in the edit bar below it (text), a picker (choices) or toggles it (true/false).
"""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.coordinate import Coordinate
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, ListItem, ListView, OptionList, Static
from textual.widgets.option_list import Option

from hvtui.core.preset.schema import Preset
from hvtui.tui import keymap
from hvtui.tui.form import FieldError, FormField, copy_preset, form_fields, get_value, parse_text, set_value, to_text
from hvtui.tui.panes.config_file import PresetFileActions
from hvtui.tui.services import Unavailable

SECTION_PREFIX = "section:"


class PresetList(ListView):
    class Chosen(Message):
        def __init__(self, index: int):
            super().__init__()
            self.index = index

    MIN_WIDTH = 22   # cells; the border and the scrollbar take 4 of them (the CSS caps it at 30 % of the screen)

    def set_presets(self, names: list[str], active: int) -> None:
        self.clear()
        labels = [f"{i + 1}. {name}" if i < 9 else f"   {name}" for i, name in enumerate(names)]
        for label in labels:
            self.append(ListItem(Label(label, markup=False)))
        # as wide as the longest name (t2v-480p-24gb-int8 was cut at 22 cells)
        self.styles.width = max([len(label) + 4 for label in labels] + [self.MIN_WIDTH])
        self.index = active

    @on(ListView.Selected)
    def _chosen(self, event: ListView.Selected) -> None:
        event.stop()
        self.post_message(self.Chosen(self.index or 0))


class ChoicePicker(ModalScreen):
    """Pick one of a field's allowed values; dismisses with the value, or the sentinel on escape."""

    DEFAULT_CSS = """
    ChoicePicker { align: center middle; }
    ChoicePicker > Vertical { width: 50; height: auto; max-height: 80%; border: thick $primary; background: $surface; }
    ChoicePicker OptionList { height: auto; max-height: 20; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]
    CANCELLED = object()

    def __init__(self, f: FormField, current):
        super().__init__()
        self.field, self.current = f, current
        self.values = list(f.choices or ()) + ([None] if f.optional else [])

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = f"{self.field.name}: {self.field.help}"
            yield OptionList(*[Option("(default)" if c is None else str(c)) for c in self.values])

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = self.values.index(self.current) if self.current in self.values else 0
        options.focus()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.values[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(self.CANCELLED)


class FieldTable(DataTable):
    BINDINGS = [Binding("space", "toggle_field", "Toggle", show=False)]

    def action_toggle_field(self) -> None:
        self.query_ancestor(ConfigPane).toggle_highlighted()


class ConfigPane(Horizontal, PresetFileActions):
    BINDINGS = keymap.bindings(keymap.CONFIG_KEYS) + [Binding("escape", "cancel_edit", "Cancel edit", show=False)]
    DEFAULT_CSS = """
    ConfigPane #preset-list { width: 22; max-width: 30%; height: 1fr; border: round $panel-lighten-2; }
    ConfigPane #config-main { width: 1fr; }
    ConfigPane #config-head { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    ConfigPane #config-problems-scroll { height: auto; max-height: 6; }
    ConfigPane #config-problems { height: auto; padding: 0 1; color: $hvtui-fail; }
    ConfigPane #field-table { height: 1fr; border: round $panel-lighten-2; }
    ConfigPane #field-info { height: auto; max-height: 8; padding: 0 1; }
    ConfigPane #edit-bar { height: 1; display: none; }
    ConfigPane #edit-bar.-editing { display: block; }
    ConfigPane #edit-label { width: auto; max-width: 30; padding: 0 1; text-style: bold; }
    ConfigPane #edit-input { width: 1fr; }
    """
    focus_target = "#field-table"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.path: Path | None = None
        self.preset = None          # as on disk
        self.working: Preset | None = None     # the form's edited copy
        self.doc = None             # PresetDocument (tomlkit) or None when editing is unavailable
        self.fields: dict[str, FormField] = {}      # dotted key -> field
        self.problems: list = []
        self.field_errors: dict[str, str] = {}
        self.dirty = False
        self.edit_note = ""
        self.editing: FormField | None = None

    def compose(self) -> ComposeResult:
        yield PresetList(id="preset-list")
        with Vertical(id="config-main"):
            yield Static(id="config-head")
            with VerticalScroll(id="config-problems-scroll"):   # file-level problems, whole; scrolls when many
                yield Static(id="config-problems")
            yield FieldTable(id="field-table", cursor_type="row", zebra_stripes=False)
            with Horizontal(id="edit-bar"):
                yield Label("", id="edit-label", markup=False)
                yield Input(id="edit-input", compact=True)
            yield Static(id="field-info")

    def on_mount(self) -> None:
        self.query_one("#preset-list").border_title = "presets"
        table = self.query_one(FieldTable)
        table.border_title = "fields (enter: edit)"
        table.add_column("field", key="field")
        table.add_column("value", key="value")
        table.add_column("", key="mark", width=1)

    # ------------------------------------------------------------------ loading

    async def load(self, path: Path | None) -> None:
        """Show a preset file: validate it, open it for editing, fill the table."""
        self.path, self.preset, self.working, self.doc = path, None, None, None
        self.problems, self.field_errors, self.dirty, self.edit_note = [], {}, False, ""
        self.fields = {}
        self.cancel_edit()
        table = self.query_one(FieldTable)
        table.clear()
        if path is None:
            self._show_head()
            self.query_one("#config-problems", Static).update(
                Text("No presets found. Pass a preset file or --presets DIR.", style="bold"))
            self.query_one("#config-problems-scroll").display = True
            return
        try:
            validation = self.services.validate_file(path)
        except Unavailable as e:
            self.query_one("#config-problems", Static).update(Text(str(e), style="bold"))
            self.query_one("#config-problems-scroll").display = True
            self._show_head()
            return
        self.problems = list(validation.problems)
        self.preset = validation.preset
        if self.preset is not None:
            self.working = copy_preset(self.preset)
            try:
                self.doc = self.services.open_document(path)
            except Unavailable as e:
                self.edit_note = f"read-only: {e}"
            except Exception as e:  # readable by tomllib but not tomlkit: still show it
                self.edit_note = f"read-only: cannot open for editing: {e}"
            self._fill_table()
        self._show_problems()

    def _fill_table(self) -> None:
        table = self.query_one(FieldTable)
        section = None
        if self.working is None:
            return
        for f in form_fields(self.working):
            if f.section != section:
                section = f.section
                table.add_row(Text(f"── {section}", style="bold"), "", "", key=SECTION_PREFIX + section)
            self.fields[f.key] = f
            table.add_row(Text(f.name, no_wrap=True, overflow="ellipsis"), self._value_text(f), "", key=f.key)
        table.move_cursor(row=1 if table.row_count > 1 else 0)

    def _value_text(self, f: FormField) -> Text:
        value = None if self.working is None else get_value(self.working, f.path)
        if value is None:
            return Text("(default)", style="dim")
        return Text(to_text(value), no_wrap=True, overflow="ellipsis")

    # ------------------------------------------------------------------ editing

    @property
    def highlighted(self) -> FormField | None:
        table = self.query_one(FieldTable)
        if not table.row_count:
            return None
        row_key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key
        return self.fields.get(row_key.value or "")

    def select_field(self, key: str) -> None:
        """Move the cursor to a field by its dotted key (palette, tests)."""
        table = self.query_one(FieldTable)
        table.move_cursor(row=table.get_row_index(key))
        table.focus()

    @on(DataTable.RowSelected, "#field-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        f = self.fields.get(event.row_key.value or "")
        if f is not None:
            self.begin_edit(f)

    @on(DataTable.RowHighlighted, "#field-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_info(self.fields.get(event.row_key.value or ""))

    def begin_edit(self, f: FormField) -> None:
        if self.doc is None or self.working is None:
            self.host.say(self.edit_note or "this preset cannot be edited here", severity="warning")
            return
        current = get_value(self.working, f.path)
        if f.base is bool and not f.optional:
            self._commit(f, not current)
        elif f.choices:
            def picked(value) -> None:
                if value is not ChoicePicker.CANCELLED:
                    self._commit(f, value)
                self.query_one(FieldTable).focus()
            self.app.push_screen(ChoicePicker(f, current), picked)
        else:
            self.editing = f
            self.query_one("#edit-label", Label).update(f.name)
            edit = self.query_one("#edit-input", Input)
            edit.value = to_text(current)
            edit.placeholder = "(empty: default)" if f.optional else ""
            self.query_one("#edit-bar").add_class("-editing")
            edit.focus()

    def toggle_highlighted(self) -> None:
        f = self.highlighted
        if f is not None and f.base is bool and self.doc is not None and self.working is not None:
            self._commit(f, not get_value(self.working, f.path))

    @on(Input.Submitted, "#edit-input")
    def _edit_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        f = self.editing
        if f is None:
            return
        try:
            value = parse_text(f, event.value)
        except FieldError as e:
            self.field_errors[f.key] = str(e)
            self._show_problems()
            return
        self.field_errors.pop(f.key, None)
        self.cancel_edit()
        self._commit(f, value)

    def cancel_edit(self) -> None:
        if self.editing is None:
            return
        self.field_errors.pop(self.editing.key, None)
        self.editing = None
        self.query_one("#edit-bar").remove_class("-editing")
        self.query_one(FieldTable).focus()
        self._show_problems()

    def action_cancel_edit(self) -> None:
        self.cancel_edit()

    def _commit(self, f: FormField, value) -> None:
        if self.working is None or self.doc is None:
            return
        old = get_value(self.working, f.path)
        if old == value and type(old) is type(value):
            return
        set_value(self.working, f.path, value)
        self.doc.set(f.key, value)
        self.dirty = self.doc.diff() != ""
        self.query_one(FieldTable).update_cell(f.key, "value", self._value_text(f))
        self.revalidate()

    def revalidate(self) -> None:
        if self.working is None:
            return
        try:
            self.problems = list(self.services.validate_preset(self.working))
        except Unavailable as e:
            self.problems = []
            self.edit_note = str(e)
        self._show_problems()

    # ------------------------------------------------------------------ showing

    @property
    def error_count(self) -> int:
        return sum(1 for p in self.problems if p.severity == "error") + len(self.field_errors)

    def _problems_by_key(self) -> dict[str, list]:
        by_key: dict[str, list] = {}
        index = {f.display_key: f.key for f in self.fields.values()}
        for p in self.problems:
            by_key.setdefault(index.get(p.key, ""), []).append(p)
        return by_key

    def _show_head(self) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        if self.path is None:
            t.append("no preset")
        else:
            t.append(self.path.name, style="bold")
            if self.dirty:
                t.append(" ● unsaved", style="bold")
            errors = self.error_count
            warnings = sum(1 for p in self.problems if p.severity != "error")
            t.append(f"  {errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}",
                     style="bold" if errors else "dim")
            if self.edit_note:
                t.append(f"  {self.edit_note}", style="dim")
        self.query_one("#config-head", Static).update(t)

    def _show_problems(self) -> None:
        by_key = self._problems_by_key()
        table = self.query_one(FieldTable)
        for key in self.fields:
            mark: str | Text = ""
            if key in self.field_errors or any(p.severity == "error" for p in by_key.get(key, [])):
                mark = Text("✗", style="bold red")
            elif by_key.get(key):
                mark = Text("!", style="bold yellow")
            table.update_cell(key, "mark", mark)
        # problems that belong to no single field (syntax, dataset file, a missing table) stay listed on top
        t = Text()
        for p in by_key.get("", []):
            where = f"{Path(p.file).name}:{p.line}" if p.line else Path(p.file).name
            t.append(("✗ " if p.severity == "error" else "! ") + f"{where}: {p.key}: {p.message}; {p.fix}\n")
        t.rstrip()
        problems = self.query_one("#config-problems", Static)
        problems.update(t)
        self.query_one("#config-problems-scroll").display = bool(t.plain)
        self._show_head()
        self._show_info(self.editing or self.highlighted)

    def _show_info(self, f: FormField | None) -> None:
        """The highlighted field's problems in full (wrapped: the fix is the part that matters), then its help."""
        info = self.query_one("#field-info", Static)
        if f is None:
            info.update("")
            return
        t = Text()
        if f.key in self.field_errors:
            t.append(f"✗ {self.field_errors[f.key]}\n", style="bold red")
        problems = self._problems_by_key().get(f.key, [])
        for p in problems:
            t.append(f"{'✗' if p.severity == 'error' else '!'} {p.message}; {p.fix}\n",
                     style="bold red" if p.severity == "error" else "bold yellow")
        if f.key not in self.field_errors and not problems:
            t.append(f.key + "\n", style="bold")
        bounds = [f"min {f.minimum:g}"] if f.minimum is not None else []
        bounds += [f"max {f.maximum:g}"] if f.maximum is not None else []
        if f.choices:
            bounds.append("one of: " + ", ".join(map(str, f.choices)))
        t.append(f.help + (f" ({'; '.join(bounds)})" if bounds else ""), style="dim")
        info.update(t)
