"""Scan a preset's datasets: find files, probe them (cached), apply captions, frame rules and buckets.

Walk (walk.py): each dataset's `instance_data_dir`, recursively, in sorted order; see walk.py for what is
kept, skipped and discarded. Nothing a file contains stops the scan.
A dataset whose folder is missing or unreadable, or whose settings can't work (num_frames not 4n+1), is an
error in `report.errors`; the other datasets are still scanned.

Probing (probe_pool.py) runs in a process pool when enough files need it. Results are cached (scan_cache.py).
Captions and rules run in this process on every scan. Bucket keys are `WxH@F` for both strategies; buckets are
shared across datasets.

Samples per epoch = clips x (1 + repeats): `repeats` counts extra passes (SimpleTuner's meaning; 0 = once).
"""
from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from hvtui.core.dataset import captions as cap
from hvtui.core.dataset.buckets import aspect_problem, bucket_size, scale_to_cover
from hvtui.core.dataset.frames import FramePlan, fmt_fps, is_4n1, plan_frames, plan_rate
from hvtui.core.dataset.model import (
    CATEGORIES,
    Bucket,
    DatasetReport,
    DatasetSummary,
    Discard,
    FileNote,
    Sample,
    display,
)
from hvtui.core.dataset.probe import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from hvtui.core.dataset.probe_pool import Progress, probe_files
from hvtui.core.dataset.scan_cache import ScanCache, cache_path
from hvtui.core.dataset.walk import Found, Walk, walk

if TYPE_CHECKING:
    from hvtui.core.preset.schema import DatasetSpec

# --- per dataset ----------------------------------------------------------------------------------------------

@dataclass
class _Job:
    spec: DatasetSpec
    summary: DatasetSummary
    root: Path
    walk: Walk
    cache: ScanCache
    settings: dict
    metadata: cap.MetadataCaptions | None = None
    instance_captions: list[str] = field(default_factory=list)


def _int_or_none(v, name: str, errors: list[str], prefix: str, minimum: int = 1):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < minimum:
        errors.append(f"{prefix}: {name} = {v!r} must be a whole number >= {minimum}")
        return None
    return int(v)


def _settings(spec, prefix: str, errors: list[str]) -> dict:
    v = spec.video
    s = {
        "strategy": v.bucket_strategy,
        "num_frames": _int_or_none(v.num_frames, "video.num_frames", errors, prefix),
        "min_frames": _int_or_none(v.min_frames, "video.min_frames", errors, prefix),
        "max_frames": _int_or_none(v.max_frames, "video.max_frames", errors, prefix),
        "frame_interval": _int_or_none(v.frame_interval, "video.frame_interval", errors, prefix),
        "resolution": _int_or_none(spec.resolution, "resolution", errors, prefix, minimum=16),
        "repeats": _int_or_none(spec.repeats, "repeats", errors, prefix, minimum=0) or 0,
        "frame_rate": None,
    }
    if v.frame_rate is not None:
        if isinstance(v.frame_rate, bool) or not isinstance(v.frame_rate, (int, float)) or v.frame_rate <= 0:
            errors.append(f"{prefix}: video.frame_rate = {v.frame_rate!r} must be a number > 0")
        else:
            s["frame_rate"] = v.frame_rate
    if spec.dataset_type == "video":
        if s["strategy"] not in ("aspect_ratio", "resolution_frames"):
            errors.append(f"{prefix}: video.bucket_strategy = {s['strategy']!r}; use \"aspect_ratio\" or "
                          f"\"resolution_frames\"")
        if s["strategy"] == "aspect_ratio" and s["num_frames"] is not None and not is_4n1(s["num_frames"]):
            n = s["num_frames"]
            lo = ((n - 1) // 4) * 4 + 1
            errors.append(f"{prefix}: video.num_frames = {n} is not 4n+1 (the VAE packs 4 frames per latent "
                          f"frame after the first); use {lo} or {lo + 4}")
        if s["strategy"] == "aspect_ratio" and s["num_frames"] is None and v.num_frames is None:
            errors.append(f"{prefix}: video.num_frames is not set")
    if spec.caption_strategy not in ("textfile", "filename", "instanceprompt", "metadata"):
        errors.append(f"{prefix}: caption_strategy = {spec.caption_strategy!r}; use textfile, filename, "
                      f"instanceprompt or metadata")
    if spec.caption_strategy == "instanceprompt" and not (spec.instance_prompt or "").strip():
        errors.append(f"{prefix}: caption_strategy = \"instanceprompt\" needs instance_prompt = \"...\"")
    return s


def _prepare(preset, spec, index: int, report: DatasetReport, use_cache: bool) -> _Job | None:
    ds_id = spec.id or f"dataset{index}"
    prefix = f"dataset {ds_id!r}"
    errors: list[str] = []
    settings = _settings(spec, prefix, errors)
    root = preset.resolve_path(spec.instance_data_dir) if spec.instance_data_dir else None
    summary = DatasetSummary(
        id=ds_id, kind=spec.dataset_type, root=str(root) if root else "", strategy=settings["strategy"],
        resolution=settings["resolution"] or 0,
        num_frames=settings["num_frames"] if spec.dataset_type == "video" else 1,
        frame_rate=settings["frame_rate"], repeats=settings["repeats"], caption_strategy=spec.caption_strategy,
        min_frames=settings["min_frames"], max_frames=settings["max_frames"],
        frame_interval=settings["frame_interval"])
    report.datasets.append(summary)
    if root is None:
        errors.append(f"{prefix}: instance_data_dir is not set; point it at the folder of clips")
    else:
        try:
            exists, is_dir = root.exists(), root.is_dir()
            readable = not is_dir or os.access(root, os.R_OK | os.X_OK)
        except OSError as e:
            exists, is_dir, readable = True, True, False
            errors.append(f"{prefix}: instance_data_dir {root} cannot be read: {e.strerror}")
        if not exists:
            where = f" (relative paths are relative to the preset: {preset.source.parent})" if preset.source else ""
            errors.append(f"{prefix}: instance_data_dir {spec.instance_data_dir!r} does not exist: {root}{where}")
        elif not is_dir:
            errors.append(f"{prefix}: instance_data_dir {root} is a file, not a folder")
        elif not readable and not errors:
            errors.append(f"{prefix}: instance_data_dir {root} cannot be read: permission denied")
    metadata = None
    if not errors and root is not None and spec.caption_strategy == "metadata":
        if not spec.metadata_file:
            errors.append(f"{prefix}: caption_strategy = \"metadata\" needs metadata_file = \"captions.jsonl\"")
        else:
            mpath = cap.resolve_metadata_path(spec.metadata_file, preset, root)
            if mpath is None:
                errors.append(f"{prefix}: metadata_file {spec.metadata_file!r} not found (looked next to the "
                              f"preset and in {root})")
            else:
                try:
                    metadata = cap.load_metadata(mpath, root)
                except OSError as e:
                    errors.append(f"{prefix}: metadata_file {mpath} cannot be read: {e.strerror}")
    if errors:
        report.errors += errors
        return None
    assert root is not None     # a dataset without instance_data_dir has an error above
    w = walk(root, spec.dataset_type)
    cdir = preset.resolve_path(spec.cache_dir) if spec.cache_dir else None
    cpath = cache_path(root, cdir, spec.dataset_type)
    summary.cache_path = str(cpath)
    cache = ScanCache.load(cpath) if use_cache else ScanCache(cpath)
    summary.ignored = dict(sorted(w.ignored.items()))
    job = _Job(spec, summary, root, w, cache, settings, metadata)
    if spec.caption_strategy == "instanceprompt":
        job.instance_captions, warnings = cap.clean_captions([spec.instance_prompt], "instance_prompt")
        report.warnings += [f"{prefix}: {x}" for x in warnings]
    return job


def _captions_for(job: _Job, f: Found) -> tuple[list[str], str | None, list[str]]:
    """(captions, problem, warnings) for one file."""
    spec = job.spec
    strategy = spec.caption_strategy
    if strategy == "textfile":
        txt = job.walk.caption_file(f.relpath.rpartition("/")[0], f.stem)
        if txt is None:
            return [], f"no caption: {display(f.stem)}.txt is missing next to it", []
        e = job.cache.captions.get(txt.relpath)
        if e is not None and e[0] == txt.size and e[1] == txt.mtime_ns:
            caps, warnings, problem = e[2]
        else:
            c = cap.read_caption_file(Path(txt.path), txt.size)
            caps, warnings, problem = c.captions, c.warnings, c.problem
            if not problem or "empty" in problem:     # not permission problems: they change without the file
                job.cache.put_caption(txt.relpath, txt.size, txt.mtime_ns, [caps, warnings, problem])
        if warnings:
            warnings = [f"{display(txt.relpath)}: {w}" for w in warnings]
        return caps, problem, warnings
    if strategy == "instanceprompt":
        return job.instance_captions, None, []
    if strategy == "filename":
        c = cap.caption_from_filename(Path(f.relpath))
        return c.captions, c.problem, []
    caps = job.metadata.lookup(f.relpath) if job.metadata else None
    source = job.metadata.source if job.metadata else "metadata"
    if caps is None:
        return [], f"not listed in {source}", []
    if not caps:
        return [], f"its caption in {source} is empty", []
    return caps, None, []


class _Rules:
    """Per-dataset memo of the pure rule functions: clips share a few fps / length / size combinations."""

    def __init__(self, settings: dict):
        self.s = settings
        self.repeats = settings["repeats"]
        self.rates: dict[str, tuple] = {}
        self.plans: dict[tuple, FramePlan] = {}
        self.sizes: dict[tuple[int, int], tuple] = {}

    def rate(self, fps: str):
        r = self.rates.get(fps)
        if r is None:
            fps_in = Fraction(fps)
            rate = plan_rate(fps_in, self.s["frame_rate"])
            r = self.rates[fps] = (fps_in, rate, float(fps_in), float(rate.fps_out))
        return r

    def plan(self, frames: int, fps: str):
        key = (frames, fps)
        p = self.plans.get(key)
        if p is None:
            s = self.s
            p = self.plans[key] = plan_frames(frames, self.rate(fps)[1], s["strategy"], s["num_frames"] or 1,
                                              s["min_frames"], s["max_frames"], s["frame_interval"])
        return p

    def size(self, w: int, h: int):
        key = (w, h)
        r = self.sizes.get(key)
        if r is None:
            problem = aspect_problem(w, h)
            bw, bh = (0, 0) if problem else bucket_size(w, h, self.s["resolution"])
            r = self.sizes[key] = (problem, bw, bh, 0.0 if problem else scale_to_cover(w, h, bw, bh))
        return r


def _child(f: Found) -> Path:
    """Path of a found file. Building 10,000 Paths from strings is a fifth of a cached rescan, so they are
    made from the folder's Path with pathlib's cheap child constructor where this Python has it."""
    if f.folder is None:
        return Path(f.path)
    name = f.relpath.rpartition("/")[2]
    make = getattr(f.folder, "_make_child_relpath", None)
    return make(name) if make is not None else f.folder / name


def _judge(job: _Job, rules: _Rules, f: Found, report: DatasetReport, notes: list[FileNote], slow: list,
           upscaled: list):
    """-> Sample or Discard for one probed file. Runs once per file on every scan: kept lean."""
    ds_id = job.summary.id
    rel = f.relpath if f.relpath.isascii() else display(f.relpath)
    p = f.probe or {}
    if not p.get("ok"):
        return Discard(ds_id, Path(f.path), rel, p.get("category", "not_video"),
                       p.get("message", "could not be read"))
    w, h = p["width"], p["height"]
    problem, bw, bh, scale = rules.sizes.get((w, h)) or rules.size(w, h)
    if problem:
        return Discard(ds_id, Path(f.path), rel, "aspect_ratio", problem)
    packets = p.get("count") == "packets"
    indices: tuple[int, ...]
    if f.kind == "image":
        fps_in, fps_in_f, fps_out_f = Fraction(0), 0.0, 0.0
        frames, indices, slower = 1, (0,), False
    else:
        fps = p["fps"]
        fps_in, rate, fps_in_f, fps_out_f = rules.rates.get(fps) or rules.rate(fps)
        plan = rules.plans.get((p["frames"], fps)) or rules.plan(p["frames"], fps)
        if plan.category:
            reason = plan.reason
            if packets:
                reason += " (frames counted from packets: the header had no reliable count)"
            return Discard(ds_id, Path(f.path), rel, plan.category, reason)
        frames, indices, slower = plan.frames, plan.indices, rate.slower
    captions, problem, warnings = _captions_for(job, f)
    if warnings:
        report.warnings += warnings
    if problem:
        return Discard(ds_id, Path(f.path), rel, "no_caption", problem)
    if packets:
        notes.append(FileNote(ds_id, rel, "frame_count", p.get("count_note") or "frames counted from packets"))
    if slower:
        slow.append((rel, fps_in))
        notes.append(FileNote(ds_id, rel, "fps", f"{fmt_fps(fps_in)} fps is below frame_rate "
                                                 f"{fmt_fps(job.settings['frame_rate'])}: used at its own rate "
                                                 f"(frames are never duplicated)"))
    if scale > 1.0:
        upscaled.append((scale, rel, w, h, bw, bh))
    sar = p.get("sar") or "1"
    if sar != "1":
        cw, ch = p.get("coded") or (w, h)
        notes.append(FileNote(ds_id, rel, "pixel_aspect", f"non-square pixels (pixel aspect {sar.replace('/', ':')}):"
                                                          f" stored {cw}x{ch}, shown {w}x{h}; bucketed and resized "
                                                          f"as shown"))
    vfr = p.get("vfr")
    if vfr:
        notes.append(FileNote(ds_id, rel, "vfr", f"variable frame rate ({fmt_fps(vfr[0])}-{fmt_fps(vfr[1])} fps, "
                                                 f"average {fmt_fps(fps_in)}): frames are taken by timestamp at "
                                                 f"{fmt_fps(fps_out_f)} fps"))
    return Sample(f"{ds_id}/{rel}", _child(f), ds_id, captions, bw, bh, frames, fps_in_f, fps_out_f,
                  list(indices), rules.repeats, f.kind, p.get("rotation", 0), w, h, p["frames"], rel, sar,
                  bool(vfr))


def _finish_dataset(job: _Job, report: DatasetReport, buckets: dict[str, Bucket]) -> None:
    ds = job.summary
    rules = _Rules(job.settings)
    notes: list[FileNote] = []
    slow: list = []
    upscaled: list = []
    for path, rel, category, msg in job.walk.discards:
        report.discarded.setdefault(category, []).append(Discard(ds.id, Path(path), display(rel), category, msg))
        ds.discarded += 1
    report.warnings += job.walk.warnings
    for f in job.walk.files:
        result = _judge(job, rules, f, report, notes, slow, upscaled)
        if isinstance(result, Discard):
            report.discarded.setdefault(result.category, []).append(result)
            ds.discarded += 1
            continue
        ds.kept += 1
        key = f"{result.width}x{result.height}@{result.frames}"     # == result.bucket_key
        b = buckets.get(key)
        if b is None:
            b = buckets[key] = Bucket(key, result.width, result.height, result.frames)
        b.samples.append(result)
    report.notes += notes
    media = "image" if ds.kind == "image" else "video"
    if not job.walk.files and not job.walk.discards:
        kinds = " ".join(sorted(IMAGE_SUFFIXES if ds.kind == "image" else VIDEO_SUFFIXES))
        report.warnings.append(f"dataset {ds.id!r}: no {media} files ({kinds}) in {job.root}")
    if slow:
        ex = ", ".join(f"{r} ({fmt_fps(x)} fps)" for r, x in slow[:3])
        report.warnings.append(
            f"dataset {ds.id!r}: {len(slow)} clip{'s are' if len(slow) != 1 else ' is'} slower than frame_rate "
            f"{fmt_fps(job.settings['frame_rate'])} and used at {'their' if len(slow) != 1 else 'its'} own rate, "
            f"so motion looks faster in training: {ex}{' ...' if len(slow) > 3 else ''}")
    if upscaled:
        upscaled.sort(reverse=True)
        scale, rel, w, h, bw, bh = upscaled[0]
        report.warnings.append(
            f"dataset {ds.id!r}: {len(upscaled)} {media}{'s are' if len(upscaled) != 1 else ' is'} smaller than "
            f"{'their buckets' if len(upscaled) != 1 else 'its bucket'} and upscaled (most: {rel} {w}x{h} -> "
            f"{bw}x{bh}, x{scale:.2f}); a lower resolution avoids blur")


def scan_preset(preset, progress: Progress | None = None, use_cache: bool = True) -> DatasetReport:
    """Scan every enabled video/image dataset of `preset`. Never raises for bad data: see the report.

    `progress(done, total, what)` is called while files are probed. `use_cache=False` ignores the metadata
    cache (it is rewritten with fresh results).
    """
    # The scan makes tens of thousands of small objects that all live until it returns; the cyclic GC would
    # re-traverse them over and over (a fifth of a 10,000-clip rescan). Nothing here makes cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _scan(preset, progress, use_cache)
    finally:
        if gc_was_enabled:
            gc.enable()


def _scan(preset, progress: Progress | None, use_cache: bool) -> DatasetReport:
    t0 = time.perf_counter()
    report = DatasetReport(train_batch_size=int(getattr(preset, "train_batch_size", 1) or 1))
    specs = [d for d in preset.datasets if not d.disabled and d.dataset_type in ("video", "image")]
    if not specs:
        report.errors.append("the preset has no enabled video or image dataset: add a [[datasets]] table with "
                             "dataset_type = \"video\" and instance_data_dir = \"path/to/clips\"")
    jobs = [j for i, spec in enumerate(specs) if (j := _prepare(preset, spec, i, report, use_cache))]
    # Cache hits first, then probe the rest of every dataset in one pool.
    todo: list[Found] = []
    total = sum(len(j.walk.files) for j in jobs)
    done = 0
    for j in jobs:
        j.summary.found = len(j.walk.files) + len(j.walk.discards)
        entries = j.cache.entries if use_cache else {}
        for f in j.walk.files:
            e = entries.get(f.relpath)
            if e is not None and e[0] == f.size and e[1] == f.mtime_ns and e[2] == f.inode:
                f.probe, f.cached = e[3], True
                done += 1
            else:
                todo.append(f)
        j.summary.cached = len(j.walk.files) - sum(1 for f in j.walk.files if not f.cached)
        j.summary.probed = len(j.walk.files) - j.summary.cached
    if progress and total:
        progress(done, total, "metadata cache")
    if todo:
        probe_files(todo, progress, done, total)
    buckets: dict[str, Bucket] = {}
    for j in jobs:
        for f in j.walk.files:
            if not f.cached:
                assert f.probe is not None      # probe_files probed every file the cache did not have
                j.cache.put(f.relpath, f.size, f.mtime_ns, f.inode, f.probe)
        _finish_dataset(j, report, buckets)
        j.cache.prune({f.relpath for f in j.walk.files}, {t.relpath for t in j.walk.texts.values()})
        warning = j.cache.save()
        if warning:
            report.warnings.append(f"dataset {j.summary.id!r}: {warning}")
    for b in buckets.values():
        b.samples.sort(key=lambda s: s.id)
    report.buckets = sorted(buckets.values(), key=lambda b: (b.frames, b.width * b.height, b.width))
    report.discarded = {c: sorted(report.discarded[c], key=lambda d: (d.dataset_id, d.relpath))
                        for c in list(CATEGORIES) + sorted(set(report.discarded) - set(CATEGORIES))
                        if c in report.discarded}
    bs = report.train_batch_size
    for b in report.buckets:
        n = b.samples_per_epoch
        if n < bs:
            report.warnings.append(f"bucket {b.key} has {n} sample{'s' if n != 1 else ''} per epoch, fewer than "
                                   f"train_batch_size {bs}: it can never fill a batch (add clips, raise repeats "
                                   f"or lower train_batch_size)")
    if not report.errors and not report.buckets:
        report.warnings.append("no buckets: nothing to train on" + (
            f" (all {report.clips_discarded} files were discarded; see the reasons)" if report.clips_discarded
            else " (no files were found)"))
    for j in jobs:
        if j.metadata:
            report.warnings += [f"dataset {j.summary.id!r}: {w}" for w in j.metadata.warnings]
            listed = set(j.metadata.by_relpath)
            present = {f.relpath for f in j.walk.files}
            names = {r.rsplit("/", 1)[-1] for r in present}
            missing = sorted(r for r in listed - present if r.rsplit("/", 1)[-1] not in names)
            if missing:
                report.warnings.append(f"dataset {j.summary.id!r}: {len(missing)} file(s) in "
                                       f"{j.metadata.source} not found in the folder: "
                                       f"{', '.join(map(display, missing[:5]))}{' ...' if len(missing) > 5 else ''}")
    report.elapsed_s = time.perf_counter() - t0
    return report
