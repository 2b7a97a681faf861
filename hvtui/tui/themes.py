"""Theme files: TOML with Textual `Theme` fields plus a [variables] table (Textual's variables and hvtui's
own `hvtui-*` ones). Loaded from the repository's `themes/` and the user's config `themes/`; a broken file
is reported (file: what is wrong) and skipped, so one bad file never stops the app.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

# hvtui's own theme variables and the Textual colour each falls back to when a theme leaves it out.
HVTUI_VARIABLES = {
    "hvtui-loss-raw": "foreground-muted",
    "hvtui-loss-smooth": "accent",
    "hvtui-chart-axis": "foreground-muted",
    "hvtui-ok": "success",
    "hvtui-warn": "warning",
    "hvtui-fail": "error",
    "hvtui-banner": "warning-darken-2",
}
COLOR_FIELDS = ("primary", "secondary", "warning", "error", "success", "accent", "foreground", "background",
                "surface", "panel", "boost")
NUMBER_FIELDS = ("luminosity_spread", "text_alpha")
BOOL_FIELDS = ("dark", "ansi")
TEXT_STYLES = {"none", "bold", "dim", "italic", "underline", "reverse", "strike", "blink"}
REPO_THEMES = Path(__file__).resolve().parents[2] / "themes"


class ThemeError(ValueError):
    pass


def _check_variable(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise ThemeError(f"variable {name} must be a string")
    if name.endswith("text-style"):
        if not set(value.split()) <= TEXT_STYLES:
            raise ThemeError(f"variable {name}: {value!r} is not a text style ({', '.join(sorted(TEXT_STYLES))})")
        return
    parts = value.split()
    # "colour" or "colour NN%" (Textual's alpha shorthand); $references are resolved by Textual itself.
    if parts and parts[0].startswith("$"):
        return
    try:
        Color.parse(parts[0] if parts else "")
        if len(parts) == 2 and not (parts[1].endswith("%") and parts[1][:-1].replace(".", "").isdigit()):
            raise ColorParseError(value)
        if len(parts) > 2:
            raise ColorParseError(value)
    except ColorParseError:
        raise ThemeError(f"variable {name}: {value!r} is not a colour (e.g. \"#1e90ff\", \"ansi_blue\")") from None


def theme_from_dict(data: dict, fallback_name: str) -> Theme:
    known = {"name", "variables", *COLOR_FIELDS, *NUMBER_FIELDS, *BOOL_FIELDS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ThemeError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    name = data.get("name", fallback_name)
    if not isinstance(name, str) or not name.strip():
        raise ThemeError("name must be a non-empty string")
    if "primary" not in data:
        raise ThemeError("primary colour is required (e.g. primary = \"#4C9BE8\")")
    kwargs: dict = {"name": name}
    for key in COLOR_FIELDS:
        if key in data:
            if not isinstance(data[key], str):
                raise ThemeError(f"{key} must be a colour string")
            try:
                Color.parse(data[key])
            except ColorParseError:
                raise ThemeError(f"{key}: {data[key]!r} is not a colour (e.g. \"#1e90ff\", \"ansi_blue\")") from None
            kwargs[key] = data[key]
    for key in NUMBER_FIELDS:
        if key in data:
            if not isinstance(data[key], (int, float)) or isinstance(data[key], bool):
                raise ThemeError(f"{key} must be a number")
            kwargs[key] = float(data[key])
    for key in BOOL_FIELDS:
        if key in data:
            if not isinstance(data[key], bool):
                raise ThemeError(f"{key} must be true or false")
            kwargs[key] = data[key]
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeError("[variables] must be a table")
    for var, value in variables.items():
        _check_variable(var, value)
    kwargs["variables"] = dict(variables)
    theme = Theme(**kwargs)
    try:
        theme.to_color_system().generate()
    except Exception as e:  # Textual's own checks, e.g. a colour it cannot derive shades from
        raise ThemeError(f"Textual rejects it: {e}") from None
    return theme


def load_theme_file(path: Path) -> Theme:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ThemeError(f"cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ThemeError(f"not valid TOML: {e}") from None
    return theme_from_dict(data, fallback_name=f"hvtui-{Path(path).stem}")


@dataclass
class LoadedThemes:
    themes: list[Theme]
    problems: list[str]      # "path: message; skipped"


def load_themes(directories: list[Path]) -> LoadedThemes:
    themes: list[Theme] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                theme = load_theme_file(path)
            except ThemeError as e:
                problems.append(f"{path}: {e}; theme skipped")
                continue
            if theme.name in seen and seen[theme.name].parent == path.parent:
                problems.append(f"{path}: theme name {theme.name!r} already used by {seen[theme.name].name}; skipped")
                continue
            # a user theme with a repository theme's name replaces it
            themes = [t for t in themes if t.name != theme.name]
            seen[theme.name] = path
            themes.append(theme)
    return LoadedThemes(themes, problems)


def variable_defaults(generated: dict[str, str]) -> dict[str, str]:
    """hvtui-* variables filled from a theme's generated colours (for themes that leave them out)."""
    return {var: generated.get(src, generated.get("foreground", "#888888")) for var, src in HVTUI_VARIABLES.items()}
