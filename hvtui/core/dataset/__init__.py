"""Dataset scan and bucket review.

    report = scan_preset(preset, progress=None, use_cache=True)   # -> DatasetReport (never raises for bad data)
    frames = read_sample_frames(sample)                           # -> numpy uint8 [F, H, W, 3]

Module map: scan.py (walk + orchestration), probe.py (headers; `open_video`, the one place files are opened),
display.py (pixel aspect + rotation -> the displayed shape, for buckets and decoding), captions.py, frames.py
(fps resampling and frame rules), buckets.py (bucket sizes), cache.py (metadata cache), model.py (report
types), report.py (text rendering), read.py (decoding). Each module's docstring states its rules. Nothing heavy is imported here:
PyAV, numpy and Pillow load inside the functions that use them.
"""
from hvtui.core.dataset.model import (CATEGORIES, Bucket, DatasetReport, DatasetSummary, Discard, FileNote,
                                      Sample)
from hvtui.core.dataset.read import SampleReadError, read_sample_frames
from hvtui.core.dataset.report import format_report
from hvtui.core.dataset.scan import scan_preset

__all__ = ["scan_preset", "read_sample_frames", "format_report", "DatasetReport", "DatasetSummary", "Bucket",
           "Sample", "Discard", "FileNote", "CATEGORIES", "SampleReadError"]
