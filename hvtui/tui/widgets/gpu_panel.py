"""NVML readings (from `gpu` events) next to the torch allocator's numbers (from `step` events)."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from hvtui.tui.train_state import format_bytes


def meter(fraction: float | None, width: int = 10) -> str:
    if fraction is None:
        return "─" * width
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


def _gib(n) -> str:
    """The used half of "used/total": number only, the unit comes with the total."""
    return "--" if n is None else f"{n / 1024 ** 3:.1f}"


def _num(v, fmt: str, unit: str = "") -> str:
    return "--" if v is None else f"{v:{fmt}}{unit}"


class GpuPanel(Static):
    DEFAULT_CSS = """
    GpuPanel { height: auto; min-height: 4; max-height: 12; text-wrap: nowrap; text-overflow: ellipsis;
               border: round $panel-lighten-2; padding: 0 1; }
    """

    def on_mount(self) -> None:
        self.border_title = "GPU"
        self.show(None, {}, telemetry=True)

    def show(self, gpus: list[dict] | None, step: dict, telemetry: bool = True, device: str = "",
             note: str = "", torch_mem: dict | None = None) -> None:
        """gpus None: no reading yet; []: no GPU (note says why). Torch numbers: the step event's, else the
        sampler's."""
        t = Text(no_wrap=True, overflow="ellipsis")
        if gpus is None:
            t.append("GPU telemetry unavailable" if not telemetry else "reading GPUs…", style="dim")
        elif not gpus:
            t.append("No GPU detected", style="bold")
            t.append(f" ({note or 'NVML found none'}): training runs on the CPU", style="dim")
        for i, g in enumerate(gpus or []):
            used, total = g.get("mem_used"), g.get("mem_total")
            frac = used / total if used is not None and total else None
            name = str(g.get("name", "GPU")).replace("NVIDIA ", "")
            t.append(("\n" if i else "") + f"{g.get('index', i)} {name[:18]:<18} ", style="bold")
            t.append(f"mem {meter(frac, 8)} {_gib(used)}/{format_bytes(total)}  util {_num(g.get('util'), '.0f', '%')}"
                     f"  {_num(g.get('temp'), '.0f', '°C')}  {_num(g.get('power'), '.0f', ' W')}")
        t.append("\ntorch ", style="bold")
        tm = torch_mem or {}
        alloc = step.get("mem_allocated", tm.get("allocated"))
        reserved = step.get("mem_reserved", tm.get("reserved"))
        peak = step.get("mem_peak", tm.get("peak"))
        if any(v is not None for v in (alloc, reserved, peak)):
            t.append(f"allocated {format_bytes(alloc)}  reserved {format_bytes(reserved)}  peak {format_bytes(peak)}")
        else:
            t.append("allocated / reserved / peak: --" + (f" ({device})" if device else ""), style="dim")
        self.update(t)
