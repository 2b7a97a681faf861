"""Bucket sizes from `resolution` (a pixel-area target) and a clip's aspect ratio.

`resolution` names the short side of a 16:9 frame, and the bucket keeps that frame's pixel area:
    area = resolution^2 * 16/9                 (480 -> 409,600 px; 720 -> 921,600 px)
    W = round16(sqrt(area * w/h)),  H = round16(sqrt(area * h/w))
round16 rounds to the nearest multiple of 16 (halves up), at least 16. So a 1920x1080 clip gets 848x480 at
resolution 480 (sqrt(409600*16/9) = 853.3 -> 848) and 1280x720 at 720; a portrait 1080x1920 clip gets 480x848;
a square clip gets 640x640 at 480 and 80x80 at 64. `w x h` is the display size (rotation applied).

Clips wider or taller than MAX_ASPECT:1 (e.g. a 16:1 strip) are discarded: cropping them to a trainable shape
would throw most of the picture away.
"""
from __future__ import annotations

import math

MULTIPLE = 16
MAX_ASPECT = 4.0


def target_area(resolution: int) -> float:
    return resolution * resolution * 16 / 9


def round16(x: float) -> int:
    return max(MULTIPLE, int(math.floor(x / MULTIPLE + 0.5)) * MULTIPLE)


def bucket_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    area = target_area(resolution)
    r = width / height
    return round16(math.sqrt(area * r)), round16(math.sqrt(area / r))


def aspect_problem(width: int, height: int) -> str | None:
    """The discard reason for an extreme aspect ratio, or None."""
    r = max(width / height, height / width)
    if r > MAX_ASPECT:
        ratio = f"{width / height:.1f}:1" if width >= height else f"1:{height / width:.1f}"
        return (f"aspect ratio {ratio} ({width}x{height}) is beyond {MAX_ASPECT:g}:1; "
                f"crop it to at most {MAX_ASPECT:g}:1 (e.g. 16:9) to use it")
    return None


def scale_to_cover(src_w: int, src_h: int, w: int, h: int) -> float:
    """Scale factor that makes a src_w x src_h picture cover w x h (> 1 means upscaling)."""
    return max(w / src_w, h / src_h)
