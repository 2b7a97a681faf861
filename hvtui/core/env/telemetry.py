"""The GPU sampler: a daemon thread publishing one `gpu` event per interval (about 1 Hz).

Event data (events.py): `gpus` (every GPU NVML sees: index, name, mem_used, mem_total, mem_free, util, temp,
power, power_limit, visible), `offload` (whatever `extra()` returns: the offload counters of the run), and,
when the process already uses CUDA, `torch` (allocated / reserved / peak bytes). Without a GPU `gpus` is
empty and `error` says why ("no GPU: ..."). The thread never imports torch and never raises: a failing
`extra()` shows up as `offload: {"error": ...}`.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from hvtui.core.env.nvml import Nvml
from hvtui.core.run.bus import Bus
from hvtui.core.run.events import Event


def torch_memory(device: Any = None) -> dict | None:
    """{allocated, reserved, peak} bytes on the current (or given) CUDA device, or None.

    None unless this process has already imported torch and initialised CUDA: the sampler must neither pay
    for `import torch` nor create a CUDA context of its own.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        dev = torch.cuda.current_device() if device is None else device
        return {"device": str(dev), "allocated": int(torch.cuda.memory_allocated(dev)),
                "reserved": int(torch.cuda.memory_reserved(dev)),
                "peak": int(torch.cuda.max_memory_allocated(dev))}
    except Exception:  # a torch without CUDA support, a device that went away
        return None


class TelemetrySampler:
    """`start()` / `stop()`; `extra` may be replaced while running (the trainer sets it after offload setup)."""

    def __init__(self, bus: Bus, interval: float = 1.0, extra: Callable[[], dict] | None = None,
                 device: Any = None, nvml: Nvml | None = None):
        self.bus = bus
        self.interval = max(0.05, float(interval))
        self.extra = extra
        self.device = device
        self._nvml = nvml or Nvml()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> TelemetrySampler:
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hvtui-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def sample(self) -> dict:
        """One reading as event data (also what the thread publishes)."""
        info = self._nvml.sample()
        data: dict[str, Any] = {"gpus": [g.to_dict() for g in info.gpus]}
        if not info.available:
            data["error"] = info.reason
        if info.driver:
            data["driver"] = info.driver
        extra = self.extra
        if extra is not None:
            try:
                data["offload"] = dict(extra() or {})
            except Exception as e:  # the counters are a view; a broken one must not stop sampling
                data["offload"] = {"error": f"{type(e).__name__}: {e}"}
        mem = torch_memory(self.device)
        if mem is not None:
            data["torch"] = mem
        return data

    def sample_once(self) -> Event:
        event = Event("gpu", self.sample())
        self.bus.publish(event)
        return event

    def _run(self) -> None:
        try:
            while True:
                try:
                    self.sample_once()
                except Exception:  # keep the thread alive whatever one reading did
                    pass
                if self._stop.wait(self.interval):
                    break
        finally:
            self._nvml.close()

    def __enter__(self) -> TelemetrySampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
