"""The core functions the panes call, gathered so tests can swap the slow or external ones (the trainer
backend, telemetry, the editor) for fakes. Real modules are imported when first used, never at start-up,
so the first paint does not wait for them.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvtui.core.preset.schema import Preset
from hvtui.core.run.bus import Bus
from hvtui.core.run.session import Backend
from hvtui.tui.native_output import TERMINAL_FD


class Unavailable(RuntimeError):
    """A core module this build lacks; the pane shows the message instead of crashing."""


def guarded(call: Callable[[], Any], what: str) -> tuple[Any, str]:
    """(result, "") or (None, why) for a pane's worker thread: a missing module or a core bug becomes a
    message in the pane instead of taking the UI down."""
    try:
        return call(), ""
    except Unavailable as e:
        return None, str(e)
    except Exception as e:
        return None, f"{what} failed: {type(e).__name__}: {e}"


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            raise Unavailable(f"{what} is not available in this build ({module} missing)") from None
        raise


def validate_file(path: Path):
    return _need("hvtui.core.preset.check", "preset validation").validate_file(path)


def validate_preset(preset: Preset) -> list:
    return _need("hvtui.core.preset.check", "preset validation").validate_preset(preset)


def open_document(path: Path):
    return _need("hvtui.core.preset.edit", "preset editing").PresetDocument.open(path)


def scan_preset(preset: Preset, progress: Callable[[int, int, str], None] | None = None, use_cache: bool = True):
    return _need("hvtui.core.dataset.scan", "the dataset scanner").scan_preset(preset, progress=progress,
                                                                           use_cache=use_cache)


def run_doctor(preset: Preset):
    return _need("hvtui.core.env.doctor", "the environment doctor").run_doctor(preset)


def default_telemetry(bus: Bus) -> Any | None:
    """An NVML sampler publishing `gpu` events, or None when this build has no telemetry module."""
    try:
        mod = _need("hvtui.core.env.telemetry", "GPU telemetry")
    except Unavailable:
        return None
    return mod.TelemetrySampler(bus, interval=1.0)


def gpu_count() -> int:
    """CUDA GPUs this machine offers a run (NVML; no torch): more than 1 makes the UI ask how many to use."""
    from hvtui.core.train.multi_gpu import gpu_count as count  # here: NVML only when a run is started

    return count()


def editor_command(path: Path, env=os.environ) -> list[str]:
    editor = env.get("VISUAL") or env.get("EDITOR") or "vi"
    return [*shlex.split(editor), str(path)]


def run_editor(app, path: Path) -> int:
    """Hand the terminal to $EDITOR (the app is suspended meanwhile); the exit status."""
    tty = TERMINAL_FD[0]   # set while the launcher diverts fds 1/2 to a log
    with app.suspend():
        try:
            return subprocess.call(editor_command(path), stdout=tty, stderr=tty)
        except OSError as e:
            print(f"cannot start the editor: {e}")
            return 127


@dataclass
class Services:
    backend: Backend | None = None                     # None: the real trainer (hvtui.core.train.loop)
    telemetry: Callable[[Bus], Any | None] | None = default_telemetry
    validate_file: Callable = validate_file
    validate_preset: Callable = validate_preset
    open_document: Callable = open_document
    scan_preset: Callable = scan_preset
    run_doctor: Callable = run_doctor
    run_editor: Callable = run_editor
    gpu_count: Callable[[], int] = gpu_count
