"""Probe one file's header: frame count, fps, size, duration, rotation. Never raises for bad input.

Videos are read with PyAV's container header (about 2,000 files/s on one core here); decord is not used for
probing because opening a decord VideoReader indexes every frame (about 750 files/s). Frame counts:
- "header": the container's frame count (nb_frames), trusted when duration x fps agrees with it to within
  max(2 frames, 5%).
- "packets": the header has no count (WebM/MKV usually don't) or disagrees: the video packets are demuxed and
  counted, one packet per frame, without decoding pixels. The report says so per file.
MP4/MOV: the display rotation comes from the video track's `tkhd` matrix (phones store portrait clips as
landscape frames plus a 90-degree rotation; PyAV exposes it only on decoded frames), and the sample index is
checked against the file size, so a truncated download whose index survived is caught here rather than in
the middle of training. Width and height are reported as displayed (swapped for 90/270 degrees).

The result is a plain dict (cached as JSON): {"ok": True, "width", "height", "rotation", "frames", "fps"
("num/den"), "duration", "count": "header"|"packets"|"image", "count_note", "codec"} or {"ok": False,
"category", "message"} with a discard category of model.CATEGORIES. "nocache": True marks results that may
change without the file changing (permissions).
"""
from __future__ import annotations

import math
import os
import struct
from fractions import Fraction

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
ISO_BMFF_TOP = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"uuid", b"pnot"})


def _fail(category: str, message: str, nocache: bool = False) -> dict:
    d = {"ok": False, "category": category, "message": message}
    if nocache:
        d["nocache"] = True
    return d


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the sample
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * max(1, len(text))


def header_count_reliable(nb_frames: int, duration: float | None, fps: Fraction | None) -> bool:
    """Trust the container's frame count when it exists and agrees with duration x fps."""
    if nb_frames <= 0:
        return False
    if not duration or not fps:
        return True
    expected = duration * float(fps)
    return abs(nb_frames - expected) <= max(2.0, 0.05 * nb_frames)


# --- ISO BMFF (mp4/mov): rotation from the video track's tkhd matrix ------------------------------------------

def _boxes(data: bytes, off: int, end: int):
    while off + 8 <= end:
        size, typ = struct.unpack_from(">I4s", data, off)
        hl = 8
        if size == 1:
            if off + 16 > end:
                return
            size = struct.unpack_from(">Q", data, off + 8)[0]
            hl = 16
        elif size == 0:
            size = end - off
        if size < hl or off + size > end:
            return
        yield typ, off + hl, off + size
        off += size


def _read_moov(f, file_size: int) -> bytes | None:
    off = 0
    while off + 8 <= file_size:
        f.seek(off)
        hdr = f.read(16)
        if len(hdr) < 8:
            return None
        size, typ = struct.unpack_from(">I4s", hdr)
        hl = 8
        if size == 1 and len(hdr) >= 16:
            size, hl = struct.unpack_from(">Q", hdr, 8)[0], 16
        elif size == 0:
            size = file_size - off
        if size < hl:
            return None
        if typ == b"moov":
            if size > 256 * 1024 * 1024:
                return None
            f.seek(off + hl)
            return f.read(size - hl)
        off += size
    return None


def _rotation_from_matrix(a: int, b: int) -> int:
    # tkhd stores the matrix clockwise; the display needs the picture turned counter-clockwise by this much
    # (the convention of PyAV's VideoFrame.rotation and numpy.rot90).
    deg = -math.degrees(math.atan2(b, a))
    return int(round(deg / 90.0)) * 90 % 360


def mp4_rotation(f, file_size: int) -> int:
    moov = _read_moov(f, file_size)
    if not moov:
        return 0
    for typ, s, e in _boxes(moov, 0, len(moov)):
        if typ != b"trak":
            continue
        matrix = None
        is_video = False
        for t2, s2, e2 in _boxes(moov, s, e):
            if t2 == b"tkhd" and e2 - s2 >= 84:
                version = moov[s2]
                # version/flags, times, track id, reserved, duration, reserved[2], layer, group, volume, reserved
                mo = s2 + 4 + (32 if version == 1 else 20) + 16
                if mo + 36 <= e2:
                    matrix = struct.unpack_from(">9i", moov, mo)
            elif t2 == b"mdia":
                for t3, s3, e3 in _boxes(moov, s2, e2):
                    if t3 == b"hdlr" and e3 - s3 >= 12 and moov[s3 + 8:s3 + 12] == b"vide":
                        is_video = True
        if is_video and matrix:
            return _rotation_from_matrix(matrix[0], matrix[1])
    return 0


# --- probes ---------------------------------------------------------------------------------------------------

def _size_or_failure(path: str) -> tuple[int, dict | None]:
    """The file's size, or the probe result for a file that can't be stat'ed or is empty."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        return 0, _fail("unreadable", f"cannot stat: {e.strerror}", nocache=True)
    if size == 0:
        return 0, _fail("empty_file", "empty file (0 bytes)")
    return size, None


def probe_video(path: str) -> dict:
    size, failed = _size_or_failure(path)
    if failed:
        return failed
    try:
        f = open(path, "rb")
    except PermissionError:
        return _fail("unreadable", "cannot read: permission denied (fix: chmod a+r)", nocache=True)
    except OSError as e:
        return _fail("unreadable", f"cannot read: {e.strerror}", nocache=True)
    rotation = 0
    with f:
        head = f.read(512)
        is_bmff = len(head) >= 8 and head[4:8] in ISO_BMFF_TOP
        if is_bmff:
            try:
                rotation = mp4_rotation(f, size)
            except (OSError, struct.error):
                rotation = 0
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except PermissionError:
        return _fail("unreadable", "cannot read: permission denied (fix: chmod a+r)", nocache=True)
    except av.error.FFmpegError as e:
        if _looks_like_text(head):
            return _fail("not_video", "a text file with a video name, not a video")
        if is_bmff:
            return _fail("truncated", "MP4/MOV whose header (moov) is missing or damaged: truncated or "
                                      "incomplete download?")
        if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
            return _fail("truncated", "AVI that FFmpeg cannot read: truncated or damaged?")
        if head[:4] == b"\x1a\x45\xdf\xa3":
            return _fail("truncated", "Matroska/WebM that FFmpeg cannot read: truncated or damaged?")
        detail = getattr(e, "strerror", None) or str(e)
        return _fail("not_video", f"not a video FFmpeg can read ({detail})")
    except (OSError, ValueError) as e:
        return _fail("not_video", f"not a video FFmpeg can read ({e})")
    with container:
        try:
            return _probe_container(container, size, rotation)
        except av.error.FFmpegError as e:
            return _fail("truncated", f"damaged: reading it failed ({getattr(e, 'strerror', None) or e})")


def pick_video_stream(container):
    """The first video stream that is not cover art (an attached picture is a 1-frame 'video' stream)."""
    import av

    still = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image
    streams = list(container.streams.video)
    for s in streams:
        try:
            if not (s.disposition & still):
                return s
        except (AttributeError, TypeError):
            return s
    return streams[0] if streams else None


def _probe_container(container, size: int, rotation: int) -> dict:
    s = pick_video_stream(container)
    if s is None:
        others = len(container.streams)
        return _fail("not_video", f"no video stream ({others} other stream{'s' if others != 1 else ''})")
    cc = s.codec_context
    w, h = cc.width, cc.height
    if not w or not h:
        return _fail("bad_header", "the header has no picture size")
    fps = s.average_rate or s.guessed_rate or s.base_rate
    fps = Fraction(fps) if fps else None
    if fps is not None and not (0 < fps < 1000):
        fps = None
    duration = None
    if s.duration and s.time_base:
        duration = float(s.duration * s.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    nb = s.frames or 0
    # Frame data the index points at beyond the end of the file (mp4/avi index every frame).
    try:
        entries = s.index_entries
    except Exception:       # older PyAV: no index access
        entries = ()
    if entries:
        missing = sum(1 for e in entries if e.pos + e.size > size)
        if missing:
            return _fail("truncated", f"truncated: {missing} of {len(entries)} frames lie past the end of "
                                      f"the file ({size:,} bytes)")
    count, note = "header", ""
    if not header_count_reliable(nb, duration, fps):
        packets = 0
        for packet in container.demux(s):
            if packet.size:
                packets += 1
        expected = duration * float(fps) if duration and fps else None
        if expected and packets < 0.9 * expected - 2:
            return _fail("truncated", f"truncated: the header says {duration:.2f} s ({expected:.0f} frames at "
                                      f"{float(fps):g} fps) but the file holds {packets} frames")
        if nb <= 0:
            note = f"the header has no frame count; counted {packets} video packets"
        else:
            note = (f"the header says {nb} frames but duration x fps gives "
                    f"{duration * float(fps):.0f}; counted {packets} video packets")
        nb, count = packets, "packets"
    if fps is None:
        if duration and nb:
            fps = Fraction(nb / duration).limit_denominator(1001)
        else:
            return _fail("bad_header", "the header has no frame rate")
    if rotation in (90, 270):
        w, h = h, w
    return {"ok": True, "width": w, "height": h, "rotation": rotation, "frames": nb,
            "fps": f"{fps.numerator}/{fps.denominator}", "duration": duration, "count": count,
            "count_note": note, "codec": cc.name}


# EXIF orientation -> counter-clockwise rotation (mirrored orientations are treated as their rotation).
_EXIF_ROTATION = {3: 180, 4: 180, 5: 270, 6: 270, 7: 90, 8: 90}


def probe_image(path: str) -> dict:
    _, failed = _size_or_failure(path)
    if failed:
        return failed
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
            try:
                orientation = img.getexif().get(274, 1)
            except Exception:
                orientation = 1
    except PermissionError:
        return _fail("unreadable", "cannot read: permission denied (fix: chmod a+r)", nocache=True)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        return _fail("not_image", f"not an image Pillow can read ({e.__class__.__name__})")
    rotation = _EXIF_ROTATION.get(orientation, 0)
    if rotation in (90, 270):
        w, h = h, w
    return {"ok": True, "width": w, "height": h, "rotation": rotation, "frames": 1, "fps": "0/1",
            "duration": None, "count": "image", "count_note": "", "codec": "image"}


def probe_file(item: tuple[str, str]) -> dict:
    """(path, kind) -> probe dict. The unit of work of the scan's process pool."""
    path, kind = item
    try:
        return probe_image(path) if kind == "image" else probe_video(path)
    except Exception as e:      # a probe must never stop the scan
        return _fail("not_video" if kind == "video" else "not_image",
                     f"could not be read ({e.__class__.__name__}: {e})")


def probe_chunk(items: list[tuple[int, str, str]]) -> list[tuple[int, dict]]:
    return [(i, probe_file((p, k))) for i, p, k in items]
