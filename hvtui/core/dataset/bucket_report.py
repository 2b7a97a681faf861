"""The bucket report as plain text (`hvtui buckets`); the TUI builds its own view from the same DatasetReport.

Sections: datasets (what was scanned and with which rules), buckets (size, clips, samples per epoch with
repeats, example files), discarded files grouped by reason (every file, with its numbers), frame-count notes,
warnings, errors, totals. Long lists are cut at `limit` lines; `hvtui buckets --json` has everything.
"""
from __future__ import annotations

from hvtui.core.dataset.frames import fmt_fps
from hvtui.core.dataset.model import CATEGORIES, DatasetReport


def _listed(add, items, limit: int, indent: str, hint: str = "", more_indent: str | None = None) -> None:
    """The first `limit` items, one a line, then how many were left out."""
    for item in items[:limit]:
        add(f"{indent}{item}")
    if len(items) > limit:
        add(f"{indent if more_indent is None else more_indent}... and {len(items) - limit:,} more{hint}")

def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _rules(d) -> str:
    if d.kind == "image":
        return f"images, resolution {d.resolution}"
    parts = [d.strategy]
    if d.strategy == "aspect_ratio":
        parts.append(f"{d.num_frames} frames per sample")
    else:
        parts.append("frames per sample from each clip's length"
                     + (f" in steps of {d.frame_interval}" if d.frame_interval else "") + ", then 4n+1")
    if d.min_frames:
        parts.append(f"min_frames {d.min_frames}")
    if d.max_frames:
        parts.append(f"max_frames {d.max_frames}")
    parts.append(f"resolution {d.resolution}")
    if d.frame_rate:
        parts.append(f"resampled to {fmt_fps(d.frame_rate)} fps")
    return ", ".join(parts)


def format_bucket_report(report: DatasetReport, limit: int = 20, examples: int = 3) -> str:
    out: list[str] = []
    add = out.append
    if report.datasets:
        add("Datasets")
        for d in report.datasets:
            add(f"  {d.id}: {d.root or '(no folder)'}")
            add(f"    {_rules(d)}; captions: {d.caption_strategy}; repeats {d.repeats} "
                f"(each clip {'once' if d.repeats == 0 else f'{1 + d.repeats} times'} per epoch)")
            if d.found or d.kept:
                add(f"    {_plural(d.found, 'file')}: {d.kept:,} kept, {d.discarded:,} discarded; "
                    f"{d.probed:,} read, {d.cached:,} from the metadata cache")
            if d.ignored:
                add("    ignored: " + ", ".join(f"{n} {s}" for s, n in d.ignored.items()))
        add("")
    if report.buckets:
        rows = [("bucket", "clips", "samples/epoch", "examples")]
        for b in report.buckets:
            names = [s.relpath for s in b.samples[:examples]]
            more = len(b.samples) - len(names)
            rows.append((b.key, f"{len(b.samples):,}", f"{b.samples_per_epoch:,}",
                         ", ".join(names) + (f" (+{more:,} more)" if more else "")))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        w2 = max(len(r[2]) for r in rows)
        add("Buckets (W x H @ frames)")
        for r in rows:
            add(f"  {r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]:>{w2}}  {r[3]}")
        add(f"  {'total':<{w0}}  {report.clips_kept:>{w1},}  {report.samples_per_epoch:>{w2},}")
        add("  samples/epoch = clips x (1 + repeats); repeats 0 = each clip once per epoch")
        add("")
    if report.discarded:
        add(f"Discarded ({report.clips_discarded:,})")
        for cat, items in report.discarded.items():
            add(f"  {CATEGORIES.get(cat, cat)} ({len(items):,})")
            _listed(add, items, limit, "    ", " (hvtui buckets --json lists all)")
        add("")
    counted = [n for n in report.notes if n.topic == "frame_count"]
    if counted:
        add(f"Frame counts from packets, not the header ({len(counted):,})")
        _listed(add, counted, limit, "  ")
        add("")
    if report.warnings:
        add(f"Warnings ({len(report.warnings):,})")
        _listed(add, report.warnings, limit, "  ! ", " (hvtui buckets --json lists all)", more_indent="  ")
        add("")
    if report.errors:
        add("Errors")
        for e in report.errors:
            add(f"  x {e}")
        add("")
    add(f"Total: {_plural(report.clips_found, 'file')} found, {report.clips_kept:,} kept in "
        f"{_plural(len(report.buckets), 'bucket')}, {report.clips_discarded:,} discarded; "
        f"{report.samples_per_epoch:,} samples per epoch at batch size {report.train_batch_size} "
        f"({report.elapsed_s:.2f} s)")
    return "\n".join(out)
