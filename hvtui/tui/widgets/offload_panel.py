"""Group-offload counters (from `gpu` events' `offload` table): bytes resident on GPU vs host, H2D rate,
time the step waited on transfers. Unknown counters are listed as they come, so a new one still shows."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from hvtui.tui.train_state import format_bytes

LABELS = {  # counter -> (label, kind)
    "gpu_bytes": ("on GPU", "bytes"), "resident_gpu_bytes": ("on GPU", "bytes"),
    "host_bytes": ("on host", "bytes"), "resident_host_bytes": ("on host", "bytes"),
    "h2d_bytes_per_s": ("H2D", "rate"), "h2d_rate": ("H2D", "rate"),
    "h2d_bytes": ("H2D total", "bytes"),
    "wait_s": ("step waited", "seconds"), "wait_s_per_step": ("waited/step", "seconds"),
    "wait_fraction": ("waited", "fraction"),
}


def format_counter(key: str, value) -> tuple[str, str]:
    label, kind = LABELS.get(key, (key.replace("_", " "), ""))
    if not isinstance(value, (int, float)):
        return label, str(value)
    if kind == "bytes" or (not kind and key.endswith("bytes")):
        return label, format_bytes(value)
    if kind == "rate":
        return label, f"{format_bytes(value)}/s"
    if kind == "seconds" or key.endswith("_s"):
        return label, f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if kind == "fraction":
        return label, f"{value * 100:.0f}%"
    return label, f"{value:g}"


class OffloadPanel(Static):
    DEFAULT_CSS = """
    OffloadPanel { height: auto; min-height: 3; border: round $panel-lighten-2; padding: 0 1; }
    """

    def on_mount(self) -> None:
        self.border_title = "offload"
        self.show(None)

    def show(self, counters: dict | None) -> None:
        if not counters:
            self.update(Text("offload on: waiting for counters…", style="dim"))
            return
        t = Text()
        for i, (key, value) in enumerate(counters.items()):
            label, text = format_counter(key, value)
            t.append(("   " if i else "") + f"{label} ", style="bold")
            t.append(text)
        self.update(t)
