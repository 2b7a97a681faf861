"""The NVML wrapper (real: no GPU here; a fake pynvml for the GPU path) and the telemetry sampler thread."""
import subprocess
import sys
import threading
import time
import types

import pytest

from hvtui.core.env import nvml as N
from hvtui.core.env.telemetry import TelemetrySampler, torch_memory
from hvtui.core.run.bus import Bus


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_query_answers_without_raising():
    info = N.query()
    if info.available:
        assert info.gpus and all(g.mem_total for g in info.gpus)
    else:
        assert info.gpus == [] and info.reason.startswith("no GPU")


def test_sampler_publishes_no_gpu_events_and_stops():
    bus = Bus()
    calls = []
    sampler = TelemetrySampler(bus, interval=0.05, extra=lambda: calls.append(1) or {"blocks_streamed": len(calls)})
    sampler.start()
    assert wait_for(lambda: len([e for e in bus.since(0)[0] if e.kind == "gpu"]) >= 3)
    sampler.stop()
    assert not sampler.running
    events = [e for e in bus.since(0)[0] if e.kind == "gpu"]
    last = events[-1]
    assert last.get("offload")["blocks_streamed"] >= 3
    if not N.query().available:   # this machine: no GPU
        assert last.get("gpus") == [] and "no GPU" in last.get("error")
    n = bus.seq
    time.sleep(0.2)
    assert bus.seq == n                                    # nothing published after stop()
    assert not [t for t in threading.enumerate() if t.name == "hvtui-telemetry"]


def test_failing_extra_does_not_stop_the_thread():
    bus = Bus()

    def broken():
        raise RuntimeError("counters gone")

    with TelemetrySampler(bus, interval=0.05, extra=broken) as s:
        assert wait_for(lambda: len(bus.since(0)[0]) >= 2)
        assert s.running
    assert bus.latest("gpu").get("offload") == {"error": "RuntimeError: counters gone"}


def test_torch_memory_never_imports_torch():
    code = ("import sys; from hvtui.core.env.telemetry import torch_memory; "
            "print(torch_memory(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "False"]


def test_torch_memory_without_cuda_is_none():
    pytest.importorskip("torch")
    import torch

    if not torch.cuda.is_available():
        assert torch_memory() is None


# ---------------------------------------------------------------------------------------- a fake NVML

class FakeNVMLError(Exception):
    pass


class NotSupported(FakeNVMLError):
    pass


class LibraryNotFound(FakeNVMLError):
    pass


def fake_pynvml(gpus, fail_init=None):
    m = types.SimpleNamespace(NVMLError=FakeNVMLError, NVMLError_LibraryNotFound=LibraryNotFound,
                              NVML_TEMPERATURE_GPU=0, shutdowns=0)

    def init():
        if fail_init:
            raise fail_init

    def shutdown():
        m.shutdowns += 1

    def unsupported(*a):
        raise NotSupported("Not Supported")

    m.nvmlInit, m.nvmlShutdown = init, shutdown
    m.nvmlSystemGetDriverVersion = lambda: b"570.86.15"
    m.nvmlSystemGetCudaDriverVersion = lambda: 12080
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]
    m.nvmlDeviceGetName = lambda h: h["name"]
    m.nvmlDeviceGetUUID = lambda h: h["uuid"]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * 2**30, used=h["used"],
                                                                free=80 * 2**30 - h["used"])
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=h["util"], memory=10)
    m.nvmlDeviceGetTemperature = lambda h, kind: h["temp"]
    m.nvmlDeviceGetPowerUsage = lambda h: h["mw"] if h["mw"] is not None else unsupported()
    m.nvmlDeviceGetEnforcedPowerLimit = unsupported
    m.nvmlDeviceGetCudaComputeCapability = lambda h: h.get("cc") or unsupported()
    return m


GPUS = [dict(name="NVIDIA H100 80GB HBM3", uuid="GPU-aaaa-1111", used=2**30, util=97, temp=61, mw=512_000, cc=(9, 0)),
        dict(name=b"NVIDIA H100 80GB HBM3", uuid="GPU-bbbb-2222", used=0, util=0, temp=30, mw=None)]


def test_nvml_wrapper_reads_every_gpu(monkeypatch):
    fake = fake_pynvml(GPUS)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    info = N.query({"CUDA_VISIBLE_DEVICES": "GPU-bbbb"})
    assert info.available and info.driver == "570.86.15" and info.cuda == "12.8"
    a, b = info.gpus
    assert ((a.index, a.name, a.mem_used, a.util, a.temp, a.power)
            == (0, "NVIDIA H100 80GB HBM3", 2**30, 97.0, 61.0, 512.0))
    assert b.name == "NVIDIA H100 80GB HBM3" and b.power is None and b.power_limit is None   # not supported -> None
    assert a.capability == (9, 0) and b.capability is None      # the doctor's FP8 check reads it
    assert [g.index for g in info.visible_gpus] == [1]
    assert fake.shutdowns == 1


def test_nvml_library_not_found(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], fail_init=LibraryNotFound("libnvidia-ml.so.1")))
    info = N.query({})
    assert not info.available and info.reason == "no GPU: the NVIDIA driver library (libnvidia-ml) was not found"


def test_sampler_event_shape_with_gpus(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(GPUS))
    bus = Bus()
    event = TelemetrySampler(bus, nvml=N.Nvml({})).sample_once()
    assert event.kind == "gpu" and "error" not in event.data
    g = event.get("gpus")[0]
    assert {"index", "name", "mem_used", "mem_total", "util", "temp", "power"} <= set(g)
    assert bus.latest("gpu") is event
