"""Every key binding hvtui has, with a stable id, in one table; users remap them by id in keys.toml, flat
or under a [keys] table (README.md shows both; a test reads its example):

    "run.start" = "g"
    [keys]
    "pane.train" = "f4,ctrl+t"     # several keys: comma-separated

Keys are chosen to survive SSH and tmux: letters, digits, F-keys, brackets (no ctrl+enter, no ctrl+shift).
F1-F4 pick panes (`<` / `>` cycle them where a terminal eats F-keys); `[` / `]` cycle presets and 1-9 pick
one, so digits never switch panes.
"""
from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType


@dataclass(frozen=True)
class Key:
    id: str
    keys: str
    action: str
    description: str
    show: bool = True
    priority: bool = False


APP_KEYS: tuple[Key, ...] = (
    Key("pane.config", "f1", "show_pane('config')", "Config", show=False),
    Key("pane.dataset", "f2", "show_pane('dataset')", "Dataset", show=False),
    Key("pane.environment", "f3", "show_pane('environment')", "Env", show=False),
    Key("pane.train", "f4", "show_pane('train')", "Train", show=False),
    Key("pane.next", "greater_than_sign", "cycle_pane(1)", "Next pane", show=False),
    Key("pane.prev", "less_than_sign", "cycle_pane(-1)", "Previous pane", show=False),
    Key("preset.prev", "left_square_bracket", "cycle_preset(-1)", "Prev preset", show=False),
    Key("preset.next", "right_square_bracket", "cycle_preset(1)", "Preset"),
    *(Key(f"preset.{n}", str(n), f"pick_preset({n})", f"Preset {n}", show=False) for n in range(1, 10)),
    Key("run.start", "s", "start_run", "Start"),
    Key("run.pause", "p", "toggle_pause", "Pause/Resume"),
    Key("run.stop", "x", "stop_run", "Stop"),
    Key("run.save", "c", "save_now", "Checkpoint"),
    Key("run.sample", "v", "sample_now", "Sample"),
    Key("theme.next", "t", "next_theme", "Theme", show=False),
    Key("quit", "q,ctrl+q", "quit", "Quit", priority=False),
)

CONFIG_KEYS: tuple[Key, ...] = (
    Key("config.save", "ctrl+s", "save", "Save"),
    Key("config.editor", "e", "edit_external", "$EDITOR"),
    Key("config.revert", "ctrl+r", "revert", "Revert", show=False),
)
DATASET_KEYS: tuple[Key, ...] = (Key("dataset.rescan", "r", "rescan", "Rescan"),)
ENVIRONMENT_KEYS: tuple[Key, ...] = (Key("environment.rerun", "r", "rerun", "Rerun"),)

ALL_KEYS = APP_KEYS + CONFIG_KEYS + DATASET_KEYS + ENVIRONMENT_KEYS
KEY_IDS = frozenset(k.id for k in ALL_KEYS)


def bindings(keys: tuple[Key, ...]) -> list[BindingType]:
    return [Binding(k.keys, k.action, k.description, show=k.show, priority=k.priority, id=k.id) for k in keys]


def pane_fallbacks() -> list[BindingType]:
    """App-level copies of the panes' keys (same ids, so a remap moves both, hidden from the footer): the
    app runs them on the visible pane when the focus is outside it."""
    out: list[BindingType] = []
    for pane, keys in (("config", CONFIG_KEYS), ("dataset", DATASET_KEYS), ("environment", ENVIRONMENT_KEYS)):
        out += [Binding(k.keys, f"pane_key('{pane}', '{k.action}')", k.description, show=False, id=k.id)
                for k in keys]
    return out


def key_for(binding_id: str, keymap: dict[str, str] | None = None) -> str:
    """The first key a binding answers to (after remapping), for help text."""
    if keymap and binding_id in keymap:
        return keymap[binding_id].split(",")[0]
    for k in ALL_KEYS:
        if k.id == binding_id:
            return k.keys.split(",")[0]
    raise KeyError(binding_id)
