"""Environment pane: the doctor's checks (status, detail, fix hint), where each model component resolved
from, and the memory fit estimate. The doctor runs in a worker thread (it may touch NVML and disk)."""
from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from hvtui.tui import keymap
from hvtui.tui.panes.dataset import plain
from hvtui.tui.panes.pane import Pane
from hvtui.tui.services import guarded

STATUS_MARK = {"ok": "✓ ok", "warn": "! warn", "fail": "✗ FAIL"}


class EnvironmentPane(Vertical, Pane):
    BINDINGS = keymap.bindings(keymap.ENVIRONMENT_KEYS)
    DEFAULT_CSS = """
    EnvironmentPane #env-head { height: 1; padding: 0 1; }
    EnvironmentPane #env-body { height: 1fr; }
    EnvironmentPane #check-table { height: auto; max-height: 14; border: round $panel-lighten-2; }
    EnvironmentPane #check-info { height: auto; padding: 0 1; }
    EnvironmentPane #component-table { height: auto; max-height: 12; border: round $panel-lighten-2; }
    EnvironmentPane #fit { height: auto; border: round $panel-lighten-2; padding: 0 1; }
    """

    class Done(Message):
        def __init__(self, report=None, error: str = ""):
            super().__init__()
            self.report, self.error = report, error

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.preset = None
        self.report = None
        self.stale = True
        self.running = False

    def compose(self) -> ComposeResult:
        yield Static(id="env-head")
        with VerticalScroll(id="env-body"):
            yield DataTable(id="check-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="check-info")
            yield DataTable(id="component-table", cursor_type="row")
            yield Static(id="fit")

    def on_mount(self) -> None:
        checks = self.query_one("#check-table", DataTable)
        checks.border_title = "checks"
        checks.add_columns("status", "check", "detail", "fix")
        comps = self.query_one("#component-table", DataTable)
        comps.border_title = "model components"
        comps.add_columns("component", "source", "layout", "path")
        self.query_one("#fit").border_title = "memory fit"
        self._head("not checked yet")

    def _head(self, text: str) -> None:
        key = keymap.key_for("environment.rerun", getattr(self.app, "keymap", None))
        self.query_one("#env-head", Static).update(
            Text(text, no_wrap=True, overflow="ellipsis") + Text(f"   {key}: rerun", style="dim"))

    def set_preset(self, preset) -> None:
        self.preset = preset
        self.stale = True

    focus_target = "#check-table"

    def shown(self) -> None:
        self.check_if_stale()

    def check_if_stale(self) -> None:
        if self.stale and not self.running:
            self.action_rerun()

    def action_rerun(self) -> None:
        if self.preset is None:
            self._head("no valid preset: fix it in the Config pane first")
            return
        if self.running:
            return
        self.running, self.stale = True, False
        self._head("checking the environment…")
        self._run(self.preset)

    @work(thread=True, exclusive=True, group="doctor")
    def _run(self, preset) -> None:
        report, error = guarded(lambda: self.host.services.run_doctor(preset), "doctor")
        self.post_message(self.Done(report, error))

    @on(Done)
    def _done(self, m: Done) -> None:
        self.running = False
        if m.error:
            self._head(m.error)
            return
        self.show_report(m.report)

    def show_report(self, report) -> None:
        self.report = report
        checks = self.query_one("#check-table", DataTable)
        checks.clear()
        counts = {"ok": 0, "warn": 0, "fail": 0}
        for i, c in enumerate(report.checks):
            counts[c.status] = counts.get(c.status, 0) + 1
            style = {"fail": "bold red", "warn": "yellow"}.get(c.status, "green")
            name = f"{c.group}: {c.name}" if getattr(c, "group", "") and c.group != c.name else c.name
            checks.add_row(Text(STATUS_MARK.get(c.status, c.status), style=style), Text(name),
                           Text(c.detail or "", no_wrap=True, overflow="ellipsis"), Text(c.hint or ""), key=str(i))
        comps = self.query_one("#component-table", DataTable)
        comps.clear()
        for comp in getattr(report, "components", None) or []:
            if comp.path is not None:
                where = str(comp.path)
            elif comp.source == "builtin":
                where = "built in code (tiny demo model)"
            else:
                where = f"not found (looked first in {comp.expected_path})" if comp.expected_path else "not found"
            comps.add_row(*plain(comp.name, source_text(comp), comp.layout or "", where))
        fit = getattr(report, "fit", None)
        self.query_one("#fit", Static).update(format_fit(fit))
        self._head(f"{counts['ok']} ok, {counts['warn']} warning{'s' * (counts['warn'] != 1)}, "
                   f"{counts['fail']} failed")
        first_bad = next((i for i, c in enumerate(report.checks) if c.status == "fail"),
                         next((i for i, c in enumerate(report.checks) if c.status == "warn"), 0))
        if report.checks:
            checks.move_cursor(row=first_bad)
            self._show_check(first_bad)

    @on(DataTable.RowHighlighted, "#check-table")
    def _check_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key and event.row_key.value is not None:
            self._show_check(int(event.row_key.value))

    def _show_check(self, index: int) -> None:
        """The highlighted check in full: the table cuts long details, and the fix is what matters."""
        if self.report is None or not 0 <= index < len(self.report.checks):
            return
        c = self.report.checks[index]
        t = Text()
        t.append(f"{c.name}: ", style="bold")
        t.append(c.detail or "")
        if c.hint:
            t.append("\nfix: ", style="bold")
            t.append(c.hint)
        self.query_one("#check-info", Static).update(t)


def format_fit(fit) -> Text:
    if fit is None:
        return Text("no estimate (see the fit check above)", style="dim")
    t = Text()
    t.append(f"peak {fit.peak_gib:.1f} GiB", style="bold")
    t.append(f"  bucket {fit.bucket}" + (f" ({fit.bucket_source})" if getattr(fit, "bucket_source", "") else ""),
             style="dim")
    t.append("\n" + fit.breakdown())
    for note in getattr(fit, "notes", None) or []:
        t.append(f"\n· {note}", style="dim")
    return t


def source_text(comp) -> str:
    from hvtui.core.env.doctor_report import source_words  # here: not needed for the first paint

    return source_words(str(comp.source))
