"""`python -m hvtui.core.train.torchrun TORCHRUN-ARGS`: torch.distributed.run (torchrun) itself, as
`hvtui --run PRESET --gpus N` starts it, with a short report instead of torchrun's error dump.

hvtui's workers end with hvtui's exit codes on purpose (143 after a SIGTERM stop and save, 4 for a failed
run, ...) and print their own errors; torchrun would call each of those a failure with a page of
traceback. Here its loggers are quiet, and only an exit code hvtui does not define is reported.
The exit code is rank 0's (the launcher prefers the one rank 0 wrote into events.jsonl).
"""
from __future__ import annotations

import logging
import sys

from hvtui.core.run import exitcodes

KNOWN = {exitcodes.OK, exitcodes.UNEXPECTED, exitcodes.INVALID, exitcodes.DOCTOR_FAILED, exitcodes.TRAINING_FAILED,
         exitcodes.RESUME_MISMATCH, exitcodes.WRITE_FAILED, exitcodes.SIGHUP, exitcodes.SIGINT, exitcodes.SIGTERM}


def _shell_code(code: int) -> int:
    return 128 - code if code < 0 else code   # Popen's -N (killed by signal N) as a shell shows it


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        codes = {int(rank): _shell_code(int(f.exitcode)) for rank, f in e.failures.items()}
        for rank, code in sorted(codes.items()):
            if code not in KNOWN:
                print(f"hvtui: worker rank {rank} ended with exit code {code}"
                      + (f" (killed by signal {code - 128})" if code > 128 else ""), file=sys.stderr, flush=True)
        return codes.get(0, max(codes.values()))
    except SignalException as e:
        return 128 + int(e.sigval)
    return exitcodes.OK


if __name__ == "__main__":
    raise SystemExit(main())
