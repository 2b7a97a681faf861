"""Small datasets for the dataset-scan tests, written with PyAV (hvtui.core.dataset.synth). A few KB each."""
from __future__ import annotations

import os
from pathlib import Path

import av

from hvtui.core.dataset.synth import render_frame, write_clip
from hvtui.core.preset.schema import DatasetSpec, Preset, VideoSpec


def caption(folder: Path, name: str, text: str | bytes) -> None:
    p = folder / f"{Path(name).stem}.txt"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")


def clip(folder: Path, name: str, w=64, h=64, fps=24, frames=17, text: str | bytes | None = "a clip", **kw) -> Path:
    p = write_clip(folder / name, w, h, fps, frames, **kw)
    if text is not None:
        caption(folder, name, text)
    return p


def write_faststart(path: Path, w=64, h=64, fps=24, frames=17) -> Path:
    """An mp4 with its index (moov) before the frame data, like a web-optimised download."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = render_frame(i, frames, w, h)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def encode_silence(container, stream, n: int) -> None:
    """n frames of silence into a mono 16 kHz audio stream (then flushed)."""
    import numpy as np

    for i in range(n):
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 16000, i * 1024
        for pkt in stream.encode(f):
            container.mux(pkt)
    for pkt in stream.encode():
        container.mux(pkt)


def write_audio_only(path: Path) -> Path:
    """An AAC-only .mp4 (a voice memo): no video stream."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        encode_silence(c, s, 8)
    return path


def preset_for(root: Path, cache: Path | None = None, batch: int = 1, **video) -> Preset:
    ds = dict(resolution=video.pop("resolution", 64), repeats=video.pop("repeats", 0),
              caption_strategy=video.pop("caption_strategy", "textfile"),
              instance_prompt=video.pop("instance_prompt", None), metadata_file=video.pop("metadata_file", None),
              dataset_type=video.pop("dataset_type", "video"))
    spec = DatasetSpec(id=video.pop("id", "clips"), instance_data_dir=str(root),
                       cache_dir=str(cache) if cache else None, video=VideoSpec(**video), **ds)
    return Preset(datasets=[spec], train_batch_size=batch)


def build_mixed(root: Path) -> None:
    """Good clips, fps resampling, bad files, caption problems, symlinks. See test_dataset_scan.py."""
    root.mkdir(parents=True, exist_ok=True)
    # frame_rate 12 in the tests' preset
    clip(root, "short24.mp4", fps=24, frames=17)                 # 17 @24 -> 8 @12: too short
    clip(root, "ok24.mp4", fps=24, frames=20)                    # 20 @24 -> 10 @12
    clip(root, "ok30.mp4", fps=30, frames=25)                    # 25 @30 -> 10 @12
    clip(root, "native12.mp4", fps=12, frames=9)                 # 12 fps: not resampled
    clip(root, "slow8.mp4", fps=8, frames=12)                    # below frame_rate: own rate, warned
    clip(root, "vp9.webm", fps=12, frames=9)                     # no frame count in the header
    clip(root, "portrait.mp4", w=48, h=80, fps=12, frames=9)     # 64x112 bucket
    clip(root, "phone.mp4", w=80, h=48, fps=12, frames=9, rotation=90)  # stored landscape, shown portrait
    clip(root, "wide.mp4", w=256, h=16, fps=12, frames=9)        # 16:1
    clip(root, "one.mp4", fps=12, frames=1)                      # a single frame
    (root / "zero.mp4").write_bytes(b"")
    caption(root, "zero.mp4", "zero")
    (root / "text.mp4").write_text("this is not a video\n" * 20)
    caption(root, "text.mp4", "text")
    full = write_clip(root / "_full.mp4", 64, 64, 24, 20)
    (root / "cut.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])   # moov at the end: lost
    full.unlink()
    caption(root, "cut.mp4", "cut")
    fs = write_faststart(root / "_fs.mp4", frames=20)
    (root / "cutfast.mp4").write_bytes(fs.read_bytes()[: fs.stat().st_size - 400])   # index kept, data cut
    fs.unlink()
    caption(root, "cutfast.mp4", "cut fast")
    for name in ("_full.webm", "_full.avi"):                     # cut in half: frames missing / index lost
        full = write_clip(root / name, 64, 64, 12, 30)
        (root / f"cut{full.suffix}").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        full.unlink()
        caption(root, f"cut{full.suffix}", "cut")
    write_audio_only(root / "voice.mp4")
    caption(root, "voice.mp4", "voice")
    clip(root, "nocap.mp4", fps=12, frames=9, text=None)
    clip(root, "emptycap.mp4", fps=12, frames=9, text="  \n\n")
    clip(root, "latin1.mp4", fps=12, frames=9, text="caf\xe9 au lait".encode("latin-1"))
    clip(root, "huge.mp4", fps=12, frames=9, text="word " * 2000)
    clip(root, "multi.mp4", fps=12, frames=9, text="first caption\nsecond caption\n")
    clip(root, "ünï cödé name.mp4", fps=12, frames=9, text="unicode")
    sub = root / "sub" / "deeper"
    clip(sub, "nested.mp4", fps=12, frames=9, text="nested")
    os.symlink("..", root / "sub" / "loop")                      # a folder loop
    os.symlink("ok24.mp4", root / "link.mp4")                    # the same file twice
    os.symlink("missing.mp4", root / "broken.mp4")
    os.mkfifo(root / "fifo.mp4")
    clip(root, "LOUD.MOV", fps=12, frames=9, text=None)           # suffixes are case-insensitive
    (root / "LOUD.TXT").write_text("loud")
    clip(root, "old.avi", fps=12, frames=9, text="avi")         # MPEG-4 part 2 in AVI
    write_clip(root / "_latin.mp4", 64, 64, 12, 9)              # a file name that is not UTF-8
    os.rename(root / "_latin.mp4", os.fsencode(root) + b"/caf\xe9.mp4")
    (Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9.txt"))).write_text("latin name")
    outside = root.parent / "outside"
    clip(outside, "far.mp4", fps=12, frames=9, text="far away")
    os.symlink(outside, root / "linked")                         # a symlinked folder: followed once
    (root / "._ok24.mp4").write_bytes(b"\0\5\26\7AppleDouble")    # macOS resource fork: skipped
    (root / "notes.md").write_text("not a clip")
