"""Will a preset's run fit in GPU memory? ONE estimate of the whole run's peak as NVML (nvidia-smi) sees it.

A run goes through four phases, each with its own resident set on the GPU (see train/loop.py):
  caching        the encoders and the VAE all on the GPU (the transformer waits on the CPU): the text phase
                 (Qwen2.5-VL + byT5 + VAE [+ SigLIP]) encodes captions and prompts, the text encoders are
                 freed, then the VAE [+ SigLIP] encodes each clip
  training       transformer weights (all, or with offload the non-block weights and two block slots), the
                 VAE when validation is on (the validator decodes with it), LoRA params + grads + optimizer
                 state, activations of one micro-batch at the largest bucket (gradient checkpointing: the bf16
                 input of every block + one block's recompute/backward working set)
  validation     the same resident set without gradients, plus the larger of the denoising forward's working
                 set (cond and uncond run one after the other at batch 1) and the VAE decode's; the validator
                 gives the allocator's cache back before sampling and before decoding (train/validate.py)
  checkpointing  resident set only, but right after a step: the allocator still holds the step's blocks, so
                 NVML shows what it showed in training
NVML counts more than live tensors: the allocator's reserved segments (fragmentation: reserved / allocated) and,
outside the allocator, the CUDA context and NCCL's buffers. Per phase:
  nvml = allocated x (1 + reserved overhead of the phase) + CUDA context (+ NCCL for data-parallel runs)
and the run needs the largest phase. `estimate_memory(preset)` is what preset headers, `hvtui doctor`, its hints
and the TUI quote; nothing else estimates memory.

Calibration: the constants below are measured, not guessed. `bench/preset_memory.py` runs every shipped GPU
preset end to end on the lent H200 (full-size random weights in the diffusers layout, loaded through hvtui, the
allocator capped to the card the preset names), samples NVML per phase and writes
`memory_calibration.json` in this module's format; copied next to this file it replaces the defaults
(BENCHMARKS.md "Memory calibration"). The training working set per token was first calibrated on the
full-size transformer alone (REFERENCE.md, H200, LoRA r16 + AdamW, batch 1):

  case (848x480x61 unless named)                       measured alloc   this model
  valid tokens, stock attention processor              24.8 GiB         24.8 GiB
  1280x720x61, valid tokens, stock processor           39.5 GiB         39.4 GiB
  padded pipeline conditioning (mask reaches SDPA)     27.5 GiB         27.0 GiB
The stock processor builds a dense S x S bool mask in every block even when it is then dropped (about two
copies live: ~2 bytes per token pair); hvtui's packed attention does not build it at batch 1. Batches above 1
are padded and masked: the mask reaches SDPA, which turns it into a bf16 bias (2 more bytes per pair).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from hvtui.core.preset import BUILTIN_TINY, Preset, flavour_height, is_i2v
from hvtui.core.train.quantize import block_bytes_per_param

GiB = 1024 ** 3

# HunyuanVideo15Transformer3DModel, counted on the meta device (diffusers 0.42.1)
TRANSFORMER_PARAMS = 8_326_608_160
NUM_BLOCKS = 54
BLOCK_PARAMS = 151_056_896
NONBLOCK_PARAMS = TRANSFORMER_PARAMS - NUM_BLOCKS * BLOCK_PARAMS      # 169,535,776: embedders, refiner, head
HIDDEN, MLP_HIDDEN = 2048, 8192
ATTN_LINEARS = 8              # to_q/k/v, to_out.0, add_q/k/v_proj, to_add_out: 2048 -> 2048 each
MLP_LINEARS = 4               # ff and ff_context: 2048 -> 8192 -> 2048

# the other components, bf16 on the GPU
TEXT_ENCODER_PARAMS = 7_070_000_000   # Qwen2.5-VL-7B language model (no LM head)
BYT5_PARAMS = 218_000_000             # google/byt5-small encoder (+ the Glyph tokens)
VAE_PARAMS = 1_260_000_000            # AutoencoderKLHunyuanVideo15
SIGLIP_PARAMS = 430_000_000           # SigLIP so400m vision tower (i2v)
COMPONENT_BYTES_PER_PARAM = 2

# activations (bytes); the per-token working sets are calibrated, the rest follows from the shapes
CKPT_PER_TOKEN = NUM_BLOCKS * HIDDEN * 2        # bf16 block inputs kept by gradient checkpointing
MASK_COPIES = 2                                 # S x S bool masks live at once (stock processor)
SDPA_BIAS_BYTES = 2                             # a bool mask reaching SDPA becomes a bf16 bias

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

# The calibrated constants (bench/preset_memory.py measures them; memory_calibration.json next to this file, when
# present, replaces these defaults). Bytes per token / per pixel-frame, GiB per frame, fractions.
DEFAULT_CALIBRATION = {
    "source": "defaults: REFERENCE.md H200 measurements (training, VAE encode); priors for the rest",
    "cuda_context_gib": 0.8,              # NVML used minus torch's reserved memory: context, kernels, cuBLAS
    "train_work_per_token": 100_000,      # one block's recompute + backward working set (gradient checkpointing)
    "infer_work_per_token": 40_000,       # one block's no-grad forward working set (validation denoising)
    "text_encode_work_gib": 1.0,          # Qwen2.5-VL forward on 1108 padded tokens, all hidden states kept
    "vae_encode_tiled_gib_per_frame": 0.114,    # (9.3 GiB - weights) / 61 frames: tiling is spatial only
    "vae_encode_untiled_bytes_per_pixel_frame": 1820.0,   # (44.4 GiB - weights) / (848 x 480 x 61)
    "vae_decode_tiled_gib_per_frame": 0.15,
    "vae_decode_untiled_bytes_per_pixel_frame": 2700.0,
    "reserved_overhead": {"caching": 0.05, "training": 0.15, "validation": 0.10, "checkpointing": 0.0},
}
CALIBRATION_FILE = Path(__file__).with_name("memory_calibration.json")


@lru_cache(maxsize=4)
def _load_calibration(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def calibration(path: Path | None = None) -> dict:
    """The defaults, overridden by memory_calibration.json (what bench/preset_memory.py measured)."""
    cal = json.loads(json.dumps(DEFAULT_CALIBRATION))
    for key, value in _load_calibration(str(path or CALIBRATION_FILE)).items():
        if key == "reserved_overhead" and isinstance(value, dict):
            cal[key].update({k: float(v) for k, v in value.items() if k in PHASES})
        elif key in cal:
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

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v:.1f}" if v >= 0.05 else f"{k} {v:.2f}" for k, v in self.parts.items())
        return f"{self.name} {self.nvml_gib:.1f} GiB ({parts})"


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
        return (f"{self.bucket} x{self.batch_size} ({self.tokens:,} tokens); by phase, as nvidia-smi shows it: "
                f"{phases}{comm}")

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
        def bucket_size(w, h, r):
            area = r * r * 16 / 9
            return (max(16, int(math.floor(math.sqrt(area * w / h) / 16 + 0.5)) * 16),
                    max(16, int(math.floor(math.sqrt(area * h / w) / 16 + 0.5)) * 16))
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
            from hvtui.core.dataset import scan_preset

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


def _vae_encode_work(shape: BucketShape, tiling: bool, cal: dict) -> float:
    """GiB. Tiling is spatial only: its working set follows the frame count, not the frame size."""
    if tiling:
        return cal["vae_encode_tiled_gib_per_frame"] * max(shape.frames, 1)
    return cal["vae_encode_untiled_bytes_per_pixel_frame"] * shape.width * shape.height * shape.frames / GiB


def _vae_decode_work(shape: BucketShape, tiling: bool, cal: dict) -> float:
    if tiling:
        return cal["vae_decode_tiled_gib_per_frame"] * max(shape.frames, 1)
    return cal["vae_decode_untiled_bytes_per_pixel_frame"] * shape.width * shape.height * shape.frames / GiB


def _phase(name: str, parts: dict[str, float], cal: dict, comm: float, note: str = "",
           nvml: float | None = None) -> PhaseEstimate:
    allocated = sum(parts.values())
    if nvml is None:
        nvml = (allocated * (1 + float(cal["reserved_overhead"].get(name.split(":")[0], 0.0)))
                + float(cal["cuda_context_gib"]) + comm)
    return PhaseEstimate(name, round(allocated, 3), round(nvml, 3), {k: round(v, 3) for k, v in parts.items()}, note)


def estimate_memory(preset: Preset, bucket: BucketShape | tuple[int, int, int] | None = None, *,
                    batch_size: int | None = None, text_tokens: int | None = None, offload: bool | None = None,
                    stock_attention: bool = False, padded: bool | None = None,
                    gradient_checkpointing: bool | None = None, processes: int = 1,
                    calibration_file: Path | None = None) -> FitEstimate:
    """The run's memory by phase for a preset at `bucket` (default: its largest bucket).

    `stock_attention` models diffusers' own attention processor (it builds the S x S mask even when unused:
    what the reference measurements ran); `padded` models pipeline-shaped padded conditioning whose mask
    reaches SDPA (default: when the batch size is above 1). `processes`: data-parallel processes (one per
    GPU); each GPU holds what one process needs plus NCCL's buffers.
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

    if preset.pretrained_model_name_or_path == BUILTIN_TINY:
        phases = [PhaseEstimate(n, 0.05, 0.1) for n in PHASES]
        return FitEstimate(bucket.key, bucket.video_tokens, 0, bucket.video_tokens, batch, 0.02, 0.01, 0.05, 0.0,
                           offload, ckpt, 0, phases, bucket.source, builtin=True,
                           notes=["builtin tiny model: a few MB, runs on the CPU"])

    cal = calibration(calibration_file)
    notes: list[str] = []
    if padded:
        txt = PADDED_TOKENS
    else:
        txt = (text_tokens if text_tokens is not None else TEXT_TOKENS_TYPICAL) + (IMAGE_TOKENS if i2v else 0)
    s = bucket.video_tokens + txt
    comm = DATA_PARALLEL_GIB if processes > 1 else 0.0   # NCCL starts before caching: every phase holds it

    weights, pinned = transformer_weight_bytes(preset, offload)
    weights /= GiB
    if offload:
        notes.append(f"offload: {min(2 * max(1, int(preset.group_offload_blocks_per_group)), NUM_BLOCKS)} block "
                     f"slots on the GPU, {pinned / GiB:.1f} GiB of block weights in pinned host memory")
    n_lora = lora_params(int(preset.lora_rank), preset.lora_targets)
    opt = OPTIMIZER_STATE_BYTES.get(preset.optimizer, 8)
    lora_train = n_lora * (8 + opt) / GiB          # params + grads + state
    lora_kept = n_lora * (4 + opt) / GiB           # between steps the gradients are freed
    work = cal["train_work_per_token"] if ckpt else NUM_BLOCKS * cal["train_work_per_token"]
    act = batch * s * (CKPT_PER_TOKEN + work if ckpt else work + NUM_BLOCKS * HIDDEN * 2) / GiB
    if not ckpt:
        notes.append("gradient_checkpointing is off: every block keeps its activations")
    mask = batch * s * s * (MASK_COPIES + (SDPA_BIAS_BYTES if padded else 0)) / GiB if (stock_attention or padded) \
        else 0.0
    val = validation_shape(preset, bucket)
    vae = VAE_PARAMS * COMPONENT_BYTES_PER_PARAM / GiB
    tiling = bool(preset.vae_enable_tiling)

    # caching: the encoders and the VAE go to the GPU together; the text encoders leave before the clips
    siglip = SIGLIP_PARAMS * COMPONENT_BYTES_PER_PARAM / GiB if i2v else 0.0
    text = {"text encoders": (TEXT_ENCODER_PARAMS + BYT5_PARAMS) * COMPONENT_BYTES_PER_PARAM / GiB, "VAE": vae,
            "text encoding": cal["text_encode_work_gib"]}
    clips = {"VAE": vae, "VAE encode": _vae_encode_work(bucket, tiling, cal)}
    if siglip:
        text["SigLIP"] = clips["SigLIP"] = siglip
    steps = [_phase("caching:text", text, cal, comm, "text encoders"),
             _phase("caching:vae", clips, cal, comm, f"VAE encode of a {bucket.key} clip")]
    # the VAE waits in host memory while training (validate.park): only sampling brings it to the GPU
    train = {"transformer": weights, "LoRA+optimizer": lora_train, "activations": act}
    if mask:
        train["masks"] = mask
    steps.append(_phase("training", train, cal, comm))
    if val is not None:
        kept = {"transformer": weights, "VAE": vae, "LoRA+optimizer": lora_kept}
        s_val = val.video_tokens + TEXT_TOKENS_TYPICAL + (IMAGE_TOKENS if i2v else 0)
        steps.append(_phase("validation:denoise", dict(kept, denoising=s_val * cal["infer_work_per_token"] / GiB),
                            cal, comm, f"{val.key}: denoising"))
        steps.append(_phase("validation:decode", dict(kept, **{"VAE decode": _vae_decode_work(val, tiling, cal)}),
                            cal, comm, f"{val.key}: VAE decode"))
    # a checkpoint is written right after a step: the allocator still holds the step's blocks
    kept = {"transformer": weights, "LoRA+optimizer": lora_kept}
    steps.append(_phase("checkpointing", kept, cal, comm, "the training step's reserved blocks are still held",
                        nvml=steps[2].nvml_gib))
    phases = []
    for name in PHASES:   # a phase's figure is its largest step's
        mine = [x for x in steps if x.name.split(":")[0] == name]
        if mine:
            top = max(mine, key=lambda x: x.nvml_gib)
            phases.append(PhaseEstimate(name, top.allocated_gib, top.nvml_gib, top.parts, top.note))
    return FitEstimate(bucket.key, bucket.video_tokens, txt, s, batch, weights, lora_train, act, mask, offload, ckpt,
                       n_lora, phases, bucket.source, notes=notes, comm_gib=comm, host_pinned_gib=pinned / GiB,
                       calibration=str(cal.get("source", "")), steps=steps)


def card_for(peak_gib: float) -> str:
    """The smallest common card size that holds `peak_gib` (GiB as NVML counts it)."""
    for gb, names in ((16, "16 GB (RTX 4060 Ti 16GB, A4000)"), (24, "24 GB (RTX 3090 / 4090, L4, A10)"),
                      (32, "32 GB (RTX 5090)"), (40, "40 GB (A100 40GB)"), (48, "48 GB (L40S, A6000)"),
                      (80, "80 GB (H100, A100 80GB)"), (94, "94 GB (H100 NVL)"), (141, "141 GB (H200)")):
        if peak_gib <= gb * 1e9 / GiB * 0.97:   # a card's total, less a few percent no process can have
            return names
    return "more than 141 GB"
