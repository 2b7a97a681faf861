"""The hvtui Textual app: four panes (Config, Dataset, Environment, Train), preset switching by key and
palette, themes from files, remappable keys, SSH-safe signals, attach to a headless run.

Data flows one way: the trainer publishes on the core bus; a ~4 Hz timer here pulls `bus.since(seq)` (or
the attached run's events.jsonl) into a TrainState and redraws. Commands go back through the run's control
object (or control files). Nothing here is ever called from the trainer thread.
"""
from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.widgets import Footer, Static, TabbedContent, TabPane

from hvtui.core.run import exitcodes
from hvtui.core.run.bus import Bus
from hvtui.tui import keymap
from hvtui.tui.dialogs import ChoiceScreen
from hvtui.tui.pane_host import PANES
from hvtui.tui.panes.config import ConfigPane, PresetList
from hvtui.tui.run_control import RunControl, same_path
from hvtui.tui.runs import AttachedRun, PastRun
from hvtui.tui.services import Services
from hvtui.tui.settings import DEFAULT_THEME, Settings, save_theme
from hvtui.tui.themes import REPO_THEMES, load_themes, variable_defaults
from hvtui.tui.train_state import TrainState
from hvtui.tui.widgets.status_bar import StatusBar

POLL_INTERVAL = 0.25          # the UI pulls events ~4 times a second


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


class HvtuiApp(RunControl):
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
        self.event_loop: asyncio.AbstractEventLoop | None = None

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

    async def on_mount(self) -> None:
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
        telemetry = self.services.telemetry
        assert telemetry is not None    # on_mount starts this worker only when there is one
        try:
            sampler = telemetry(self.monitor_bus)
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

    async def load_active_preset(self) -> None:
        config = self.query_one(ConfigPane)
        await config.load(self.active_path)
        self.query_one(PresetList).index = self.active
        self._preset_changed(config.preset)

    def _preset_changed(self, preset) -> None:
        self.pane_preset = preset
        self._follow_output_dir(preset)
        for _, widget in self.built_panes():
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
        if shown is not None and out is not None and same_path(shown.output_dir, out):
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
            name = self.active_path.name if self.active_path else "the preset"   # (edits are made to a file)
            reasons.append(f"{name} has unsaved edits; switching drops them.")
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

    # ------------------------------------------------------------------ themes

    def action_next_theme(self) -> None:
        names = self.theme_names or list(self.available_themes)
        i = names.index(self.theme) if self.theme in names else -1
        self.switch_theme(names[(i + 1) % len(names)])

    def switch_theme(self, name: str) -> None:
        """Switch and remember the theme for the next start."""
        self.theme = name
        problem = save_theme(self.settings, name)
        self.say(problem or f"theme: {name}", timeout=4 if problem else 2)

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


def _log_event(message: str, level: str):
    from hvtui.core.run.events import log

    return log(message, level)
