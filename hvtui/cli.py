"""Entry point: `hvtui` (the TUI), `hvtui --run PRESET` (headless), `hvtui check|buckets|doctor|import-simpletuner`.

Only argparse and the standard library load here; each branch imports what it needs, so `--help` and
`check` never pay for torch/diffusers, and the TUI paints before the ML stack loads.
"""
from __future__ import annotations

import argparse
import sys

from hvtui import __version__

EPILOG = """exit codes: 0 ok, 1 unexpected error (a bug), 2 invalid preset, dataset or folder, another live run in
output_dir, an earlier run there (--resume auto or --fresh) or a damaged checkpoint, 3 doctor check failed,
4 training failed (repeated OOM / non-finite loss), 5 resume would change the run (--allow-changed) or cannot
fit it, 6 a write failed (disk full, read-only...: the last good checkpoint is kept), 129/130/143 stopped by
SIGHUP/SIGINT/SIGTERM after saving."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hvtui", description="Train HunyuanVideo 1.5 LoRAs from the terminal.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"hvtui {__version__}")
    p.add_argument("--run", metavar="PRESET", help="train headless with this preset (no UI)")
    p.add_argument("--resume", metavar="auto|PATH", help="with --run: continue from a checkpoint")
    p.add_argument("--allow-changed", action="store_true",
                   help="with --resume: accept changed batch size / buckets / LR")
    p.add_argument("--fresh", action="store_true",
                   help="with --run: start over where output_dir holds an earlier run (moved to output_dir/previous-TIME/)")
    p.add_argument("--gpus", type=int, default=None, metavar="N", help="with --run: data-parallel over N GPUs")
    p.add_argument("--attach", metavar="OUTPUT_DIR", help="open the Train pane on a headless run's output dir")
    p.add_argument("--presets", metavar="DIR", default=None, help="TUI: folder of presets (default: ./presets)")
    p.add_argument("preset", nargs="?", help="TUI: preset to open first")
    return p


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
    d.add_argument("--gpus", type=int, default=1, metavar="N", help="the fit of a data-parallel run over N GPUs of this machine")
    i = sub.add_parser("import-simpletuner", help="convert a SimpleTuner config.json into a preset")
    i.add_argument("config")
    i.add_argument("databackend", nargs="?")
    i.add_argument("-o", "--output", required=True)
    return p


SUBCOMMANDS = ("check", "buckets", "doctor", "import-simpletuner")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        args = build_subparsers().parse_args(argv)
        if args.command == "check":
            from hvtui.commands.check import main as cmd
        elif args.command == "buckets":
            from hvtui.commands.buckets import main as cmd
        elif args.command == "doctor":
            from hvtui.commands.doctor import main as cmd
        else:
            from hvtui.commands.import_simpletuner import main as cmd
        return cmd(args)
    args = build_parser().parse_args(argv)
    if args.run:
        from hvtui.commands.run import main as cmd
        return cmd(args)
    from hvtui.tui.launch import main as cmd
    return cmd(args)


if __name__ == "__main__":
    raise SystemExit(main())
