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
from hvtui.tui.services import Unavailable

STATUS_MARK = {"ok": "✓ ok", "warn": "! warn", "fail": "✗ FAIL"}


class EnvironmentPane(Vertical):
    BINDINGS = keymap.bindings(keymap.ENVIRONMENT_KEYS)
    DEFAULT_CSS = """
    EnvironmentPane #env-head { height: 1; padding: 0 1; }
    EnvironmentPane #env-body { height: 1fr; }
    EnvironmentPane #check-table { height: auto; max-height: 16; border: round $panel-lighten-2; }
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
        try:
            report = self.app.services.run_doctor(preset)
        except Unavailable as e:
            self.post_message(self.Done(error=str(e)))
            return
        except Exception as e:  # a doctor bug must not take the UI down
            self.post_message(self.Done(error=f"doctor failed: {type(e).__name__}: {e}"))
            return
        self.post_message(self.Done(report))

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
        for c in report.checks:
            counts[c.status] = counts.get(c.status, 0) + 1
            style = {"fail": "bold red", "warn": "yellow"}.get(c.status, "green")
            checks.add_row(Text(STATUS_MARK.get(c.status, c.status), style=style), c.name, c.detail or "",
                           c.hint or "")
        comps = self.query_one("#component-table", DataTable)
        comps.clear()
        for comp in getattr(report, "components", None) or []:
            comps.add_row(comp.name, str(getattr(comp, "source", "")), str(getattr(comp, "layout", "")),
                          str(getattr(comp, "path", "") or "not found"))
        fit = getattr(report, "fit", None)
        self.query_one("#fit", Static).update(format_fit(fit))
        self._head(f"{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed")


def format_fit(fit) -> Text:
    if fit is None:
        return Text("no estimate", style="dim")
    lines = getattr(fit, "lines", None)
    if callable(lines):
        return Text("\n".join(lines()))
    summary = getattr(fit, "summary", None)
    if callable(summary):
        return Text(str(summary()))
    if isinstance(summary, str):
        return Text(summary)
    return Text(str(fit))
