"""The core's hints name the commands of a shell (`hvtui doctor PRESET`); in the TUI the same information
is one key away, so the Train pane and its log say which pane shows it instead."""
from __future__ import annotations

import re

from hvtui.core.run.events import Event

# (pattern, pane binding id, replacement with {key}); the first forms are whole phrases that would read
# badly with a pane put in place of the command
_REWRITES = (
    (re.compile(r"run `?hvtui doctor PRESET`? to see"), "pane.environment", "the Environment pane ({key}) shows"),
    (re.compile(r"`?hvtui doctor PRESET`?"), "pane.environment", "the Environment pane ({key})"),
    (re.compile(r"`?hvtui check PRESET`?"), "pane.config", "the Config pane ({key})"),
    (re.compile(r"`?hvtui buckets PRESET`?"), "pane.dataset", "the Dataset pane ({key})"),
)


def in_tui_words(text: str, keys: dict[str, str]) -> str:
    for pattern, binding_id, replacement in _REWRITES:
        text = pattern.sub(replacement.format(key=keys.get(binding_id, "?").upper()), text)
    return text


def tui_event(e, keys: dict[str, str]):
    """An error or log event with its command names turned into pane keys; other events as they are."""
    if e.kind not in ("error", "log"):
        return e
    data = {k: in_tui_words(v, keys) if k in ("message", "hint") and isinstance(v, str) else v
            for k, v in e.data.items()}
    return Event(e.kind, data, e.time) if data != dict(e.data) else e
