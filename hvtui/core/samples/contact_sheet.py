"""Contact sheets: a small PNG grid of a validation video's frames, written beside its mp4.

A sheet is what a user looks at to see whether the LoRA learns without copying videos off a remote box: the
TUI's sample preview draws it in the terminal, the trackers log it as an image. Frames are picked evenly from
first to last (at most MAX_FRAMES), laid out COLUMNS wide, each scaled down to fit TILE_MAX pixels. The
layout is stored in the PNG's text chunk `hvtui-sheet` (JSON: cols, rows, tile_w, tile_h, gap, frames), so a
reader can cut the tiles apart again (the preview shows fewer, larger tiles in a small terminal).

numpy and Pillow only (no torch), imported inside the functions: the TUI reads sheets too.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

MAX_FRAMES = 8
COLUMNS = 4
TILE_MAX = 256          # a tile's longer side at most this many pixels (never scaled up)
GAP = 2                 # pixels between tiles (and around them), dark grey
GAP_COLOUR = (32, 32, 32)
META_KEY = "hvtui-sheet"


@dataclass(frozen=True)
class SheetLayout:
    cols: int
    rows: int
    tile_w: int
    tile_h: int
    gap: int
    frames: tuple[int, ...]     # the source frame index of each tile, row by row

    def tile_box(self, i: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of tile i in the sheet."""
        r, c = divmod(i, self.cols)
        x = self.gap + c * (self.tile_w + self.gap)
        y = self.gap + r * (self.tile_h + self.gap)
        return x, y, x + self.tile_w, y + self.tile_h

    @property
    def size(self) -> tuple[int, int]:
        return (self.gap + self.cols * (self.tile_w + self.gap), self.gap + self.rows * (self.tile_h + self.gap))


def sheet_path_for(video: str | Path) -> Path:
    """step000060-0.mp4 -> step000060-0.png (beside it)."""
    return Path(video).with_suffix(".png")


def pick_frames(n: int, k: int = MAX_FRAMES) -> list[int]:
    """k indices spread evenly over 0..n-1, first and last included (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    if k == 1:
        return [0]
    return [round(i * (n - 1) / (k - 1)) for i in range(k)]


def tile_size(w: int, h: int, longest: int = TILE_MAX) -> tuple[int, int]:
    scale = min(1.0, longest / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def make_sheet(frames, max_frames: int = MAX_FRAMES, columns: int = COLUMNS, longest: int = TILE_MAX):
    """uint8 (or [0, 1] float) frames [F, H, W, 3] -> (PIL image, SheetLayout)."""
    import numpy as np
    from PIL import Image

    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected frames [F, H, W, 3], got {frames.shape}")
    picked = pick_frames(frames.shape[0], max_frames)
    rows = -(-len(picked) // columns)
    cols = -(-len(picked) // rows)      # balanced rows: 5 frames are 3 + 2, not 4 + 1
    tw, th = tile_size(frames.shape[2], frames.shape[1], longest)
    layout = SheetLayout(cols, rows, tw, th, GAP, tuple(picked))
    sheet = Image.new("RGB", layout.size, GAP_COLOUR)
    for i, index in enumerate(picked):
        tile = Image.fromarray(frames[index])
        if tile.size != (tw, th):
            tile = tile.resize((tw, th), Image.Resampling.LANCZOS)
        sheet.paste(tile, layout.tile_box(i)[:2])
    return sheet, layout


def write_contact_sheet(frames, path: str | Path, **kwargs) -> Path:
    """Write the sheet PNG (temp name + rename: a reader never sees half a file) and return its path."""
    from PIL import PngImagePlugin

    sheet, layout = make_sheet(frames, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text(META_KEY, json.dumps(asdict(layout)))
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    try:
        sheet.save(tmp, format="PNG", pnginfo=info, optimize=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_sheet(path: str | Path):
    """(RGB PIL image, SheetLayout) of a sheet; a PNG without hvtui's text chunk is one tile."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        meta = img.info.get(META_KEY) if hasattr(img, "info") else None
        rgb = img.convert("RGB")
    layout = None
    if meta:
        try:
            d = json.loads(meta)
            layout = SheetLayout(int(d["cols"]), int(d["rows"]), int(d["tile_w"]), int(d["tile_h"]), int(d["gap"]),
                                 tuple(int(i) for i in d["frames"]))
        except (ValueError, KeyError, TypeError):
            layout = None
    if layout is None or layout.size != rgb.size:
        layout = SheetLayout(1, 1, rgb.width, rgb.height, 0, (0,))
    return rgb, layout
