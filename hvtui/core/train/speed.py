"""hvtui's GPU fast path for the transformer, applied once after the LoRA is added.

`prepare_transformer(transformer, preset, device) -> SpeedHandle` sets up, per the preset:
- masks: the packed attention processors (packed_attention.py) so batch-1 steps run without an S x S mask;
- attention backend: `attention_backend = "auto"` times the flash and cuDNN SDPA kernels (forward + backward,
  video-sized sequence) on this GPU once per process and takes the faster (cuDNN, 2x flash on an H200);
  batches with a mask use SDPA's memory-efficient kernel (flash and cuDNN here take no mask);
- attention kernels: unmasked training attention runs through attention_cache.py (the chosen kernel's own
  forward/backward ops, checked against SDPA at start-up; falls back to SDPA if the check fails);
- attention cache: the attention output of every block (a share, where set) is kept from forward to backward so
  the checkpoint recompute skips attention; the share is capped by measured memory headroom (the first
  step of each new shape runs without it and tells how much memory is left);
- regional compilation: the dual-stream block's forward is compiled once with dynamic sequence lengths
  and shared by all 54 blocks and every bucket shape (CUDA only); warm-up happens on the first step;
- offload (`enable_group_offload`): frozen block weights stream from pinned host memory (offload.py);
  gradient checkpointing is forced on because it is what lets a block's weights leave after its forward.

Everything runs through one eager wrapper per block (`SpeedHandle._run_block`), installed as the block's
instance `forward`, so parameter names (and the saved LoRA) are unchanged. `handle.stats()` gives the
counters the telemetry sampler publishes; `handle.remove()` undoes all of it.
"""
from __future__ import annotations

import functools
import time
import types

import torch

from hvtui.core.env.fit import ATTENTION_CACHE_HEADROOM, ATTENTION_CACHE_SHARE
from hvtui.core.train import attention_cache

# the attention cache's share of blocks and the headroom it may fill: one place, the memory estimate's
# (every block, 5.4 GiB at 480p x 61, capped by the measured headroom; see fit.py)
DEFAULT_CACHE_SHARE = ATTENTION_CACHE_SHARE
HEADROOM = ATTENTION_CACHE_HEADROOM
PRESET_BACKENDS = {"native": "native", "flash": "_native_flash", "_native_cudnn": "_native_cudnn",
                   "_native_efficient": "_native_efficient"}

_ACTIVE: list[SpeedHandle] = []     # handles whose blocks are running (set per block call)
_BACKEND_CHOICE: dict[str, tuple[str, dict]] = {}


def log_to(publish):
    def log(message: str, level: str = "info") -> None:
        if publish is not None:
            from hvtui.core.run import events
            publish(events.log(message, level))
    return log


# ------------------------------------------------------------------------------------------ backend choice
def measure_attention_backends(device, seq: int = 16384, heads: int = 16, dim: int = 128,
                               reps: int = 5) -> tuple[str, dict]:
    """Time forward + backward of SDPA's flash and cuDNN kernels at a video-like size; fastest wins."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    key = f"{torch.cuda.get_device_name(device)}:{seq}"
    if key in _BACKEND_CHOICE:
        return _BACKEND_CHOICE[key]
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, heads, seq, dim, device=device, dtype=torch.bfloat16, generator=gen)
               .requires_grad_() for _ in range(3))
    timings: dict[str, float | str] = {}
    for name, kernel in (("_native_flash", SDPBackend.FLASH_ATTENTION), ("_native_cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel(kernel):
                for i in range(reps + 1):
                    if i == 1:
                        torch.cuda.synchronize(device)
                        t = time.perf_counter()
                    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
                    out.backward(out)
                torch.cuda.synchronize(device)
            timings[name] = (time.perf_counter() - t) / reps
        except Exception as e:  # a kernel this GPU/build lacks: not a candidate
            timings[name] = float("inf")
            timings[name + "_error"] = repr(e)[:120]
    best = min((n for n in ("_native_flash", "_native_cudnn")), key=lambda n: timings[n])
    if timings[best] == float("inf"):
        best = "native"
    _BACKEND_CHOICE[key] = (best, timings)
    return best, timings


# ------------------------------------------------------------------------------------------ dispatch shim
def _dispatch(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, backend=None,
              parallel_config=None, **kwargs):
    """Stands in for diffusers' dispatch_attention_fn inside hvtui's processors while a handle runs a block."""
    from diffusers.models import attention_dispatch

    handle, ctx = (_ACTIVE[-1], _ACTIVE[-1].context) if _ACTIVE else (None, None)
    if handle is not None and ctx is not None:
        i, phase = ctx
        plain = (attn_mask is None and not dropout_p and not is_causal and scale is None and parallel_config is None
                 and not kwargs and attention_cache.supported(query, key, value))
        store = handle.store
        if plain and phase != "inference" and handle.own_kernels:
            # every training call of the kernel goes through one function and one memory layout (see
            # attention_cache._backward for why mixing it with SDPA's own cuDNN path is unsafe)
            if phase == "recompute" and i in store.entries:
                mode = "reuse"
            elif phase == "forward" and handle.caches_block(i):
                mode = "store"
            else:
                mode = "compute"
            return attention_cache.attention(query, key, value, store, i, mode, handle.cache_kernel)
        backend = handle.backend_for(attn_mask)
    return attention_dispatch.dispatch_attention_fn(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
        backend=backend, parallel_config=parallel_config, **kwargs)


_dispatch_eager = torch.compiler.disable(_dispatch)
_SHIM: types.ModuleType | None = None


def _install_shim() -> None:
    """hvtui's block processor (packed_attention.py) calls `attention_dispatch.dispatch_attention_fn` through
    its module global; point that global at a copy of the module whose dispatch is ours. Stock diffusers
    processors (and any other model in the process) are untouched."""
    from hvtui.core.train import packed_attention

    global _SHIM
    current = packed_attention.attention_dispatch
    if getattr(current, "_hvtui_shim", False):
        return
    if _SHIM is None or _SHIM._hvtui_original is not current:
        # one shim object per process: compiled graphs guard on it, a new one would force recompiling
        _SHIM = types.ModuleType(current.__name__ + "_hvtui")
        _SHIM.__dict__.update({k: v for k, v in vars(current).items() if not k.startswith("__")})
        vars(_SHIM).update(dispatch_attention_fn=_dispatch_eager, _hvtui_shim=True, _hvtui_original=current)
    packed_attention.attention_dispatch = _SHIM


def _uninstall_shim() -> None:
    from hvtui.core.train import packed_attention

    current = packed_attention.attention_dispatch
    if getattr(current, "_hvtui_shim", False):
        packed_attention.attention_dispatch = vars(current)["_hvtui_original"]


# ------------------------------------------------------------------------------------------ the handle
def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


class SpeedHandle:
    def __init__(self, model, device, *, backend: str, mask_backend: str, compile_blocks: bool,
                 cache_share: float, offloader=None, gpu_memory_bytes: int | None = None, log=None,
                 compile_options: dict | None = None):
        self.model = model
        self.device = torch.device(device)
        self.backend = backend
        self.mask_backend = mask_backend
        self.compiled = compile_blocks
        self.cache_share = cache_share
        self.offloader = offloader
        self.store = attention_cache.AttentionStore()
        # the cache calls the chosen kernel's own forward/backward (cuDNN's backward is 2x flash's on H200)
        self.cache_kernel = "cudnn" if backend == "_native_cudnn" else "flash"
        self.own_kernels = False   # set by prepare_transformer after the kernels' self-check
        self.context: tuple[int, str] | None = None
        self.blocks = list(model.transformer_blocks)
        self.n = len(self.blocks)
        self.gpu_memory_bytes = gpu_memory_bytes
        self.log = log or (lambda *a, **k: None)
        self.backend_timings: dict = {}
        self._cache_blocks: dict[tuple, int] = {}    # (batch, tokens) -> blocks that keep attention
        self._measuring: tuple | None = None
        self._shape: tuple | None = None
        self._n_cache = 0
        self.shapes_seen: list[tuple] = []
        fwd = type(self.blocks[0]).forward
        compiled = torch.compile(fwd, **(compile_options or {})) if compile_blocks else fwd
        self._orig_forward, self._fwd = {}, {}
        for i, block in enumerate(self.blocks):
            orig = block.__dict__.get("forward")   # a diffusers hook's forward, if any: keep it in the chain
            self._orig_forward[i] = orig
            self._fwd[i] = orig if orig is not None else functools.partial(compiled, block)
            block.forward = functools.partial(self._run_block, i, block)
        _ACTIVE_HANDLES.append(self)
        _install_shim()

    # -------------------------------------------------------------- policy
    def backend_for(self, mask) -> str:
        return self.mask_backend if mask is not None else self.backend

    def caches_block(self, i: int) -> bool:
        return i < self._n_cache

    def _per_block_bytes(self, hidden, encoder) -> int:
        b, s = hidden.shape[0], hidden.shape[1] + encoder.shape[1]
        heads = self.blocks[0].attn.heads
        return b * s * hidden.shape[-1] * 2 + b * heads * s * 4

    def _on_forward_start(self, hidden, encoder) -> None:
        """Block 0 of a training forward: settle how many blocks keep attention for this shape."""
        shape = (hidden.shape[0], hidden.shape[1] + encoder.shape[1])
        self.store.clear()
        if self._measuring is not None and self.device.type == "cuda":
            prev_shape, per_block = self._measuring
            # what NVML sees (the CUDA context and other processes included), not only this allocator's reserve:
            # the cache fills the card up to HEADROOM of it (gpu_memory_bytes: a smaller card being emulated)
            free, total = torch.cuda.mem_get_info(self.device)
            room = HEADROOM * (self.gpu_memory_bytes or total) - (total - free)
            n = max(0, min(int(self.cache_share * self.n), int(room // per_block)))
            self._cache_blocks[prev_shape] = n
            self.log(f"attention cache: {n}/{self.n} blocks keep attention output at {prev_shape[1]} tokens "
                     f"({n * per_block / 2**30:.1f} GiB)")
            self._measuring = None
        if shape not in self._cache_blocks:
            self.shapes_seen.append(shape)
            per_block = self._per_block_bytes(hidden, encoder)
            if self.cache_share <= 0:
                self._cache_blocks[shape] = 0
            elif self.device.type == "cuda":   # first step at this shape runs without, to measure the peak
                self._measuring = (shape, per_block)
            else:
                self._cache_blocks[shape] = int(self.cache_share * self.n)
        self._shape = shape
        self._n_cache = self._cache_blocks.get(shape, 0)

    def set_cache_share(self, share: float) -> None:
        """Change the share of blocks that keep attention (re-measured per shape from the next step).
        With 0 the kernels stay hvtui's own if they were (same kernels, nothing kept)."""
        self.cache_share = float(share)
        self._cache_blocks.clear()
        self._measuring = None
        self.store.clear()

    # -------------------------------------------------------------- the per-block wrapper
    def _phase(self) -> str:
        if _in_backward():
            return "recompute"
        if not torch.is_grad_enabled():
            return "inference"
        if not self.model.gradient_checkpointing:
            if self.offloader is not None:
                raise RuntimeError("offloading needs gradient checkpointing (the block weights leave the GPU "
                                   "after each block's forward); enable gradient_checkpointing in the preset")
            return "forward_saved"
        return "forward"

    def _run_block(self, i, block, *args, **kwargs):
        phase = self._phase()
        if i == 0 and phase == "forward" and len(args) >= 2:
            self._on_forward_start(args[0], args[1])
        if self.compiled and phase in ("forward", "recompute") and len(args) >= 2 and not args[0].requires_grad:
            # block 0's inputs come from frozen embedders (no grad), the others' need grad. Making them alike
            # lets one compiled graph serve every block, in forward and recompute alike (the checkpoint
            # recompute must save what the forward saved).
            args = (args[0].detach().requires_grad_(), args[1].detach().requires_grad_(), *args[2:])
        if self.offloader is not None:
            self.offloader.before_block(i, phase)
        prev = self.context
        self.context = (i, phase)
        _ACTIVE.append(self)
        try:
            return self._fwd[i](*args, **kwargs)
        finally:
            _ACTIVE.pop()
            self.context = prev
            if self.offloader is not None:
                self.offloader.after_block(i, phase)

    # -------------------------------------------------------------- reporting, undo
    def cache_blocks(self) -> dict[str, int]:
        """"batch x tokens" -> blocks keeping attention output, per shape seen."""
        return {f"{b}x{s}": n for (b, s), n in self._cache_blocks.items()}

    def stats(self) -> dict:
        """Flat, JSON-friendly counters for the telemetry `gpu` event's `offload` table (the offload panel
        lists them): the offloader's (bytes on GPU vs host, H2D volume and rate, time waited) when offloading,
        plus what the fast path is doing."""
        out: dict = {}
        if self.offloader is not None:
            out.update(self.offloader.stats())
        n = self._cache_blocks.get(self._shape) if self._shape else None
        out.update({"attention_backend": self.backend if self.own_kernels else f"{self.backend} (SDPA)",
                    "compiled_blocks": self.compiled,
                    "attention_cache": f"{n}/{self.n} blocks" if n else "off",
                    "attention_cache_hits": self.store.hits,
                    "attention_cache_peak_bytes": self.store.peak_bytes})
        if self.compiled:
            try:
                from torch._dynamo.utils import counters
                out["compiled_graphs"] = int(counters["stats"].get("unique_graphs", 0))
            except Exception:   # private counters moved: not worth failing telemetry over
                pass
        return out

    def remove(self) -> None:
        for i, block in enumerate(self.blocks):
            if self._orig_forward.get(i) is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = self._orig_forward[i]
        if self.offloader is not None:
            self.offloader.restore()
            self.offloader = None
        self.store.clear()
        if self in _ACTIVE_HANDLES:
            _ACTIVE_HANDLES.remove(self)
        if not _ACTIVE_HANDLES:
            _uninstall_shim()


_ACTIVE_HANDLES: list[SpeedHandle] = []


def prepare_transformer(transformer, preset, device, *, publish=None, compile_blocks: bool | None = None,
                        attention_cache_share: float | None = None, offload: bool | None = None,
                        gpu_memory_bytes: int | None = None, compile_options: dict | None = None) -> SpeedHandle:
    """Apply hvtui's speed and memory settings to a transformer that already has its LoRA.

    Keyword overrides (None = from the preset / defaults) exist for the benchmark and the tests.
    """
    from hvtui.core.train import packed_attention

    log = log_to(publish)
    model = getattr(transformer, "module", transformer)
    device = torch.device(device)
    cuda = device.type == "cuda"
    packed_attention.install(model)

    offload = preset.enable_group_offload if offload is None else offload
    offloader = None
    if offload:
        from hvtui.core.train.offload import BlockOffloader

        if preset.group_offload_type != "block_level":
            log(f"group_offload_type = {preset.group_offload_type!r}: hvtui offloads whole blocks "
                "(block_level)", "warning")
        if not model.gradient_checkpointing:
            model.enable_gradient_checkpointing()
            log("offloading turns gradient checkpointing on (block weights leave the GPU after each forward)")
        t = time.perf_counter()
        # block weights go to pinned host memory from wherever they are (never all on the GPU at once) ...
        offloader = BlockOffloader(model.transformer_blocks, device,
                                   slots=2 * max(1, preset.group_offload_blocks_per_group),
                                   stream=bool(preset.group_offload_use_stream))
        model.to(device)   # ... then the rest (embedders, refiner, LoRA: ~0.4 GB) moves to the GPU
        log(f"offload: {offloader.host_bytes / 2**30:.1f} GiB of block weights in pinned host memory "
            f"({time.perf_counter() - t:.1f}s)")

    requested = preset.attention_backend
    timings: dict = {}
    # flash and cuDNN attention take bf16/fp16 only: fp32 compute (no autocast over fp32 weights, e.g. the demo's
    # tiny model) must use SDPA's own choice of kernel
    fp32_compute = (preset.mixed_precision == "no"
                    and next(model.transformer_blocks.parameters()).dtype == torch.float32)
    if requested == "auto":
        if cuda and fp32_compute:
            backend = "native"
            log("attention backend: native SDPA (fp32 compute: flash and cuDNN need bf16 or fp16)")
        elif cuda:
            backend, timings = measure_attention_backends(device)
            log(f"attention backend: {backend} (measured: " +
                ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in timings.items() if isinstance(v, float)) + ")")
        else:
            backend = "native"
    else:
        backend = PRESET_BACKENDS.get(requested, requested)
    mask_backend = "native" if backend in ("_native_flash", "_native_cudnn") else backend

    if attention_cache_share is None:
        attention_cache_share = DEFAULT_CACHE_SHARE if (cuda and not offload and not fp32_compute) else 0.0
    own_kernels = False
    if backend not in ("native", "_native_flash", "_native_cudnn"):
        attention_cache_share = 0.0   # the cache calls flash or cuDNN; another explicit choice is respected
    elif cuda or attention_cache_share > 0:
        ok, detail = attention_cache.self_check(device, "cudnn" if backend == "_native_cudnn" else "flash")
        log(f"attention cache self-check: {detail}", "info" if ok else "warning")
        own_kernels = ok
        if not ok:
            attention_cache_share = 0.0
    if compile_blocks is None:
        compile_blocks = bool(preset.compile_blocks) and cuda
    if compile_blocks:
        import torch._dynamo.config as dynamo_config

        # all 54 blocks share one compiled graph; a few shapes (buckets, caption lengths) add entries
        dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 64)
        dynamo_config.accumulated_cache_size_limit = max(dynamo_config.accumulated_cache_size_limit, 512)
        # Graphs are compiled with dynamic sequence lengths from the start (one graph for every bucket and
        # caption length), and looked up in a fixed order: a checkpoint recompute must run the very graph its
        # forward ran (pytorch/pytorch#166926), which the LRU reordering of cache entries can break.
        compile_options = {"dynamic": True, **(compile_options or {})}
        set_lru = getattr(torch._C._dynamo.eval_frame, "_set_lru_cache", None)
        if set_lru is not None:
            set_lru(False)
    handle = SpeedHandle(model, device, backend=backend, mask_backend=mask_backend, compile_blocks=compile_blocks,
                         cache_share=attention_cache_share, offloader=offloader,
                         gpu_memory_bytes=gpu_memory_bytes, log=log, compile_options=compile_options)
    handle.backend_timings = timings
    handle.own_kernels = own_kernels
    return handle
