"""The latest validation sample, drawn in the terminal from its contact sheet (core/contact_sheet.py).

Half-block characters: each cell shows two pixels, the upper half "▀" in the foreground colour and the lower
half in the background colour. That needs nothing from the terminal but colour, so it works over SSH, in tmux
and under `hvtui --attach` (Textual maps the colours down on terminals without truecolor). In kitty (outside
tmux) the same layout is sent as one picture through kitty's graphics protocol instead (kitty_graphics.py).

The sheet's tiles are cut apart again and laid out to fit the box: as many frames as stay readable (a tile at
least MIN_TILE_PX pixels tall and not much smaller than one frame alone would be), picked evenly from the
sheet; at 80x24 that is one frame. The sheet is read (Pillow) in a worker thread when a new one arrives, so
neither the first paint nor a redraw waits for it.
"""
from __future__ import annotations

import os
from pathlib import Path

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from hvtui.tui import kitty_graphics

MIN_TILE_PX = 8          # a tile shorter than this (4 rows) is not shown
KEEP_RATIO = 2.5         # more frames only while each is at least 1/KEEP_RATIO of one frame's height
MAX_WIDTH_FRACTION = 0.4 # of the row it sits in
LEAVE_COLS = 63          # ... and the rest of the row keeps this much: the numbers box (27) + a readable loss chart
GRIDS = ((1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (4, 1), (4, 2))
MIN_WIDTH = 13           # the border title "sample 123" fits
UPPER, LOWER = "▀", "▄"


def choose_grid(tiles: int, tile_w: int, tile_h: int, width_px: int, height_px: int) -> tuple[int, int, int, int]:
    """(cols, rows, shown tile width, height) in pixels for `tiles` frames of tile_w x tile_h in a box."""
    def fit(cols: int, rows: int) -> tuple[int, int]:
        scale = min((width_px - (cols - 1)) / (cols * tile_w), (height_px - (rows - 1)) / (rows * tile_h))
        return max(0, int(tile_w * scale)), max(0, int(tile_h * scale))

    single = fit(1, 1)
    best = (1, 1, *single)
    for cols, rows in GRIDS[1:]:
        if cols * rows > tiles:
            continue
        w, h = fit(cols, rows)
        if h >= MIN_TILE_PX and w >= 2 and h * KEEP_RATIO >= single[1] and cols * rows > best[0] * best[1]:
            best = (cols, rows, w, h)
    return best


def pick(n: int, k: int) -> list[int]:
    if k >= n:
        return list(range(n))
    return [round(i * (n - 1) / (k - 1)) for i in range(k)] if k > 1 else [0]


def compose(sheet, layout, width_px: int, height_px: int, scale: int = 1):
    """The frames to show, laid out for a width_px x height_px box of half-block pixels and drawn `scale` times
    that size (the kitty protocol gets real pixels): (RGB uint8 array [H, W, 3], bool mask [H, W] of painted
    pixels). Centred; 1 box pixel between tiles."""
    import numpy as np
    from PIL import Image

    n = len(layout.frames)
    cols, rows, tw, th = choose_grid(n, layout.tile_w, layout.tile_h, width_px, height_px)
    canvas = np.zeros((height_px * scale, width_px * scale, 3), dtype=np.uint8)
    mask = np.zeros(canvas.shape[:2], dtype=bool)
    if tw < 1 or th < 1:
        return canvas, mask
    chosen = pick(n, cols * rows)
    used_w, used_h = cols * tw + (cols - 1), rows * th + (rows - 1)
    x0, y0 = (width_px - used_w) // 2, (height_px - used_h) // 2
    for k, index in enumerate(chosen):
        tile = sheet.crop(layout.tile_box(index)).resize((tw * scale, th * scale), Image.Resampling.BOX)
        r, c = divmod(k, cols)
        x, y = (x0 + c * (tw + 1)) * scale, (y0 + r * (th + 1)) * scale
        canvas[y:y + th * scale, x:x + tw * scale] = np.asarray(tile)
        mask[y:y + th * scale, x:x + tw * scale] = True
    return canvas, mask


def png_bytes(canvas, mask) -> bytes:
    """RGBA PNG of a composed canvas, unpainted pixels transparent."""
    import io

    import numpy as np
    from PIL import Image

    rgba = np.dstack([canvas, (mask * 255).astype(np.uint8)])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def half_block_strips(canvas, mask) -> list[Strip]:
    """Two pixel rows per line: ▀ with fg = upper pixel, bg = lower pixel; an unpainted half is left to the
    widget's own background (▄ or a space)."""
    from rich.color import Color

    height, width = mask.shape
    colour = {}

    def c(px) -> Color:
        key = (int(px[0]), int(px[1]), int(px[2]))
        if key not in colour:
            colour[key] = Color.from_rgb(*key)
        return colour[key]

    strips = []
    for y in range(0, height - height % 2, 2):
        segments = []
        for x in range(width):
            top, bottom = mask[y, x], mask[y + 1, x]
            if top and bottom:
                segments.append(Segment(UPPER, Style(color=c(canvas[y, x]), bgcolor=c(canvas[y + 1, x]))))
            elif top:
                segments.append(Segment(UPPER, Style(color=c(canvas[y, x]))))
            elif bottom:
                segments.append(Segment(LOWER, Style(color=c(canvas[y + 1, x]))))
            else:
                segments.append(Segment(" "))
        strips.append(Strip(Segment.simplify(segments), width))
    return strips


class SamplePreview(Widget):
    """`show((step, sheet_path, prompt) | None)`; hidden until there is a sheet to show."""
    DEFAULT_CSS = """
    SamplePreview { width: auto; height: 100%; border: round $panel-lighten-2; display: none; }
    SamplePreview.-on { display: block; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.kitty = False            # draw with kitty's graphics protocol (kitty_graphics.supported)
        self.kitty_id = kitty_graphics.image_id(id(self))
        self.sample: tuple[int, str, str] | None = None
        self._sheet = None            # (PIL image, SheetLayout) of self.sample, once read
        self._failed = ""
        self._strips: tuple[tuple[int, int], list[Strip]] | None = None

    def on_mount(self) -> None:
        self.kitty = kitty_graphics.supported(getattr(self.app, "env", None) or os.environ)

    def on_unmount(self) -> None:
        if self.kitty:
            self._write(kitty_graphics.delete(self.kitty_id))

    def _write(self, data: str) -> bool:
        """Raw output to the terminal (the driver keeps it in order with Textual's frames)."""
        driver = getattr(self.app, "_driver", None)
        if driver is None:
            return False
        driver.write(data)
        return True

    def show(self, sample: tuple[int, str, str] | None) -> None:
        if sample == self.sample:
            return
        self.sample, self._sheet, self._failed, self._strips = sample, None, "", None
        self.set_class(sample is not None, "-on")
        if sample is None:
            return
        step, path, _ = sample
        self.border_title = f"sample {step}"
        self.run_worker(lambda: self._read(sample), thread=True, exclusive=True, group="preview")

    def _read(self, sample) -> None:
        from hvtui.core.samples.contact_sheet import read_sheet

        try:
            sheet = read_sheet(sample[1])
            failed = ""
        except Exception as e:   # missing (an attached run on another machine), half-copied, not a PNG
            sheet, failed = None, f"cannot show {Path(sample[1]).name}: {type(e).__name__}"
        self.app.call_from_thread(self._loaded, sample, sheet, failed)

    def _loaded(self, sample, sheet, failed: str) -> None:
        if sample != self.sample:
            return
        self._sheet, self._failed, self._strips = sheet, failed, None
        self.refresh(layout=True)

    @property
    def ready(self) -> bool:
        return self._sheet is not None or bool(self._failed)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        """As wide as the frames need at this height, within MAX_WIDTH_FRACTION of the row and what LEAVE_COLS
        leaves (`container` is the row's space less this widget's border)."""
        limit = max(MIN_WIDTH, min(int(container.width * MAX_WIDTH_FRACTION), container.width - LEAVE_COLS))
        if self._sheet is None:
            return MIN_WIDTH
        _, layout = self._sheet
        height_px = max(2, container.height * 2)
        cols, rows, tw, th = choose_grid(len(layout.frames), layout.tile_w, layout.tile_h, limit, height_px)
        return max(MIN_WIDTH, min(limit, cols * tw + (cols - 1)))

    def render_line(self, y: int) -> Strip:
        width, height = self.content_size
        if self._sheet is None:   # reading, or why it cannot be shown, wrapped to the box
            import textwrap

            lines = textwrap.wrap(self._failed or "reading…", max(1, width))
            return Strip([Segment(lines[y], Style(dim=True))] if y < len(lines) else [], width)
        if self._strips is None or self._strips[0] != (width, height):
            self._strips = ((width, height), self._draw(width, height))
        strips = self._strips[1]
        return strips[y] if y < len(strips) else Strip.blank(width)

    def _draw(self, width: int, height: int) -> list[Strip]:
        if self._sheet is None:     # (render_line draws only a sheet read)
            return []
        image, layout = self._sheet
        if self.kitty and 0 < width <= kitty_graphics.MAX_CELLS and 0 < height <= kitty_graphics.MAX_CELLS:
            # one picture over the whole box, sent once per sheet and size; the cells only name it
            png = png_bytes(*compose(image, layout, width, height * 2, scale=kitty_graphics.SCALE))
            if self._write(kitty_graphics.transmit(png, self.kitty_id, width, height)):
                return kitty_graphics.placeholder_strips(self.kitty_id, width, height, width)
        return half_block_strips(*compose(image, layout, width, height * 2))
