"""Decode one sample: its source frames, upright, resized to cover the bucket and centre-cropped to W x H.

`read_sample_frames(sample)` returns numpy uint8 [F, H, W, 3] (RGB) with F = len(sample.frame_indices).
- Frames are the source frame numbers in `sample.frame_indices` (presentation order), so resampling to
  `fps_out` is already decided by the scan; repeated indices are decoded once.
- decord first (random access, applies the display rotation itself); PyAV as the fallback when decord is
  missing or fails (PyAV frames are turned upright here with `VideoFrame.rotation`).
- Resize: the largest centred region of the source with the bucket's aspect ratio is resampled (bicubic,
  antialiased) straight to W x H, i.e. "scale to cover, then centre-crop" in one step.
A file that decodes fewer frames than the sample needs raises SampleReadError with the numbers.
"""
from __future__ import annotations

from pathlib import Path


class SampleReadError(Exception):
    pass


def crop_box(src_w: int, src_h: int, w: int, h: int) -> tuple[float, float, float, float]:
    """The centred region of a src_w x src_h picture with aspect w:h (left, top, right, bottom)."""
    if src_w * h > w * src_h:            # source wider than the bucket: trim the sides
        cw = src_h * w / h
        x0 = (src_w - cw) / 2
        return (x0, 0.0, x0 + cw, float(src_h))
    ch = src_w * h / w                   # taller: trim top and bottom
    y0 = (src_h - ch) / 2
    return (0.0, y0, float(src_w), y0 + ch)


def fit_frame(img, w: int, h: int):
    """numpy [h0, w0, 3] -> [h, w, 3]: cover + centre crop."""
    import numpy as np
    from PIL import Image

    src_h, src_w = img.shape[:2]
    if (src_w, src_h) == (w, h):
        return np.ascontiguousarray(img)
    pil = Image.fromarray(np.ascontiguousarray(img))
    out = pil.resize((w, h), Image.Resampling.BICUBIC, box=crop_box(src_w, src_h, w, h))
    return np.asarray(out)


def _decode_decord(path: Path, indices: list[int]):
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    n = len(vr)
    if indices and max(indices) >= n:
        raise SampleReadError(f"{path}: decord sees {n} frames, the sample needs frame {max(indices)}")
    uniq = sorted(set(indices))
    batch = vr.get_batch(uniq).asnumpy()
    pos = {i: k for k, i in enumerate(uniq)}
    return [batch[pos[i]] for i in indices]


def _decode_pyav(path: Path, indices: list[int]):
    import av
    import numpy as np

    from hvtui.core.dataset.probe import pick_video_stream

    wanted = set(indices)
    last = max(indices) if indices else -1
    got: dict[int, object] = {}
    n = 0
    try:
        with av.open(str(path)) as container:
            stream = pick_video_stream(container)
            if stream is None:
                raise SampleReadError(f"{path}: no video stream")
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if n in wanted:
                    arr = frame.to_ndarray(format="rgb24")
                    k = (frame.rotation // 90) % 4
                    got[n] = np.rot90(arr, k) if k else arr
                n += 1
                if n > last:
                    break
    except av.error.FFmpegError as e:
        if n <= last:
            raise SampleReadError(f"{path}: decoding failed at frame {n} ({e}); the sample needs frame {last}") \
                from None
    if n <= last:
        raise SampleReadError(f"{path}: only {n} frames could be decoded, the sample needs frame {last}")
    return [got[i] for i in indices]


def decode_frames(path: Path, indices: list[int], backend: str | None = None):
    """Upright RGB frames (list of numpy [h, w, 3]) at the source size. backend: None (decord, then PyAV),
    "decord" or "pyav"."""
    if backend in (None, "decord"):
        try:
            return _decode_decord(path, indices)
        except Exception:
            if backend == "decord":
                raise
    return _decode_pyav(path, indices)


def read_sample_frames(sample, backend: str | None = None):
    """numpy uint8 [F, H, W, 3] for a Sample (see module doc)."""
    import numpy as np

    if getattr(sample, "kind", "video") == "image":
        from PIL import Image, ImageOps

        with Image.open(sample.path) as img:
            arr = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        return fit_frame(arr, sample.width, sample.height)[None]
    frames = decode_frames(Path(sample.path), list(sample.frame_indices), backend)
    return np.stack([fit_frame(f, sample.width, sample.height) for f in frames])
