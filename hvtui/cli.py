"""Entry point: `hvtui` (the TUI), `hvtui --run PRESET` (headless),
`hvtui check|buckets|doctor|import-simpletuner|export`.

Only argparse and the standard library load here; each branch imports what it needs, so `--help` and
`check` never pay for torch/diffusers, and the TUI paints before the ML stack loads.
"""
from __future__ import annotations

import argparse
import os
import sys

from hvtui import __version__

EPILOG = """exit codes: 0 ok, 1 unexpected error (a bug), 2 invalid preset, dataset or folder, another live run in
output_dir, an earlier run there (--resume auto or --fresh) or a damaged checkpoint, 3 doctor check failed,
4 training failed (repeated OOM / non-finite loss), 5 resume would change the run (--allow-changed) or cannot
fit it, 6 a write failed (disk full, read-only...: the last good checkpoint is kept), 129/130/143 stopped by
SIGHUP/SIGINT/SIGTERM after saving, 141 output pipe closed (`hvtui doctor P | head -1`)."""


USAGE = """hvtui [PRESET] [--presets DIR]       the TUI
       hvtui --run PRESET [--resume auto|PATH] [--fresh] [--allow-changed] [--gpus N]   headless training
       hvtui --attach OUTPUT_DIR           the Train pane on a headless run
       hvtui COMMAND ...                   (hvtui COMMAND --help shows its options)"""

# Flags that only mean something to a headless run: given without --run they are an error (exit 2), never
# silently dropped (the TUI would open, or hang without a terminal).
RUN_ONLY_FLAGS = (("resume", "--resume"), ("fresh", "--fresh"), ("allow_changed", "--allow-changed"),
                  ("gpus", "--gpus"))


def commands_help() -> str:
    """One line per subcommand, read from the subcommand parser itself (one place: a new command appears
    in `hvtui --help` by being added there)."""
    group = build_subparsers()._subparsers
    assert group is not None     # build_subparsers adds the subcommands
    rows = [(a.dest, a.help or "") for action in group._group_actions
            if isinstance(action, argparse._SubParsersAction) for a in action._choices_actions]
    width = max(len(name) for name, _ in rows) + 2
    return "commands:\n" + "\n".join(f"  {name:<{width}}{text}" for name, text in rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hvtui", usage=USAGE, description="Train HunyuanVideo 1.5 LoRAs from the "
                                "terminal.\n\n" + commands_help(),
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"hvtui {__version__}")
    p.add_argument("--run", metavar="PRESET", help="train headless with this preset (no UI)")
    p.add_argument("--resume", metavar="auto|PATH", help="with --run: continue from a checkpoint")
    p.add_argument("--allow-changed", action="store_true",
                   help="with --run --resume: accept changed batch size / buckets / LR")
    p.add_argument("--fresh", action="store_true",
                   help="with --run: start over where output_dir holds an earlier run "
                        "(moved to output_dir/previous-TIME/)")
    p.add_argument("--gpus", type=int, default=None, metavar="N", help="with --run: data-parallel over N GPUs")
    p.add_argument("--attach", metavar="OUTPUT_DIR", help="open the Train pane on a headless run's output dir "
                   "(waits for a run that is starting)")
    p.add_argument("--presets", metavar="DIR", default=None, help="TUI: folder of presets (default: ./presets)")
    p.add_argument("preset", nargs="?", help="TUI: preset to open first")
    return p


def run_only_problem(args, argv: list[str]) -> str | None:
    """Why these arguments cannot go together, or None."""
    if args.run:
        if args.attach:
            return "--attach follows a run another process owns; give --run or --attach, not both"
        return None
    given = [flag for attr, flag in RUN_ONLY_FLAGS if getattr(args, attr) not in (None, False)]
    if not given:
        return None
    rest = [a for a in argv if a != args.preset]
    return (f"{' and '.join(given)} only work{'s' * (len(given) == 1)} with --run PRESET (headless training): "
            f"hvtui --run {args.preset or 'PRESET'} {' '.join(rest)}")


def build_subparsers() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hvtui")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate a preset; exit 2 on errors")
    c.add_argument("preset")
    c.add_argument("--json", action="store_true")
    b = sub.add_parser("buckets", help="scan the preset's datasets and print the bucket report")
    b.add_argument("preset")
    b.add_argument("--json", action="store_true")
    b.add_argument("--no-cache", action="store_true", help="ignore the metadata cache")
    d = sub.add_parser("doctor", help="check environment, model assets and memory fit; exit 3 on failure")
    d.add_argument("preset")
    d.add_argument("--json", action="store_true")
    d.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="the fit of a data-parallel run over N GPUs of this machine")
    i = sub.add_parser("import-simpletuner", help="convert a SimpleTuner config.json into a preset")
    i.add_argument("config")
    i.add_argument("databackend", nargs="?")
    i.add_argument("-o", "--output", required=True)
    e = sub.add_parser("export", help="convert a LoRA file to ComfyUI, diffusers or Tencent's key names")
    e.add_argument("lora", help="a .safetensors LoRA, or a folder holding pytorch_lora_weights.safetensors")
    e.add_argument("--to", choices=("comfyui", "diffusers", "tencent"), default="comfyui")
    e.add_argument("-o", "--output", help="output file (default: next to the input)")
    e.add_argument("--dtype", choices=("keep", "fp32", "bf16", "fp16"), default="keep")
    e.add_argument("--force", action="store_true", help="replace an existing output file")
    return p


SUBCOMMANDS = ("check", "buckets", "doctor", "import-simpletuner", "export")


CLOSED_PIPE = 141      # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away


def _closed_pipe() -> int:
    """The reader of our output went away (`hvtui doctor P | head -1`): stop quietly, as Unix tools do. The
    streams are pointed at /dev/null so that flushing them at exit raises nothing either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError, AttributeError):
                pass
        os.close(devnull)
    except OSError:
        pass
    return CLOSED_PIPE


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()     # a closed pipe shows here for output still in the buffer
        return code
    except BrokenPipeError:
        return _closed_pipe()


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        args = build_subparsers().parse_args(argv)
        if args.command == "check":
            from hvtui.commands.check import main as cmd
        elif args.command == "buckets":
            from hvtui.commands.buckets import main as cmd
        elif args.command == "doctor":
            from hvtui.commands.doctor import main as cmd
        elif args.command == "export":
            from hvtui.commands.export import main as cmd
        else:
            from hvtui.commands.import_simpletuner import main as cmd
        return cmd(args)
    parser = build_parser()
    args = parser.parse_args(argv)
    if problem := run_only_problem(args, argv):
        parser.error(problem)     # usage + the message on stderr, exit 2
    if args.run:
        from hvtui.commands.run import main as cmd
        return cmd(args)
    from hvtui.tui.app_launcher import main as cmd
    return cmd(args)


if __name__ == "__main__":
    raise SystemExit(main())
