"""Loss over steps drawn with braille dots (2x4 per cell): raw losses as quiet dots, the smoothed loss as
a bright line on top. Fits any width (at 80 columns the plot is ~40 cells = 80 dot columns); y labels
left, first and last step below. No plotting library: textual-plotext is not a dependency.
"""
from __future__ import annotations

import math

from rich.text import Text
from textual.widget import Widget

BRAILLE_BASE = 0x2800
# dot bit for (x in 0..1, y in 0..3) inside one braille cell
DOT_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


def format_loss(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return f"{v:.3g}"
    if abs(v) >= 100 or abs(v) < 0.001:
        return f"{v:.1e}"
    return f"{v:.4f}"[:6]


class BrailleCanvas:
    def __init__(self, width: int, height: int):
        self.width, self.height = width, height          # in cells
        self.cells = [[0] * width for _ in range(height)]

    def dot(self, px: int, py: int) -> None:
        """px in 0..2w-1 (left to right), py in 0..4h-1 (top to bottom)."""
        if 0 <= px < self.width * 2 and 0 <= py < self.height * 4:
            self.cells[py // 4][px // 2] |= DOT_BITS[py % 4][px % 2]

    def vline(self, px: int, y0: int, y1: int) -> None:
        for y in range(min(y0, y1), max(y0, y1) + 1):
            self.dot(px, y)


def plot_layers(steps: list[int], raw: list[float], smooth: list[float], width: int, height: int,
                ) -> tuple[BrailleCanvas, BrailleCanvas, float, float]:
    """The raw and smoothed layers on (width x height) cells, and the y range (lo, hi)."""
    finite = [v for v in raw if math.isfinite(v)] + [v for v in smooth if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    pw, ph = width * 2, height * 4
    first, last = steps[0], steps[-1]
    span = max(last - first, 1)

    def px(step: int) -> int:
        return min(pw - 1, int((step - first) / span * (pw - 1) + 0.5)) if len(steps) > 1 else 0

    def py(v: float) -> int:
        return min(ph - 1, max(0, int((hi - v) / (hi - lo) * (ph - 1) + 0.5)))

    raw_layer, smooth_layer = BrailleCanvas(width, height), BrailleCanvas(width, height)
    for s, v in zip(steps, raw, strict=False):     # drawn while the run appends: lengths may differ
        if math.isfinite(v):
            raw_layer.dot(px(s), py(v))
    # smoothed: one mean value per dot column, joined vertically so the line has no gaps
    columns: dict[int, list[float]] = {}
    for s, v in zip(steps, smooth, strict=False):
        if math.isfinite(v):
            columns.setdefault(px(s), []).append(v)
    points = [(x, py(sum(vs) / len(vs))) for x, vs in sorted(columns.items())]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):    # neighbours: one pair fewer
        # straight segment between neighbouring points, one dot column at a time
        for x in range(x0, x1 + 1):
            y = y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1)
            ya = y0 + (y1 - y0) * max(x - x0 - 1, 0) / max(x1 - x0, 1)
            smooth_layer.vline(x, int(round(ya)), int(round(y)))
    if len(points) == 1:
        smooth_layer.dot(*points[0])
    return raw_layer, smooth_layer, lo, hi


class LossChart(Widget):
    DEFAULT_CSS = """
    LossChart { height: 10; min-height: 5; border: round $panel-lighten-2; border-title-color: $foreground; }
    LossChart > .loss-chart--raw { color: $hvtui-loss-raw; }
    LossChart > .loss-chart--smooth { color: $hvtui-loss-smooth; text-style: bold; }
    LossChart > .loss-chart--axis { color: $hvtui-chart-axis; }
    """
    COMPONENT_CLASSES = {"loss-chart--raw", "loss-chart--smooth", "loss-chart--axis"}
    LABEL_WIDTH = 7

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps: list[int] = []
        self.raw: list[float] = []
        self.smooth: list[float] = []
        self.border_title = "loss"
        self.border_subtitle = "⠒ raw  ━ smoothed"

    def set_data(self, steps: list[int], raw: list[float], smooth: list[float]) -> None:
        self.steps, self.raw, self.smooth = list(steps), list(raw), list(smooth)
        self.refresh()

    def render(self) -> Text:
        width, height = self.content_size.width, self.content_size.height
        axis = self.get_component_rich_style("loss-chart--axis")
        if not self.steps or width < self.LABEL_WIDTH + 4 or height < 2:
            return Text("no steps yet", style=axis)
        pw, ph = width - self.LABEL_WIDTH, height - 1
        raw_layer, smooth_layer, lo, hi = plot_layers(self.steps, self.raw, self.smooth, pw, ph)
        raw_style = self.get_component_rich_style("loss-chart--raw")
        smooth_style = self.get_component_rich_style("loss-chart--smooth")
        labels = {0: format_loss(hi), ph - 1: format_loss(lo)}
        if ph >= 5:
            labels[(ph - 1) // 2] = format_loss((hi + lo) / 2)
        out = Text(no_wrap=True, overflow="crop")
        for row in range(ph):
            out.append(labels.get(row, "").rjust(self.LABEL_WIDTH - 1) + "┤" if row in labels
                       else " " * (self.LABEL_WIDTH - 1) + "│", style=axis)
            for col in range(pw):
                r, s = raw_layer.cells[row][col], smooth_layer.cells[row][col]
                if s:
                    out.append(chr(BRAILLE_BASE | s | r), style=smooth_style)
                elif r:
                    out.append(chr(BRAILLE_BASE | r), style=raw_style)
                else:
                    out.append(" ")
            out.append("\n")
        first, last = f"step {self.steps[0]}", str(self.steps[-1])
        gap = max(1, pw - len(first) - len(last))
        out.append(" " * self.LABEL_WIDTH + first + " " * gap + last, style=axis)
        return out
