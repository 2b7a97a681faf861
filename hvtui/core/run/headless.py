"""`hvtui --run PRESET`: the training Session without a UI.

The trainer runs in the Session's thread; the main thread only waits (join with a timeout, so Python can run
signal handlers), prints, and turns SIGINT / SIGTERM / SIGHUP into a stop request. The trainer then finishes
the current step, saves the LoRA and the full state, writes the final event, and the process exits with
130 / 143 / 129. A second SIGINT exits at once. Output: phase changes, warnings, errors with hints and a
progress line every few seconds (redrawn in place on a terminal). Printing happens only in the main thread;
the bus sink just queues lines, so the trainer never waits on a slow or vanished terminal.
"""
from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from dataclasses import replace

from hvtui.core.preset.schema import PresetError, load_preset
from hvtui.core.run import exitcodes
from hvtui.core.run.eta import format_duration
from hvtui.core.run.events import Event
from hvtui.core.run.session import RunOptions, Session

PROGRESS_EVERY_S = 5.0      # a plain progress line this often when stdout is not a terminal
REDRAW_EVERY_S = 0.5        # the live bar on a terminal
SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


def progress_text(step: Event | None, prog: Event | None, phase: str) -> str:
    """One line: the training step, or the current long job (caching) when no step has run yet."""
    if phase == "training" and step is not None:
        d = step.data
        n, total = d.get("step", 0), d.get("max_steps", 0) or 1
        parts = [f"step {n}/{total} ({100 * n / total:.0f}%)"]
        if d.get("loss") is not None:
            parts.append(f"loss {d['loss']:.4f}")
        if d.get("loss_smooth") is not None:
            parts.append(f"avg {d['loss_smooth']:.4f}")
        if d.get("lr") is not None:
            parts.append(f"lr {d['lr']:.2e}")
        if d.get("step_time"):
            parts.append(f"{d['step_time']:.2f} s/step")
        if d.get("mem_peak"):
            parts.append(f"peak {d['mem_peak'] / 2**30:.1f} GiB")
        parts.append(f"ETA {format_duration(d.get('eta_s'), unknown='?')}")
        return "  ".join(parts)
    if prog is not None and prog.get("phase") == phase:
        d = prog.data
        return f"{phase} {d.get('done', 0)}/{d.get('total', 0)} {d.get('what', '')}".rstrip()
    return ""


class ConsoleView:
    """A bus sink that turns events into lines (queued) and keeps what the progress line needs."""

    def __init__(self):
        self.lines: queue.Queue[tuple[bool, str]] = queue.Queue()   # (to stderr, text)
        self.phase = ""
        self.step: Event | None = None
        self.progress: Event | None = None
        self.finished: Event | None = None
        self.shown_step = 0   # the last step a printed progress line showed

    def _progress_record(self) -> None:
        """Before a checkpoint / sample / the end: a progress line for the log, unless it shows nothing new."""
        if self.step is not None and self.step.get("step") != self.shown_step:
            self.shown_step = self.step.get("step")
            self.lines.put((False, progress_text(self.step, None, "training")))

    def __call__(self, e: Event) -> None:
        k, d = e.kind, e.data
        out = None
        if k in ("checkpoint", "sample", "finished"):
            self._progress_record()
        if k == "run_started":
            out = (f"hvtui: training {d.get('flavour', '')} LoRA for {d.get('max_steps')} steps on "
                   f"{d.get('device', '?')} -> {d.get('output_dir')}")
            if d.get("resume_from"):
                out += f"\n  resuming from {d['resume_from']}"
        elif k == "phase":
            self.phase = d.get("phase", "")
            if d.get("detail"):   # a bare phase event is a return to work (after a checkpoint, a sample)
                out = f"[{self.phase}] {d['detail']}"
        elif k == "progress":
            self.progress = e
        elif k == "step":
            self.step = e
            if self.shown_step == 0:   # the first step: where the loss starts
                self._progress_record()
        elif k == "state" and d.get("state") == "paused":
            out = f"[{d['state']}]"
        elif k == "checkpoint":
            out = f"checkpoint at step {d.get('step')}: {d.get('path')}"
        elif k == "sample":
            out = f"sample at step {d.get('step')}: {d.get('path')}"
        elif k == "log":
            level = d.get("level", "info")
            out = d.get("message", "") if level == "info" else f"{level}: {d.get('message', '')}"
            self.lines.put((level != "info", out))
            return
        elif k == "error":
            where = f" (rank {d['rank']})" if d.get("rank") else ""
            out = f"error{where}: {d.get('message', '')}"
            if d.get("hint"):
                out += f"\n  hint: {d['hint']}"
            self.lines.put((True, out))
            return
        elif k == "finished":
            self.finished = e
            out = f"finished: {d.get('status')} at step {d.get('step', '?')} (exit {d.get('exit_code')})"
        if out:
            self.lines.put((False, out))


class Console:
    """Writes in the main thread only. A vanished terminal (SIGHUP, closed pipe) silences it, nothing more."""

    def __init__(self, view: ConsoleView, tty: bool | None = None):
        self.view = view
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.dead = False
        self._bar = ""
        self._last_line = 0.0
        self._last_text = ""

    def _write(self, stream, text: str) -> None:
        if self.dead:
            return
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            self.dead = True

    def _clear_bar(self) -> None:
        if self.tty and self._bar:
            self._write(sys.stdout, "\r" + " " * len(self._bar) + "\r")
            self._bar = ""

    def say(self, text: str, err: bool = False) -> None:
        self._clear_bar()
        self._write(sys.stderr if err else sys.stdout, text + "\n")

    def pump(self, force_progress: bool = False) -> None:
        while True:
            try:
                err, text = self.view.lines.get_nowait()
            except queue.Empty:
                break
            self.say(text, err)
        text = progress_text(self.view.step, self.view.progress, self.view.phase)
        now = time.monotonic()
        if not text:
            return
        if self.tty:
            if text != self._bar and (force_progress or now - self._last_line >= REDRAW_EVERY_S):
                try:
                    width = max((os.get_terminal_size(sys.stdout.fileno()).columns or 121) - 1, 20)
                except (OSError, ValueError):
                    width = 120
                self._clear_bar()
                self._bar = text[:width]
                self._write(sys.stdout, self._bar)
                self._last_line = now
        elif self.view.phase in ("caching", "training") and text != self._last_text and (
                force_progress or now - self._last_line >= PROGRESS_EVERY_S):
            self._write(sys.stdout, text + "\n")
            self._last_line, self._last_text = now, text
            if self.view.phase == "training" and self.view.step is not None:
                self.view.shown_step = self.view.step.get("step")

    def close(self) -> None:
        self._clear_bar()


def quiet_libraries() -> None:
    """diffusers / transformers log warnings meant for developers ("Guiders are experimental", torchvision
    missing) to stderr; the headless console shows hvtui's own messages. Set the variables to override.
    diffusers imports torchao when it is installed, and torchao's import logs its CUDA extensions failing to
    load on a CPU box and torch's pytree deprecation notes: nothing to act on either."""
    import logging
    import warnings

    # compiling a library's source without its .pyc (pip --no-compile, a read-only site-packages) warns about
    # its docstrings' escape sequences (torchao's quant_api; a SyntaxWarning on Python 3.12+, shown by default, a
    # DeprecationWarning before): the library's to fix, not the user's
    for category in (SyntaxWarning, DeprecationWarning):
        # Python 3.14 words it '"\." is an invalid escape sequence'; before, "invalid escape sequence '\.'"
        warnings.filterwarnings("ignore", message=r".*invalid escape sequence", category=category)
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_headless(preset_path: str, options: RunOptions | None = None, backend=None, dist=None) -> int:
    """`dist` (launch.DistEnv): this process is one worker of a data-parallel run. Only rank 0 reads the
    control files, writes events.jsonl and prints progress; the other ranks print only their own errors."""
    quiet_libraries()
    try:
        preset = load_preset(preset_path)
    except PresetError as e:
        if dist is None or dist.is_main:
            print(f"error: {e}", file=sys.stderr)
        return exitcodes.INVALID
    main = dist is None or dist.is_main
    options = replace(options or RunOptions(), file_control=main, write_events=main)
    session = Session(preset, backend=backend, options=options)
    view = ConsoleView()
    console = Console(view)
    session.bus.add_sink(view)

    stopping: dict[str, str | None] = {"signal": None}

    def on_signal(signum, frame):
        name = SIGNAL_NAMES.get(signum, str(signum))
        if stopping["signal"] is not None:
            if signum == signal.SIGINT:
                os._exit(exitcodes.SIGINT)      # the user insists: no save, no final event
            return
        stopping["signal"] = name
        session.control.request("stop", reason=name)
        if main:
            view.lines.put((True, f"{name}: stopping after the current step, then saving the LoRA and the "
                                  "state" + (" (Ctrl-C again quits at once, without saving)"
                                             if signum == signal.SIGINT else "")))

    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in SIGNAL_NAMES}
    else:   # called from a thread (tests): no signal handling
        previous = {}
    try:
        session.start()
        while not session.join(timeout=0.25):
            console.pump()
        console.pump(force_progress=True)
        console.close()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    code = session.exit_code if session.exit_code is not None else exitcodes.UNEXPECTED
    return code
