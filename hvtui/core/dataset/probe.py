"""Probe one file's header: frame count, fps, display size (pixel aspect and rotation applied). Never raises
for bad input.

Videos are read with PyAV (about 2,000 headers/s on one core here). Frame counts:
- "header": the container's frame count (nb_frames), trusted when duration x fps agrees with it to within
  max(2 frames, 5%) and the stream's two rate fields agree (else it may be variable-rate: see below).
- "packets": the header has no count (WebM/MKV/TS usually don't) or disagrees: the video packets are demuxed and
  counted, one packet per frame, without decoding pixels. The report says so per file. Their timestamps also
  tell a variable frame rate (frame intervals that differ by more than 10%) from a constant one, and a file
  whose frames stop well before its header's duration (truncated) from one whose frames are just uneven.
Display geometry (display.py): the pixel aspect ratio comes from the stream header; the rotation from the
MP4/MOV video track's `tkhd` matrix (read here without decoding: phones store portrait clips as landscape
frames plus a 90-degree rotation), and for every other container from the first decoded frame (Matroska's
projection, H.264/HEVC orientation messages), which also proves that the codec can be decoded here.
MP4/MOV: the sample index is checked against the file size, so a truncated download whose index survived is
caught here rather than in the middle of training.

PyAV 15 through 19 are supported: `open_video` is the one place that opens files for reading (PyAV 19 removed
`metadata_errors`). PyAV keeps FFmpeg's own log quiet (level None), so no decoder message reaches stderr; what
went wrong is said in the file's discard reason.

The result is a plain dict (cached as JSON): {"ok": True, "width", "height" (displayed), "coded" [w, h],
"sar" ("num/den", square pixels: "1"), "rotation", "frames", "fps" ("num/den"), "duration", "count":
"header"|"packets"|"image", "count_note", "codec", "vfr" (None, or [min fps, max fps])} or {"ok": False,
"category", "message"} with a discard category of model.CATEGORIES. "nocache": True marks results that may
change without the file changing (permissions) or that are not the file's fault (an error in hvtui or a
library): they are never cached.
"""
from __future__ import annotations

import math
import os
import struct
from fractions import Fraction

from hvtui.core.dataset.display import clean_sar, display_size

# Containers FFmpeg reads that hold video: phones and cameras (mp4 mov m4v 3gp 3g2 mts m2ts), the web (webm mkv
# flv gif), broadcast and disc (ts m2t mpg mpeg vob mxf), codec test streams (ivf y4m nut), old desktops (avi
# wmv asf ogv dv). Raw elementary streams (.h264, .hevc) are left out: they carry no frame rate.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".mkv", ".webm", ".avi", ".ts", ".mts",
                            ".m2ts", ".m2t", ".ivf", ".mpg", ".mpeg", ".m1v", ".m2v", ".vob", ".flv", ".ogv",
                            ".wmv", ".asf", ".mxf", ".nut", ".y4m", ".dv", ".gif"})
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


def _top_boxes(f, file_size: int):
    """(offset, type, header length, size as declared) of each top-level box, read from the file; a size 0
    box ("to the end of the file") is given the rest of the file."""
    off = 0
    while off + 8 <= file_size:
        f.seek(off)
        hdr = f.read(16)
        if len(hdr) < 8:
            return
        size, typ = struct.unpack_from(">I4s", hdr)
        hl = 8
        if size == 1 and len(hdr) >= 16:
            size, hl = struct.unpack_from(">Q", hdr, 8)[0], 16
        elif size == 0:
            size = file_size - off
        if size < hl:
            return
        yield off, typ, hl, size
        off += size


def _read_moov(f, file_size: int) -> bytes | None:
    for off, typ, hl, size in _top_boxes(f, file_size):
        if typ == b"moov":
            if size > 256 * 1024 * 1024:
                return None
            f.seek(off + hl)
            return f.read(size - hl)
    return None


def _rotation_from_matrix(a: int, b: int) -> int:
    # tkhd stores the matrix clockwise; the display needs the picture turned counter-clockwise by this much
    # (the convention of PyAV's VideoFrame.rotation and numpy.rot90).
    deg = -math.degrees(math.atan2(b, a))
    return int(round(deg / 90.0)) * 90 % 360


def bmff_overrun(f, file_size: int) -> tuple[str, int] | None:
    """(box type, the end it declares) of a top-level MP4/MOV box that runs past the end of the file: the sign
    of a download cut short whose index (moov) came first. Needs no index access from PyAV."""
    for off, typ, _, size in _top_boxes(f, file_size):
        if off + size > file_size:
            return typ.decode("latin-1"), off + size
    return None


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


def _pyav_major() -> int:
    import av

    try:
        return int(str(av.__version__).split(".")[0])
    except ValueError:
        return 99


def open_video(path: str):
    """Open a media file for reading with PyAV. The one place files are opened, for the probe and the decoder."""
    import av

    if _pyav_major() < 19:
        # PyAV < 19 decodes container metadata at open and fails on a non-UTF-8 tag unless told to ignore it;
        # PyAV 19 removed the argument (and decodes metadata leniently).
        return av.open(path, metadata_errors="ignore")
    return av.open(path)


def ffmpeg_error(e) -> str:
    """FFmpeg's words for an error, without PyAV's errno prefix."""
    return getattr(e, "strerror", None) or str(e)


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
    rotation, overrun = None, None
    with f:
        head = f.read(512)
        is_bmff = len(head) >= 8 and head[4:8] in ISO_BMFF_TOP
        if is_bmff:
            try:
                rotation = mp4_rotation(f, size)
                overrun = bmff_overrun(f, size)
            except (OSError, struct.error):
                rotation = 0
    import av

    try:
        container = open_video(path)
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
        return _fail("not_video", f"not a video FFmpeg can read ({ffmpeg_error(e)})")
    except (OSError, ValueError) as e:
        return _fail("not_video", f"not a video FFmpeg can read ({e})")
    with container:
        try:
            return _probe_container(container, size, rotation, overrun)
        except av.error.FFmpegError as e:
            return _fail("truncated", f"damaged: reading it failed ({ffmpeg_error(e)})")


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


def _rate(x) -> Fraction | None:
    try:
        f = Fraction(x) if x else None
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if f is not None and 0 < f < 1000 else None


VFR_SPREAD = 0.10         # frame intervals that differ by more than this (relative) make a variable frame rate


def _timing(pts: list[int], time_base) -> tuple[float, tuple[float, float] | None, Fraction | None]:
    """(seconds from the first frame's start to the last frame's end, (min fps, max fps) when the frame rate
    varies, the average rate) from the video packets' timestamps."""
    ts = sorted(set(pts))
    if len(ts) < 2 or not time_base:
        return 0.0, None, None
    tb = Fraction(time_base)
    deltas = sorted(b - a for a, b in zip(ts, ts[1:], strict=False))   # neighbours: one fewer
    med = deltas[len(deltas) // 2]
    span = (ts[-1] - ts[0] + med) * tb
    avg = Fraction(len(ts) - 1) / ((ts[-1] - ts[0]) * tb) if ts[-1] > ts[0] else None
    vfr = None
    # a jitter of a tick or two is rounding (23.976 fps in a 1 ms time base is 41/42 ms), not a rate change
    if deltas[-1] - deltas[0] > max(2, VFR_SPREAD * med) and deltas[0] > 0:
        vfr = (float(1 / (deltas[-1] * tb)), float(1 / (deltas[0] * tb)))
    return float(span), vfr, avg


def _probe_container(container, size: int, rotation: int | None, overrun: tuple[str, int] | None = None) -> dict:
    import av

    s = pick_video_stream(container)
    if s is None:
        others = len(container.streams)
        if not others:
            return _fail("not_video", "no video stream (the file holds no streams with data)")
        return _fail("not_video", f"no video stream ({others} other stream{'s' if others != 1 else ''})")
    cc = s.codec_context
    if cc is None:
        return _fail("unsupported", f"its video codec ({getattr(s, 'codec_tag', '?')}) cannot be decoded by "
                                    "this FFmpeg build")
    w, h = cc.width, cc.height
    if not w or not h:
        return _fail("bad_header", "the header has no picture size")
    sar = clean_sar(s.sample_aspect_ratio or cc.sample_aspect_ratio)
    fps = _rate(s.average_rate) or _rate(s.guessed_rate) or _rate(s.base_rate)
    duration = None
    if s.duration and s.time_base:
        duration = float(s.duration * s.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    nb = s.frames or 0
    # Frame data the index points at beyond the end of the file (mp4/avi index every frame).
    try:
        entries = s.index_entries
    except Exception:       # PyAV < 16: no index access
        entries = ()
    if entries:
        missing = sum(1 for e in entries if e.pos + e.size > size)
        if missing:
            return _fail("truncated", f"truncated: {missing} of {len(entries)} frames lie past the end of "
                                      f"the file ({size:,} bytes)")
    elif overrun:
        box, end = overrun
        return _fail("truncated", f"truncated: its {box} box runs to byte {end:,} but the file ends at {size:,} "
                                  "bytes (an incomplete download?)")
    count, note, vfr = "header", "", None
    base = _rate(s.base_rate)
    # the stream's average rate and its base (tbr) rate disagree: the frame rate may vary
    maybe_vfr = bool(fps and base and abs(fps - base) > fps / 100)
    need_count = not header_count_reliable(nb, duration, fps) or maybe_vfr
    # not MP4/MOV: the rotation (if any) is known once a frame is decoded
    need_frame = rotation is None
    pts: list[int] = []
    packets, frame, decode_error = 0, None, None
    if need_count or need_frame:
        s.thread_type = "SLICE"      # frame threading would read several packets ahead before a frame comes out
        for packet in container.demux(s):
            if packet.size:
                packets += 1
                if packet.pts is not None:
                    pts.append(packet.pts)
            if need_frame and frame is None and decode_error is None:
                try:
                    frame = next(iter(packet.decode()), None)
                except av.error.FFmpegError as e:
                    decode_error = e
            if not need_count and (frame is not None or decode_error is not None):
                break
    if rotation is None:     # need_frame
        if decode_error is not None and frame is None:
            return _fail("truncated", f"its first frame cannot be decoded ({cc.name}: {ffmpeg_error(decode_error)})")
        if frame is None:
            return _fail("not_video", "its video stream holds no frames")
        rotation = int(round((getattr(frame, "rotation", 0) or 0) / 90.0)) * 90 % 360
    if need_count:
        if packets == 0:
            return _fail("not_video", "its video stream holds no frames")
        span, vfr, avg = _timing(pts, s.time_base)
        if (vfr or not fps) and avg:
            fps = avg
        # truncated: the frames stop well before the header's duration (by time, so uneven frames don't count)
        shown = span or (packets / float(fps) if fps else 0.0)
        if duration and shown and shown < 0.9 * duration - 2 / float(fps or 25):
            return _fail("truncated", f"truncated: the header says {duration:.2f} s but the frames in the file "
                                      f"cover {shown:.2f} s ({packets} frames)")
        if nb != packets:
            note = (f"the header has no frame count; counted {packets} video packets" if nb <= 0 else
                    f"the header says {nb} frames; counted {packets} video packets")
            nb, count = packets, "packets"
        if vfr:
            duration = span or duration
    if fps is None:
        if duration and nb:
            fps = Fraction(nb / duration).limit_denominator(1001)
        else:
            return _fail("bad_header", "the header has no frame rate")
    dw, dh = display_size(w, h, sar, rotation)
    sar_text = "1" if sar == 1 else f"{sar.numerator}/{sar.denominator}"
    return {"ok": True, "width": dw, "height": dh, "coded": [w, h], "sar": sar_text, "rotation": rotation,
            "frames": nb, "fps": f"{fps.numerator}/{fps.denominator}", "duration": duration, "count": count,
            "count_note": note, "codec": cc.name, "vfr": list(vfr) if vfr else None}


# EXIF orientation -> counter-clockwise rotation (mirrored orientations are treated as their rotation).
_EXIF_ROTATION = {3: 180, 4: 180, 5: 270, 6: 270, 7: 90, 8: 90}


def probe_image(path: str) -> dict:
    _, failed = _size_or_failure(path)
    if failed:
        return failed
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img_size = img.size
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
    return {"ok": True, "width": w, "height": h, "coded": list(img_size), "sar": "1", "rotation": rotation,
            "frames": 1, "fps": "0/1", "duration": None, "count": "image", "count_note": "", "codec": "image",
            "vfr": None}


def probe_file(item: tuple[str, str]) -> dict:
    """(path, kind) -> probe dict. The unit of work of the scan's process pool."""
    path, kind = item
    try:
        return probe_image(path) if kind == "image" else probe_video(path)
    except Exception as e:      # a probe must never stop the scan
        # Not the file's fault (hvtui or a library raised something unexpected): never cached, so the next scan
        # (after an upgrade or a fix) reads the file again.
        return _fail("probe_error", f"could not be probed: {e.__class__.__name__}: {e} (an error in hvtui or "
                                    f"a library, not in the file; please report it)", nocache=True)


def probe_chunk(items: list[tuple[int, str, str]]) -> list[tuple[int, dict]]:
    return [(i, probe_file((p, k))) for i, p, k in items]
