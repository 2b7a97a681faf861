"""The scan's result: samples grouped into buckets, every discarded file with its reason, and totals.

`Sample.frame_indices` are source frame numbers (0-based, in presentation order) to decode for one training
sample, already resampled to `fps_out`; `read_sample_frames(sample)` turns them into pixels. `Sample.repeats`
is the dataset's `repeats`: a sample is seen `1 + repeats` times per epoch (SimpleTuner's meaning: 0 = once).
A bucket holds one `Sample` per clip; `Bucket.samples_per_epoch` counts the repeats.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Discard categories: stable keys (JSON, TUI grouping) -> the heading a person reads.
CATEGORIES = {
    "too_short": "too few frames",
    "too_long": "too many frames",
    "single_frame": "single-frame videos",
    "aspect_ratio": "extreme aspect ratio",
    "no_caption": "missing or empty caption",
    "empty_file": "empty files",
    "unreadable": "unreadable files (permissions, I/O errors)",
    "not_video": "not a video",
    "unsupported": "codecs this FFmpeg cannot decode",
    "truncated": "truncated or damaged",
    "decode_failed": "failed to decode (found when caching)",
    "bad_header": "unusable header",
    "duplicate": "duplicates (same file twice)",
    "broken_link": "broken symlinks and symlink loops",
    "not_image": "not an image",
    "probe_error": "could not be probed (an error in hvtui or a library, not the file)",
}


def display(s: str) -> str:
    """A path string safe to print or put in JSON: undecodable bytes of a file name become U+FFFD."""
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass
class Sample:                      # scan._judge builds it positionally: keep the field order
    id: str                       # "<dataset_id>/<path relative to instance_data_dir>": stable across runs
    path: Path                    # absolute path of the file
    dataset_id: str
    captions: list[str]           # one is picked per step; several when the caption file has several lines
    width: int                    # bucket width (the sample is resized to cover it, then centre-cropped)
    height: int                   # bucket height
    frames: int                   # frames in this sample == len(frame_indices)
    fps_in: float                 # the file's frame rate
    fps_out: float                # the rate the frames are taken at (frame_rate, or fps_in if not resampled)
    frame_indices: list[int]      # source frame numbers to decode, in order (may skip frames when resampling)
    repeats: int = 0              # seen 1 + repeats times per epoch
    kind: str = "video"           # "video" or "image"
    rotation: int = 0             # display rotation, degrees counter-clockwise (0/90/180/270)
    source_width: int = 0         # display size of the file (after rotation)
    source_height: int = 0
    source_frames: int = 0        # frames in the file
    relpath: str = ""             # path relative to the dataset folder, for people
    sar: str = "1"                # pixel aspect ratio of the stored frames ("16/11"); see display.py
    by_time: bool = False         # variable frame rate: output frame k is the frame shown at k / fps_out seconds

    @property
    def bucket_key(self) -> str:
        return bucket_key(self.width, self.height, self.frames)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "path": display(str(self.path)), "relpath": self.relpath, "dataset_id": self.dataset_id,
            "captions": self.captions, "width": self.width, "height": self.height, "frames": self.frames,
            "fps_in": self.fps_in, "fps_out": self.fps_out, "frame_indices": self.frame_indices,
            "repeats": self.repeats, "kind": self.kind, "rotation": self.rotation,
            "source_width": self.source_width, "source_height": self.source_height,
            "source_frames": self.source_frames, "sar": self.sar, "by_time": self.by_time,
        }


def bucket_key(width: int, height: int, frames: int) -> str:
    return f"{width}x{height}@{frames}"


@dataclass
class Bucket:
    key: str                      # "848x480@61"
    width: int
    height: int
    frames: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def samples_per_epoch(self) -> int:
        return sum(1 + s.repeats for s in self.samples)

    @property
    def dataset_ids(self) -> list[str]:
        return sorted({s.dataset_id for s in self.samples})

    def to_dict(self, samples: bool = True) -> dict:
        d = {"key": self.key, "width": self.width, "height": self.height, "frames": self.frames,
             "clips": len(self.samples), "samples_per_epoch": self.samples_per_epoch,
             "datasets": self.dataset_ids}
        if samples:
            d["samples"] = [s.to_dict() for s in self.samples]
        return d


@dataclass
class Discard:
    dataset_id: str
    path: Path
    relpath: str
    category: str                 # a key of CATEGORIES
    message: str                  # the reason in words, with the numbers

    def __str__(self) -> str:
        return f"{self.relpath}: {self.message}"

    def to_dict(self) -> dict:
        return {"dataset_id": self.dataset_id, "path": display(str(self.path)), "relpath": self.relpath,
                "category": self.category, "message": self.message}


@dataclass
class FileNote:
    """Something true of one kept or discarded file that a person should know (e.g. how frames were counted)."""
    dataset_id: str
    relpath: str
    topic: str                    # "frame_count" (counted from packets), "fps" (slower than frame_rate),
                                  # "vfr" (variable frame rate: sampled by timestamp), "pixel_aspect", "folder"
    message: str

    def __str__(self) -> str:
        return f"{self.relpath}: {self.message}"

    def to_dict(self) -> dict:
        return {"dataset_id": self.dataset_id, "relpath": self.relpath, "topic": self.topic,
                "message": self.message}


@dataclass
class DatasetSummary:
    id: str
    kind: str                     # video | image
    root: str                     # instance_data_dir, resolved
    strategy: str                 # aspect_ratio | resolution_frames
    resolution: int
    num_frames: int | None
    frame_rate: float | None
    repeats: int
    caption_strategy: str
    min_frames: int | None = None
    max_frames: int | None = None
    frame_interval: int | None = None
    found: int = 0                # media files found
    kept: int = 0
    discarded: int = 0
    probed: int = 0               # read from disk this time
    cached: int = 0               # taken from the metadata cache
    ignored: dict[str, int] = field(default_factory=dict)   # other files by suffix
    cache_path: str | None = None

    @property
    def samples_per_epoch(self) -> int:
        return self.kept * (1 + self.repeats)

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "root": self.root, "strategy": self.strategy,
                "resolution": self.resolution, "num_frames": self.num_frames, "frame_rate": self.frame_rate,
                "min_frames": self.min_frames, "max_frames": self.max_frames,
                "frame_interval": self.frame_interval,
                "repeats": self.repeats, "caption_strategy": self.caption_strategy, "found": self.found,
                "kept": self.kept, "discarded": self.discarded, "samples_per_epoch": self.samples_per_epoch,
                "probed": self.probed, "cached": self.cached, "ignored": self.ignored,
                "cache_path": self.cache_path}


@dataclass
class DatasetReport:
    datasets: list[DatasetSummary] = field(default_factory=list)
    buckets: list[Bucket] = field(default_factory=list)
    discarded: dict[str, list[Discard]] = field(default_factory=dict)   # category -> files
    errors: list[str] = field(default_factory=list)      # fatal: the dataset cannot be used at all
    warnings: list[str] = field(default_factory=list)
    notes: list[FileNote] = field(default_factory=list)
    train_batch_size: int = 1
    elapsed_s: float = 0.0

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.buckets for s in b.samples]

    @property
    def samples_per_epoch(self) -> int:
        """Samples drawn per epoch: every kept clip 1 + repeats times."""
        return sum(b.samples_per_epoch for b in self.buckets)

    @property
    def clips_found(self) -> int:
        return sum(d.found for d in self.datasets)

    @property
    def clips_kept(self) -> int:
        return sum(len(b.samples) for b in self.buckets)

    @property
    def clips_discarded(self) -> int:
        return sum(len(v) for v in self.discarded.values())

    @property
    def ok(self) -> bool:
        """Usable for training: no fatal errors and at least one sample."""
        return not self.errors and self.samples_per_epoch > 0

    def bucket(self, key: str) -> Bucket | None:
        return next((b for b in self.buckets if b.key == key), None)

    def discards(self) -> list[Discard]:
        return [d for v in self.discarded.values() for d in v]

    def to_dict(self, samples: bool = True) -> dict:
        return {
            "ok": self.ok,
            "totals": {"clips_found": self.clips_found, "clips_kept": self.clips_kept,
                       "clips_discarded": self.clips_discarded, "samples_per_epoch": self.samples_per_epoch,
                       "buckets": len(self.buckets), "train_batch_size": self.train_batch_size,
                       "repeats_meaning": "samples per epoch = clips x (1 + repeats); repeats 0 = seen once"},
            "datasets": [d.to_dict() for d in self.datasets],
            "buckets": [b.to_dict(samples) for b in self.buckets],
            "discarded": {cat: {"title": CATEGORIES.get(cat, cat), "files": [d.to_dict() for d in v]}
                          for cat, v in self.discarded.items()},
            "errors": self.errors,
            "warnings": self.warnings,
            "notes": [n.to_dict() for n in self.notes],
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def to_json(self, samples: bool = True) -> dict:
        """JSON-ready dict (like Validation.to_json); `json_text()` gives the string."""
        return self.to_dict(samples)

    def json_text(self, samples: bool = True, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(samples), indent=indent, ensure_ascii=False)
