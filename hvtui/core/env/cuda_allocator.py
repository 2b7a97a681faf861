"""The CUDA caching allocator's mode for training runs: expandable segments, unless the user chose a setting.

By default torch's allocator gives each large request a block of a cudaMalloc'd segment and keeps freed
segments cached for reuse; the training step's mix of sizes (checkpointed block inputs, kept attention outputs,
one block's recompute) leaves those segments partly empty, and NVML counts them whole. Measured on the H200
(BENCHMARKS.md "Memory calibration", 2026-12-03): the 720p preset's step held 56.7 GiB reserved for 46.3 GiB
allocated, the 80 GB 480p preset 48.5 for 42.4. With `expandable_segments:True` one segment per stream grows by
2 MiB pages instead, so freed space is reused whatever its size; a user pays for much less than that gap.

torch reads PYTORCH_ALLOC_CONF (torch >= 2.9) or PYTORCH_CUDA_ALLOC_CONF when it loads (recent versions parse it
while the library initialises, older ones when CUDA starts). `configure()` runs first thing in
`hvtui.core.train.loop.train`, which every run goes through: the TUI's in-process trainer, `hvtui --run`, and each
torchrun / accelerate worker (its own process). By then torch is loaded, so besides setting the variable (for
processes started from here) it applies the setting through torch's runtime setter, which the allocator reads at
every new segment, before or after CUDA started. A user's own setting of either variable is left alone.
`hvtui.core.env.fit` estimates with the mode `expandable(env)` says a run will use; bench/preset_memory.py records
whether the training step's segments were expandable.

No torch import at module level: fit and doctor import this.
"""
from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

ENV = "PYTORCH_CUDA_ALLOC_CONF"          # what torch < 2.9 reads; still read by newer torch
ENV_NEW = "PYTORCH_ALLOC_CONF"           # torch >= 2.9 reads this first
SETTING = "expandable_segments:True"
_OURS = {"set": False}                   # this process's variable is hvtui's default, not the user's


def user_setting(env: MutableMapping[str, str]) -> tuple[str, str] | None:
    """(variable, value) of the allocator setting in `env` that torch will read, or None."""
    for name in (ENV_NEW, ENV):
        value = (env.get(name) or "").strip()
        if value:
            return name, value
    return None


def _options(value: str) -> dict[str, str]:
    out = {}
    for item in value.split(","):
        key, _, val = item.partition(":")
        if key.strip():
            out[key.strip()] = val.strip()
    return out


def expandable(env: MutableMapping[str, str] | None = None) -> bool:
    """Whether a training run started in `env` allocates with expandable segments (hvtui's default where the
    user set neither variable; the user's own setting otherwise)."""
    found = user_setting(os.environ if env is None else env)
    if found is None:
        return True
    return _options(found[1]).get("expandable_segments", "").lower() == "true"


def configure(env: MutableMapping[str, str] | None = None) -> str:
    """Set hvtui's default where the user set nothing; returns the line the run log shows."""
    env = os.environ if env is None else env
    found = user_setting(env)
    if found is not None and not (_OURS["set"] and found == (ENV, SETTING)):
        return f"CUDA allocator: {found[0]}={found[1]} (your setting)"
    env[ENV] = SETTING
    if env is os.environ:
        _OURS["set"] = True
        _apply_in_process()
    return f"CUDA allocator: {ENV}={SETTING} (hvtui's default: less memory lost between blocks; set {ENV} to choose)"


def _apply_in_process() -> None:
    torch = sys.modules.get("torch")   # never import torch here: not loaded yet means it will read the variable
    if torch is None:
        return
    try:
        if not torch.cuda.is_available():
            return
        # torch >= 2.10 moved the setter to the accelerator API and warns (FutureWarning, in the user's run log)
        # on the old name; both are private, the old one present since torch 2.1
        setter = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
        if setter is None:
            setter = torch.cuda.memory._set_allocator_settings
        setter(SETTING)
    except Exception:   # noqa: BLE001 - an older or unusual build: the variable still serves new processes
        pass
