"""Dataset scan and bucket review.

    report = scan.scan_preset(preset, progress=None, use_cache=True)   # -> DatasetReport (never raises for bad data)
    frames = read.read_sample_frames(sample)                           # -> numpy uint8 [F, H, W, 3]

Module map: scan.py (orchestration: settings, verdicts, buckets), walk.py (finding the files), probe_pool.py
(probing them in worker processes), probe.py (headers; `open_video`, the one place files are opened), display.py
(pixel aspect + rotation -> the displayed shape, for buckets and decoding), captions.py, frames.py (fps
resampling and frame rules), buckets.py (bucket sizes), scan_cache.py (the scan's metadata cache), model.py
(report types), bucket_report.py (text rendering), read.py (decoding), synth.py (synthetic clips for the tests,
benchmarks and demo data). Each module's docstring states its rules. Nothing heavy is imported at module level:
PyAV, numpy and Pillow load inside the functions that use them.
"""
