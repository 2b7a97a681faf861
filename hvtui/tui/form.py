"""The Config pane's form model: which fields a preset has (from the dataclass metadata in
hvtui.core.preset.schema, grouped by `section`), their current values as text, and text -> typed value.
No widgets here, so it is testable on its own."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from hvtui.core.preset.check_fields import display_key, field_hints, field_type
from hvtui.core.preset.schema import DatasetSpec, Preset, VideoSpec, field_specs

SECTION_ORDER = ("model", "lora", "training", "memory", "validation", "logging", "data")
LIST_SEPARATOR = " | "


@dataclass(frozen=True)
class FormField:
    path: tuple                 # ("learning_rate",) or ("datasets", 0, "video", "num_frames")
    name: str
    section: str
    base: Any                   # bool, int, float, str or list[str]
    optional: bool
    choices: tuple | None
    help: str
    minimum: float | None
    maximum: float | None

    @property
    def key(self) -> str:
        """Dotted key for PresetDocument: "datasets.0.video.num_frames"."""
        return ".".join(str(p) for p in self.path)

    @property
    def display_key(self) -> str:
        """As the validator names it: "datasets[0].video.num_frames"."""
        return display_key(self.path)

    @property
    def widget_id(self) -> str:
        return "f-" + "-".join(str(p) for p in self.path).replace("_", "-")


def _fields(cls, prefix: tuple, section: str | None) -> list[FormField]:
    hints = field_hints(cls)
    out = []
    for name, f in field_specs(cls).items():
        if name in ("datasets", "video"):
            continue
        base, optional = field_type(hints[name])
        md = f.metadata
        out.append(FormField(prefix + (name,), name, section or md.get("section") or "other", base, optional,
                             md.get("choices"), md.get("help", ""), md.get("min"), md.get("max")))
    return out


def form_fields(preset: Preset) -> list[FormField]:
    """Top-level fields in section order, then one group per dataset (its video settings included)."""
    top = _fields(Preset, (), None)
    order = {s: i for i, s in enumerate(SECTION_ORDER)}
    top.sort(key=lambda f: order.get(f.section, len(order)))   # stable: keeps declaration order within
    out = list(top)
    for i, ds in enumerate(preset.datasets):
        section = f"dataset {ds.id or i}"
        out += _fields(DatasetSpec, ("datasets", i), section)
        if ds.dataset_type in ("video", "image"):
            out += _fields(VideoSpec, ("datasets", i, "video"), section)
    return out


def get_value(preset: Preset, path: tuple) -> Any:
    obj: Any = preset
    for part in path:
        obj = obj[part] if isinstance(part, int) else getattr(obj, part)
    return obj


def set_value(preset: Preset, path: tuple, value: Any) -> None:
    obj: Any = preset
    for part in path[:-1]:
        obj = obj[part] if isinstance(part, int) else getattr(obj, part)
    setattr(obj, path[-1], value)


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return LIST_SEPARATOR.join(str(v) for v in value)
    return str(value)


class FieldError(ValueError):
    pass


def parse_text(f: FormField, text: str) -> Any:
    """Typed value of what was typed, or FieldError saying what is expected."""
    t = text.strip()
    if not t and f.optional:
        return None
    if f.base is int:
        try:
            return int(t)
        except ValueError:
            raise FieldError("expected a whole number" + (", or empty for the default" if f.optional else "")) from None
    if f.base is float:
        try:
            v = float(t)
        except ValueError:
            default = ", or empty for the default" if f.optional else ""
            raise FieldError("expected a number like 1e-4" + default) from None
        return int(v) if t.lstrip("+-").isdigit() else v
    if f.base is bool:
        if t.lower() in ("true", "false"):
            return t.lower() == "true"
        raise FieldError("expected true or false")
    if typing.get_origin(f.base) is list:
        return [p.strip() for p in text.split(LIST_SEPARATOR.strip()) if p.strip()]
    return text


def copy_preset(preset: Preset) -> Preset:
    """A deep copy the form edits (source kept, so validation still points at the file's lines)."""
    import copy

    out = copy.deepcopy(preset)
    out.source = preset.source
    return out
