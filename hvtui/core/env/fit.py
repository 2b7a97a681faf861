"""Will a preset's run fit in GPU memory? ONE estimate of the whole run's peak as NVML (nvidia-smi) sees it.

A run goes through steps, each with its own resident set on the GPU (train/loop.py) and one working set:
  caching:text        Qwen2.5-VL + byT5 + VAE [+ SigLIP] resident; working set: one prompt's forward (the
                      pipeline pads every prompt to the same length, so it does not depend on the caption)
  caching:vae         the text encoders are freed; VAE [+ SigLIP] resident; working set: one clip's encode
                      (spatially tiled: per frame)
  training            transformer weights (all, or with offload the non-block weights and two block slots),
                      LoRA params + grads + optimizer state (the VAE waits in host memory); working set: the bf16
                      input of every block (gradient checkpointing), the attention outputs speed.py keeps (every
                      block the card has room for; batch 1, no offload), one block's recompute + backward per token
  validation:denoise  the same resident set without gradients; working set: one no-grad block forward per token
                      (cond and uncond run one after the other at batch 1); the validator gives the allocator's
                      cache back first (train/samples.py)
  validation:decode   the same resident set; working set: the tiled VAE decode, per frame
  checkpointing       resident set only, but right after a step: the allocator still holds the step's
                      segments, so NVML shows what it showed in training (never more)
NVML counts more than live tensors. Per step:
  allocated = resident (exact, from parameter counts) + working set (a calibrated constant x its size)
  reserved  = allocated + fragmentation[allocator mode][step] x working set
  nvml      = reserved + CUDA context (+ NCCL's buffers for data-parallel runs)
Fragmentation belongs to the working set (weights are allocated once, in place) and to the allocator's mode:
hvtui runs with expandable segments unless the user set PYTORCH_CUDA_ALLOC_CONF (cuda_allocator.py).
The run needs the largest step. `estimate_memory(preset)` is what preset headers, `hvtui doctor`, its hints and
the TUI quote; nothing else estimates memory.

Calibration: every constant is solved from the measured step it governs and no other (fit_calibrate.py), so one
preset's numbers cannot move another step's constant. `bench/preset_memory.py` runs every shipped GPU preset end
to end on the lent H200 (full-size random weights in the diffusers layout, loaded through hvtui, the allocator
capped to the card the preset names) and `--adopt` writes `memory_calibration.json` next to this file with each
constant's evidence (how many runs it rests on); the defaults below are the priors it replaces (BENCHMARKS.md
"Memory calibration"). The training working set also reproduces REFERENCE.md's transformer-alone runs (stock
attention processor, H200, LoRA r16 + AdamW, batch 1) within 5%: 24.8 GiB at 848x480x61, 39.5 at 1280x720x61,
27.5 with padded conditioning. The stock processor builds a dense S x S bool mask in every block even when it is
then dropped (about two copies live: ~2 bytes per token pair); hvtui's packed attention does not build it at
batch 1. Batches above 1 are padded and masked: the mask reaches SDPA, which turns it into a bf16 bias.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from hvtui.core.preset.schema import BUILTIN_TINY, Preset, flavour_height, is_i2v

GiB = 1024 ** 3

# HunyuanVideo15Transformer3DModel, counted on the meta device (diffusers 0.42.1)
TRANSFORMER_PARAMS = 8_326_608_160
NUM_BLOCKS = 54
BLOCK_PARAMS = 151_056_896
NONBLOCK_PARAMS = TRANSFORMER_PARAMS - NUM_BLOCKS * BLOCK_PARAMS      # 169,535,776: embedders, refiner, head
HIDDEN, MLP_HIDDEN = 2048, 8192
ATTN_LINEARS = 8              # to_q/k/v, to_out.0, add_q/k/v_proj, to_add_out: 2048 -> 2048 each
MLP_LINEARS = 4               # ff and ff_context: 2048 -> 8192 -> 2048

# the other components, bf16 on the GPU; counted on the meta device from the classes and configs of the real
# checkpoints (transformers 5.x, diffusers 0.42.1)
TEXT_ENCODER_PARAMS = 7_070_619_136   # Qwen2.5-VL-7B language model (no LM head)
BYT5_PARAMS = 217_657_472             # google/byt5-small encoder
VAE_PARAMS = 1_260_634_115            # AutoencoderKLHunyuanVideo15
SIGLIP_PARAMS = 428_225_600           # SigLIP so400m vision tower (i2v)
COMPONENT_BYTES_PER_PARAM = 2

# activations (bytes); the per-token working sets are calibrated, the rest follows from the shapes
CKPT_PER_TOKEN = NUM_BLOCKS * HIDDEN * 2        # bf16 block inputs kept by gradient checkpointing
MASK_COPIES = 2                                 # S x S bool masks live at once (stock processor)
SDPA_BIAS_BYTES = 2                             # a bool mask reaching SDPA becomes a bf16 bias
# speed.py's attention cache: the bf16 attention output (tokens x 2048) and fp32 log-sum-exp (16 heads) of a share
# of the blocks, kept from forward to the checkpoint recompute. Batch 1 without offload, bf16/fp16, flash or cuDNN.
# The share of blocks (speed.py reads it): every block where the card has room. Keeping all 54 rather than 40 made
# the 480p step 4.6-4.8 % faster on the H200 for 1.3 GiB more (BENCHMARKS.md, "Quantized base weights": 3.122 ->
# 2.978 s in one call). On any card the run caps it: after the first step of a shape it fills the card up to
# ATTENTION_CACHE_HEADROOM of its memory as NVML counts it, and estimate_memory(card_gib=...) does the same.
ATTENTION_CACHE_SHARE = 1.0
ATTENTION_CACHE_HEADROOM = 0.92
ATTENTION_HEADS = 16
ATTENTION_CACHE_PER_TOKEN = HIDDEN * 2 + ATTENTION_HEADS * 4
ATTENTION_CACHE_BACKENDS = ("auto", "native", "flash", "_native_cudnn")

# conditioning tokens next to the video tokens
TEXT_TOKENS_TYPICAL = 256     # valid Qwen2.5-VL tokens of a long caption (template prefix cropped)
TEXT_TOKENS_REFERENCE = 120   # what the reference runs used
IMAGE_TOKENS = 729            # SigLIP 27 x 27 (i2v)
PADDED_TOKENS = 1000 + 256 + 729   # the pipeline's padded conditioning

# data-parallel: NCCL's own buffers on each GPU with hvtui's NCCL settings (0.57 GiB measured on 2x H200 by
# bench/nccl_memory.py; collectives.LEAN_NCCL), outside torch's allocator
DATA_PARALLEL_GIB = 0.6
# LoRA: fp32 param + fp32 grad + optimizer state per trainable parameter
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw_bf16": 4, "adamw8bit": 2, "adafactor": 1, "prodigy": 16}

PHASES = ("caching", "training", "validation", "checkpointing")
STEPS = ("caching:text", "caching:vae", "training", "validation:denoise", "validation:decode", "checkpointing")
# the allocator's modes (cuda_allocator.py): one segment per stream growing by pages, or cudaMalloc'd segments
EXPANDABLE, FIXED = "expandable_segments", "fixed_segments"

# The calibrated constants: each step's working set per unit, its fragmentation per allocator mode, the CUDA
# context. These defaults are the priors; memory_calibration.json next to this file (bench/preset_memory.py
# --adopt) replaces every constant a measured run determined and says how many runs each rests on.
DEFAULT_CALIBRATION = {
    "source": "priors: REFERENCE.md's H200 runs (training, VAE encode), call 1's fixed-segment fragmentation, "
              "reasoned values for the rest",
    "cuda_context_gib": 1.3,              # NVML used minus torch's reserved: context, kernels, cuBLAS/cuDNN handles
    "text_encode_work_gib": 1.0,          # Qwen2.5-VL forward on 1108 padded tokens, all hidden states kept
    "vae_encode_tiled_gib_per_frame": 0.114,    # (9.3 GiB - weights) / 61 frames: tiling is spatial only
    "vae_encode_untiled_bytes_per_pixel_frame": 1820.0,   # (44.4 GiB - weights) / (848 x 480 x 61)
    "train_work_per_token": 100_000,      # one block's recompute + backward working set (gradient checkpointing)
    "infer_work_per_token": 40_000,       # one block's no-grad forward working set (validation denoising)
    "vae_decode_tiled_gib_per_frame": 0.15,
    "vae_decode_untiled_bytes_per_pixel_frame": 2700.0,
    # reserved - allocated, as a share of the step's working set. Fixed segments (rounded from the 2026-12-03
    # H200 call): a freed block is reused only by requests that fit it, and cuDNN's conv tiles vary in size, so
    # the VAE steps lose the most. Expandable segments reuse freed pages whatever the request: a few percent
    # (reasoned priors until a call measures them).
    "fragmentation": {
        FIXED: {"caching:text": 0.15, "caching:vae": 0.45, "training": 0.25, "validation:denoise": 0.3,
                "validation:decode": 1.0},
        EXPANDABLE: {"caching:text": 0.05, "caching:vae": 0.2, "training": 0.05, "validation:denoise": 0.1,
                     "validation:decode": 0.3},
    },
}
CALIBRATION_FILE = Path(__file__).with_name("memory_calibration.json")


@lru_cache(maxsize=8)
def _load_calibration(path: str, mtime_ns: int) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def calibration(path: Path | None = None, *, priors: bool = False) -> dict:
    """The priors, overridden by memory_calibration.json (what bench/preset_memory.py measured) unless `priors`."""
    cal = json.loads(json.dumps(DEFAULT_CALIBRATION))
    if priors:
        return cal
    path = Path(path or CALIBRATION_FILE)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return cal
    for key, value in _load_calibration(str(path), mtime).items():
        if key == "fragmentation" and isinstance(value, dict):
            for mode, steps in value.items():
                if mode in cal[key] and isinstance(steps, dict):
                    cal[key][mode].update({k: float(v) for k, v in steps.items() if k in STEPS})
        elif key in cal or key in ("evidence", "runs"):
            cal[key] = value
    return cal


def bytes_per_param(precision: str) -> float:
    """Bytes of one frozen transformer-block weight at `base_model_precision`: the one place the precision of
    the transformer's weights enters the estimate (quantize.py owns the number: 1 byte for int8 / fp8)."""
    from hvtui.core.train.quantize import block_bytes_per_param

    return block_bytes_per_param(precision)


def transformer_weight_bytes(preset: Preset, offload: bool) -> tuple[int, int]:
    """(bytes of the transformer's weights on the GPU, bytes kept in pinned host memory). Offload streams the
    frozen block weights: two slots per group of blocks stay on the GPU (speed.py)."""
    per_block = BLOCK_PARAMS * bytes_per_param(preset.base_model_precision)
    nonblock = NONBLOCK_PARAMS * 2     # embedders, refiner and head stay bf16
    if offload:
        slots = min(2 * max(1, int(preset.group_offload_blocks_per_group)), NUM_BLOCKS)
        return int(nonblock + slots * per_block), int(NUM_BLOCKS * per_block)
    return int(nonblock + NUM_BLOCKS * per_block), 0


@dataclass
class BucketShape:
    width: int
    height: int
    frames: int
    source: str = ""              # "dataset scan" | "preset maths" | "flavour default"

    @property
    def key(self) -> str:
        return f"{self.width}x{self.height}@{self.frames}"

    @property
    def video_tokens(self) -> int:
        return video_tokens(self.width, self.height, self.frames)


def video_tokens(width: int, height: int, frames: int) -> int:
    """Latent tokens: (F-1)/4+1 latent frames x H/16 x W/16 (patch size 1)."""
    return ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)


@dataclass
class PhaseEstimate:
    name: str
    allocated_gib: float          # live tensors at the phase's peak (torch.cuda.max_memory_allocated)
    nvml_gib: float               # what nvidia-smi shows then: reserved segments + context (+ NCCL)
    parts: dict[str, float] = field(default_factory=dict)   # GiB of the allocated peak, by what holds it
    note: str = ""
    reserved_gib: float = 0.0     # the allocator's segments (torch.cuda.max_memory_reserved)
    work: tuple[str, ...] = ()    # which parts are the step's working set (the rest is resident)

    @property
    def work_gib(self) -> float:
        return sum(self.parts.get(k, 0.0) for k in self.work)

    @property
    def resident_gib(self) -> float:
        return self.allocated_gib - self.work_gib

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v:.1f}" if v >= 0.05 else f"{k} {v:.2f}" for k, v in self.parts.items())
        rest = self.nvml_gib - self.allocated_gib   # what NVML counts beyond live tensors
        return f"{self.name} {self.nvml_gib:.1f} GiB ({parts}; cached segments + CUDA context {rest:.1f})"


@dataclass
class FitEstimate:
    bucket: str
    video_tokens: int
    text_tokens: int
    tokens: int                   # per training sample: video + conditioning
    batch_size: int
    weights_gib: float            # transformer weights on the GPU
    lora_gib: float               # LoRA params + grads + optimizer state
    activations_gib: float        # training activations
    mask_gib: float
    offload: bool
    gradient_checkpointing: bool
    lora_params: int
    phases: list[PhaseEstimate] = field(default_factory=list)
    bucket_source: str = ""
    builtin: bool = False
    notes: list[str] = field(default_factory=list)
    comm_gib: float = 0.0         # NCCL buffers of a data-parallel run (in every phase's NVML figure)
    host_pinned_gib: float = 0.0  # block weights in pinned host memory (offload)
    calibration: str = ""
    steps: list[PhaseEstimate] = field(default_factory=list)   # the phases' parts: caching:text, caching:vae,
                                  # training, validation:denoise, validation:decode, checkpointing
    allocator: str = EXPANDABLE   # the CUDA allocator's mode the run will use (cuda_allocator.py)
    attention_cache_blocks: int = 0
    attention_cache_gib: float = 0.0
    required_gib: float | None = None   # the peak without the attention cache (optional: it fills what is left)

    def phase(self, name: str) -> PhaseEstimate | None:
        """A phase ("training") or one of its steps ("validation:decode")."""
        return next((p for p in (self.steps if ":" in name else self.phases) if p.name == name), None)

    @property
    def peak(self) -> PhaseEstimate:
        return max(self.phases, key=lambda p: p.nvml_gib)

    @property
    def peak_gib(self) -> float:
        """THE number: the whole run's peak as NVML sees it."""
        return self.peak.nvml_gib

    @property
    def peak_phase(self) -> str:
        return self.peak.name

    @property
    def training_gib(self) -> float:
        """The training step's allocated peak (what torch.cuda.max_memory_allocated reports while training)."""
        p = self.phase("training")
        return p.allocated_gib if p else 0.0

    @property
    def caching_gib(self) -> float:
        """The caching phase's allocated peak (the encoders, or the VAE encoding a clip)."""
        p = self.phase("caching")
        return p.allocated_gib if p else 0.0

    def peak_words(self) -> str:
        """"18.6 GiB at its peak (caching: text encoders)": the number every view quotes, and where it happens."""
        p = self.peak
        return f"{p.nvml_gib:.1f} GiB at its peak ({p.name}{': ' + p.note if p.note else ''})"

    def breakdown(self) -> str:
        if self.builtin:
            return f"builtin tiny model at {self.bucket} x{self.batch_size}: under {self.peak_gib:.1f} GiB"
        phases = "; ".join(p.describe() if p.name != "checkpointing" else
                           f"checkpointing {p.nvml_gib:.1f} GiB (training's blocks still held)" for p in self.phases)
        comm = f"; NCCL {self.comm_gib:.1f} GiB in every phase" if self.comm_gib else ""
        cache = (f"; the attention cache ({self.attention_cache_blocks} blocks, {self.attention_cache_gib:.1f} GiB) "
                 "shrinks to what a smaller card has room for" if self.attention_cache_blocks else "")
        mode = "" if self.allocator == EXPANDABLE else "; allocator without expandable segments (your setting)"
        return (f"{self.bucket} x{self.batch_size} ({self.tokens:,} tokens); by phase, as nvidia-smi shows it: "
                f"{phases}{comm}{cache}{mode}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(peak_gib=self.peak_gib, peak_phase=self.peak_phase, training_gib=self.training_gib,
                 caching_gib=self.caching_gib)
        return d


def lora_params(rank: int, targets: str = "attention") -> int:
    per_block = ATTN_LINEARS * rank * (HIDDEN + HIDDEN)
    if targets == "attention+mlp":
        per_block += MLP_LINEARS * rank * (HIDDEN + MLP_HIDDEN)
    return NUM_BLOCKS * per_block


def _bucket_from_maths(preset: Preset) -> BucketShape | None:
    try:
        from hvtui.core.dataset.buckets import bucket_size
    except Exception:   # the dataset package is optional here: same rule, 16:9 at `resolution` high
        def bucket_size(width: int, height: int, resolution: int) -> tuple[int, int]:
            area = resolution * resolution * 16 / 9
            return (max(16, int(math.floor(math.sqrt(area * width / height) / 16 + 0.5)) * 16),
                    max(16, int(math.floor(math.sqrt(area * height / width) / 16 + 0.5)) * 16))
    best: BucketShape | None = None
    for ds in preset.training_datasets:
        try:
            w, h = bucket_size(16, 9, int(ds.resolution))
            frames = int(ds.video.num_frames) if ds.dataset_type == "video" else 1
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        shape = BucketShape(w, h, max(1, frames), "preset maths")
        if best is None or shape.video_tokens > best.video_tokens:
            best = shape
    return best


def largest_bucket(preset: Preset, scan: bool = True) -> BucketShape:
    """The bucket with the most tokens: from the dataset scan when it works, else from the preset's
    resolution and num_frames, else the flavour's default size."""
    if scan:
        try:
            from hvtui.core.dataset.scan import scan_preset

            report = scan_preset(preset, use_cache=True)
            buckets = [b for b in report.buckets if b.samples] or list(report.buckets)
            if buckets:
                b = max(buckets, key=lambda b: video_tokens(b.width, b.height, b.frames))
                return BucketShape(b.width, b.height, b.frames, "dataset scan")
        except Exception:   # a missing or broken scanner must not stop the doctor: fall back to maths
            pass
    shape = _bucket_from_maths(preset)
    if shape is not None:
        return shape
    h = flavour_height(preset.model_flavour)
    return BucketShape(1280 if h == 720 else 848, h, 61, "flavour default")


def validation_shape(preset: Preset, bucket: BucketShape) -> BucketShape | None:
    """What a validation sample decodes: validation_resolution x validation_num_video_frames for t2v; i2v samples
    take the size of the training clip whose first frame conditions them (the largest bucket at worst)."""
    if not (preset.validation_steps and preset.all_validation_prompts):
        return None
    frames = int(preset.validation_num_video_frames or 1)
    if is_i2v(preset.model_flavour):
        return BucketShape(bucket.width, bucket.height, frames, "largest bucket (i2v)")
    try:
        w, h = (int(x) for x in str(preset.validation_resolution).lower().split("x"))
    except ValueError:
        return BucketShape(bucket.width, bucket.height, frames, "largest bucket")
    return BucketShape(w, h, frames, "validation_resolution")


def denoise_tokens(preset: Preset, val: BucketShape, text_tokens: int | None = None) -> int:
    """Tokens of one validation denoising pass: the sample's latent tokens, the prompt's, SigLIP's (i2v)."""
    return (val.video_tokens + (TEXT_TOKENS_TYPICAL if text_tokens is None else text_tokens)
            + (IMAGE_TOKENS if is_i2v(preset.model_flavour) else 0))


def _vae_encode_work(shape: BucketShape, tiling: bool, cal: dict) -> float:
    """GiB. Tiling is spatial only: its working set follows the frame count, not the frame size."""
    if tiling:
        return cal["vae_encode_tiled_gib_per_frame"] * max(shape.frames, 1)
    return cal["vae_encode_untiled_bytes_per_pixel_frame"] * shape.width * shape.height * shape.frames / GiB


def _vae_decode_work(shape: BucketShape, tiling: bool, cal: dict) -> float:
    if tiling:
        return cal["vae_decode_tiled_gib_per_frame"] * max(shape.frames, 1)
    return cal["vae_decode_untiled_bytes_per_pixel_frame"] * shape.width * shape.height * shape.frames / GiB


def attention_cache_blocks(preset: Preset, offload: bool, batch: int, ckpt: bool, padded: bool) -> int:
    """How many blocks keep their attention output (speed.py) on a GPU with room: all 54;
    none with offload, masks (batch > 1 or padded), fp32 compute, without gradient checkpointing or with another
    attention kernel."""
    if (offload or batch != 1 or padded or not ckpt or preset.mixed_precision not in ("bf16", "fp16")
            or preset.attention_backend not in ATTENTION_CACHE_BACKENDS):
        return 0
    return int(ATTENTION_CACHE_SHARE * NUM_BLOCKS)


def _step(name: str, resident: dict[str, float], work: dict[str, float], cal: dict, mode: str, comm: float,
          note: str = "", held: PhaseEstimate | None = None) -> PhaseEstimate:
    """allocated = resident + working set; reserved adds the working set's fragmentation; NVML the context.
    `held`: a step that runs while the allocator still holds that step's segments (checkpointing after training)."""
    parts = {**resident, **work}
    allocated = sum(parts.values())
    w = sum(work.values())
    if held is not None:
        reserved = max(held.reserved_gib, allocated)
    else:
        reserved = allocated + float(cal["fragmentation"][mode].get(name, 0.0)) * w
    nvml = reserved + float(cal["cuda_context_gib"]) + comm
    return PhaseEstimate(name, allocated, nvml, parts, note, reserved, tuple(work))


def estimate_memory(preset: Preset, bucket: BucketShape | tuple[int, int, int] | None = None, *,
                    batch_size: int | None = None, text_tokens: int | None = None, offload: bool | None = None,
                    stock_attention: bool = False, padded: bool | None = None,
                    gradient_checkpointing: bool | None = None, processes: int = 1,
                    calibration_file: Path | None = None, expandable: bool | None = None,
                    cache_blocks: int | None = None, validation_text_tokens: int | None = None,
                    card_gib: float | None = None) -> FitEstimate:
    """The run's memory by step for a preset at `bucket` (default: its largest bucket).

    `stock_attention` models diffusers' own attention processor (it builds the S x S mask even when unused:
    what the reference measurements ran); `padded` models pipeline-shaped padded conditioning whose mask
    reaches SDPA (default: when the batch size is above 1). `processes`: data-parallel processes (one per
    GPU); each GPU holds what one process needs plus NCCL's buffers. `expandable`: the allocator's mode (default:
    what cuda_allocator.expandable() says a run started here uses). `cache_blocks`, `text_tokens`,
    `validation_text_tokens`: what a measured run had (calibration), instead of the defaults.
    """
    if bucket is None:
        bucket = largest_bucket(preset)
    elif isinstance(bucket, tuple):
        bucket = BucketShape(*bucket)
    batch = int(batch_size if batch_size is not None else preset.train_batch_size) or 1
    offload = preset.enable_group_offload if offload is None else offload
    ckpt = preset.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
    padded = batch > 1 if padded is None else padded
    i2v = is_i2v(preset.model_flavour)
    if expandable is None:
        from hvtui.core.env.cuda_allocator import expandable as run_is_expandable

        expandable = run_is_expandable()
    mode = EXPANDABLE if expandable else FIXED

    if preset.pretrained_model_name_or_path == BUILTIN_TINY:
        phases = [PhaseEstimate(n, 0.05, 0.1) for n in PHASES]
        return FitEstimate(bucket.key, bucket.video_tokens, 0, bucket.video_tokens, batch, 0.02, 0.01, 0.05, 0.0,
                           offload, ckpt, 0, phases, bucket.source, builtin=True,
                           notes=["builtin tiny model: a few MB, runs on the CPU"], allocator=mode)

    cal = calibration(calibration_file)
    notes: list[str] = []
    image = IMAGE_TOKENS if i2v else 0
    if padded:
        txt = PADDED_TOKENS
    else:
        txt = (text_tokens if text_tokens is not None else TEXT_TOKENS_TYPICAL) + image
    s = bucket.video_tokens + txt
    comm = DATA_PARALLEL_GIB if processes > 1 else 0.0   # NCCL starts before caching: every step holds it

    weight_bytes, pinned = transformer_weight_bytes(preset, offload)
    weights = weight_bytes / GiB
    if offload:
        notes.append(f"offload: {min(2 * max(1, int(preset.group_offload_blocks_per_group)), NUM_BLOCKS)} block "
                     f"slots on the GPU, {pinned / GiB:.1f} GiB of block weights in pinned host memory")
    n_lora = lora_params(int(preset.lora_rank), preset.lora_targets)
    opt = OPTIMIZER_STATE_BYTES.get(preset.optimizer, 8)
    lora_train = n_lora * (8 + opt) / GiB          # params + grads + state
    lora_kept = n_lora * (4 + opt) / GiB           # between steps the gradients are freed
    per_token = cal["train_work_per_token"] if ckpt else NUM_BLOCKS * cal["train_work_per_token"]
    kept_inputs = batch * s * (CKPT_PER_TOKEN if ckpt else NUM_BLOCKS * HIDDEN * 2) / GiB
    block_work = batch * s * per_token / GiB
    if not ckpt:
        notes.append("gradient_checkpointing is off: every block keeps its activations")
    mask = batch * s * s * (MASK_COPIES + (SDPA_BIAS_BYTES if padded else 0)) / GiB if (stock_attention or padded) \
        else 0.0
    n_cache = attention_cache_blocks(preset, offload, batch, ckpt, padded or stock_attention) \
        if cache_blocks is None else int(cache_blocks)
    per_cache_block = batch * s * ATTENTION_CACHE_PER_TOKEN / GiB
    val = validation_shape(preset, bucket)
    vae = VAE_PARAMS * COMPONENT_BYTES_PER_PARAM / GiB
    tiling = bool(preset.vae_enable_tiling)

    # caching: the encoders and the VAE go to the GPU together; the text encoders leave before the clips
    siglip = {"SigLIP": SIGLIP_PARAMS * COMPONENT_BYTES_PER_PARAM / GiB} if i2v else {}
    encoders = {"text encoders": (TEXT_ENCODER_PARAMS + BYT5_PARAMS) * COMPONENT_BYTES_PER_PARAM / GiB, "VAE": vae}
    steps = [_step("caching:text", {**encoders, **siglip}, {"text encoding": cal["text_encode_work_gib"]}, cal, mode,
                   comm, "text encoders"),
             _step("caching:vae", {"VAE": vae, **siglip}, {"VAE encode": _vae_encode_work(bucket, tiling, cal)}, cal,
                   mode, comm, f"VAE encode of a {bucket.key} clip")]
    # the VAE waits in host memory while training (validate.park): only sampling brings it to the GPU
    resident = {"transformer": weights, "LoRA+optimizer": lora_train}
    work = {"block inputs": kept_inputs, "block working set": block_work}
    if mask:
        work["masks"] = mask
    if n_cache and card_gib is not None and cache_blocks is None:
        # speed.py measures the first step without the cache, then fills what is left of HEADROOM x the card
        room = ATTENTION_CACHE_HEADROOM * card_gib - _step("training", resident, work, cal, mode, comm).nvml_gib
        n_cache = max(0, min(n_cache, int(room // per_cache_block)))
        notes.append(f"attention cache: {n_cache} blocks on a {card_gib:.1f} GiB card")
    attn_cache = n_cache * per_cache_block
    if attn_cache:
        work["attention cache"] = attn_cache
    train = _step("training", resident, work, cal, mode, comm)
    steps.append(train)
    kept = {"transformer": weights, "LoRA+optimizer": lora_kept}
    if val is not None:
        s_val = denoise_tokens(preset, val, validation_text_tokens)
        sampling = {**kept, "VAE": vae}
        steps.append(_step("validation:denoise", sampling, {"denoising": s_val * cal["infer_work_per_token"] / GiB},
                           cal, mode, comm, f"{val.key}: denoising"))
        steps.append(_step("validation:decode", sampling, {"VAE decode": _vae_decode_work(val, tiling, cal)}, cal, mode,
                           comm, f"{val.key}: VAE decode"))
    # a checkpoint is written right after a step: the allocator still holds the step's segments
    steps.append(_step("checkpointing", kept, {}, cal, mode, comm, "the training step's segments are still held",
                       held=train))
    phases = []
    for name in PHASES:   # a phase's figure is its largest step's
        mine = [x for x in steps if x.name.split(":")[0] == name]
        if mine:
            top = max(mine, key=lambda x: x.nvml_gib)
            phases.append(PhaseEstimate(name, top.allocated_gib, top.nvml_gib, top.parts, top.note, top.reserved_gib,
                                        top.work))
    est = FitEstimate(bucket.key, bucket.video_tokens, txt, s, batch, weights, lora_train, kept_inputs + block_work,
                      mask, offload, ckpt, n_lora, phases, bucket.source, notes=notes, comm_gib=comm,
                      host_pinned_gib=pinned / GiB, calibration=str(cal.get("source", "")), steps=steps,
                      allocator=mode, attention_cache_blocks=n_cache, attention_cache_gib=attn_cache)
    est.required_gib = est.peak_gib if not n_cache else estimate_memory(
        preset, bucket, batch_size=batch_size, text_tokens=text_tokens, offload=offload,
        stock_attention=stock_attention, padded=padded, gradient_checkpointing=gradient_checkpointing,
        processes=processes, calibration_file=calibration_file, expandable=expandable, cache_blocks=0,
        validation_text_tokens=validation_text_tokens).peak_gib
    return est


# what NVML reports as the total of the card a preset names ("on a 24 GB card"): the smallest common one
CARD_TOTAL_MIB = {24: 24564, 40: 40536, 48: 46068, 80: 81559}   # RTX 4090, A100 40GB, L40S, H100 80GB HBM3


def card_named_in(header: str) -> float | None:
    """GiB of the card a preset's header names ("on a 24 GB card"), or None."""
    import re

    m = re.search(r"on an? (\d+) GB card", header)
    return CARD_TOTAL_MIB[int(m.group(1))] / 1024 if m and int(m.group(1)) in CARD_TOTAL_MIB else None


def card_for(peak_gib: float) -> str:
    """The smallest common card size that holds `peak_gib` (GiB as NVML counts it)."""
    for gb, names in ((16, "16 GB (RTX 4060 Ti 16GB, A4000)"), (24, "24 GB (RTX 3090 / 4090, L4, A10)"),
                      (32, "32 GB (RTX 5090)"), (40, "40 GB (A100 40GB)"), (48, "48 GB (L40S, A6000)"),
                      (80, "80 GB (H100, A100 80GB)"), (94, "94 GB (H100 NVL)"), (141, "141 GB (H200)")):
        if peak_gib <= gb * 1e9 / GiB * 0.97:   # a card's total, less a few percent no process can have
            return names
    return "more than 141 GB"
