"""Write validation videos as mp4 with PyAV (H.264 when the FFmpeg build has it, else MPEG-4 Part 2).

The file is written to a temp name in the same folder and renamed, so a viewer never sees half a video.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import cast

import numpy as np

CODECS = ("libx264", "h264", "mpeg4")


def _codec() -> str:
    import av

    for name in CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:   # not in this FFmpeg build
            continue
    raise RuntimeError("PyAV's FFmpeg has no H.264 or MPEG-4 encoder")


def to_uint8(video) -> np.ndarray:
    """float frames in [0, 1] ([F, H, W, 3] numpy, or a torch [F, 3, H, W] / [3, F, H, W]) -> uint8 [F, H, W, 3]."""
    if hasattr(video, "detach"):
        v = video.detach().float().cpu()
        if v.ndim == 4 and v.shape[1] == 3:
            v = v.permute(0, 2, 3, 1)
        elif v.ndim == 4 and v.shape[0] == 3:
            v = v.permute(1, 2, 3, 0)
        video = v.numpy()
    video = np.asarray(video)
    if video.dtype != np.uint8:
        video = (np.clip(video, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return video


def write_mp4(frames, path, fps: float = 24.0) -> Path:
    """uint8 (or [0,1] float) frames [F, H, W, 3] -> mp4 at `path`. Odd sizes are padded by one pixel
    (yuv420p needs even width and height)."""
    import av

    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected frames [F, H, W, 3], got {frames.shape}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.mp4")
    try:
        with av.open(str(tmp), mode="w") as container:
            stream = cast(av.VideoStream, container.add_stream(_codec(), rate=Fraction(fps).limit_denominator(1001)))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            for arr in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def count_frames(path) -> int:
    """Decode the file and count its frames (proof that it plays)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
