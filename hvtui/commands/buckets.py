"""`hvtui buckets PRESET [--json] [--no-cache]`: scan the preset's datasets and print the bucket report.

The preset is checked first (`hvtui check`'s rules); errors stop here with exit 2. Exit 2 too when the scan
finds a fatal dataset problem (a missing folder) or nothing to train on; 0 otherwise. --json prints the whole
report (every sample with its frame indices, every discard) for scripts. Progress goes to stderr on a terminal.
"""
from __future__ import annotations

import json
import sys

from hvtui.core.run import exitcodes


def _load(path: str, as_json: bool):
    """-> (preset, None) or (None, exit code) after printing why."""
    from hvtui.core.preset.check import validate_file

    v = validate_file(path)
    if not v.ok or v.preset is None:
        if as_json:
            print(json.dumps({"ok": False, "validation": v.to_json()}, indent=2))
        else:
            from hvtui.commands.check import report
            report(v, out=sys.stderr)
        return None, exitcodes.INVALID
    return v.preset, None


def _progress_line():
    if not sys.stderr.isatty():
        return None
    width = 60

    def progress(done: int, total: int, what: str) -> None:
        line = f"scanning {done:,}/{total:,} {what}"
        sys.stderr.write("\r" + line[:width].ljust(width))
        if done >= total:
            sys.stderr.write("\r" + " " * width + "\r")
        sys.stderr.flush()
    return progress


def main(args) -> int:
    as_json = bool(getattr(args, "json", False))
    preset, code = _load(args.preset, as_json)
    if preset is None:
        return code
    from hvtui.core.dataset.bucket_report import format_bucket_report
    from hvtui.core.dataset.scan import scan_preset

    try:
        report = scan_preset(preset, progress=None if as_json else _progress_line(),
                             use_cache=not getattr(args, "no_cache", False))
    except KeyboardInterrupt:
        print("\nscan interrupted", file=sys.stderr)
        return exitcodes.SIGINT
    if as_json:
        print(report.json_text())
    else:
        print(format_bucket_report(report))
    return exitcodes.OK if report.ok else exitcodes.INVALID
