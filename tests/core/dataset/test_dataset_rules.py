"""Pure rules of the dataset scan: bucket sizes, fps resampling, frame rules, crop boxes, captions."""
from fractions import Fraction

import pytest

from hvtui.core.dataset.buckets import aspect_problem, bucket_size
from hvtui.core.dataset.captions import MAX_CAPTION_BYTES, clean_captions, decode_text, read_caption_file
from hvtui.core.dataset.frames import floor_4n1, fmt_fps, plan_frames, plan_rate
from hvtui.core.dataset.probe import _rotation_from_matrix, header_count_reliable
from hvtui.core.dataset.read import crop_box


@pytest.mark.parametrize("w,h,res,expected", [
    (1920, 1080, 480, (848, 480)),
    (1920, 1080, 720, (1280, 720)),
    (1280, 720, 480, (848, 480)),
    (1080, 1920, 480, (480, 848)),      # portrait
    (1080, 1920, 720, (720, 1280)),
    (1000, 1000, 480, (640, 640)),      # square keeps the 16:9 frame's area
    (1440, 1080, 480, (736, 560)),      # 4:3
    (64, 64, 64, (80, 80)),             # the demo's square clips
    (112, 64, 64, (112, 64)),
    (64, 112, 64, (64, 112)),
])
def test_bucket_size(w, h, res, expected):
    bw, bh = bucket_size(w, h, res)
    assert (bw, bh) == expected
    assert bw % 16 == 0 and bh % 16 == 0


def test_extreme_aspect_ratio():
    assert aspect_problem(1920, 1080) is None
    assert aspect_problem(400, 100) is None                     # exactly 4:1 is allowed
    assert aspect_problem(256, 16) == ("aspect ratio 16.0:1 (256x16) is beyond 4:1; crop it to at most 4:1 "
                                       "(e.g. 16:9) to use it")
    assert aspect_problem(16, 160).startswith("aspect ratio 1:10.0 (16x160)")


def test_resampling_counts_and_indices():
    r = plan_rate(Fraction(30), 24)
    assert r.resampled and r.fps_out == 24
    assert r.usable(41) == 32                                    # floor(41 * 24 / 30)
    assert r.usable(52) == 41
    assert r.indices(6) == [0, 1, 2, 3, 5, 6]                    # floor(k * 30 / 24)
    ntsc = plan_rate(Fraction(24000, 1001), 16)
    assert ntsc.usable(61) == 40                                  # floor(61 * 16 * 1001 / 24000) = floor(40.7)
    # within 0.5%: the same rate, nothing dropped
    assert not plan_rate(Fraction(24000, 1001), 24).resampled
    assert plan_rate(Fraction(24), 23.976).usable(61) == 61
    # slower than frame_rate: not upsampled
    slow = plan_rate(Fraction(12), 24)
    assert slow.slower and not slow.resampled and slow.usable(20) == 20 and slow.fps_out == 12
    assert plan_rate(Fraction(30), None).usable(41) == 41


def test_aspect_ratio_frame_rules():
    r = plan_rate(Fraction(30), 24)
    p = plan_frames(52, r, "aspect_ratio", 61, None, None, None)
    assert p.category == "too_short" and p.reason == "41 frames after resampling 30->24 fps, needs >= 61 (num_frames)"
    p = plan_frames(80, r, "aspect_ratio", 61, None, None, None)
    assert p.category is None and p.frames == 61 and len(p.indices) == 61 and p.indices[:5] == (0, 1, 2, 3, 5)
    assert max(p.indices) < 80
    p = plan_frames(70, plan_rate(Fraction(24), None), "aspect_ratio", 61, 65, None, None)
    assert p.category is None and p.frames == 61
    p = plan_frames(60, plan_rate(Fraction(24), None), "aspect_ratio", 33, 65, None, None)
    assert p.reason == "60 frames at 24 fps, needs >= 65 (min_frames)"
    p = plan_frames(200, plan_rate(Fraction(24), None), "aspect_ratio", 61, None, 150, None)
    assert p.category == "too_long" and p.reason == "200 frames at 24 fps, more than max_frames 150"
    p = plan_frames(1, plan_rate(Fraction(24), None), "aspect_ratio", 61, None, None, None)
    assert p.category == "single_frame" and p.reason.startswith("1 frame: a still image")


def test_resolution_frames_rules():
    r24 = plan_rate(Fraction(24), None)
    assert floor_4n1(20) == 17 and floor_4n1(21) == 21 and floor_4n1(0) == 0
    p = plan_frames(40, r24, "resolution_frames", 61, 9, 21, 4)       # cap 21 -> 20 -> 17
    assert (p.frames, p.indices) == (17, tuple(range(17)))
    assert plan_frames(15, r24, "resolution_frames", 61, 9, 21, 4).frames == 9    # 12 -> 9
    p = plan_frames(10, r24, "resolution_frames", 61, 9, 21, 4)                   # 8 -> 5 < 9
    assert p.category == "too_short"
    assert p.reason == ("10 frames at 24 fps -> 5 after rounding down to a multiple of frame_interval 4, "
                        "rounding down to 4n+1; needs >= 9 (min_frames)")
    p = plan_frames(130, r24, "resolution_frames", 61, None, None, 25)           # 125 is 4n+1
    assert p.frames == 125
    p = plan_frames(100, plan_rate(Fraction(30), 15), "resolution_frames", 61, None, None, None)  # 50 -> 49
    assert p.frames == 49 and p.indices[:3] == (0, 2, 4)


def test_fps_formatting():
    assert fmt_fps(Fraction(30)) == "30"
    assert fmt_fps(Fraction(24000, 1001)) == "23.976"
    assert fmt_fps(12.5) == "12.5"


def test_header_count_reliability():
    assert header_count_reliable(61, 61 / 24, Fraction(24))
    assert header_count_reliable(61, 2.6, Fraction(24))               # within 2 frames
    assert not header_count_reliable(0, 2.5, Fraction(24))            # missing
    assert not header_count_reliable(120, 2.5, Fraction(24))          # 120 vs 60: disagrees
    assert header_count_reliable(50, None, Fraction(24))              # nothing to compare with


def test_mp4_rotation_matrix():
    one = 65536
    assert _rotation_from_matrix(one, 0) == 0
    assert _rotation_from_matrix(0, -one) == 90       # what PyAV's set_display_rotation(90) writes
    assert _rotation_from_matrix(-one, 0) == 180
    assert _rotation_from_matrix(0, one) == 270


def test_crop_box_is_centred_with_bucket_aspect():
    assert crop_box(1920, 1080, 848, 480) == pytest.approx((6.0, 0.0, 1914.0, 1080.0))   # 1908 px wide
    assert crop_box(100, 100, 112, 64) == pytest.approx((0.0, 21.43, 100.0, 78.57), abs=0.01)
    left, top, right, bottom = crop_box(1080, 1920, 480, 848)
    assert (right - left) / (bottom - top) == pytest.approx(480 / 848)


def test_caption_text_cleaning():
    text, warnings = decode_text("caf\xe9".encode("latin-1"))
    assert text == "caf\ufffd" and "not UTF-8 (byte 0xe9 at offset 3)" in warnings[0]
    assert decode_text("\ufeffhello".encode("utf-8")) == ("hello", [])
    caps, warnings = clean_captions(["  a  ", "", "x" * 5000])
    assert caps == ["a", "x" * 4000] and "5,000 characters was truncated to 4,000" in warnings[0]


@pytest.mark.parametrize("encoding,bom", [
    ("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
    ("utf-32-le", b"\xff\xfe\x00\x00"), ("utf-32-be", b"\x00\x00\xfe\xff"),
])
def test_caption_file_with_a_bom(tmp_path, encoding, bom):
    # Notepad's "Unicode" is UTF-16 LE with a BOM: it must not read as UTF-8 with U+FFFD everywhere
    path = tmp_path / "clip.txt"
    path.write_bytes(bom + "café au lait 🎬\r\nsecond line\r\n".encode(encoding))
    r = read_caption_file(path)
    assert (r.captions, r.warnings, r.problem) == (["café au lait 🎬", "second line"], [], None)


def test_caption_file_utf16_written_by_python(tmp_path):
    path = tmp_path / "clip.txt"
    path.write_text("ünïcödé\n", encoding="utf-16")        # the platform's byte order, with its BOM
    assert read_caption_file(path).captions == ["ünïcödé"]


def test_caption_file_bad_bytes_after_a_bom_still_warn(tmp_path):
    path = tmp_path / "clip.txt"
    path.write_bytes(b"\xff\xfe" + "ab".encode("utf-16-le") + b"\x00\xdc" + "cd".encode("utf-16-le"))  # lone surrogate
    r = read_caption_file(path)
    assert r.captions == ["ab\ufffdcd"]
    assert r.warnings == ["not UTF-16 (byte 0x00 at offset 6); undecodable bytes were replaced with U+FFFD: "
                          "save it as UTF-8"]
    path.write_bytes(b"\xef\xbb\xbfcaf\xe9")                   # a UTF-8 BOM, then latin-1
    r = read_caption_file(path)
    assert r.captions == ["caf\ufffd"] and "not UTF-8 (byte 0xe9 at offset 6)" in r.warnings[0]


def test_truncated_caption_file_does_not_cut_a_character(tmp_path):
    path = tmp_path / "clip.txt"
    # 4 bytes a character (a UTF-16 surrogate pair): after the 2-byte BOM the byte limit cuts a pair in half
    path.write_bytes(b"\xff\xfe" + ("🎬" * MAX_CAPTION_BYTES).encode("utf-16-le"))
    r = read_caption_file(path)
    assert len(r.warnings) == 2 and "only the first 64 KiB were read" in r.warnings[0]
    assert "truncated to 4,000" in r.warnings[1] and r.captions == ["🎬" * 4000]
    path.write_bytes(b"x" + ("é" * MAX_CAPTION_BYTES).encode("utf-8"))   # UTF-8 cut inside a character
    r = read_caption_file(path)
    assert len(r.warnings) == 2 and r.captions == ["x" + "é" * 3999]
