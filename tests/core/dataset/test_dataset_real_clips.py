"""Real-world clips (tests/helpers/clip_corpus.py: every codec and container this PyAV encodes, rotation, pixel aspect,
variable frame rate, odd sizes, a stream broken mid-way, non-videos): each is kept in the bucket of its
*displayed* shape and decoded as a player shows it, or discarded with a true reason."""
from __future__ import annotations

import bisect
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from hvtui.core.dataset.bucket_report import format_bucket_report
from hvtui.core.dataset.buckets import bucket_size
from hvtui.core.dataset.display import crop_box, display_size, pixel_aspect
from hvtui.core.dataset.read import SampleReadError, decode_frames, read_sample_frames
from hvtui.core.dataset.scan import scan_preset
from hvtui.core.dataset.synth import read_marker
from tests.helpers.clip_corpus import BROKEN_FROM, build_corpus, upright_picture
from tests.helpers.dataset_builders import preset_for
from tests.helpers.repo_paths import REPO

RES = 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("real") / "clips")


def corpus_preset(root: Path, cache: Path | None = None):
    # resolution_frames: every clip gives as many frames as it has (up to 49), so the broken clip's sample
    # needs frames past its break
    return preset_for(root, cache=cache, resolution=RES, bucket_strategy="resolution_frames", max_frames=49)


@pytest.fixture(scope="module")
def report(corpus, tmp_path_factory):
    return scan_preset(corpus_preset(corpus.root, tmp_path_factory.mktemp("scan-cache")))


def test_the_corpus_has_what_users_bring(corpus):
    names = set(corpus.by_name())
    # the codecs and containers PyAV 15+ wheels encode; a build without one of them would be said in `skipped`
    for must in ("h264.mp4", "hevc.mkv", "vp9.webm", "vp8.ivf", "av1.mp4", "mpeg4.avi", "mjpeg.mov", "prores.mov",
                 "h264.ts", "h264.m2ts", "mpeg2.mpg", "anamorphic-2to1.mp4", "pal-16to11.ts", "vfr.mkv",
                 "broken-midway.mp4", "ffv1-odd.mkv"):
        assert must in names, corpus.skipped


def test_every_clip_is_kept_as_displayed_or_discarded_with_its_reason(corpus, report):
    kept = {s.relpath: s for s in report.samples}
    discarded = {d.relpath: d for d in report.discards()}
    for c in corpus.clips:
        if c.kept:
            assert c.name in kept, (c.name, discarded.get(c.name))
            s = kept[c.name]
            assert (s.source_width, s.source_height) == c.display, c.name
            assert (s.width, s.height) == bucket_size(*c.display, RES), c.name
            # the bucket has the displayed shape (to the rounding of its sides to multiples of 16)
            assert s.width / s.height == pytest.approx(c.display[0] / c.display[1], rel=0.12), c.name
            assert s.by_time == c.vfr, c.name
        else:
            assert c.name in discarded, (c.name, kept.get(c.name))
            assert discarded[c.name].category == c.category, (c.name, str(discarded[c.name]))
    # every file of the folder is accounted for: kept, discarded, or (the captions) read as captions
    assert report.clips_found == len(corpus.clips)
    assert report.clips_kept + report.clips_discarded == len(corpus.clips)


def test_the_issue_examples(report):
    by = {s.relpath: s for s in report.samples}
    assert (by["anamorphic-2to1.mp4"].source_width, by["anamorphic-2to1.mp4"].source_height) == (1280, 360)
    assert by["anamorphic-2to1.mp4"].width / by["anamorphic-2to1.mp4"].height > 3         # not 16:9
    assert (by["pal-16to11.ts"].source_width, by["pal-16to11.ts"].source_height) == (1024, 576)
    assert (by["pal-16to11.ts"].width, by["pal-16to11.ts"].height) == (112, 64)            # 16:9, not 1.22:1
    assert bucket_size(1024, 576, 480) == (848, 480)
    if "rot90.mkv" in by:                                   # PyAV 16+ can write it
        assert (by["rot90.mkv"].width, by["rot90.mkv"].height) == (64, 112)                # Matroska rotation
    notes = {(n.relpath, n.topic): n.message for n in report.notes}
    assert notes[("pal-16to11.ts", "pixel_aspect")] == ("non-square pixels (pixel aspect 16:11): stored 704x576, "
                                                        "shown 1024x576; bucketed and resized as shown")
    assert notes[("vfr.mkv", "vfr")].startswith("variable frame rate (10-30.303 fps, average 15.333): frames are "
                                                 "taken by timestamp")
    lines = {str(d) for d in report.discards()}
    assert ("loop.mp4: a symlink loop: following it leads back to itself (fix: point the link at the real file, "
            "or remove it)") in lines
    assert "folder.mp4/: a folder with a .mp4 name, not a file: scanned as a folder" in report.warnings
    assert "voice-memo.mp4: no video stream (1 other stream)" in lines
    assert "no-frames.mp4: no video stream (the file holds no streams with data)" in lines
    text = format_bucket_report(report)
    assert "broken symlinks and symlink loops (1)" in text and "permissions" not in text


def _disc(frame: np.ndarray) -> tuple[float, float, float]:
    """(width / height, centre x, centre y) of the red disc the corpus draws, in the decoded frame."""
    f = frame.astype(int)
    red = (f[..., 0] > 120) & (f[..., 1] < 110) & (f[..., 2] < 110)
    ys, xs = np.nonzero(red)
    assert len(xs) > 20
    return ((xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1), xs.mean() / f.shape[1], ys.mean() / f.shape[0])


def test_decoded_frames_are_shown_as_a_player_shows_them(corpus, report):
    """Pixel aspect and rotation undone: the disc is round and centred in every bucket-sized frame."""
    by = {s.relpath: s for s in report.samples}
    for c in corpus.clips:
        if not c.kept or c.fails_decode:
            continue
        s = by[c.name]
        frames = read_sample_frames(s)
        assert frames.shape == (s.frames, s.height, s.width, 3), c.name
        ratio, cx, cy = _disc(frames[len(frames) // 2])
        assert ratio == pytest.approx(1.0, abs=0.12), c.name
        assert (cx, cy) == (pytest.approx(0.5, abs=0.05), pytest.approx(0.5, abs=0.05)), c.name


def test_rotated_clips_come_out_upright(corpus, report):
    """The frame-number marker sits at the bottom-left of the upright picture only."""
    by = {s.relpath: s for s in report.samples}
    names = [c.name for c in corpus.clips if c.name.startswith("rot")]
    assert names
    for name in names:
        s = by[name]
        frames = decode_frames(s.path, [0, 5], s.rotation)
        assert frames[0].shape[:2] == (s.source_height, s.source_width), name
        assert [read_marker(f) for f in frames] == [0, 5], name


def test_variable_frame_rate_is_sampled_by_timestamp(corpus, report):
    pts, t = [], 0
    for i in range(24):                       # as clip_corpus wrote them
        pts.append(t)
        t += 67 if i < 8 else 33 if i < 16 else 100
    for name in ("vfr.mp4", "vfr.mkv"):
        s = next(x for x in report.samples if x.relpath == name)
        assert s.by_time and s.fps_out == pytest.approx(23 / (pts[-1] / 1000), rel=1e-3)   # the average rate
        frames = decode_frames(s.path, s.frame_indices, 0, [k / s.fps_out for k in range(s.frames)])
        shown = [bisect.bisect_right(pts, k / s.fps_out * 1000 + 1e-3) - 1 for k in range(s.frames)]
        assert [read_marker(f) for f in frames] == shown, name
        assert shown != list(range(s.frames))    # by index it would be different frames


def test_a_clip_broken_mid_stream_fails_with_its_name_and_frame(report):
    s = next(x for x in report.samples if x.relpath == "broken-midway.mp4")
    assert s.source_frames == 50 and s.frames == 49          # the header is intact: the scan keeps it
    with pytest.raises(SampleReadError) as e:
        read_sample_frames(s)
    assert str(e.value).startswith(f"{s.path}: decoding failed at frame {BROKEN_FROM} (Invalid data found")
    assert str(e.value).endswith("the sample needs frame 48")


def test_no_decoder_message_reaches_stderr(report, capfd):
    s = next(x for x in report.samples if x.relpath == "broken-midway.mp4")
    with pytest.raises(SampleReadError):
        read_sample_frames(s)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("coded, sar, rotation, shown", [
    ((640, 360), Fraction(2), 0, (1280, 360)), ((704, 576), Fraction(16, 11), 0, (1024, 576)),
    ((720, 480), Fraction(8, 9), 0, (640, 480)), ((1920, 1080), Fraction(1), 90, (1080, 1920)),
    ((72, 54), Fraction(4, 3), 270, (54, 96)), ((64, 64), Fraction(0), 0, (64, 64)),
])
def test_display_size(coded, sar, rotation, shown):
    assert display_size(*coded, sar, rotation) == shown


def test_crop_box_undoes_the_squeeze():
    # 640x360 stored with 2:1 pixels is 1280x360 shown; a 16:9 bucket keeps the middle 640x360 shown pixels,
    # which are the middle 320 stored columns
    assert crop_box(640, 360, 1280, 720, Fraction(2)) == pytest.approx((160.0, 0.0, 480.0, 360.0))
    # turned 90 degrees, the pixels are 1/SAR wide
    assert pixel_aspect(Fraction(2), 90) == Fraction(1, 2) and pixel_aspect(Fraction(2), 180) == 2
    # square pixels: plain cover + centre crop
    assert crop_box(200, 100, 64, 64) == (50.0, 0.0, 150.0, 100.0)
    assert upright_picture(0, 64, 48).shape == (48, 64, 3)


# --- the scan cache: keyed on what decides a verdict -----------------------------------------------------------

def _stored(cache: Path) -> dict:
    """The scan cache's content ({} when nothing was worth saving)."""
    files = list(cache.glob(".hvtui-scan-*.json"))
    return json.loads(files[0].read_text()) if files else {"entries": {}}


def test_a_library_error_is_never_cached_and_a_decoder_change_rereads(tmp_path, corpus, monkeypatch):
    from hvtui.core.dataset import probe as probe_mod
    from hvtui.core.dataset import scan_cache as cache_mod

    cache = tmp_path / "cache"
    preset = corpus_preset(corpus.root, cache)

    def broken_library(path):
        raise TypeError("open() got an unexpected keyword argument 'metadata_errors'")

    monkeypatch.setattr(probe_mod, "probe_video", broken_library)
    monkeypatch.setattr("hvtui.core.dataset.probe_pool.POOL_MIN", 10 ** 9)      # probe in this process
    r = scan_preset(preset)
    assert r.clips_kept == 0
    d = next(x for x in r.discards() if x.relpath == "h264.mp4")
    assert d.category == "probe_error" and "not in the file; please report it" in d.message
    assert "h264.mp4" not in _stored(cache)["entries"]     # a library's failure is not the file's verdict
    monkeypatch.undo()
    r = scan_preset(preset)
    assert r.datasets[0].cached == 0 and r.clips_kept == sum(c.kept for c in corpus.clips)
    r = scan_preset(preset)
    assert r.datasets[0].probed == 0                          # now cached
    # another decoder (PyAV upgraded or downgraded): every verdict is read again
    monkeypatch.setattr(cache_mod, "pyav_version", lambda: "0.0-other")
    r = scan_preset(preset)
    assert r.datasets[0].cached == 0 and r.datasets[0].probed == r.datasets[0].found - 1    # - the symlink loop
    assert _stored(cache)["identity"].endswith("PyAV 0.0-other")


def test_a_replaced_file_is_read_again(tmp_path):
    from tests.helpers.dataset_builders import clip

    clip(tmp_path / "d", "a.mp4", fps=12, frames=9)
    preset = preset_for(tmp_path / "d", cache=tmp_path / "c", num_frames=9)
    assert scan_preset(preset).datasets[0].probed == 1
    src = tmp_path / "d" / "a.mp4"
    st = src.stat()
    clip(tmp_path / "x", "a.mp4", w=48, h=80, fps=12, frames=9)
    other = tmp_path / "x" / "a.mp4"
    other.write_bytes(other.read_bytes()[: st.st_size].ljust(st.st_size, b"\0"))   # same size ...
    import os

    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))                             # ... and mtime
    os.replace(other, src)                                                            # a new inode
    assert scan_preset(preset).datasets[0].probed == 1


# --- trained on: caching decodes every kept clip; a clip that breaks is dropped with its reason -----------------

def _write_run_preset(path: Path, data: Path, cache: Path, out: Path, steps: int = 4) -> Path:
    from tests.helpers import loop_presets as L

    keys = {**L.BASE, "output_dir": str(out), "max_train_steps": steps}
    lines = [f"{k} = {L._toml(v)}" for k, v in keys.items()]
    lines += ["", "[[datasets]]", 'id = "clips"', f"instance_data_dir = {L._toml(str(data))}",
              'caption_strategy = "textfile"', f"resolution = {RES}", f"cache_dir = {L._toml(str(cache / 'latents'))}",
              "[datasets.video]", 'bucket_strategy = "resolution_frames"', "max_frames = 49", "",
              "[[datasets]]", 'id = "text-embeds"', 'dataset_type = "text_embeds"', "default = true",
              f"cache_dir = {L._toml(str(cache / 'text'))}", ""]
    path.write_text("\n".join(lines))
    return path


def _train(preset_path: Path):
    from hvtui.core.preset.schema import load_preset
    from hvtui.core.run.bus import Bus
    from hvtui.core.run.session import RunOptions, Session
    from tests.helpers import loop_presets as L

    preset = load_preset(preset_path)
    s = Session(preset, options=RunOptions(), bus=Bus())
    s.start()
    s.join()
    return s.exit_code, L.read_events(Path(preset.output_dir))


def _discarded(events) -> list[dict]:
    return [e.get("discarded") for e in events if e.kind == "log" and e.get("discarded")]


@pytest.mark.slow
def test_trains_on_the_corpus_and_drops_the_clip_that_breaks(corpus, tmp_path):
    cache = tmp_path / "cache"
    code, events = _train(_write_run_preset(tmp_path / "p.toml", corpus.root, cache, tmp_path / "out"))
    errors = [e.get("message") for e in events if e.kind == "error"]
    assert code == 0, errors
    dropped = _discarded(events)
    assert [(d["sample_id"], d["category"]) for d in dropped] == [("clips/broken-midway.mp4", "decode_failed")]
    assert f"decoding failed at frame {BROKEN_FROM}" in dropped[0]["reason"]
    assert "broken-midway.mp4" in dropped[0]["reason"]
    stats = next(e.get("message") for e in events if e.kind == "log" and e.get("message", "").startswith("cache:"))
    kept = sum(c.kept and not c.fails_decode for c in corpus.clips)
    assert f"latents encoded {kept}" in stats and "latents failed 1" in stats
    assert len([e for e in events if e.kind == "step"]) == 4
    # a second run with the same file and decoder does not decode it again, and says so
    code, events = _train(_write_run_preset(tmp_path / "q.toml", corpus.root, cache, tmp_path / "out2", steps=1))
    assert code == 0
    assert [d["sample_id"] for d in _discarded(events)] == ["clips/broken-midway.mp4"]
    assert any("as in an earlier run with the same file and decoder" in e.get("message", "") for e in events)


@pytest.mark.slow
def test_a_dataset_of_only_broken_clips_exits_2_naming_them(corpus, tmp_path):
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    for name in ("broken-midway.mp4", "broken-midway.txt"):
        (data / name).write_bytes((corpus.root / name).read_bytes())
    preset = _write_run_preset(tmp_path / "p.toml", data, tmp_path / "cache", tmp_path / "out", steps=2)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "hvtui", "--run", str(preset)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "no usable training samples: every clip failed to decode: clips/broken-midway.mp4 (" in p.stderr
    assert "Traceback" not in p.stderr and "likely a bug" not in p.stderr
