"""A corpus of real-world-shaped clips, encoded with the installed PyAV's own encoders (no ffmpeg binary).

Each clip is a real file of a real codec in a real container, made the way cameras, phones, editors and
broadcast chains make them: many codecs and containers, display rotation (a display matrix), non-square pixels
(pixel aspect ratio), variable frame rate, odd sizes, 10-bit, B-frames with a start offset, audio before the
video, a stream that breaks mid-way, and files that are not usable videos at all. Every clip carries its truth
(`Clip.display`: the size a player shows, worked out here from how it was written, not by probing it), so a
test can check what hvtui made of it.

The picture is drawn upright at the display size and then squeezed / turned into the stored frame, so a clip
decoded correctly (pixel aspect and rotation applied) shows a round disc in the middle and the frame-number
marker (hvtui.core.dataset.synth.draw_marker) along the bottom-left edge.

    python -m tests.helpers.clip_corpus OUT_DIR      # (from the repo root) writes the corpus and a caption per clip

Codecs this PyAV build cannot encode are left out (listed by `build_corpus(...).skipped`).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from hvtui.core.dataset.synth import MARKER_BITS, MARKER_BLOCK, draw_marker
from tests.helpers.dataset_builders import encode_silence, write_audio_only

BROKEN_FROM = 28          # the broken clip decodes up to here
BROKEN_FRAMES = 50


@dataclass
class Clip:
    name: str
    kept: bool                     # expected: kept in a bucket (at the corpus preset's frame rules) or discarded
    display: tuple[int, int] = (0, 0)   # width x height a player shows (rotation and pixel aspect applied)
    category: str = ""             # expected discard category when not kept at scan time
    fails_decode: bool = False     # kept by the scan, discarded when its frames are decoded (caching)
    vfr: bool = False
    note: str = ""


@dataclass
class Corpus:
    root: Path
    clips: list[Clip] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def by_name(self) -> dict[str, Clip]:
        return {c.name: c for c in self.clips}


def upright_picture(index: int, w: int, h: int, marker: bool = True) -> np.ndarray:
    """A disc centred in a w x h frame, a bar that moves with the frame index, and the marker row."""
    img = np.full((h, w, 3), 24, np.uint8)
    yy, xx = np.ogrid[:h, :w]
    r = min(w, h) * 0.3
    img[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 <= r * r] = (230, 60, 40)
    x = int((index * 7) % max(1, w - 4))
    img[: max(2, h // 8), x:x + 4] = (240, 240, 240)
    if marker and w >= MARKER_BLOCK * MARKER_BITS and h >= 3 * MARKER_BLOCK:
        draw_marker(img, index)
    return img


def stored_frame(index: int, display: tuple[int, int], coded: tuple[int, int], rotation: int) -> np.ndarray:
    """The upright display picture turned back by `rotation` (counter-clockwise degrees, as the display matrix
    says) and squeezed to the coded size (non-square pixels)."""
    from PIL import Image

    dw, dh = display
    img = upright_picture(index, dw, dh)
    k = (rotation // 90) % 4
    if k:
        img = np.ascontiguousarray(np.rot90(img, -k))      # the player turns it by +k
    cw, ch = coded
    if img.shape[1] != cw or img.shape[0] != ch:
        img = np.asarray(Image.fromarray(img).resize((cw, ch), Image.Resampling.BILINEAR))
    return img


def _can_encode(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
        return True
    except Exception:
        return False


def encode(path: Path, codec: str, coded: tuple[int, int], frames: int, fps: Fraction | int = 24,
           pix_fmt: str = "yuv420p", rotation: int = 0, sar: Fraction | None = None, fmt: str | None = None,
           options: dict | None = None, container_options: dict | None = None, pts_ms: list[int] | None = None,
           display: tuple[int, int] | None = None, audio_first: bool = False, bit_rate: int | None = None) -> Path:
    """Write one clip. `pts_ms` gives each frame's time in milliseconds (variable frame rate)."""
    cw, ch = coded
    if display is None:
        dw = round(cw * (sar or 1)) if rotation in (0, 180) else ch
        dh = ch if rotation in (0, 180) else round(cw * (sar or 1))
        display = (dw, dh)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as c:
        if audio_first:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        s = c.add_stream(codec, rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = cw, ch, pix_fmt
        if bit_rate:
            s.bit_rate = bit_rate
        if options:
            s.options = options
        if sar is not None:
            s.codec_context.sample_aspect_ratio = Fraction(sar)
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        patch = bool(rotation) and not hasattr(s, "set_display_rotation")      # PyAV < 16
        if patch and path.suffix not in (".mp4", ".mov"):
            raise ValueError(f"PyAV {av.__version__} cannot write a display rotation into {path.suffix}")
        if rotation and not patch:
            s.set_display_rotation(rotation)
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(stored_frame(i, display, coded, rotation), format="rgb24")
            if pix_fmt != "rgb24":
                f = f.reformat(format=pix_fmt)
            if pts_ms is not None:
                f.pts, f.time_base = pts_ms[i], Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if audio_first:
            encode_silence(c, a, 4)
    if rotation and patch:
        from hvtui.core.dataset.synth import set_mp4_rotation

        set_mp4_rotation(path, rotation)
    return path


def break_stream(path: Path, good: int) -> None:
    """Overwrite the coded data of every frame from `good` on (in decode order) with bytes no decoder takes,
    leaving the container's header and index intact: the header still promises every frame."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        spans = [(p.pos, p.size) for p in c.demux(s) if p.size and p.pos is not None and p.pos >= 0]
    data = bytearray(path.read_bytes())
    for pos, size in spans[good:]:
        # an AVCC length prefix far larger than the packet, then garbage: "invalid NAL unit size"
        data[pos:pos + size] = (b"\xff\xff\xff\xff" + bytes(range(256)) * (size // 256 + 1))[:size]
    path.write_bytes(bytes(data))


def _quiet(codec: str) -> dict:
    if codec == "libx265":
        return {"x265-params": "log-level=none"}
    if codec == "libx264":
        return {"preset": "ultrafast", "crf": "30"}
    if codec == "libsvtav1":
        return {"preset": "12"}
    return {}


def build_corpus(root: Path | str, small: bool = False) -> Corpus:
    """Write the corpus under `root` (a .txt caption beside each clip). `small`: fewer, smaller clips."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SVT_LOG", "1")       # SVT-AV1 prints its banner to stderr otherwise
    corpus = Corpus(root)
    n = 13                          # >= num_frames 9 of the corpus preset, at the clip's own rate

    def add(name: str, codec: str, coded=(96, 54), kept=True, category="", **kw) -> None:
        if not _can_encode(codec):
            corpus.skipped.append(f"{name}: this PyAV cannot encode {codec}")
            return
        opts = {**_quiet(codec), **kw.pop("options", {})}
        frames = kw.pop("frames", n)
        try:
            encode(root / name, codec, coded, frames, options=opts, **kw)
        except (av.error.FFmpegError, ValueError, AttributeError) as e:
            corpus.skipped.append(f"{name}: {codec} could not be written here ({e})")
            return
        rotation, sar = kw.get("rotation", 0), kw.get("sar") or 1
        cw, ch = coded
        dw, dh = (round(cw * sar), ch) if rotation in (0, 180) else (ch, round(cw * sar))
        corpus.clips.append(Clip(name, kept, (dw, dh), category, vfr="pts_ms" in kw))

    # --- codecs x containers
    add("h264.mp4", "libx264")
    add("h264-bframes.mov", "libx264", options={"bf": "3", "preset": "medium"})   # edit list / start offset
    add("h264-10bit.mkv", "libx264", pix_fmt="yuv420p10le")
    add("h264.ts", "libx264", fmt="mpegts")
    add("h264.m2ts", "libx264", fmt="mpegts", container_options={"mpegts_m2ts_mode": "1"})
    add("h264.flv", "libx264", fmt="flv")
    add("hevc.mp4", "libx265", options={}, container_options={}, fmt="mp4")
    add("hevc.mkv", "libx265")
    add("vp8.webm", "libvpx", bit_rate=200_000)
    add("vp9.webm", "libvpx-vp9")
    add("vp9.ivf", "libvpx-vp9", fmt="ivf")
    add("vp8.ivf", "libvpx", fmt="ivf", bit_rate=200_000)
    add("av1.mp4", "libsvtav1", coded=(128, 72))
    add("av1.ivf", "libsvtav1", coded=(128, 72), fmt="ivf")
    add("mpeg4.avi", "mpeg4")
    add("mjpeg.avi", "mjpeg", pix_fmt="yuvj420p")
    add("mjpeg.mov", "mjpeg", pix_fmt="yuvj422p")
    add("prores.mov", "prores_ks", pix_fmt="yuv422p10le")
    add("mpeg2.mpg", "mpeg2video", fmt="mpeg", fps=25)
    add("mpeg1.mpg", "mpeg1video", fmt="mpeg", fps=25)
    add("mpeg2.ts", "mpeg2video", fmt="mpegts", fps=25)
    add("h263.3gp", "h263", coded=(176, 144), fmt="3gp", fps=15, sar=Fraction(12, 11))   # QCIF's own pixels
    add("wmv2.wmv", "wmv2", fmt="asf")
    add("ffv1-odd.mkv", "ffv1", coded=(99, 55), pix_fmt="yuv444p")        # odd sizes: lossless codecs take them
    add("mjpeg-odd.avi", "mjpeg", coded=(97, 61), pix_fmt="yuvj444p")
    add("ntsc-23.976.mp4", "libx264", fps=Fraction(24000, 1001))
    add("pal-25.mkv", "libx264", fps=25)
    add("hfr-60.mp4", "libx264", fps=60, frames=25)
    add("audio-first.mp4", "libx264", audio_first=True)                   # the video is stream 1, not 0
    if not small:
        add("gif-anim.gif", "gif", coded=(64, 48), pix_fmt="rgb8", fps=10)
        add("utvideo.avi", "utvideo", pix_fmt="yuv420p")
    # --- display rotation (a phone's portrait video is landscape frames + a 90-degree display matrix)
    add("rot90.mp4", "libx264", coded=(128, 72), rotation=90)
    add("rot180.mp4", "libx264", coded=(128, 72), rotation=180)
    add("rot270.mov", "libx264", coded=(128, 72), rotation=270)
    add("rot90.mkv", "libx264", coded=(128, 72), rotation=90)          # Matroska: PyAV 16+ writes it
    add("rot90-hevc.mp4", "libx265", coded=(128, 72), rotation=90)
    # --- non-square pixels
    add("anamorphic-2to1.mp4", "libx264", coded=(640, 360), sar=Fraction(2, 1), frames=n)    # shown 1280x360
    add("pal-16to11.ts", "mpeg2video", coded=(704, 576), sar=Fraction(16, 11), fmt="mpegts", fps=25)  # 1024x576
    add("anamorphic-4to3.mkv", "libx264", coded=(72, 54), sar=Fraction(4, 3))           # 96x54
    add("sar-rot90.mp4", "libx264", coded=(72, 54), sar=Fraction(4, 3), rotation=90)     # 54x96
    # --- variable frame rate: 15 fps, then 30 fps, then 10 fps (phone-like), by timestamps
    pts, t = [], 0
    for i in range(24):
        pts.append(t)
        t += 67 if i < 8 else 33 if i < 16 else 100
    add("vfr.mp4", "libx264", pts_ms=pts, frames=len(pts), fps=30)
    add("vfr.mkv", "libx264", pts_ms=pts, frames=len(pts), fps=30)

    # --- a stream that breaks mid-way: the header says 50 frames, decoding fails from frame 28
    if _can_encode("libx264"):
        p = encode(root / "broken-midway.mp4", "libx264", (96, 54), BROKEN_FRAMES, options=_quiet("libx264"))
        break_stream(p, BROKEN_FROM)
        corpus.clips.append(Clip("broken-midway.mp4", True, (96, 54), fails_decode=True,
                                 note=f"{BROKEN_FRAMES} frames in the header, undecodable from {BROKEN_FROM}"))
    # --- files that are not usable videos
    write_audio_only(root / "voice-memo.mp4")
    corpus.clips.append(Clip("voice-memo.mp4", False, category="not_video", note="audio only"))
    (root / "zero-length.mp4").write_bytes(b"")
    corpus.clips.append(Clip("zero-length.mp4", False, category="empty_file"))
    with av.open(str(root / "no-frames.mp4"), "w") as c:     # a video track with nothing in it
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 96, 54, "yuv420p"
        c.start_encoding()
    corpus.clips.append(Clip("no-frames.mp4", False, category="not_video", note="a video track with 0 frames"))
    good = encode(root / "_cut.mp4", "libx264", (96, 54), n, options=_quiet("libx264"))
    (root / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    corpus.clips.append(Clip("truncated.mp4", False, category="truncated", note="half a download"))
    (root / "notes.mp4").write_text("not a video, a text file with a video's name\n" * 8)
    corpus.clips.append(Clip("notes.mp4", False, category="not_video"))
    (root / "folder.mp4").mkdir(exist_ok=True)        # a folder with a video's name: scanned as a folder, said
    loop = root / "loop.mp4"
    if not os.path.lexists(loop):
        os.symlink("loop.mp4", loop)
    corpus.clips.append(Clip("loop.mp4", False, category="broken_link", note="a symlink to itself"))
    for c in corpus.clips:
        if not (root / c.name).is_dir():
            (root / f"{Path(c.name).stem}.txt").write_text(f"a test clip, {c.name}")
    return corpus


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.helpers.clip_corpus OUT_DIR", file=sys.stderr)
        return 2
    corpus = build_corpus(Path(argv[0]))
    for c in corpus.clips:
        what = (f"kept, shown {c.display[0]}x{c.display[1]}" if c.kept else f"discarded ({c.category})")
        if c.fails_decode:
            what += ", fails when decoded"
        print(f"{c.name:24} {what}{'; ' + c.note if c.note else ''}")
    for s in corpus.skipped:
        print(f"skipped: {s}")
    total = sum(f.stat().st_size for f in corpus.root.iterdir() if f.is_file())
    print(f"{len(corpus.clips)} files, {total / 1e6:.1f} MB in {corpus.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
