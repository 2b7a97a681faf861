"""The hvtui Textual app: four panes (Config, Dataset, Environment, Train), preset switching by key and
palette, themes from files, remappable keys, SSH-safe signals, attach to a headless run.

Data flows one way: the trainer publishes on the core bus; a ~4 Hz timer here pulls `bus.since(seq)` (or
the attached run's events.jsonl) into a TrainState and redraws. Commands go back through the run's control
object (or control files). Nothing here is ever called from the trainer thread.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Mapping

from rich.text import Text
from textual.app import App, ComposeResult
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.widgets import Footer, Static, TabbedContent, TabPane

from hvtui.core import exitcodes
from hvtui.core.bus import Bus
from hvtui.core.run_history import process_alive
from hvtui.core.session import RunOptions
from hvtui.tui import keymap
from hvtui.tui.dialogs import ChoiceScreen
from hvtui.tui.panes.config import ConfigPane, PresetList
from hvtui.tui.runs import AttachedRun, FollowedRun, LaunchedRun, LocalRun, PastRun, gpu_choices
from hvtui.tui.resume_question import resume_question, short_path
from hvtui.tui.services import Services
from hvtui.tui.settings import DEFAULT_THEME, Settings, save_theme
from hvtui.tui.themes import REPO_THEMES, load_themes, variable_defaults
from hvtui.tui.train_state import TrainState, format_duration
from hvtui.tui.words import tui_event
from hvtui.tui.widgets.status_bar import StatusBar

# The other panes are built (and their modules imported) when first shown: less work before the first paint.
PANE_CLASSES = {"dataset": ("hvtui.tui.panes.dataset", "DatasetPane"),
                "environment": ("hvtui.tui.panes.environment", "EnvironmentPane"),
                "train": ("hvtui.tui.panes.train", "TrainPane")}
PANES = (("config", "Config", "pane.config"), ("dataset", "Dataset", "pane.dataset"),
         ("environment", "Env", "pane.environment"), ("train", "Train", "pane.train"))
POLL_INTERVAL = 0.25          # the UI pulls events ~4 times a second
KEY_NOTE_SECONDS = 3.0       # how long a run key's answer shows
RUN_ACTIONS = {"start_run", "toggle_pause", "stop_run", "save_now", "sample_now"}


def ssh_without_multiplexer(env: Mapping[str, str]) -> bool:
    """Over SSH and not inside tmux/screen: a dropped connection would end this process."""
    over_ssh = any(env.get(k) for k in ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"))
    multiplexed = bool(env.get("TMUX") or env.get("STY")) or env.get("TERM", "").startswith(("screen", "tmux"))
    return over_ssh and not multiplexed


class HvtuiCommands(Provider):
    """Command palette: presets, themes and actions."""

    def _commands(self):
        app: HvtuiApp = self.app  # type: ignore[assignment]
        for i, path in enumerate(app.presets):
            yield f"Preset: {path.stem}", lambda i=i: app.switch_preset(i), str(path)
        for name in app.theme_names:
            yield f"Theme: {name}", lambda name=name: app.switch_theme(name), "switch the colour theme"
        for pane, title, _ in PANES:
            yield f"Show {title} pane", lambda pane=pane: app.action_show_pane(pane), ""
        yield "Start training", app.action_start_run, "train the active preset"
        yield "Pause / resume training", app.action_toggle_pause, ""
        yield "Stop training (saves a checkpoint)", app.action_stop_run, ""
        yield "Save a checkpoint now", app.action_save_now, ""
        yield "Sample a validation video now", app.action_sample_now, ""
        yield "Rescan dataset", lambda: app.run_pane_action("dataset", "rescan"), ""
        yield "Rerun environment checks", lambda: app.run_pane_action("environment", "rerun"), ""
        yield "Save preset (shows the diff)", lambda: app.run_pane_action("config", "save"), ""
        yield "Open preset in $EDITOR", lambda: app.run_pane_action("config", "edit_external"), ""

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text or None)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text or None)


class HvtuiApp(App):
    TITLE = "hvtui"
    CSS = """
    #ssh-banner { height: auto; background: $hvtui-banner; color: $foreground; text-style: bold; padding: 0 1; }
    TabbedContent { height: 1fr; }
    TabbedContent > ContentSwitcher { height: 1fr; }
    TabPane { padding: 0; height: 1fr; }
    """
    # the panes' own keys (r: rescan, ctrl+s: save, ...) also answer from here, for the visible pane, so they
    # work whatever has the focus (the tab bar, nothing); a pane's own binding wins when it has the focus
    BINDINGS = keymap.bindings(keymap.APP_KEYS) + keymap.pane_fallbacks()
    COMMANDS = App.COMMANDS | {HvtuiCommands}

    def __init__(self, presets: list[Path], active: int = 0, *, services: Services | None = None,
                 settings: Settings | None = None, attach: Path | None = None, theme_dirs: list[Path] | None = None,
                 install_signal_handlers: bool = False, env: Mapping[str, str] = os.environ):
        self.settings = settings or Settings()
        self.services = services or Services()
        self.presets = [Path(p) for p in presets]
        self.active = min(max(active, 0), max(len(self.presets) - 1, 0))
        self.attach_dir = Path(attach) if attach else None
        self.keymap: dict[str, str] = dict(self.settings.keys)
        self.env = env
        self.install_signal_handlers = install_signal_handlers
        super().__init__()
        loaded = load_themes(theme_dirs if theme_dirs is not None else
                             [REPO_THEMES] + ([self.settings.directory / "themes"] if self.settings.directory else []))
        for theme in loaded.themes:
            self.register_theme(theme)
        self.theme_names = [t.name for t in loaded.themes]
        self.problems = list(self.settings.problems) + list(loaded.problems)
        wanted = self.settings.theme if self.settings.theme in self.available_themes else DEFAULT_THEME
        if self.settings.theme not in self.available_themes:
            self.problems.append(f"theme {self.settings.theme!r} is not available; using {wanted}")
        if wanted in self.available_themes:
            self.theme = wanted
        self.set_keymap(self.keymap)
        self.train_state = TrainState()
        self.pane_preset = None        # the active preset as on disk (None: missing or unreadable)
        self.current_run = AttachedRun(self.attach_dir) if self.attach_dir else None
        self.history: PastRun | None = None    # the run in the active preset's output_dir, until one starts here
        self.monitor_bus = Bus(capacity=64)
        self._monitor_cursor = 0
        self.telemetry = None
        self.telemetry_available = True
        self.exit_code = exitcodes.OK
        self._quit_when_stopped = False
        self._starting_note = ""
        self._key_note, self._key_note_until = "", 0.0     # a run key's answer in the Train pane's head
        self._allowed_actions: tuple = ()
        self.event_loop = None

    def say(self, message: str, **kwargs) -> None:
        """A toast of plain text: paths and key names like [keys] must not be read as markup."""
        self.notify(message, markup=False, **kwargs)

    # ------------------------------------------------------------------ layout

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return variable_defaults(self.current_theme.to_color_system().generate())

    def compose(self) -> ComposeResult:
        if ssh_without_multiplexer(self.env):
            yield Static(Text(
                "SSH without tmux/screen: if the connection drops, hvtui stops the run after saving a checkpoint. "
                "Use tmux, or train headless (nohup hvtui --run PRESET) and watch with hvtui --attach OUTPUT_DIR."),
                id="ssh-banner")
        initial = "train" if self.attach_dir else "config"
        with TabbedContent(initial=initial, id="panes"):
            for pane, title, binding_id in PANES:
                with TabPane(f"{keymap.key_for(binding_id, self.keymap).upper()} {title}", id=pane):
                    if pane == "config":
                        yield ConfigPane(id="config-pane")
                    elif pane == initial:
                        yield self._new_pane(pane)
        yield StatusBar(id="status")
        yield Footer(compact=True)

    def _new_pane(self, pane: str):
        import importlib

        module, name = PANE_CLASSES[pane]
        widget = getattr(importlib.import_module(module), name)(id=f"{pane}-pane")
        if hasattr(widget, "set_preset"):
            widget.set_preset(self.pane_preset)
        return widget

    def pane(self, pane: str):
        """A pane's widget, or None while it has not been shown yet."""
        found = self.query(f"#{pane}-pane")
        return found.first() if found else None

    async def ensure_pane(self, pane: str):
        widget = self.pane(pane)
        if widget is None:
            widget = self._new_pane(pane)
            await self.query_one(f"TabPane#{pane}").mount(widget)
        return widget

    async def on_mount(self) -> None:
        import asyncio

        self.event_loop = asyncio.get_running_loop()   # for threads that must reach the app without waiting
        self.set_interval(POLL_INTERVAL, self.tick)
        if self.install_signal_handlers:
            self._install_signal_handlers()
        for problem in self.problems:
            self.say(problem, title="settings", severity="error", timeout=12)
        self.query_one(PresetList).set_presets([p.stem for p in self.presets], self.active)
        self.call_after_refresh(self._after_first_paint)
        self.tick()

    async def _after_first_paint(self) -> None:
        # the form, the telemetry sampler: after the first screen is up
        if self.env.get("HVTUI_PAINT_PROBE"):
            write_paint_probe(Path(self.env["HVTUI_PAINT_PROBE"]))
        if self.attach_dir is None or self.presets:
            await self.load_active_preset()
        if self.services.telemetry is None:
            self.telemetry_available = False
        else:
            self.run_worker(self._start_telemetry, thread=True, group="telemetry")
        if not self.attach_dir:
            self.query_one("#field-table").focus()

    def _start_telemetry(self) -> None:
        try:
            sampler = self.services.telemetry(self.monitor_bus)
            if sampler is None:
                self.telemetry_available = False
                return
            sampler.start()
            self.telemetry = sampler
        except Exception as e:  # NVML trouble must not stop the UI
            self.telemetry_available = False
            self.monitor_bus.publish(_log_event(f"GPU telemetry unavailable: {e}", "warning"))

    async def on_unmount(self) -> None:
        if self.telemetry is not None:
            # the sampler thread is a daemon: ask it to stop without waiting for its join
            threading.Thread(target=self.telemetry.stop, name="hvtui-telemetry-stop", daemon=True).start()

    # ------------------------------------------------------------------ presets

    @property
    def active_path(self) -> Path | None:
        return self.presets[self.active] if self.presets else None

    async def load_active_preset(self) -> None:
        config = self.query_one(ConfigPane)
        await config.load(self.active_path)
        self.query_one(PresetList).index = self.active
        self._preset_changed(config.preset)

    def _preset_changed(self, preset) -> None:
        self.pane_preset = preset
        self._follow_output_dir(preset)
        for name in ("dataset", "environment"):
            widget = self.pane(name)
            if widget is not None:
                widget.set_preset(preset)
        self._refresh_visible_pane()
        self.update_status()

    def _follow_output_dir(self, preset) -> None:
        """With no run of this UI in progress, the Train pane shows the run in the active preset's output_dir
        (its state, loss history, checkpoints and samples), read from its events.jsonl."""
        if self.attach_dir or (self.current_run is not None and self.current_run.active):
            return
        out = preset.resolve_path(preset.output_dir) if preset is not None and preset.output_dir else None
        shown = self.current_run if self.current_run is not None else self.history
        if shown is not None and out is not None and _same_path(shown.output_dir, out):
            return
        self.current_run = None
        self.history = PastRun(out) if out is not None else None
        self.train_state.reset()
        self._allowed_actions = ()

    def preset_saved(self) -> None:
        """After a save or an editor session: the other panes see the file as it is now."""
        config = self.query_one(ConfigPane)
        if config.path is None:
            return
        validation = self.services.validate_file(config.path)
        config.preset = validation.preset
        self._preset_changed(validation.preset)

    def switch_preset(self, index: int) -> None:
        if not self.presets or not 0 <= index < len(self.presets) or index == self.active:
            return
        reasons = []
        if self._local_run_active():
            reasons.append("A run is in progress; it keeps training with its own preset.")
        if self.query_one(ConfigPane).dirty:
            reasons.append(f"{self.active_path.name} has unsaved edits; switching drops them.")
        if not reasons:
            self.call_later(self._do_switch, index)
            return

        def answered(go) -> None:
            if go:
                self.call_later(self._do_switch, index)
        self.push_screen(ChoiceScreen(f"Switch to {self.presets[index].stem}?", "\n".join(reasons),
                                      [("y", "Switch", True), ("n", "Cancel", False)]), answered)

    async def _do_switch(self, index: int) -> None:
        self.active = index
        await self.load_active_preset()
        self.say(f"preset: {self.presets[index].stem}", timeout=2)

    def action_cycle_preset(self, delta: int) -> None:
        if self.presets:
            self.switch_preset((self.active + delta) % len(self.presets))

    def action_pick_preset(self, number: int) -> None:
        if number <= len(self.presets):
            self.switch_preset(number - 1)

    def on_preset_list_chosen(self, message: PresetList.Chosen) -> None:
        self.switch_preset(message.index)

    # ------------------------------------------------------------------ panes and themes

    def action_show_pane(self, pane: str) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active != pane and self.focused is not None:
            # the focus leaves the pane first: Textual moves a focus that is hidden to the next widget of the
            # same pane, whose focus message then switches back to it
            self.screen.set_focus(None)
        tabs.active = pane

    def action_cycle_pane(self, delta: int) -> None:
        names = [p for p, _, _ in PANES]
        self.action_show_pane(names[(names.index(self.visible_pane) + delta) % len(names)])

    async def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = self.visible_pane
        if pane in PANE_CLASSES:
            await self.ensure_pane(pane)
        # focus the pane's main widget, so its own keys (r: rescan, ctrl+s: save, ...) work at once
        target = {"config": "#field-table", "dataset": "#bucket-table", "environment": "#check-table",
                  "train": "#train-log"}.get(pane)
        if target:
            self.query_one(target).focus()
        self._refresh_visible_pane()
        self.refresh_bindings()

    @property
    def visible_pane(self) -> str:
        return self.query_one(TabbedContent).active

    def _refresh_visible_pane(self) -> None:
        pane = self.visible_pane
        widget = self.pane(pane)
        if widget is None:
            return
        if pane == "dataset":
            widget.scan_if_stale()
        elif pane == "environment":
            widget.check_if_stale()
        elif pane == "train":
            self._show_train(force=True)

    def action_pane_key(self, pane: str, action: str) -> None:
        getattr(self.pane(pane), f"action_{action}")()

    async def run_pane_action(self, pane: str, action: str) -> None:
        self.action_show_pane(pane)
        widget = self.query_one(ConfigPane) if pane == "config" else await self.ensure_pane(pane)
        getattr(widget, f"action_{action}")()

    def action_next_theme(self) -> None:
        names = self.theme_names or list(self.available_themes)
        i = names.index(self.theme) if self.theme in names else -1
        self.switch_theme(names[(i + 1) % len(names)])

    def switch_theme(self, name: str) -> None:
        """Switch and remember the theme for the next start."""
        self.theme = name
        problem = save_theme(self.settings, name)
        self.say(problem or f"theme: {name}", timeout=4 if problem else 2)

    # ------------------------------------------------------------------ the run

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
        if config.dirty:
            def answered(choice) -> None:
                if choice == "save":
                    config.doc.save()
                    config.dirty = False
                    self.preset_saved()
                    self._start_if_valid()
                elif choice == "disk":
                    self._start_if_valid()
            self.push_screen(ChoiceScreen("Unsaved edits", f"{config.path.name} has edits not saved to disk.",
                                          [("s", "Save and start", "save"), ("d", "Start with the saved file", "disk"),
                                           ("n", "Cancel", None)]), answered)
            return
        self._start_if_valid()

    def _start_if_valid(self) -> None:
        config = self.query_one(ConfigPane)
        validation = self.services.validate_file(config.path)
        if validation.preset is None or not validation.ok:
            errors = validation.errors
            self.say(f"{len(errors)} error(s) in {config.path.name}: " + (str(errors[0]) if errors else ""),
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
        known = self.train_state if shown is not None and _same_path(shown.output_dir, out) else None
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
                env = self.pane("environment")
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
        pane = self.pane("train")
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
            self.push_screen(ChoiceScreen("Unsaved edits", f"{config.path.name} has edits not saved to disk.",
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


def write_paint_probe(path: Path) -> None:
    """bench/first_paint.py: CPU seconds and wall seconds since this process started, at the first paint."""
    import json
    import time

    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        wall = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        wall = None
    path.write_text(json.dumps({"cpu_s": round(time.process_time(), 3), "wall_s": wall}))


def newest_checkpoint(preset):
    """The newest complete checkpoint (CheckpointInfo) in the preset's output_dir, or None; what the trainer
    counts as an earlier run there (the checkpoint module imports no torch)."""
    try:
        from hvtui.core.train.checkpoint import find_newest
    except ImportError:
        return None
    out = preset.resolve_path(preset.output_dir)
    try:
        return find_newest(out) if out else None
    except Exception:  # an unreadable folder: start fresh rather than fail here
        return None


def _same_path(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return Path(a) == Path(b)


def _log_event(message: str, level: str):
    from hvtui.core.events import log

    return log(message, level)
