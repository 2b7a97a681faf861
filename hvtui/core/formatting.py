"""Text the core writes for people, one helper per kind: byte sizes, counts and an exception's first line.
Durations are `hvtui.core.run.eta.format_duration`. Stdlib only, so every module can use these."""
from __future__ import annotations

GiB = 1024 ** 3


def gib(n: float) -> str:
    """Bytes as GiB with one decimal, whatever the size (memory budgets: "24.8 GiB")."""
    return f"{n / GiB:.1f} GiB"


def human_bytes(n: float) -> str:
    """Bytes in the largest unit that is at least 1 (file sizes, free disk: "312.4 MiB", "3.5 TiB", "17 B")."""
    for unit, size in (("TiB", 1024 ** 4), ("GiB", GiB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def human_count(n: int) -> str:
    """A parameter count: "8.33B", "2.10M", "512"."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def first_line(e: Exception, limit: int = 160) -> str:
    """An exception's message for a one-line warning (wandb's carry advice on further lines)."""
    text = (str(e).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit - 1] + "…"
