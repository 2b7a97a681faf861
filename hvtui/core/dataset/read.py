"""Decode one sample: its source frames, upright, resized to cover the bucket as displayed and centre-cropped.

`read_sample_frames(sample)` returns numpy uint8 [F, H, W, 3] (RGB) with F = sample.frames.
- Which frames: `sample.frame_indices` (source frame numbers in presentation order, resampling to `fps_out`
  already decided by the scan; repeated indices are decoded once), or for a variable-frame-rate clip
  (`sample.by_time`) output frame k is the frame on screen at k / fps_out seconds after the first frame.
- Geometry (display.py, the rule the scan bucketed by): the stored frame is turned by the scan's rotation,
  then the largest centred region whose *displayed* shape (pixel aspect ratio applied) matches the bucket is
  resampled (bicubic, antialiased) straight to W x H: "scale to cover, then centre-crop", without squeeze.
- PyAV decodes (one decoder for every container and codec the probe accepted, FFmpeg's log kept quiet). Any
  failure, from a file that ends early to a stream that breaks mid-way, raises SampleReadError naming the file,
  the frame and FFmpeg's reason; the caller discards that sample and goes on.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from hvtui.core.dataset.display import crop_box, pixel_aspect, upright

__all__ = ["SampleReadError", "crop_box", "fit_frame", "decode_frames", "read_sample_frames"]


class SampleReadError(Exception):
    """A sample's frames cannot be decoded (the message names the file and says why)."""


def fit_frame(img, w: int, h: int, par=1):
    """numpy [h0, w0, 3] upright frame (pixels `par` wide) -> [h, w, 3]: cover as displayed + centre crop."""
    import numpy as np
    from PIL import Image

    src_h, src_w = img.shape[:2]
    if (src_w, src_h) == (w, h) and Fraction(par) == 1:
        return np.ascontiguousarray(img)
    pil = Image.fromarray(np.ascontiguousarray(img))
    out = pil.resize((w, h), Image.Resampling.BICUBIC, box=crop_box(src_w, src_h, w, h, par))
    return np.asarray(out)


def _wanted_by_time(count: int, fps_out: float) -> list[float]:
    return [k / fps_out for k in range(count)]


def decode_frames(path: Path, indices: list[int], rotation: int = 0, times: list[float] | None = None):
    """Upright RGB frames (list of numpy [h, w, 3]) at the stored size, turned by `rotation`.

    `indices`: source frame numbers; or `times`: seconds after the first frame (the frame shown at each time)."""
    import av
    import numpy as np

    from hvtui.core.dataset.probe import ffmpeg_error, open_video, pick_video_stream

    path = Path(path)
    by_time = times is not None
    tl: list[float] = times if times is not None else []    # the times, when by_time
    wanted = set(indices)
    last = len(tl) - 1 if by_time else (max(indices) if indices else -1)
    got: dict[int, object] = {}
    n = 0                        # frames decoded
    t0 = None
    prev = None                  # by time: the last frame decoded so far (on screen until the next one)
    k = 0                        # by time: next output frame
    shown = 0.0
    try:
        with open_video(str(path)) as container:
            stream = pick_video_stream(container)
            if stream is None:
                raise SampleReadError(f"{path}: no video stream")
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if by_time:
                    t = frame.time
                    if t is None:    # no timestamps (rare): the frame's place at the average rate
                        t = n / float(stream.average_rate or 25)
                    if t0 is None:
                        t0 = t
                    t -= t0
                    while k <= last and prev is not None and t > tl[k] + 1e-6:
                        got[k] = prev
                        k += 1
                    shown = t
                    prev = frame.to_ndarray(format="rgb24")
                    n += 1
                    if k > last:
                        break
                    continue
                if n in wanted:
                    got[n] = frame.to_ndarray(format="rgb24")
                n += 1
                if n > last:
                    break
            if by_time and prev is not None and k <= last:
                # the last frame stays on screen for one frame interval at most
                step = 1 / float(stream.average_rate or 25)
                while k <= last and tl[k] < shown + step - 1e-6:
                    got[k] = prev
                    k += 1
    except av.error.FFmpegError as e:
        if (k if by_time else n) <= last:
            need = f"{tl[last]:.2f} s" if by_time else f"frame {last}"
            raise SampleReadError(f"{path}: decoding failed at frame {n} ({ffmpeg_error(e)}); the sample needs "
                                  f"{need}") from None
    except ValueError as e:      # PyAV could not convert this file's pixel format to RGB
        raise SampleReadError(f"{path}: its frames cannot be converted to RGB at frame {n} ({e})") from None
    except OSError as e:
        raise SampleReadError(f"{path}: cannot be read ({e.strerror or e})") from None
    if by_time and k <= last:
        raise SampleReadError(f"{path}: only {shown:.2f} s ({n} frames) could be decoded, the sample needs "
                              f"{tl[last]:.2f} s")
    if not by_time and n <= last:
        raise SampleReadError(f"{path}: only {n} frames could be decoded, the sample needs frame {last}")
    order = range(len(tl)) if by_time else indices
    return [np.ascontiguousarray(upright(got[i], rotation)) for i in order]


def read_sample_frames(sample):
    """numpy uint8 [F, H, W, 3] for a Sample (see module doc)."""
    import numpy as np

    if getattr(sample, "kind", "video") == "image":
        from PIL import Image, ImageOps

        with Image.open(sample.path) as img:
            arr = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        return fit_frame(arr, sample.width, sample.height)[None]
    rotation = getattr(sample, "rotation", 0)
    times = _wanted_by_time(sample.frames, sample.fps_out) if getattr(sample, "by_time", False) else None
    frames = decode_frames(Path(sample.path), list(sample.frame_indices), rotation, times)
    par = pixel_aspect(Fraction(getattr(sample, "sar", "1") or "1"), rotation)
    return np.stack([fit_frame(f, sample.width, sample.height, par) for f in frames])
