"""The run side of the app: starting a run (the resume question, the GPU count), the run keys and their
answers, the ~4 Hz tick that pulls the run's events into the TrainState and redraws the Train pane and the
status bar, and quitting or a signal while a run goes on. HvtuiApp builds on this class."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hvtui.core.run import exitcodes
from hvtui.core.run.bus import Bus
from hvtui.core.run.history import process_alive
from hvtui.core.run.session import RunOptions
from hvtui.tui import keymap
from hvtui.tui.dialogs import ChoiceScreen
from hvtui.tui.pane_host import PANES, PaneHost
from hvtui.tui.panes.config import ConfigPane
from hvtui.tui.resume_question import resume_question, short_path
from hvtui.tui.runs import FollowedRun, LaunchedRun, LocalRun, PastRun, gpu_choices
from hvtui.tui.train_state import TrainState, format_duration
from hvtui.tui.widgets.status_bar import StatusBar
from hvtui.tui.words import tui_event

if TYPE_CHECKING:     # built when first shown (less to import before the first paint)
    from hvtui.tui.panes.environment import EnvironmentPane
    from hvtui.tui.panes.train import TrainPane

KEY_NOTE_SECONDS = 3.0       # how long a run key's answer shows
RUN_ACTIONS = {"start_run", "toggle_pause", "stop_run", "save_now", "sample_now"}


class RunControl(PaneHost):
    """Runs started, followed and stopped from the UI; the state itself is set up by HvtuiApp.__init__."""

    presets: list[Path]
    active: int
    attach_dir: Path | None
    keymap: dict[str, str]
    train_state: TrainState
    current_run: Any               # LocalRun, LaunchedRun, AttachedRun or None
    history: PastRun | None
    monitor_bus: Bus
    _monitor_cursor: int
    telemetry_available: bool
    exit_code: int
    _quit_when_stopped: bool
    _starting_note: str
    _key_note: str
    _key_note_until: float
    _allowed_actions: tuple

    @property
    def active_path(self) -> Path | None:
        return self.presets[self.active] if self.presets else None

    def _refresh_visible_pane(self) -> None:
        super()._refresh_visible_pane()
        if self.visible_pane == "train":
            self._show_train(force=True)     # the Train pane draws the TrainState this class keeps


    def _local_run_active(self) -> bool:
        return isinstance(self.current_run, LocalRun) and self.current_run.active

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Footer shows only what can be done now; the keys of the rest do nothing."""
        if len(self.screen_stack) > 1:
            return False    # a question or the palette is open: its own keys only (escape closes it)
        if action == "pane_key":
            return parameters[0] == self.visible_pane and self.pane(parameters[0]) is not None
        if action not in RUN_ACTIONS:
            return True
        running = (self.current_run is not None and self.current_run.active
                   and self.train_state.state not in ("finished", "failed", "stopped"))
        if action == "start_run":
            return not self.attach_dir and not running
        return running

    def action_start_run(self) -> None:
        if self.attach_dir:
            self.say("attached to a headless run: start runs with hvtui --run PRESET", severity="warning")
            return
        if self._local_run_active():
            self.say("a run is already in progress")
            return
        config = self.query_one(ConfigPane)
        if config.path is None or config.preset is None:
            self.say("no valid preset to train; see the Config pane", severity="error")
            self.action_show_pane("config")
            return
        path = config.path
        if config.dirty:
            def answered(choice) -> None:
                if choice == "save":
                    config.doc.save()
                    config.dirty = False
                    self.preset_saved()
                    self._start_if_valid(path)
                elif choice == "disk":
                    self._start_if_valid(path)
            self.push_screen(ChoiceScreen("Unsaved edits", f"{path.name} has edits not saved to disk.",
                                          [("s", "Save and start", "save"), ("d", "Start with the saved file", "disk"),
                                           ("n", "Cancel", None)]), answered)
            return
        self._start_if_valid(path)

    def _start_if_valid(self, path: Path) -> None:
        validation = self.services.validate_file(path)
        if validation.preset is None or not validation.ok:
            errors = validation.errors
            self.say(f"{len(errors)} error(s) in {path.name}: " + (str(errors[0]) if errors else ""),
                        title="cannot start", severity="error", timeout=10)
            self.action_show_pane("config")
            return
        preset = validation.preset
        if (pid := self._other_writer()) is not None:
            out = short_path(preset.resolve_path(preset.output_dir))
            self.say(f"{out} has a run in progress in another process (pid {pid}); two runs in one output_dir "
                     f"would mix: watch it with hvtui --attach {out}", title="cannot start", severity="warning",
                     timeout=10)
            return
        newest = newest_checkpoint(preset)
        if newest is None:
            self._launch(preset, RunOptions())
            return
        out = preset.resolve_path(preset.output_dir)
        shown = self.current_run if self.current_run is not None else self.history
        known = self.train_state if shown is not None and same_path(shown.output_dir, out) else None
        q = resume_question(out, newest.path, newest.step, preset.max_train_steps, known)

        def answered(choice) -> None:
            if choice is not None:   # "": start over (the earlier run is moved aside, not deleted)
                self._launch(preset, RunOptions(resume=choice or None, fresh=not choice))
        self.push_screen(ChoiceScreen(q.title, q.message, q.choices), answered)

    def _other_writer(self) -> int | None:
        """The pid of another process training in the active preset's output_dir right now, or None."""
        if self.history is None or not self.train_state.active:
            return None
        pid = self.history.follower.pid
        return pid if pid != os.getpid() and process_alive(pid) else None

    def _launch(self, preset, options: RunOptions) -> None:
        options.resume = options.resume or None
        gpus = self.services.gpu_count() if self.services.backend is None else 0   # fakes train in-process
        if gpus > 1 and preset.source is not None:
            def answered(n) -> None:
                if n is not None:
                    self._start(preset, options, n)
            self.push_screen(ChoiceScreen(
                "GPUs", f"This machine has {gpus} GPUs. Train data-parallel on how many? With more than one, "
                        "`hvtui --run --gpus N` runs in the background and this view attaches to it "
                        "(it keeps running if you quit).",
                [(str(n), f"{n} GPU{'s' if n > 1 else ''}", n) for n in gpu_choices(gpus)]), answered)
            return
        self._start(preset, options, 1)

    def _start(self, preset, options: RunOptions, gpus: int) -> None:
        self.train_state.begin_run(resume=bool(options.resume))   # a resume keeps the history shown
        self.history = None
        if gpus > 1:
            self.current_run = LaunchedRun(preset, gpus, options=options)
            self.say(f"{gpus} GPUs: output in {self.current_run.log_path}; hvtui --attach "
                     f"{self.current_run.output_dir} follows it later", timeout=10)
        else:
            self.current_run = LocalRun(preset, backend=self.services.backend, options=options)
        self._starting_note = ("starting: loading torch + diffusers (a few seconds)…" if self.services.backend is None
                               else "starting…")
        self.current_run.start()
        self.action_show_pane("train")
        self.refresh_bindings()
        self.tick()

    def _request(self, command: str, note: str) -> None:
        if self.current_run is None or not self.current_run.active:
            self.say("no run in progress", severity="warning")
            return
        self.current_run.request(command, reason=f"{command} key")
        self.acknowledge(note)

    def acknowledge(self, note: str) -> None:
        """A run key's answer. On the Train pane it goes in the pane's head, for a few seconds or until the run
        ends: a toast there would sit over the "checkpoints & samples" box, hiding the very checkpoint or
        sample the key asked for (at 80x24 a stop is answered well within a toast's life)."""
        if self.visible_pane == "train" and self.pane("train") is not None:
            self._key_note, self._key_note_until = note, time.monotonic() + KEY_NOTE_SECONDS
            self._show_train()
        else:
            self.say(note, timeout=KEY_NOTE_SECONDS)

    def action_toggle_pause(self) -> None:
        if self.train_state.state == "paused":
            self._request("resume", "resuming")
        else:
            self._request("pause", "pausing at the next step boundary")

    def action_stop_run(self) -> None:
        self._request("stop", "stopping: a checkpoint is saved first")

    def action_save_now(self) -> None:
        self._request("save", "checkpoint requested: saved at the next step boundary")

    def action_sample_now(self) -> None:
        self._request("sample", "validation sample requested")

    def tick(self) -> None:
        """Pull new events (never blocks) and redraw what changed."""
        if not self.screen_stack or not self.query(StatusBar):
            return  # starting up or shutting down
        source = self.current_run if self.current_run is not None else self.history
        events = source.poll() if source is not None else []
        if events:
            self._starting_note = ""
            keys = self._pane_keys()
            events = [tui_event(e, keys) for e in events]
            if any(e.kind == "finished" and e.get("exit_code") == exitcodes.DOCTOR_FAILED for e in events):
                env = cast("EnvironmentPane | None", self.pane("environment"))
                if env is not None:
                    env.stale = True      # F3 shows the checks as they are now
        self.train_state.apply(events)
        if isinstance(source, FollowedRun) and source.just_caught_up:
            self.train_state.sync_outputs(source.checkpoints_on_disk())   # pruned / moved ones are not listed
        monitor, self._monitor_cursor = self.monitor_bus.since(self._monitor_cursor)
        self.train_state.apply(monitor)
        if isinstance(self.current_run, LocalRun) and not self.current_run.active and self.train_state.active:
            # the thread ended without a finished event (it always publishes one; this is a safety net)
            self.train_state.state = "stopped" if self.current_run.exit_code in (0, None) else "failed"
            self.train_state.version += 1
        allowed = tuple(self.check_action(a, ()) for a in sorted(RUN_ACTIONS))
        if allowed != self._allowed_actions:   # the footer shows only what can be done now
            self._allowed_actions = allowed
            self.refresh_bindings()
        if self.visible_pane == "train":
            self._show_train()
        self.update_status()
        if self._quit_when_stopped and not self._local_run_active():
            self.exit(self.exit_code)

    def _show_train(self, force: bool = False) -> None:
        pane = cast("TrainPane | None", self.pane("train"))
        if pane is None:
            return
        pane.note = self._starting_note or self._key_note_now() or self._waiting_note()
        preset = self.query_one(ConfigPane).preset
        offload = bool(getattr(getattr(self.current_run, "preset", None) or preset, "enable_group_offload", False))
        pane.show(self.train_state, offload_enabled=offload, telemetry=self.telemetry_available,
                  keys={k.id: keymap.key_for(k.id, self.keymap) for k in keymap.APP_KEYS}, force=force,
                  can_start=not self.attach_dir)

    def _key_note_now(self) -> str:
        """The last run key's answer while it is fresh and the run goes on (stopped: the head offers s)."""
        fresh = time.monotonic() < self._key_note_until and self.train_state.active
        return self._key_note if fresh else ""

    def _pane_keys(self) -> dict[str, str]:
        return {pane_id: keymap.key_for(pane_id, self.keymap) for _, _, pane_id in PANES}

    def _waiting_note(self) -> str:
        st = self.train_state
        if self.attach_dir and st.state == "idle" and not st.started and not st.phase:
            return (f"waiting for a run in {self.attach_dir}: nothing written there yet (a run started with "
                    "hvtui --run PRESET writes its events once its checks pass)")
        return ""

    def update_status(self) -> None:
        st = self.train_state
        detail = ""
        if st.step:
            detail = f"step {st.step.get('step')}/{st.step.get('max_steps') or st.started.get('max_steps', '?')}"
            if st.step.get("loss") is not None:
                detail += f"  loss {st.step['loss']:.4f}"
            if st.active and st.step.get("eta_s") is not None:
                detail += f"  ETA {format_duration(st.step['eta_s'])}"
        elif st.phase:
            detail = st.phase
        name = self.active_path.stem if self.active_path else ""
        self.query_one(StatusBar).show(name, self.active, len(self.presets), st.state, detail,
                                       attached=str(self.attach_dir) if self.attach_dir else "")

    # ------------------------------------------------------------------ quitting and signals

    async def action_quit(self) -> None:
        if not self._local_run_active():
            config = self.query_one(ConfigPane)
            if not config.dirty:
                self.exit(self.exit_code)
                return

            def drop(choice) -> None:
                if choice:
                    self.exit(self.exit_code)
            name = config.path.name if config.path else "the preset"    # (edits are made to a file)
            self.push_screen(ChoiceScreen("Unsaved edits", f"{name} has edits not saved to disk.",
                                          [("y", "Quit without saving", True), ("n", "Cancel", None)]), drop)
            return

        def answered(choice) -> None:
            if choice == "stop":
                self._quit_when_stopped = True
                self.current_run.request("stop", reason="quit")
                self.train_state.state = "stopping"
                self.say("stopping: saving a checkpoint, then quitting…", timeout=30)
                self.action_show_pane("train")
        self.push_screen(ChoiceScreen("A run is in progress",
                                      "Quitting stops it. A checkpoint is saved first, so it can be resumed.",
                                      [("s", "Stop and save, then quit", "stop"), ("c", "Cancel", None)]), answered)

    def _install_signal_handlers(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def on_signal(self, signum: int) -> None:
        """SIGHUP (SSH dropped) / SIGTERM: ask the run to stop and save, then leave at once; the launcher
        waits for the trainer thread, since the terminal may already be gone."""
        self.exit_code = 128 + int(signum)
        if self._local_run_active():
            self.current_run.request("stop", reason=signal.Signals(signum).name)
        self.exit(self.exit_code)


def newest_checkpoint(preset):
    """The newest complete checkpoint (CheckpointInfo) in the preset's output_dir, or None; what the trainer
    counts as an earlier run there (the checkpoint module imports no torch)."""
    from hvtui.core.train.checkpoint import find_newest  # here: nothing more to import before the first paint
    out = preset.resolve_path(preset.output_dir)
    try:
        return find_newest(out) if out else None
    except Exception:  # an unreadable folder: start fresh rather than fail here
        return None


def same_path(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return Path(a) == Path(b)
