"""Ends the TUI when its terminal goes away, whatever its parent does with SIGHUP.

A closed terminal sends SIGHUP to the session leader only (the shell). A parent that traps or ignores it
never passes it on, and the TUI is left with a hung-up terminal: its input thread reads end-of-file in a
busy loop, and once Textual's output thread dies on a write error its queue fills and the event loop
blocks for good (so even SIGTERM, handled in that loop, goes unanswered). Measured before this watch: an
idle TUI survived `tmux kill-session` at 30-86% CPU and ignored SIGTERM.

A plain thread (it must not depend on the event loop) looks at the terminal twice a second. When it is
gone: the terminal's descriptors are pointed at /dev/null (writes succeed again, nothing blocks), the app is
asked to leave as on SIGHUP (a run in progress stops after saving; the launcher waits for it), and if the
app cannot leave, the run is stopped and waited for here, then the process exits with the SIGHUP code.
"""
from __future__ import annotations

import os
import signal
import termios
import threading

from hvtui.core.run import exitcodes

INTERVAL_S = 0.5
GRACE_S = 10.0      # for the app to leave by itself before the watch ends the process (after any save)


def terminal_alive(fd: int) -> bool:
    """A hung-up terminal answers every request with EIO (and an fd that is no terminal with ENOTTY)."""
    try:
        termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError):
        return False
    return True


def silence_terminal(fds: list[int]) -> None:
    """Point the terminal's descriptors at /dev/null: reads see end-of-file, writes go nowhere, none fail."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    for fd in fds:
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


class TerminalWatch:
    def __init__(self, app, fd: int = 0, extra_fds: tuple[int, ...] = (), interval: float = INTERVAL_S,
                 grace: float = GRACE_S, exit=os._exit):
        self.app, self.fd, self.interval, self.grace = app, fd, interval, grace
        self.fds = sorted({fd, 1, 2, *extra_fds})
        self._exit = exit
        self.done = threading.Event()      # set by the launcher once the app has returned
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="hvtui-terminal-watch", daemon=True)

    def start(self) -> TerminalWatch:
        if terminal_alive(self.fd):        # nothing to watch without a terminal (tests, pipes)
            self._thread.start()
        return self

    def stop(self) -> None:
        self.done.set()

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            if not terminal_alive(self.fd):
                self.fired = True
                self._gone()
                return

    def _gone(self) -> None:
        silence_terminal(self.fds)
        loop = getattr(self.app, "event_loop", None)
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self.app.on_signal, signal.SIGHUP)
            except RuntimeError:           # the loop has already closed: the app is leaving
                pass
        if self.done.wait(self.grace):
            return                         # the app left; the launcher waits for a run's save
        run = getattr(self.app, "current_run", None)   # the UI is stuck: save the run from here
        if run is not None and getattr(run, "attached", True) is False and run.active:
            run.request("stop", reason="SIGHUP")
            while not run.join(timeout=1.0):
                pass
        self._exit(exitcodes.SIGHUP)
