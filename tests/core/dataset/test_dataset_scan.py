"""The dataset scan on small PyAV-made datasets: exact buckets, every discard reason, captions, cache."""
import json
import os
import shutil
import time
from pathlib import Path

import av
import pytest

from hvtui.core.dataset import probe as probe_mod
from hvtui.core.dataset.bucket_report import format_bucket_report
from hvtui.core.dataset.probe_pool import POOL_MIN
from hvtui.core.dataset.scan import scan_preset
from hvtui.core.preset.schema import DatasetSpec, Preset, VideoSpec
from tests.helpers.dataset_builders import build_mixed, caption, clip, preset_for


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    base = tmp_path_factory.mktemp("mixed")
    build_mixed(base / "data")
    return base


@pytest.fixture(scope="module")
def mixed_report(mixed):
    preset = preset_for(mixed / "data", cache=mixed / "cache", num_frames=9, frame_rate=12, batch=2)
    return scan_preset(preset)


def by_relpath(report):
    return {s.relpath: s for s in report.samples}


def discard_lines(report):
    return {cat: [str(d) for d in items] for cat, items in report.discarded.items()}


def test_mixed_dataset_buckets(mixed_report):
    r = mixed_report
    assert r.errors == []
    assert {b.key: sorted(s.relpath for s in b.samples) for b in r.buckets} == {
        "80x80@9": ["LOUD.MOV", "caf\ufffd.mp4", "huge.mp4", "latin1.mp4", "linked/far.mp4", "multi.mp4",
                    "native12.mp4", "ok24.mp4", "ok30.mp4", "old.avi", "slow8.mp4", "sub/deeper/nested.mp4",
                    "vp9.webm", "ünï cödé name.mp4"],
        "64x112@9": ["phone.mp4", "portrait.mp4"],
    }
    assert r.samples_per_epoch == 16 and r.clips_kept == 16 and r.clips_found == 31
    s = by_relpath(r)
    assert s["ok24.mp4"].frame_indices == [0, 2, 4, 6, 8, 10, 12, 14, 16]      # 24 -> 12 fps
    assert s["ok30.mp4"].frame_indices == [0, 2, 5, 7, 10, 12, 15, 17, 20]     # floor(k * 2.5)
    assert (s["ok30.mp4"].fps_in, s["ok30.mp4"].fps_out) == (30.0, 12.0)
    assert s["native12.mp4"].frame_indices == list(range(9))
    assert (s["slow8.mp4"].fps_out, s["slow8.mp4"].frame_indices) == (8.0, list(range(9)))
    assert (s["phone.mp4"].rotation, s["phone.mp4"].source_width, s["phone.mp4"].source_height) == (90, 48, 80)
    assert s["vp9.webm"].source_frames == 9
    assert s["multi.mp4"].captions == ["first caption", "second caption"]
    assert s["latin1.mp4"].captions == ["caf\ufffd au lait"]
    assert len(s["huge.mp4"].captions[0]) == 4000
    assert s["ünï cödé name.mp4"].captions == ["unicode"]
    assert s["LOUD.MOV"].captions == ["loud"] and s["old.avi"].source_frames == 9
    assert s["caf\ufffd.mp4"].captions == ["latin name"] and s["caf\ufffd.mp4"].path.exists()
    assert s["linked/far.mp4"].captions == ["far away"]
    assert s["ok24.mp4"].id == "clips/ok24.mp4" and s["ok24.mp4"].path.is_absolute()
    assert all(x.frames == len(x.frame_indices) == 9 for x in r.samples)


def cutfast_reason(path: Path) -> str:
    size = path.stat().st_size
    if hasattr(av.stream.Stream, "index_entries"):       # PyAV 16+: the index says which frames are missing
        return f"cutfast.mp4: truncated: 17 of 20 frames lie past the end of the file ({size:,} bytes)"
    end = size + 400                                      # PyAV 15: the data box's own size says it
    return f"cutfast.mp4: truncated: its mdat box runs to byte {end:,} but the file ends at {size:,} bytes (an " \
           "incomplete download?)"


def test_mixed_dataset_every_discard_reason(mixed_report):
    import re

    webm = next(str(d) for d in mixed_report.discarded["truncated"] if d.relpath == "cut.webm")
    m = re.search(r"cover (\d+\.\d\d) s \((\d+) frames\)$", webm)
    webm_span, webm_frames = m.group(1), int(m.group(2))
    assert 0 < webm_frames < 20                 # half the file: about half of the 30 frames
    assert float(webm_span) == pytest.approx(webm_frames / 12, abs=0.01)
    assert discard_lines(mixed_report) == {
        "too_short": ["short24.mp4: 8 frames after resampling 24->12 fps, needs >= 9 (num_frames)"],
        "single_frame": ["one.mp4: 1 frame: a still image, not a video (put stills in an image dataset)"],
        "aspect_ratio": ["wide.mp4: aspect ratio 16.0:1 (256x16) is beyond 4:1; crop it to at most 4:1 "
                         "(e.g. 16:9) to use it"],
        "no_caption": ["emptycap.mp4: caption file emptycap.txt is empty",
                       "nocap.mp4: no caption: nocap.txt is missing next to it"],
        "empty_file": ["zero.mp4: empty file (0 bytes)"],
        "not_video": ["fifo.mp4: not a regular file (a FIFO, socket or device)",
                      "text.mp4: a text file with a video name, not a video",
                      "voice.mp4: no video stream (1 other stream)"],
        "truncated": ["cut.avi: AVI that FFmpeg cannot read: truncated or damaged?",
                      "cut.mp4: MP4/MOV whose header (moov) is missing or damaged: truncated or incomplete "
                      "download?",
                      f"cut.webm: truncated: the header says 2.50 s but the frames in the file cover {webm_span} s "
                      f"({webm_frames} frames)",
                      cutfast_reason(mixed_report.discarded['truncated'][3].path)],
        "duplicate": ["link.mp4: a symlink to ok24.mp4, which is already included"],
        "broken_link": ["broken.mp4: broken symlink to missing.mp4"],
    }


def test_mixed_dataset_warnings_and_notes(mixed_report):
    w = mixed_report.warnings
    assert "sub/loop/: symlink to a folder already scanned (./); skipped (a loop or the same folder twice)" in w
    assert ("huge.txt: a caption of 9,999 characters was truncated to 4,000 (the text encoder reads at most "
            "about 1,000 tokens)") in w
    assert any(x.startswith("latin1.txt: not UTF-8 (byte 0xe9 at offset 3)") for x in w)
    assert any("1 clip is slower than frame_rate 12" in x and "slow8.mp4 (8 fps)" in x for x in w)
    # 64x112@9 holds 2 samples == batch 2: no bucket warning
    assert not any(x.startswith("bucket ") for x in w)
    notes = {(n.relpath, n.topic): n.message for n in mixed_report.notes}
    assert notes[("vp9.webm", "frame_count")] == "the header has no frame count; counted 9 video packets"
    assert mixed_report.datasets[0].ignored == {".md": 1}
    text = format_bucket_report(mixed_report)
    assert "Frame counts from packets, not the header (1)" in text
    assert "short24.mp4: 8 frames after resampling 24->12 fps, needs >= 9 (num_frames)" in text
    mixed_report.json_text().encode("utf-8")    # JSON-ready and printable
    text.encode("utf-8")                         # printable: undecodable file names were made safe


def test_small_bucket_and_empty_warnings(tmp_path):
    clip(tmp_path, "a.mp4", fps=12, frames=9)
    clip(tmp_path, "b.mp4", w=64, h=112, fps=12, frames=9)
    r = scan_preset(preset_for(tmp_path, num_frames=9, batch=2, repeats=0))
    assert ("bucket 80x80@9 has 1 sample per epoch, fewer than train_batch_size 2: it can never fill a batch "
            "(add clips, raise repeats or lower train_batch_size)") in r.warnings
    # repeats: samples per epoch = clips x (1 + repeats)
    r = scan_preset(preset_for(tmp_path, num_frames=9, batch=2, repeats=2))
    assert [b.samples_per_epoch for b in r.buckets] == [3, 3] and r.samples_per_epoch == 6
    assert not any(x.startswith("bucket ") for x in r.warnings)
    assert r.buckets[0].samples[0].repeats == 2
    r = scan_preset(preset_for(tmp_path, num_frames=33))
    assert r.buckets == [] and not r.ok
    assert "no buckets: nothing to train on (all 2 files were discarded; see the reasons)" in r.warnings
    assert [str(d) for d in r.discarded["too_short"]] == ["a.mp4: 9 frames at 12 fps, needs >= 33 (num_frames)",
                                                          "b.mp4: 9 frames at 12 fps, needs >= 33 (num_frames)"]
    empty = tmp_path / "empty"
    empty.mkdir()
    r = scan_preset(preset_for(empty))
    assert any("no video files" in w for w in r.warnings)
    assert "no buckets: nothing to train on (no files were found)" in r.warnings


def test_fatal_dataset_errors(tmp_path):
    r = scan_preset(preset_for(tmp_path / "nope"))
    assert len(r.errors) == 1 and "instance_data_dir" in r.errors[0] and "does not exist" in r.errors[0]
    assert not r.ok
    r = scan_preset(preset_for(tmp_path, num_frames=60))
    assert r.errors == ["dataset 'clips': video.num_frames = 60 is not 4n+1 (the VAE packs 4 frames per latent "
                        "frame after the first); use 57 or 61"]
    r = scan_preset(preset_for(tmp_path, caption_strategy="instanceprompt"))
    assert "needs instance_prompt" in r.errors[0]
    r = scan_preset(preset_for(tmp_path, caption_strategy="metadata", metadata_file="missing.jsonl"))
    assert "metadata_file 'missing.jsonl' not found" in r.errors[0]
    r = scan_preset(Preset(datasets=[DatasetSpec(id="t", dataset_type="text_embeds")]))
    assert "no enabled video or image dataset" in r.errors[0]


def test_resolution_frames_buckets(tmp_path):
    clip(tmp_path, "long.mp4", fps=24, frames=40)
    clip(tmp_path, "mid.mp4", fps=24, frames=15)
    clip(tmp_path, "wide.mp4", w=128, h=72, fps=24, frames=33)
    clip(tmp_path, "short.mp4", fps=24, frames=10)
    r = scan_preset(preset_for(tmp_path, bucket_strategy="resolution_frames", frame_interval=4, min_frames=9,
                               max_frames=21))
    assert {b.key: [s.relpath for s in b.samples] for b in r.buckets} == {
        "80x80@9": ["mid.mp4"], "80x80@17": ["long.mp4"], "112x64@17": ["wide.mp4"]}
    assert [str(d) for d in r.discards()] == [
        "short.mp4: 10 frames at 24 fps -> 5 after rounding down to a multiple of frame_interval 4, rounding down "
        "to 4n+1; needs >= 9 (min_frames)"]
    assert r.bucket("80x80@17").samples[0].frame_indices == list(range(17))


def test_caption_strategies(tmp_path):
    data = tmp_path / "d"
    clip(data, "a_red_square.mp4", fps=12, frames=9, text=None)
    clip(data / "sub", "b.mp4", fps=12, frames=9, text=None)
    clip(data, "c.mp4", fps=12, frames=9, text=None)
    r = scan_preset(preset_for(data, num_frames=9, caption_strategy="filename"))
    assert {s.relpath: s.captions for s in r.samples} == {
        "a_red_square.mp4": ["a red square"], "sub/b.mp4": ["b"], "c.mp4": ["c"]}
    r = scan_preset(preset_for(data, num_frames=9, caption_strategy="instanceprompt", instance_prompt="sks clip"))
    assert {tuple(s.captions) for s in r.samples} == {("sks clip",)}
    (tmp_path / "caps.jsonl").write_text(
        '{"file": "a_red_square.mp4", "caption": "red"}\n'
        'not json\n'
        '{"file_name": "sub/b.mp4", "text": ["one", "two"]}\n'
        '{"file": "gone.mp4", "caption": "x"}\n', encoding="utf-8")
    r = scan_preset(preset_for(data, num_frames=9, caption_strategy="metadata",
                               metadata_file=str(tmp_path / "caps.jsonl")))
    assert {s.relpath: s.captions for s in r.samples} == {"a_red_square.mp4": ["red"], "sub/b.mp4": ["one", "two"]}
    assert [str(d) for d in r.discards()] == ["c.mp4: not listed in caps.jsonl"]
    assert any("caps.jsonl:2: not a JSON object" in w for w in r.warnings)
    assert any("1 file(s) in caps.jsonl not found in the folder: gone.mp4" in w for w in r.warnings)
    (data / "caps.csv").write_text("file,caption\nc.mp4,see\nb.mp4,bee\n", encoding="utf-8")
    r = scan_preset(preset_for(data, num_frames=9, caption_strategy="metadata", metadata_file="caps.csv"))
    assert {s.relpath: s.captions for s in r.samples} == {"c.mp4": ["see"], "sub/b.mp4": ["bee"]}  # by name too



def test_captions_with_a_byte_order_mark(tmp_path):
    # caption files and metadata tables saved by Windows tools: UTF-16 with a BOM, or UTF-8 with one
    data = tmp_path / "d"
    clip(data, "le.mp4", fps=12, frames=9, text=b"\xff\xfe" + "crème brûlée\r\n".encode("utf-16-le"))
    clip(data, "be.mp4", fps=12, frames=9, text=b"\xfe\xff" + "naïve café".encode("utf-16-be"))
    clip(data, "sig.mp4", fps=12, frames=9, text="\ufeffsmörgåsbord\n".encode("utf-8"))
    r = scan_preset(preset_for(data, num_frames=9))
    assert {s.relpath: s.captions for s in r.samples} == {
        "le.mp4": ["crème brûlée"], "be.mp4": ["naïve café"], "sig.mp4": ["smörgåsbord"]}
    assert not [w for w in r.warnings if "U+FFFD" in w]
    (data / "caps.csv").write_bytes(b"\xff\xfe" + "file,caption\nle.mp4,über\nbe.mp4,à la\nsig.mp4,ça\n"
                                    .encode("utf-16-le"))
    r = scan_preset(preset_for(data, num_frames=9, caption_strategy="metadata", metadata_file="caps.csv"))
    assert {s.relpath: s.captions for s in r.samples} == {"le.mp4": ["über"], "be.mp4": ["à la"], "sig.mp4": ["ça"]}

def test_metadata_cache_rescan(tmp_path):
    data, cache = tmp_path / "d", tmp_path / "cache"
    for i in range(4):
        clip(data, f"c{i}.mp4", fps=12, frames=9 + 4 * i, text=f"clip {i}")
    preset = preset_for(data, cache=cache, num_frames=9)
    r1 = scan_preset(preset)
    d = r1.datasets[0]
    assert (d.probed, d.cached) == (4, 0)
    files = list(cache.glob(".hvtui-scan-*.json"))
    assert len(files) == 1 and d.cache_path == str(files[0])
    r2 = scan_preset(preset)
    assert (r2.datasets[0].probed, r2.datasets[0].cached) == (0, 4)
    assert [s.to_dict() for s in r2.samples] == [s.to_dict() for s in r1.samples]
    # a changed caption: new text, no reprobe
    (data / "c0.txt").write_text("changed caption\n", encoding="utf-8")
    r3 = scan_preset(preset)
    assert by_relpath(r3)["c0.mp4"].captions == ["changed caption"] and r3.datasets[0].probed == 0
    # a changed clip (size + mtime): only it is read again
    clip(data, "c1.mp4", fps=12, frames=25, text="clip 1")
    os.utime(data / "c1.mp4", ns=(time.time_ns(), time.time_ns() + 10**9))
    r4 = scan_preset(preset)
    assert (r4.datasets[0].probed, r4.datasets[0].cached) == (1, 3)
    assert by_relpath(r4)["c1.mp4"].source_frames == 25
    # removed file: gone from the cache; use_cache=False reads everything again
    (data / "c3.mp4").unlink()
    r5 = scan_preset(preset, use_cache=False)
    assert (r5.datasets[0].probed, r5.datasets[0].cached) == (3, 0)
    entries = json.loads(files[0].read_text())["entries"]
    assert sorted(entries) == ["c0.mp4", "c1.mp4", "c2.mp4"]
    # settings changes need no reprobe: the rules run on cached facts
    r6 = scan_preset(preset_for(data, cache=cache, num_frames=13))
    assert r6.datasets[0].probed == 0 and sorted(s.relpath for s in r6.samples) == ["c1.mp4", "c2.mp4"]


def test_cache_defaults_to_user_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    clip(tmp_path / "d", "a.mp4", fps=12, frames=9)
    r = scan_preset(preset_for(tmp_path / "d", num_frames=9))
    assert r.datasets[0].cache_path.startswith(str(tmp_path / "xdg" / "hvtui" / "scan"))
    assert Path(r.datasets[0].cache_path).is_file()
    assert not any(p.name.startswith(".hvtui") for p in (tmp_path / "d").iterdir())   # never in the data


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    """Root can read anything, so the permission error is simulated at open()."""
    clip(tmp_path / "d", "locked.mp4", fps=12, frames=9)
    real_open = open

    def fake_open(path, *a, **k):
        if str(path).endswith("locked.mp4"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr(probe_mod, "open", fake_open, raising=False)
    preset = preset_for(tmp_path / "d", cache=tmp_path / "cache", num_frames=9)
    r = scan_preset(preset)
    assert [str(d) for d in r.discarded["unreadable"]] == [
        "locked.mp4: cannot read: permission denied (fix: chmod a+r)"]
    monkeypatch.undo()
    r = scan_preset(preset)           # not cached: readable again -> kept
    assert [s.relpath for s in r.samples] == ["locked.mp4"]


def test_unreadable_file_chmod(tmp_path):
    p = clip(tmp_path / "d", "locked.mp4", fps=12, frames=9)
    p.chmod(0)
    try:
        if os.access(p, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reads (see the simulated test)")
        r = scan_preset(preset_for(tmp_path / "d", num_frames=9))
        assert [str(d) for d in r.discarded["unreadable"]] == [
            "locked.mp4: cannot read: permission denied (fix: chmod a+r)"]
    finally:
        p.chmod(0o644)


def test_process_pool_path(tmp_path):
    """Enough files to probe in the process pool; results match the in-process probe."""
    src = clip(tmp_path / "src", "proto.mp4", fps=12, frames=9)
    data = tmp_path / "d"
    data.mkdir()
    n = POOL_MIN + 6
    for i in range(n):
        shutil.copyfile(src, data / f"c{i:03d}.mp4")
        caption(data, f"c{i:03d}.mp4", f"clip {i}")
    (data / "c000.mp4").write_text("not a video")
    seen = []
    r = scan_preset(preset_for(data, num_frames=9), progress=lambda d, t, w: seen.append((d, t)))
    assert r.clips_kept == n - 1 and [str(d) for d in r.discards()] == [
        "c000.mp4: a text file with a video name, not a video"]
    assert seen and seen[-1] == (n, n)


def test_image_dataset(tmp_path):
    from PIL import Image

    Image.new("RGB", (96, 64), (200, 10, 10)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 96), (10, 10, 200)).save(tmp_path / "b.jpg")
    (tmp_path / "c.png").write_text("nope")
    for n in "abc":
        caption(tmp_path, f"{n}.png", f"image {n}")
    r = scan_preset(preset_for(tmp_path, dataset_type="image"))
    assert {b.key: [s.relpath for s in b.samples] for b in r.buckets} == {
        "112x64@1": ["a.png"], "64x112@1": ["b.jpg"]}
    assert r.samples[0].kind == "image" and r.samples[0].frame_indices == [0]
    assert [d.category for d in r.discards()] == ["not_image"]


def test_several_datasets_share_buckets(tmp_path):
    clip(tmp_path / "one", "a.mp4", fps=12, frames=9)
    clip(tmp_path / "two", "b.mp4", fps=12, frames=9)
    specs = [DatasetSpec(id=i, instance_data_dir=str(tmp_path / i), resolution=64, repeats=rep,
                         video=VideoSpec(num_frames=9)) for i, rep in (("one", 0), ("two", 3))]
    r = scan_preset(Preset(datasets=specs))
    assert [(b.key, b.samples_per_epoch, b.dataset_ids) for b in r.buckets] == [("80x80@9", 5, ["one", "two"])]
    assert [s.id for s in r.samples] == ["one/a.mp4", "two/b.mp4"]


def _pool_dataset(tmp_path, n):
    src = clip(tmp_path / "src", "proto.mp4", fps=12, frames=9)
    data = tmp_path / "d"
    data.mkdir()
    for i in range(n):
        shutil.copyfile(src, data / f"c{i:03d}.mp4")
        caption(data, f"c{i:03d}.mp4", f"clip {i}")
    return data


def test_process_pool_with_other_threads_running(tmp_path):
    """The TUI scans from a worker thread: the pool must then start cleanly (forkserver), not hang."""
    import threading

    data = _pool_dataset(tmp_path, POOL_MIN + 2)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        r = scan_preset(preset_for(data, num_frames=9))
    finally:
        stop.set()
        t.join()
    assert r.clips_kept == POOL_MIN + 2


def test_broken_pool_falls_back_to_in_process(tmp_path, monkeypatch):
    from hvtui.core.dataset import probe_pool as scan_mod

    data = _pool_dataset(tmp_path, POOL_MIN + 2)
    parent = os.getpid()
    real = scan_mod.probe_chunk

    def dies_in_worker(items):
        if os.getpid() != parent:
            os._exit(1)                   # a worker killed mid-scan (OOM killer, ...)
        return real(items)
    monkeypatch.setattr(scan_mod, "probe_chunk", dies_in_worker)
    r = scan_preset(preset_for(data, num_frames=9))
    assert r.clips_kept == POOL_MIN + 2 and r.clips_discarded == 0


def test_mixed_dataset_rescan_from_cache(mixed, mixed_report):
    preset = preset_for(mixed / "data", cache=mixed / "cache", num_frames=9, frame_rate=12, batch=2)
    again = scan_preset(preset)
    assert (again.datasets[0].probed, again.datasets[0].cached) == (0, mixed_report.datasets[0].probed)
    assert discard_lines(again) == discard_lines(mixed_report)
    assert [s.to_dict() for s in again.samples] == [s.to_dict() for s in mixed_report.samples]
    assert again.warnings == mixed_report.warnings


def test_damaged_cache_is_ignored(tmp_path):
    clip(tmp_path / "d", "a.mp4", fps=12, frames=9)
    preset = preset_for(tmp_path / "d", cache=tmp_path / "cache", num_frames=9)
    scan_preset(preset)
    cache_file = next((tmp_path / "cache").glob(".hvtui-scan-*.json"))
    from hvtui.core.dataset.scan_cache import CACHE_VERSION

    for damage in (json.dumps({"version": CACHE_VERSION, "entries": {"a.mp4": [1, 2]}, "captions": {}}), '{"vers', ""):
        cache_file.write_text(damage)
        r = scan_preset(preset)
        assert [s.relpath for s in r.samples] == ["a.mp4"] and r.datasets[0].probed == 1
