"""`hvtui [PRESET] [--presets DIR]` and `hvtui --attach OUTPUT_DIR`: argument checks, then the app.

Only the standard library, Textual and light hvtui modules load before the first paint; torch and
diffusers load in the trainer thread when a run starts. After the app exits, a run still in progress
is asked to stop and waited for, so its final checkpoint is written even when the terminal went away.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from hvtui.core.run import exitcodes
from hvtui.tui.native_output import TERMINAL_FD, native_output_diverted, native_output_log

DEFAULT_PRESETS = Path("presets")


def _say(message: str) -> None:
    try:
        print(message, file=sys.__stderr__ or sys.stderr, flush=True)   # the terminal, even while diverted
    except (OSError, ValueError):  # the terminal may be gone (SIGHUP)
        pass


def find_presets(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.toml") if p.is_file()) if directory.is_dir() else []


def resolve_preset(name: str, directory: Path) -> Path | None:
    """A preset named on the command line: a path, or a name in the presets folder (with or without .toml)."""
    for candidate in (Path(name), directory / name, directory / f"{name}.toml"):
        if candidate.is_file():
            return candidate
    return None


def plan(args) -> tuple[list[Path], int, str | None]:
    """(presets, active index, error message)."""
    directory = Path(args.presets) if getattr(args, "presets", None) else DEFAULT_PRESETS
    presets = find_presets(directory)
    active = 0
    if getattr(args, "preset", None):
        path = resolve_preset(args.preset, directory)
        if path is None:
            return [], 0, (f"hvtui: preset {args.preset!r} not found (looked for the file and in {directory}/); "
                           f"pass a preset file path or --presets DIR")
        resolved = [p.resolve() for p in presets]
        if path.resolve() in resolved:
            active = resolved.index(path.resolve())
        else:
            presets.append(path)
            active = len(presets) - 1
    elif not presets and not getattr(args, "attach", None):
        return [], 0, (f"hvtui: no presets in {directory}/ ; pass a preset file (hvtui my.toml) or a folder of "
                       f"presets (--presets DIR)")
    return presets, active, None


def no_terminal_problem() -> str | None:
    """The TUI reads keys from stdin and draws on stderr: without a terminal there it would wait forever."""
    for name, stream in (("stdin", sys.stdin), ("stderr", sys.stderr)):
        try:
            ok = stream is not None and stream.isatty()
        except (ValueError, OSError):
            ok = False
        if not ok:
            return (f"hvtui: the TUI needs a terminal ({name} is not one); for scripts and nohup train headless "
                    "with hvtui --run PRESET, and watch it from a terminal with hvtui --attach OUTPUT_DIR")
    return None


def main(args) -> int:
    from hvtui.tui.runs import attach_problem

    presets, active, error = plan(args)
    if error:
        _say(error)
        return exitcodes.INVALID
    attach = Path(args.attach) if getattr(args, "attach", None) else None
    if attach is not None and (problem := attach_problem(attach)):
        _say(f"hvtui --attach: {problem}")
        return exitcodes.INVALID
    if problem := no_terminal_problem():
        _say(problem)
        return exitcodes.INVALID

    from hvtui.tui.app import HvtuiApp
    from hvtui.tui.settings import load_settings
    from hvtui.tui.terminal_watch import TerminalWatch

    settings = load_settings()
    result = None
    with native_output_diverted(native_output_log()) as log:
        app = HvtuiApp(presets, active, settings=settings, attach=attach, install_signal_handlers=True)
        terminal = tuple(fd for fd in (TERMINAL_FD[0],) if fd is not None)
        watch = TerminalWatch(app, extra_fds=terminal).start()   # leaves when the terminal does
        try:
            result = app.run()
        finally:
            watch.stop()
            code = _finish_run(app)
    if log and log.is_file() and log.stat().st_size:
        _say(f"hvtui: libraries wrote to the terminal while the UI ran; kept in {log}")
    if code is not None:
        return code
    return result if isinstance(result, int) else app.exit_code


def _finish_run(app) -> int | None:
    """Wait for a run started in this process to stop and save. Its exit code, or None when there was none."""
    from hvtui.tui.runs import LocalRun

    run = getattr(app, "current_run", None)
    if not isinstance(run, LocalRun):
        return None
    stopping = {"signal": 0}

    def again(signum, frame):  # further signals while waiting only repeat the stop request
        stopping["signal"] = signum
        run.request("stop", reason=signal.Signals(signum).name)
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, again)
        except (ValueError, OSError):
            pass
    if run.active:
        run.request("stop", reason="hvtui closed")
        _say("hvtui: stopping the run; saving a checkpoint first…")
    while not run.join(timeout=1.0):
        pass
    if app.exit_code in (exitcodes.SIGHUP, exitcodes.SIGTERM):
        return app.exit_code
    return None
