"""Decode failures found while caching: recorded beside the entry, agreed by every process, retried after a
decoder change."""

from hvtui.core.dataset.scan import scan_preset
from hvtui.core.train import decode_failures as D
from hvtui.core.train.latent_cache import CacheEntry, CacheIndex
from tests.helpers.dataset_builders import clip, preset_for


def _index(tmp_path, report):
    entries = []
    for s in report.samples:
        latent = tmp_path / "latents" / f"{s.relpath}.safetensors"
        entries.append(CacheEntry(s.id, s.bucket_key, latent, [], list(s.captions)))
    return CacheIndex(entries, tmp_path / "text")


def test_settle_drops_what_another_process_could_not_decode(tmp_path, monkeypatch):
    for name in ("a.mp4", "b.mp4"):
        clip(tmp_path / "d", name, fps=12, frames=9)
    report = scan_preset(preset_for(tmp_path / "d", num_frames=9))
    index = _index(tmp_path, report)
    a, b = index.entries
    a.latent_path.parent.mkdir(parents=True)
    a.latent_path.write_bytes(b"written by this process")
    sample_b = next(s for s in report.samples if s.id == b.sample_id)
    D.record(b.latent_path, sample_b, "d/b.mp4: decoding failed at frame 5 (Invalid data)")  # by another rank
    published = []
    dropped = D.settle(index, {s.id: s for s in report.samples}, report, published.append)
    assert dropped == ["clips/b.mp4: d/b.mp4: decoding failed at frame 5 (Invalid data)"]
    assert [e.sample_id for e in index.entries] == ["clips/a.mp4"]
    assert index.failed == {"clips/b.mp4": "d/b.mp4: decoding failed at frame 5 (Invalid data)"}
    assert [d.relpath for d in report.discarded["decode_failed"]] == ["b.mp4"]
    assert all(s.id != "clips/b.mp4" for s in report.samples)                 # out of its bucket too
    assert published[0].kind == "log" and published[0].get("discarded")["category"] == "decode_failed"
    # the record is trusted only under the decoder that wrote it
    assert D.known(b.latent_path) is not None
    monkeypatch.setattr("hvtui.core.dataset.scan_cache.pyav_version", lambda: "another")
    assert D.known(b.latent_path) is None
    assert D.describe({f"s{i}": "r" for i in range(7)}, limit=2) == "s0 (r); s1 (r) and 5 more"
