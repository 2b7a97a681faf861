"""NVIDIA GPUs through NVML (nvidia-ml-py, import name `pynvml`), without torch and without a GPU.

`query()` answers once; `Nvml` keeps NVML initialised between samples for the telemetry thread. A machine
without the NVIDIA driver makes `nvmlInit` raise `NVMLError_LibraryNotFound` (REFERENCE.md trap 7): that is
the ordinary "no GPU" answer (`available` False, `reason` says why), never an exception. Each per-device
field a GPU does not support (power on some boards, temperature under MIG) is None, not an error.
Units: bytes, percent, degrees Celsius, watts.
"""
from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from types import ModuleType


@dataclass
class GpuSample:
    index: int
    name: str
    uuid: str | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    mem_free: int | None = None
    util: float | None = None          # % of time a kernel ran
    temp: float | None = None          # degrees C
    power: float | None = None         # W
    power_limit: float | None = None   # W
    visible: bool = True               # listed by CUDA_VISIBLE_DEVICES (or it is unset)
    capability: tuple[int, int] | None = None   # CUDA compute capability, e.g. (9, 0) for an H100

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NvmlInfo:
    available: bool
    reason: str = ""                   # why there is no GPU information ("" when available)
    driver: str | None = None
    cuda: str | None = None            # the highest CUDA version the driver supports, e.g. "12.4"
    gpus: list[GpuSample] = field(default_factory=list)

    @property
    def visible_gpus(self) -> list[GpuSample]:
        return [g for g in self.gpus if g.visible]

    def to_dict(self) -> dict:
        return {"available": self.available, "reason": self.reason, "driver": self.driver, "cuda": self.cuda,
                "gpus": [g.to_dict() for g in self.gpus]}


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _visible(index: int, uuid: str | None, spec: str | None) -> bool:
    """Whether CUDA_VISIBLE_DEVICES (indices or GPU-UUID prefixes) lets a CUDA program see this GPU."""
    if spec is None:
        return True
    if "MIG-" in spec:   # MIG instances: which parent GPU they belong to needs MIG queries; show them all
        return True
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.isdigit():
            if int(item) == index:
                return True
        elif uuid and uuid.startswith(item):
            return True
    return False


def _no_gpu_reason(error: Exception, pynvml) -> str:
    if isinstance(error, pynvml.NVMLError_LibraryNotFound):
        return "no GPU: the NVIDIA driver library (libnvidia-ml) was not found"
    if isinstance(error, getattr(pynvml, "NVMLError_DriverNotLoaded", ())):
        return "no GPU: the NVIDIA driver is not loaded"
    if isinstance(error, getattr(pynvml, "NVMLError_NoPermission", ())):
        return "no GPU access: NVML was refused permission"
    return f"no GPU information: NVML error: {error}"


class Nvml:
    """NVML kept open between samples (init once, shutdown on close). Thread-safe."""

    def __init__(self, env=os.environ):
        self._env = env
        self._lock = threading.Lock()
        self._pynvml: ModuleType | None = None     # the pynvml module, once open() imported it
        self._open = False
        self.reason = ""
        self.driver: str | None = None
        self.cuda: str | None = None

    def open(self) -> bool:
        with self._lock:
            if self._open:
                return True
            try:
                import pynvml
            except ImportError:
                self.reason = "no GPU information: nvidia-ml-py (pynvml) is not installed"
                return False
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as e:
                self.reason = _no_gpu_reason(e, pynvml)
                return False
            self._pynvml, self._open, self.reason = pynvml, True, ""
            try:
                self.driver = _text(pynvml.nvmlSystemGetDriverVersion())
            except pynvml.NVMLError:
                self.driver = None
            try:
                v = int(pynvml.nvmlSystemGetCudaDriverVersion())
                self.cuda = f"{v // 1000}.{(v % 1000) // 10}"
            except (pynvml.NVMLError, AttributeError, TypeError, ValueError):
                self.cuda = None
            return True

    def close(self) -> None:
        with self._lock:
            if self._open and self._pynvml is not None:
                try:
                    self._pynvml.nvmlShutdown()
                except self._pynvml.NVMLError:
                    pass
            self._open = False

    def sample(self) -> NvmlInfo:
        # a failed init is not retried every sample: a GPU does not appear while hvtui runs
        if not self._open and (self.reason or not self.open()):
            return NvmlInfo(False, self.reason)
        with self._lock:
            nv = self._pynvml
            assert nv is not None    # open() set it (close() keeps it)
            try:
                count = nv.nvmlDeviceGetCount()
            except nv.NVMLError as e:
                return NvmlInfo(False, f"no GPU information: NVML error: {e}", self.driver, self.cuda)
            spec = self._env.get("CUDA_VISIBLE_DEVICES")
            gpus = [self._device(nv, i, spec) for i in range(count)]
        if not gpus:
            return NvmlInfo(False, "no GPU: NVML found no NVIDIA GPU", self.driver, self.cuda)
        return NvmlInfo(True, "", self.driver, self.cuda, gpus)

    @staticmethod
    def _device(nv, index: int, spec: str | None) -> GpuSample:
        def get(fn, *args):
            try:
                return fn(*args)
            except nv.NVMLError:
                return None

        h = nv.nvmlDeviceGetHandleByIndex(index)
        name = get(nv.nvmlDeviceGetName, h)
        uuid = get(nv.nvmlDeviceGetUUID, h)
        g = GpuSample(index, _text(name) if name is not None else f"GPU {index}",
                      _text(uuid) if uuid is not None else None)
        mem = get(nv.nvmlDeviceGetMemoryInfo, h)
        if mem is not None:
            g.mem_used, g.mem_total, g.mem_free = int(mem.used), int(mem.total), int(mem.free)
        util = get(nv.nvmlDeviceGetUtilizationRates, h)
        g.util = float(util.gpu) if util is not None else None
        temp = get(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
        g.temp = float(temp) if temp is not None else None
        power = get(nv.nvmlDeviceGetPowerUsage, h)              # milliwatts
        g.power = power / 1000.0 if power is not None else None
        limit = get(nv.nvmlDeviceGetEnforcedPowerLimit, h)
        g.power_limit = limit / 1000.0 if limit is not None else None
        g.visible = _visible(index, g.uuid, spec)
        capability = getattr(nv, "nvmlDeviceGetCudaComputeCapability", None)   # absent from old nvidia-ml-py
        cc = get(capability, h) if capability is not None else None
        g.capability = (int(cc[0]), int(cc[1])) if cc is not None else None
        return g

    def __enter__(self) -> Nvml:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def query(env=os.environ) -> NvmlInfo:
    """One look at every GPU; NvmlInfo(available=False, reason=...) without a GPU or driver."""
    with Nvml(env) as nvml:
        return nvml.sample()
