"""Where hvtui's user settings live and how they are read: $HVTUI_CONFIG_DIR, else $XDG_CONFIG_HOME/hvtui,
else ~/.config/hvtui. `settings.toml` (theme = "..."), `keys.toml` (key remapping), `themes/` (extra themes).

A broken settings file is reported (message, file) and ignored, never fatal: the app must still start.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hvtui.tui.keymap import KEY_IDS

DEFAULT_THEME = "hvtui-dark"


def config_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("HVTUI_CONFIG_DIR"):
        return Path(env["HVTUI_CONFIG_DIR"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "hvtui"


def read_toml(path: Path, problems: list[str]) -> dict:
    """The file's table, or {} (with a problem recorded) when it exists but cannot be read."""
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        problems.append(f"{path}: ignored, not valid TOML: {e}")
        return {}


@dataclass
class Settings:
    theme: str = DEFAULT_THEME
    keys: dict[str, str] = field(default_factory=dict)
    directory: Path | None = None
    problems: list[str] = field(default_factory=list)


def save_theme(settings: Settings, name: str) -> str | None:
    """Remember the chosen theme in settings.toml (tomlkit keeps the user's comments); a problem message or None."""
    settings.theme = name
    if settings.directory is None:
        return None
    import tomlkit

    path = settings.directory / "settings.toml"
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8")) if path.is_file() else tomlkit.document()
        doc["theme"] = name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.TOMLKitError) as e:
        return f"{path}: theme not saved: {e}"
    return None


def load_settings(directory: Path | None = None) -> Settings:
    directory = directory or config_dir()
    s = Settings(directory=directory)
    data = read_toml(directory / "settings.toml", s.problems)
    theme = data.get("theme")
    if isinstance(theme, str) and theme:
        s.theme = theme
    elif theme is not None:
        s.problems.append(f"{directory / 'settings.toml'}: theme must be a theme name string")
    s.keys = read_keymap(directory / "keys.toml", s.problems)
    return s


def read_keymap(path: Path, problems: list[str]) -> dict[str, str]:
    """binding id -> keys from keys.toml; unknown ids and non-string keys are reported and skipped.

    Ids may sit at the top level or in a [keys] table, quoted ("run.start" = "g") or as TOML dotted keys
    (run.start = "g", which TOML reads as a table `run` holding `start`): all mean the same binding."""
    data = read_toml(path, problems)
    table = data.pop("keys", {})
    if not isinstance(table, dict):
        problems.append(f"{path}: [keys] must be a table of binding id = \"key\"")
        table = {}
    out: dict[str, str] = {}
    for binding_id, keys in [*_flatten(data), *_flatten(table)]:
        if binding_id not in KEY_IDS:
            problems.append(f"{path}: unknown binding id {binding_id!r} (ignored); ids: {', '.join(sorted(KEY_IDS))}")
        elif not isinstance(keys, str) or not keys.strip():
            problems.append(f"{path}: {binding_id} must be a key string like \"f5\" or \"s,ctrl+s\"")
        else:
            out[binding_id] = keys.replace(" ", "")
    return out


def _flatten(table: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key, value in table.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out
