"""`hvtui --run PRESET [--resume auto|PATH] [--allow-changed] [--fresh] [--gpus N]`: headless training
(see hvtui.core.run.headless). `--gpus N` (N > 1) relaunches through torchrun (hvtui.core.train.multi_gpu); a
process that torchrun / `accelerate launch` started is one worker of such a run."""
from __future__ import annotations

import sys

from hvtui.core.run import exitcodes


def main(args) -> int:
    from hvtui.core.run.session import RunOptions
    from hvtui.core.train.multi_gpu import dist_env, gpus_problem  # no torch here

    gpus = getattr(args, "gpus", None)
    env = dist_env()
    if args.fresh and args.resume:
        print("error: --fresh starts over and --resume continues: give one of them", file=sys.stderr)
        return exitcodes.INVALID
    options = RunOptions(resume=args.resume, allow_changed=args.allow_changed, fresh=args.fresh)
    if gpus is not None and not env.distributed:
        if gpus > 1:
            from hvtui.core.train.multi_gpu import launch

            return launch(args.run, gpus, options)
        problem = gpus_problem(gpus, 0)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return exitcodes.INVALID
    if env.distributed and gpus is not None and gpus != env.world_size and env.is_main:
        print(f"warning: --gpus {gpus} ignored: this process is one of {env.world_size} started by a launcher "
              "(torchrun / accelerate launch decides the count)", file=sys.stderr)
    from hvtui.core.run.headless import run_headless

    return run_headless(args.run, options, dist=env)
