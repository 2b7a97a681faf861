"""`hvtui check PRESET [--json]`: every problem at once; exit 2 on any error, 0 otherwise."""
from __future__ import annotations

import json
import sys

from hvtui.core.preset.check import validate_file
from hvtui.core.preset.problems import Validation
from hvtui.core.run import exitcodes


def report(v: Validation, out=None) -> None:
    """Print problems (errors first, then warnings) and a one-line verdict."""
    out = out or sys.stdout
    for title, problems in (("error", v.errors), ("warning", v.warnings)):
        if problems:
            print(f"{len(problems)} {title}{'s' if len(problems) != 1 else ''}:", file=out)
            for p in problems:
                print(f"  {p}", file=out)
    if v.ok:
        extra = f" ({len(v.warnings)} warning{'s' if len(v.warnings) != 1 else ''})" if v.warnings else ""
        print(f"OK: {v.file}{extra}", file=out)
    else:
        n = len(v.errors)
        what = "the error above is" if n == 1 else f"the {n} errors above are"
        print(f"{v.file}: not usable until {what} fixed", file=out)


def main(args) -> int:
    v = validate_file(args.preset)
    if getattr(args, "json", False):
        print(json.dumps(v.to_json(), indent=2))
    else:
        report(v)
    return exitcodes.OK if v.ok else exitcodes.INVALID
