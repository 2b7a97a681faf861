"""Will a preset's run fit in GPU memory? An estimate from the model's shape, calibrated on measured runs.

Training peak = resident transformer weights + LoRA (params, grads, optimizer state) + activations of one
micro-batch at the largest bucket. With gradient checkpointing the activations are the bf16 input of every
block (54 x 2048 x 2 bytes per token) plus one block's recompute + backward working set, whose size per
token was calibrated on the full-size transformer (H200, REFERENCE.md, LoRA r16 + AdamW, batch 1):

  case (848x480x61 unless named)                       measured     this model
  valid tokens, stock attention processor              24.8 GiB     24.8 GiB
  1280x720x61, valid tokens, stock processor           39.5 GiB     39.4 GiB
  padded pipeline conditioning (mask reaches SDPA)     27.5 GiB     27.0 GiB
  all block weights offloaded (analysed floor)         10-11 GB     ~9.6 GB (no mask)

The stock processor builds a dense S x S bool mask in every block even when it is then dropped (about two
copies are live: ~2 bytes per token pair); hvtui's packed attention does not build it at batch 1, so hvtui's
own batch-1 estimate leaves it out. Batches above 1 are padded and masked: the mask reaches SDPA, which turns
it into a bf16 bias (2 more bytes per pair). Group offload keeps the non-block weights and two groups of
blocks resident. The caching phase (Qwen2.5-VL text encoder, then the VAE) is estimated separately; the
run needs the larger of the two.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

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

# activations (bytes); WORK_PER_TOKEN is the calibrated constant, the rest follows from the shapes
CKPT_PER_TOKEN = NUM_BLOCKS * HIDDEN * 2        # bf16 block inputs kept by gradient checkpointing
WORK_PER_TOKEN = 100_000                        # one block's recompute + backward working set
NO_CKPT_PER_TOKEN = NUM_BLOCKS * (WORK_PER_TOKEN + HIDDEN * 2)   # every block's activations kept
MASK_COPIES = 2                                 # S x S bool masks live at once (stock processor)
SDPA_BIAS_BYTES = 2                             # a bool mask reaching SDPA becomes a bf16 bias

# conditioning tokens next to the video tokens
TEXT_TOKENS_TYPICAL = 256     # valid Qwen2.5-VL tokens of a long caption (template prefix cropped)
TEXT_TOKENS_REFERENCE = 120   # what the reference runs used
IMAGE_TOKENS = 729            # SigLIP 27 x 27 (i2v)
PADDED_TOKENS = 1000 + 256 + 729   # the pipeline's padded conditioning

# caching phase
TEXT_ENCODER_PARAMS = 7_070_000_000   # Qwen2.5-VL-7B language model (no LM head), bf16
VAE_TILED_GIB_480P61 = 9.3            # measured peak, one 848x480x61 clip, tiled
VAE_UNTILED_GIB_480P61 = 44.4         # measured peak, untiled
SIGLIP_PARAMS = 430_000_000

# data-parallel: NCCL's own buffers on each GPU with hvtui's NCCL settings (0.57 GiB measured on 2x H200 by
# bench/nccl_memory.py; collectives.LEAN_NCCL); the LoRA gradients themselves cost what they cost on one GPU
DATA_PARALLEL_GIB = 0.6
# LoRA: fp32 param + fp32 grad + optimizer state per trainable parameter
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw_bf16": 4, "adamw8bit": 2, "adafactor": 1, "prodigy": 16}


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
class FitEstimate:
    bucket: str
    video_tokens: int
    text_tokens: int
    tokens: int                   # per sample: video + conditioning
    batch_size: int
    weights_gib: float            # resident base weights of the transformer
    lora_gib: float               # LoRA params + grads + optimizer state
    activations_gib: float
    mask_gib: float
    training_gib: float           # the training step's peak
    caching_gib: float            # text encoder / VAE peak while caching
    offload: bool
    gradient_checkpointing: bool
    lora_params: int
    bucket_source: str = ""
    builtin: bool = False
    notes: list[str] = field(default_factory=list)
    comm_gib: float = 0.0         # NCCL buffers of a data-parallel run (included in training and caching)

    @property
    def peak_gib(self) -> float:
        return max(self.training_gib, self.caching_gib)

    def breakdown(self) -> str:
        if self.builtin:
            return f"builtin tiny model at {self.bucket} x{self.batch_size}: under {self.peak_gib:.1f} GiB"
        parts = [f"weights {self.weights_gib:.1f}", f"LoRA+optimizer {self.lora_gib:.2f}",
                 f"activations {self.activations_gib:.1f}"]
        if self.mask_gib:
            parts.append(f"masks {self.mask_gib:.1f}")
        if self.comm_gib:
            parts.append(f"NCCL {self.comm_gib:.1f}")
        return (f"training {self.training_gib:.1f} GiB at {self.bucket} x{self.batch_size} "
                f"({self.tokens:,} tokens: " + ", ".join(parts) + f"); caching {self.caching_gib:.1f} GiB")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["peak_gib"] = self.peak_gib
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


def _caching_gib(shape: BucketShape, tiling: bool, i2v: bool) -> float:
    text = TEXT_ENCODER_PARAMS * 2 / GiB + 0.5
    pixels = shape.width * shape.height * shape.frames / (848 * 480 * 61)
    # tiling is spatial only: its peak follows the frame count, not the frame size
    vae = VAE_TILED_GIB_480P61 * max(shape.frames / 61, 0.25) if tiling else VAE_UNTILED_GIB_480P61 * pixels
    siglip = SIGLIP_PARAMS * 2 / GiB + 0.5 if i2v else 0.0
    return max(text, vae, siglip)


def estimate_memory(preset: Preset, bucket: BucketShape | tuple[int, int, int] | None = None, *,
                    batch_size: int | None = None, text_tokens: int | None = None, offload: bool | None = None,
                    stock_attention: bool = False, padded: bool | None = None,
                    gradient_checkpointing: bool | None = None, processes: int = 1) -> FitEstimate:
    """GiB estimate for a preset at `bucket` (default: its largest bucket).

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
        return FitEstimate(bucket.key, bucket.video_tokens, 0, bucket.video_tokens, batch, 0.02, 0.01, 0.05, 0.0,
                           0.1, 0.1, offload, ckpt, 0, bucket.source, builtin=True,
                           notes=["builtin tiny model: a few MB, runs on the CPU"])

    notes: list[str] = []
    if padded:
        txt = PADDED_TOKENS
    else:
        txt = (text_tokens if text_tokens is not None else TEXT_TOKENS_TYPICAL) + (IMAGE_TOKENS if i2v else 0)
    s = bucket.video_tokens + txt

    wbytes = block_bytes_per_param(preset.base_model_precision)   # quantized modes: 1 byte per weight
    if offload:
        groups = 2 * max(1, int(preset.group_offload_blocks_per_group))
        resident = NONBLOCK_PARAMS * 2 + min(groups, NUM_BLOCKS) * BLOCK_PARAMS * wbytes
        notes.append(f"offload: {min(groups, NUM_BLOCKS)} blocks resident, "
                     f"{(NUM_BLOCKS * BLOCK_PARAMS * wbytes) / GiB:.1f} GiB of block weights in pinned host memory")
    else:
        resident = NONBLOCK_PARAMS * 2 + NUM_BLOCKS * BLOCK_PARAMS * wbytes

    n_lora = lora_params(int(preset.lora_rank), preset.lora_targets)
    lora = n_lora * (8 + OPTIMIZER_STATE_BYTES.get(preset.optimizer, 8))

    per_token = CKPT_PER_TOKEN + WORK_PER_TOKEN if ckpt else NO_CKPT_PER_TOKEN
    act = batch * s * per_token
    if not ckpt:
        notes.append("gradient_checkpointing is off: every block keeps its activations")
    mask = 0.0
    if stock_attention or padded:
        mask = batch * s * s * (MASK_COPIES + (SDPA_BIAS_BYTES if padded else 0))

    comm = DATA_PARALLEL_GIB if processes > 1 else 0.0   # NCCL starts before caching: both phases hold it
    training = (resident + lora + act + mask) / GiB + comm
    caching = _caching_gib(bucket, preset.vae_enable_tiling, i2v) + comm
    return FitEstimate(bucket.key, bucket.video_tokens, txt, s, batch, resident / GiB, lora / GiB, act / GiB,
                       mask / GiB, training, caching, offload, ckpt, n_lora, bucket.source, notes=notes,
                       comm_gib=comm)
