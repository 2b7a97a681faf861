"""`hvtui --run PRESET [--resume auto|PATH] [--allow-changed]`: headless training (see hvtui.core.headless)."""
from __future__ import annotations

import sys

from hvtui.core import exitcodes


def main(args) -> int:
    gpus = getattr(args, "gpus", None)
    if gpus is not None and gpus > 1:
        print("error: --gpus N > 1 is not available yet in this version; run on one GPU (omit --gpus)",
              file=sys.stderr)
        return exitcodes.INVALID
    from hvtui.core.headless import run_headless

    return run_headless(args.run, resume=args.resume, allow_changed=args.allow_changed)
