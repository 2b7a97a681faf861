"""Synthetic clips written with PyAV: a coloured shape moving over a plain background.

Used by the tests, the scan benchmark and `presets/demo-data/`. Each frame can also carry its own frame
number as a row of black/white 8x8 blocks along the bottom edge (`marker=True`), so a test can tell which
source frame a decoder returned even after lossy H.264 compression.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

COLOURS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (240, 220, 40),
    "white": (245, 245, 245), "magenta": (220, 50, 200), "cyan": (40, 210, 220), "orange": (245, 140, 30),
}
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}
MARKER_BLOCK = 8        # side of one marker bit, in pixels
MARKER_BITS = 8         # frame numbers 0..255


def _as_rate(fps: float | int | Fraction) -> Fraction:
    # 23.976 and 29.97 are written as the NTSC rationals players expect.
    if isinstance(fps, Fraction):
        return fps
    for num in (24000, 30000, 60000):
        if abs(fps - num / 1001) < 1e-3:
            return Fraction(num, 1001)
    return Fraction(fps).limit_denominator(1001)


def render_frame(index: int, frames: int, width: int, height: int, shape: str = "square", colour: str = "red",
                 direction: str = "right", background: tuple[int, int, int] = (16, 16, 16), marker: bool = False):
    """One RGB frame (numpy uint8 [H, W, 3]) of the moving-shape animation."""
    import numpy as np

    img = np.empty((height, width, 3), np.uint8)
    img[:] = background
    side = max(4, min(width, height) // 3)
    dx, dy = DIRECTIONS[direction]
    t = index / max(1, frames - 1)                       # 0 -> 1 over the clip
    cx = width / 2 + dx * (t - 0.5) * (width - side)
    cy = height / 2 + dy * (t - 0.5) * (height - side)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    rgb = COLOURS.get(colour, COLOURS["red"])
    if shape == "circle":
        yy, xx = np.ogrid[:height, :width]
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= (side / 2) ** 2
        img[mask] = rgb
    else:
        img[max(0, y0):max(0, y0 + side), max(0, x0):max(0, x0 + side)] = rgb
    if marker:
        draw_marker(img, index)
    return img


def draw_marker(img, index: int) -> None:
    """Frame number as MARKER_BITS black/white blocks along the bottom-left edge (needs width >= 64)."""
    b = MARKER_BLOCK
    for bit in range(MARKER_BITS):
        img[-b:, bit * b:(bit + 1) * b] = 255 if (index >> bit) & 1 else 0


def read_marker(img) -> int:
    """Inverse of draw_marker for a decoded frame at the written size."""
    b = MARKER_BLOCK
    value = 0
    for bit in range(MARKER_BITS):
        if img[-b + 2:-2, bit * b + 2:(bit + 1) * b - 2].mean() > 127:
            value |= 1 << bit
    return value


def write_clip(path: str | Path, width: int = 64, height: int = 64, fps: float | Fraction = 24, frames: int = 17,
               shape: str = "square", colour: str = "red", direction: str = "right",
               background: tuple[int, int, int] = (16, 16, 16), marker: bool = False, rotation: int = 0,
               codec: str | None = None, crf: int | None = None) -> Path:
    """Write a clip; the container follows the suffix (.mp4/.mov/.mkv: H.264, .webm: VP9, .avi: MPEG-4).

    `rotation` (degrees counter-clockwise, as PyAV's VideoFrame.rotation reads it back) writes a display
    matrix, like a phone's portrait video: the stored frames stay `width x height`.
    """
    import av
    from av.video.stream import VideoStream

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if codec is None:
        codec = {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(suffix, "libx264")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=_as_rate(fps))
        if not isinstance(stream, VideoStream):
            raise ValueError(f"{codec} is not a video codec")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            # Small files; keep the marker blocks crisp enough to read back.
            stream.options = {"crf": str(crf if crf is not None else (18 if marker else 28)), "preset": "veryfast"}
        patch_tkhd = bool(rotation) and not hasattr(stream, "set_display_rotation")
        if patch_tkhd and suffix not in (".mp4", ".mov", ".m4v"):
            raise ValueError(f"this PyAV ({av.__version__}) cannot write a display rotation into {suffix} files")
        if rotation and not patch_tkhd:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            img = render_frame(i, frames, width, height, shape, colour, direction, background, marker)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    if patch_tkhd:
        set_mp4_rotation(path, rotation)
    return path


def set_mp4_rotation(path: Path, rotation: int) -> None:
    """Write a display rotation into an MP4/MOV's video track header (tkhd matrix), the way
    `VideoStream.set_display_rotation` (PyAV 16+) makes FFmpeg write it, for PyAV versions without it."""
    import math
    import struct

    from hvtui.core.dataset.probe import _boxes, _read_moov

    data = bytearray(path.read_bytes())
    with open(path, "rb") as f:
        moov = _read_moov(f, len(data))
    start = bytes(data).find(moov) if moov else -1
    if moov is None or start < 0:
        raise ValueError(f"{path}: no moov box")
    rad = math.radians(rotation)
    cos, sin = int(round(math.cos(rad))) * 65536, int(round(math.sin(rad))) * 65536
    matrix = (cos, -sin, 0, sin, cos, 0, 0, 0, 1 << 30)
    for typ, s, e in _boxes(moov, 0, len(moov)):
        if typ != b"trak" or b"vide" not in moov[s:e]:
            continue
        for t2, s2, _e2 in _boxes(moov, s, e):
            if t2 == b"tkhd":
                mo = s2 + 4 + (32 if moov[s2] == 1 else 20) + 16
                struct.pack_into(">9i", data, start + mo, *matrix)
                path.write_bytes(bytes(data))
                return
    raise ValueError(f"{path}: no video track header")


# The demo's clips (presets/demo-data/): sizes chosen to land exactly on the demo preset's buckets at
# resolution 64 (80x80, 112x64, 64x112: no resizing), 9-25 frames at 12-24 fps, all >= num_frames 9.
DEMO_CLIPS = (
    # name, width, height, fps, frames, shape, colour, direction
    ("red-square-right", 80, 80, 24, 17, "square", "red", "right"),
    ("blue-circle-down", 80, 80, 12, 9, "circle", "blue", "down"),
    ("green-square-left", 80, 80, 16, 13, "square", "green", "left"),
    ("yellow-circle-up", 80, 80, 20, 25, "circle", "yellow", "up"),
    ("red-circle-right", 112, 64, 24, 17, "circle", "red", "right"),
    ("white-square-left", 112, 64, 12, 9, "square", "white", "left"),
    ("magenta-square-right", 112, 64, 24, 21, "square", "magenta", "right"),
    ("blue-square-right", 112, 64, 18, 11, "square", "blue", "right"),
    ("cyan-circle-down", 64, 112, 16, 13, "circle", "cyan", "down"),
    ("orange-square-up", 64, 112, 24, 25, "square", "orange", "up"),
)


def write_demo_data(folder: str | Path) -> list[Path]:
    """(Re)write the demo clips and their captions ("a red square moves right") into `folder`."""
    folder = Path(folder)
    paths = []
    for name, w, h, fps, n, shape, colour, direction in DEMO_CLIPS:
        p = write_clip(folder / f"{name}.mp4", w, h, fps, n, shape=shape, colour=colour, direction=direction)
        article = "an" if colour[0] in "aeiou" else "a"
        (folder / f"{name}.txt").write_text(f"{article} {colour} {shape} moves {direction}\n", encoding="utf-8")
        paths.append(p)
    return paths


if __name__ == "__main__":   # python -m hvtui.core.dataset.synth presets/demo-data
    import sys

    for p in write_demo_data(sys.argv[1] if len(sys.argv) > 1 else "presets/demo-data"):
        print(p, p.stat().st_size, "bytes")
