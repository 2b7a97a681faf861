"""Train pane: run controls' state, phase with progress, where the run logs (trackers), loss chart, the latest
sample's preview, numbers, GPU and offload panels, log lines, checkpoints and samples written. It only draws a
TrainState; the app feeds it from the run."""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Group
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.color import Color, ColorParseError
from textual.containers import Horizontal, Vertical
from textual.widgets import RichLog, Static

from hvtui.tui.panes.pane import Pane
from hvtui.tui.train_state import TrainState, format_duration
from hvtui.tui.widgets.gpu_panel import GpuPanel
from hvtui.tui.widgets.loss_chart import LossChart
from hvtui.tui.widgets.offload_panel import OffloadPanel
from hvtui.tui.widgets.sample_preview import SamplePreview
from hvtui.tui.widgets.tracker_line import TrackerLine

STATE_COLOUR = {"running": "hvtui-ok", "finished": "hvtui-ok", "paused": "hvtui-warn", "stopping": "hvtui-warn",
                "starting": "hvtui-warn", "interrupted": "hvtui-warn", "failed": "hvtui-fail"}
LEVEL_STYLE = {"warning": "yellow", "error": "bold red"}


def bar(fraction: float, width: int) -> str:
    filled = max(0, min(width, int(fraction * width + 0.5)))
    return "━" * filled + "─" * (width - filled)


class TrainPane(Vertical, Pane):
    DEFAULT_CSS = """
    TrainPane { height: 1fr; }
    TrainPane #train-head { height: auto; min-height: 2; max-height: 5; padding: 0 1; }
    TrainPane #train-row1 { height: 1fr; min-height: 7; }
    TrainPane LossChart { width: 1fr; height: 100%; }
    TrainPane #train-stats { width: 27; height: 100%; border: round $panel-lighten-2; padding: 0 1; }
    TrainPane GpuPanel { width: 100%; }
    TrainPane OffloadPanel { width: 100%; display: none; }
    TrainPane OffloadPanel.-on { display: block; }
    TrainPane #train-row3 { height: 6; }
    TrainPane #train-log { width: 3fr; height: 100%; border: round $panel-lighten-2; }
    TrainPane #train-outputs { width: 2fr; height: 100%; border: round $panel-lighten-2; padding: 0 1;
                               text-wrap: nowrap; text-overflow: ellipsis; }
    TrainPane #train-stats { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    focus_target = "#train-log"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._version = -1
        self._logs_seen = 0
        self._generation = 0      # TrainState.generation drawn: a new run clears the log
        self.note = ""            # set by the app: e.g. "loading torch + diffusers…", "no preset"
        self.ready = False        # children composed and mounted

    def compose(self) -> ComposeResult:
        yield Static(id="train-head")
        yield TrackerLine(id="tracker-line")
        with Horizontal(id="train-row1"):
            yield LossChart(id="loss-chart")
            yield SamplePreview(id="sample-preview")
            yield Static(id="train-stats")
        yield GpuPanel(id="gpu-panel")
        yield OffloadPanel(id="offload-panel")
        with Horizontal(id="train-row3"):
            yield RichLog(id="train-log", max_lines=300, wrap=True, min_width=20, markup=False)   # whole lines
            yield Static(id="train-outputs")

    def on_mount(self) -> None:
        self.query_one("#train-stats").border_title = "numbers"
        self.query_one("#train-log").border_title = "log"
        self.query_one("#train-outputs").border_title = "checkpoints & samples"
        self.ready = True

    def show(self, st: TrainState, *, offload_enabled: bool = False, telemetry: bool = True,
             keys: dict[str, str] | None = None, force: bool = False, can_start: bool = True) -> None:
        if not self.ready:
            return
        keys = keys or {}
        self._show_head(st, keys, can_start)
        if st.version == self._version and not force:
            return
        self._version = st.version
        log = self.query_one("#train-log", RichLog)
        if st.generation != self._generation:
            self._generation, self._logs_seen = st.generation, 0
            log.clear()
        self.query_one(LossChart).set_data(st.steps, st.losses, st.smooth)
        self.query_one(SamplePreview).show(st.preview)
        self.query_one(TrackerLine).show(st.trackers)
        self._show_stats(st)
        self.query_one(GpuPanel).show(st.gpus, st.step, telemetry=telemetry, device=st.started.get("device", ""),
                                      note=st.gpu_note, torch_mem=st.torch_mem)
        offload = self.query_one(OffloadPanel)
        offload.set_class(offload_enabled or bool(st.offload), "-on")
        offload.show(st.offload)
        for _, t, level, message in st.new_logs(self._logs_seen):
            stamp = time.strftime("%H:%M:%S ", time.localtime(t)) if t else ""
            log.write(Text(stamp, style="dim") + Text(message, style=LEVEL_STYLE.get(level, "")))
        self._logs_seen = st.log_count
        self._show_outputs(st)

    def _show_head(self, st: TrainState, keys: dict[str, str], can_start: bool = True) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"● {st.state.upper()}", style=theme_style(self.app, STATE_COLOUR.get(st.state), bold=True))
        step, max_steps = st.step.get("step"), st.step.get("max_steps") or st.started.get("max_steps")
        if st.phase:
            t.append(f"  {st.phase}")
        done, total, what = st.progress.get(st.phase, (0, 0, "")) if st.phase != "training" else (0, 0, "")
        if st.phase == "training" or (step is not None and not total):
            if step is not None and max_steps:
                t.append(f"  step {step}/{max_steps} {bar(step / max_steps, 20)} {100 * step / max_steps:.0f}%")
                if st.active:
                    t.append(f"  ETA {format_duration(st.step.get('eta_s'))}")
        elif total:
            t.append(f"  {done}/{total} {bar(done / total, 20)} {100 * done / total:.0f}%")
        second = Text()   # wraps: an error and its fix are read whole
        if self.note:
            second.append(self.note, style="bold")
        elif st.error and st.state == "failed":
            second.append(f"error: {st.error.get('message', '')}", style="bold red")
            if st.error.get("hint"):
                second.append(f" — {st.error['hint']}", style="dim")
        elif (what or st.phase_detail) and st.active and st.phase != "training":   # training: the keys
            second = Text(what or st.phase_detail, style="dim", no_wrap=True, overflow="ellipsis")
        elif not st.active and not can_start:   # attached: the run belongs to another process
            if st.state != "idle":
                second.append(f"the run is over; {keys.get('quit', 'q')} quits", style="dim")
        elif not st.active:
            more = " (resume it or start fresh)" if st.started or st.steps else ""
            second.append(f"{keys.get('run.start', 's')}: start{more}", style="dim")
        else:
            second.append(f"{keys.get('run.pause', 'p')}: pause/resume  {keys.get('run.stop', 'x')}: stop  "
                          f"{keys.get('run.save', 'c')}: checkpoint now  {keys.get('run.sample', 'v')}: sample now",
                          style="dim")
        self.query_one("#train-head", Static).update(Group(t, second))

    def _show_stats(self, st: TrainState) -> None:
        d = st.step

        def num(key, fmt):
            v = d.get(key)
            return "--" if v is None else format(v, fmt)

        max_steps = d.get('max_steps') or st.started.get('max_steps', '?')
        rows = [
            ("step", f"{d['step']} / {max_steps}" if "step" in d else "--"),
            ("loss", num("loss", ".4f")),
            ("smoothed", f"{st.smooth[-1]:.4f}" if st.smooth else "--"),
            ("lr", num("lr", ".2e")),
            ("s/step", num("step_time", ".2f")),
            ("ETA", format_duration(d.get("eta_s")) if d and st.active else "--"),
            ("epoch", num("epoch", "")),
            ("grad norm", num("grad_norm", ".3f")),
            ("samples/s", num("samples_per_s", ".2f")),
        ]
        t = Text(no_wrap=True, overflow="ellipsis")
        for i, (k, v) in enumerate(rows):
            t.append(("\n" if i else "") + f"{k:<10}", style="dim")
            t.append(v, style="bold" if k in ("loss", "step") else "")
        self.query_one("#train-stats", Static).update(t)

    def _show_outputs(self, st: TrainState) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        rows = [("ckpt", step, path) for step, path in st.checkpoints[-2:]]
        rows += [("sample", step, path) for step, path, _ in st.samples[-2:]]
        if not rows:
            t.append("none yet", style="dim")
        for i, (kind, step, path) in enumerate(rows):
            t.append(("\n" if i else "") + f"{kind} {step} ", style="bold")
            t.append(Path(path).name or path)
        self.query_one("#train-outputs", Static).update(t)


def theme_style(app, variable: str | None, bold: bool = False) -> Style:
    """A rich style from one of the theme's colour variables (hex or ansi_* names both work)."""
    value = app.theme_variables.get(variable or "", "")
    try:
        color = Color.parse(value).rich_color if value else None
    except ColorParseError:
        color = None
    return Style(color=color, bold=bold)
