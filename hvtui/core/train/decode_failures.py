"""Clips that cannot be decoded when they are cached: discarded with their reason, and the run goes on.

The scan reads headers only, so a clip whose header is intact but whose stream breaks mid-way (a real thing:
50 frames promised, undecodable from frame 28) is found when its frames are decoded for caching. That is bad
data, not a bug: the sample is dropped from the run, named with FFmpeg's reason in the log, in events.jsonl
(a "log" event at level "warning" whose `discarded` field holds sample_id, path, category, reason) and in the
dataset report (category "decode_failed"). Only a dataset left with no usable sample stops the run (exit 2,
naming the files).

A failure is recorded beside where the sample's latent entry would be (`<entry>.failed.json`), so
- every process of a data-parallel run drops the same samples once caching is over (`settle`);
- a later run does not decode the clip again while neither the file nor the decoder changed: the entry's name
  already holds the file's identity (path, size, mtime, frames, bucket), the record holds the decoder's
  (dataset.cache.verdict_identity); after an upgrade the clip is tried again.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hvtui.core.run import events

CATEGORY = "decode_failed"


def record_path(latent_path: Path) -> Path:
    return Path(latent_path).with_name(Path(latent_path).name + ".failed.json")


def _identity() -> str:
    from hvtui.core.dataset.scan_cache import verdict_identity

    return verdict_identity()


def record(latent_path: Path, sample, reason: str) -> None:
    """Write the failure record (atomically; a folder that cannot be written only loses the memo)."""
    path = record_path(latent_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"sample_id": sample.id, "path": str(sample.path), "reason": reason,
                       "decoder": _identity()}, f)
        os.replace(tmp, path)
    except OSError:
        pass


def known(latent_path: Path) -> str | None:
    """The reason an earlier run with this decoder could not decode the sample, or None."""
    try:
        data = json.loads(record_path(latent_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("decoder") != _identity():
        return None
    reason = data.get("reason")
    return reason if isinstance(reason, str) and reason else None


def discarded(sample, reason: str, earlier: bool = False) -> events.Event:
    """The event that names a dropped sample."""
    when = " (as in an earlier run with the same file and decoder)" if earlier else ""
    message = f"discarded {sample.id}: it cannot be decoded{when}: {reason}"
    return events.Event("log", {"level": "warning", "message": message,
                                "discarded": {"sample_id": sample.id, "path": str(sample.path),
                                              "category": CATEGORY, "reason": reason}})


def add_to_report(report, sample, reason: str) -> None:
    """File the sample under the report's discards and take it out of its bucket."""
    from hvtui.core.dataset.model import Discard

    if report is None or not hasattr(report, "discarded"):
        return
    items = report.discarded.setdefault(CATEGORY, [])
    if any(d.path == Path(sample.path) and d.dataset_id == sample.dataset_id for d in items):
        return
    items.append(Discard(sample.dataset_id, Path(sample.path), getattr(sample, "relpath", "") or str(sample.path),
                         CATEGORY, reason))
    for b in getattr(report, "buckets", ()):
        b.samples = [s for s in b.samples if s.id != sample.id]


def settle(index, samples: dict, report=None, publish=None) -> list[str]:
    """After every process finished caching: drop the entries whose clip failed to decode in another process
    (their latent file is missing and a failure record sits beside it). Returns the reasons of those dropped."""
    dropped, keep = [], []
    for e in index.entries:
        if not Path(e.latent_path).is_file():
            reason = known(e.latent_path)
            if reason is not None:
                s = samples.get(e.sample_id)
                if s is not None:
                    add_to_report(report, s, reason)
                    if publish is not None:
                        publish(discarded(s, reason))
                index.failed[e.sample_id] = reason
                dropped.append(f"{e.sample_id}: {reason}")
                continue
        keep.append(e)
    index.entries = keep
    return dropped


def describe(failed: dict[str, str], limit: int = 5) -> str:
    """'a.mp4 (reason); b.mp4 (reason) and N more' for an error message."""
    items = [f"{sid} ({reason})" for sid, reason in list(failed.items())[:limit]]
    more = len(failed) - limit
    return "; ".join(items) + (f" and {more} more" if more > 0 else "")
