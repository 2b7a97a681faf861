"""Frame rules: fps resampling maths and how many frames a clip gives. All maths uses exact fractions.

Resampling (`frame_rate` set and the clip is faster than it):
    output frame k shows source frame  floor(k * fps_in / fps_out)   (the frame on screen at time k / fps_out)
    a clip of N source frames gives    M = floor(N * fps_out / fps_in)   usable frames
  e.g. 41 frames at 30 fps -> 24 fps: floor(41 * 24 / 30) = 32; 61 frames at 24000/1001 -> 16: floor(40.7) = 40.
- A clip slower than `frame_rate` is not upsampled (hvtui never duplicates frames): it keeps its own rate and
  all its frames, and the report notes it per file.
- Rates within 0.5% of each other count as equal (23.976 vs 24): no frame is dropped for rounding noise.
- No `frame_rate`: M = N at the clip's own rate.

Then, per bucket strategy:
- aspect_ratio: every kept clip gives one sample of exactly `num_frames` frames (4n+1): the first
  `num_frames` resampled frames. Discarded when M < max(num_frames, min_frames) or M > max_frames.
- resolution_frames: `num_frames` is not used. F = min(M, max_frames), rounded down to a multiple of
  `frame_interval` (default 1), then down to 4n+1; the sample is the first F resampled frames and its bucket is
  `WxH@F`. Discarded when F < min_frames (default 1) or nothing is left after rounding.
- A file with a single frame is always discarded: a still belongs in an image dataset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

SAME_RATE_TOLERANCE = Fraction(1, 200)   # 0.5%


def as_fraction(x: float | int | Fraction | str | None) -> Fraction | None:
    if x is None:
        return None
    if isinstance(x, Fraction):
        return x
    if isinstance(x, str) and "/" in x:
        num, den = x.split("/", 1)
        return Fraction(int(num), int(den))
    return Fraction(str(x)).limit_denominator(1_000_000)


def fmt_fps(x: float | Fraction) -> str:
    """30 -> '30', 24000/1001 -> '23.976', 12.5 -> '12.5'."""
    s = f"{float(x):.3f}".rstrip("0").rstrip(".")
    return s or "0"


def is_4n1(n: int) -> bool:
    return n >= 1 and (n - 1) % 4 == 0


def floor_4n1(n: int) -> int:
    """Largest 4n+1 <= n (0 if n < 1)."""
    return 0 if n < 1 else ((n - 1) // 4) * 4 + 1


@dataclass(frozen=True)
class Rate:
    fps_in: Fraction
    fps_out: Fraction             # == fps_in when not resampled
    resampled: bool               # frames are dropped to reach fps_out
    slower: bool = False          # the clip is slower than frame_rate and was left at its own rate

    def usable(self, n: int) -> int:
        """M: frames the clip has at fps_out."""
        if not self.resampled:
            return n
        return math.floor(Fraction(n) * self.fps_out / self.fps_in)

    def indices(self, count: int) -> list[int]:
        """Source frame numbers of the first `count` output frames."""
        if not self.resampled:
            return list(range(count))
        step = self.fps_in / self.fps_out
        return [math.floor(k * step) for k in range(count)]

    def describe(self, n_usable: int) -> str:
        """'41 frames after resampling 30->24 fps' or '41 frames at 24 fps'."""
        word = "frame" if n_usable == 1 else "frames"
        if self.resampled:
            return f"{n_usable} {word} after resampling {fmt_fps(self.fps_in)}->{fmt_fps(self.fps_out)} fps"
        return f"{n_usable} {word} at {fmt_fps(self.fps_in)} fps"


def plan_rate(fps_in: Fraction, frame_rate: float | None) -> Rate:
    target = as_fraction(frame_rate)
    if target is None or target <= 0:
        return Rate(fps_in, fps_in, False)
    if abs(fps_in - target) <= target * SAME_RATE_TOLERANCE:
        return Rate(fps_in, fps_in, False)
    if fps_in < target:
        return Rate(fps_in, fps_in, False, slower=True)
    return Rate(fps_in, target, True)


@dataclass(frozen=True)
class FramePlan:
    """The outcome of the frame rules for one clip: a frame count and indices, or a discard."""
    frames: int = 0
    indices: tuple[int, ...] = ()
    category: str | None = None   # discard category, None when kept
    reason: str = ""


def plan_frames(n_source: int, rate: Rate, strategy: str, num_frames: int, min_frames: int | None,
                max_frames: int | None, frame_interval: int | None) -> FramePlan:
    if n_source <= 1:
        return FramePlan(category="single_frame",
                         reason=f"{n_source} frame: a still image, not a video (put stills in an image dataset)")
    m = rate.usable(n_source)
    have = rate.describe(m)
    if strategy == "resolution_frames":
        capped = min(m, max_frames) if max_frames else m
        interval = frame_interval or 1
        f = floor_4n1((capped // interval) * interval)
        steps = []
        if max_frames and m > max_frames:
            steps.append(f"capping at max_frames {max_frames}")
        if interval > 1:
            steps.append(f"rounding down to a multiple of frame_interval {interval}")
        steps.append("rounding down to 4n+1")
        need = max(min_frames or 1, 1)
        if f < need:
            return FramePlan(category="too_short",
                             reason=f"{have} -> {f} after {', '.join(steps)}; needs >= {need}"
                                    + (" (min_frames)" if min_frames else ""))
        return FramePlan(frames=f, indices=tuple(rate.indices(f)))
    # aspect_ratio: a fixed num_frames per sample
    need, which = num_frames, "num_frames"
    if min_frames and min_frames > num_frames:
        need, which = min_frames, "min_frames"
    if m < need:
        return FramePlan(category="too_short", reason=f"{have}, needs >= {need} ({which})")
    if max_frames and m > max_frames:
        return FramePlan(category="too_long", reason=f"{have}, more than max_frames {max_frames}")
    return FramePlan(frames=num_frames, indices=tuple(rate.indices(num_frames)))
