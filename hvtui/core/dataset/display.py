"""Display geometry: how a stored (coded) frame becomes the picture a player shows. One rule, used by the scan
(which bucket a clip goes to) and by the decoder (how its frames are resized for caching).

A video stores frames of `coded_w x coded_h` samples. Two things in its header change what is shown:
- the pixel aspect ratio (`sar`, width/height of one stored pixel): a 640x360 frame with SAR 2:1 is shown
  1280x360 (3.56:1); PAL DVD's 704x576 with SAR 16:11 is shown 1024x576 (16:9). Players stretch the width.
- the display rotation (degrees counter-clockwise, 0/90/180/270): a phone's portrait video stores landscape
  frames and says "turn by 90".
The display size is the coded size with the width scaled by the SAR, then swapped for 90/270 degrees.

The decoder turns the stored frame upright first (numpy.rot90), then treats each pixel of the turned frame as
`pixel_aspect(sar, rotation)` wide (SAR for 0/180 degrees, 1/SAR for 90/270): `crop_box` picks the largest
centred region whose *displayed* shape matches the bucket, and resampling it to the bucket's W x H removes the
squeeze. Square pixels (SAR 1) make this the plain "cover, then centre-crop".
"""
from __future__ import annotations

from fractions import Fraction


def clean_sar(sar) -> Fraction:
    """A usable pixel aspect ratio: 0, None, negative or absurd (beyond 1:8 .. 8:1) values mean square."""
    try:
        f = Fraction(sar) if sar is not None else Fraction(1)
    except (TypeError, ValueError, ZeroDivisionError):
        return Fraction(1)
    if f <= 0 or f > 8 or f < Fraction(1, 8):
        return Fraction(1)
    return f


def display_size(coded_w: int, coded_h: int, sar=1, rotation: int = 0) -> tuple[int, int]:
    """The size a player shows: width scaled by the pixel aspect ratio, then turned."""
    w = max(1, round(coded_w * clean_sar(sar)))
    return (coded_h, w) if rotation % 180 == 90 else (w, coded_h)


def pixel_aspect(sar, rotation: int) -> Fraction:
    """The width/height of one pixel of the stored frame after it was turned upright."""
    s = clean_sar(sar)
    return 1 / s if rotation % 180 == 90 else s


def crop_box(src_w: int, src_h: int, w: int, h: int, par=1) -> tuple[float, float, float, float]:
    """The centred region of an upright src_w x src_h frame (pixels `par` wide) that is shown with aspect w:h,
    as (left, top, right, bottom) in frame pixels."""
    par = float(clean_sar(par))
    shown_w = src_w * par                  # the frame's displayed width, in units of its pixel height
    if shown_w * h > w * src_h:            # wider than the bucket: trim the sides
        cw = src_h * w / h / par
        x0 = (src_w - cw) / 2
        return (x0, 0.0, x0 + cw, float(src_h))
    ch = shown_w * h / w                   # taller: trim top and bottom
    y0 = (src_h - ch) / 2
    return (0.0, y0, float(src_w), y0 + ch)


def upright(arr, rotation: int):
    """numpy [h, w, C] stored frame -> the frame turned `rotation` degrees counter-clockwise."""
    import numpy as np

    k = (rotation // 90) % 4
    return np.rot90(arr, k) if k else arr
