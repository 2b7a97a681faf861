"""The typed preset model: one TOML file (SimpleTuner's HunyuanVideo 1.5 keys, flat) plus its datasets.

Reading uses tomllib (fast, stdlib). Editing and saving go through `hvtui.core.preset.edit` (tomlkit),
so comments and key order survive. Validation lives in `hvtui.core.preset.check`; this module only maps
TOML tables onto dataclasses and knows each field's type, default, allowed values and help text.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

# Upper bounds (check.py reports values above them at `check`): what the model and the libraries take.
SEED_MAX = 2**32 - 1          # numpy's RNG (accelerate's set_seed seeds it) takes 32-bit seeds
STEPS_MAX = 100_000_000       # step counts: far beyond any LoRA run, well inside every integer type
FRAMES_MAX = 513              # 4*128 + 1: the model generates 121; a decoded clip grows linearly with this
SIDE_MAX = 2048               # pixels: HunyuanVideo 1.5 works at 480p / 720p (848x480, 1280x720)
NUM_BLOCKS = 54               # dual-stream transformer blocks (REFERENCE.md)

FLAVOURS = (
    "t2v-480p", "t2v-720p", "i2v-480p", "i2v-720p",
    "t2v-480p-distilled", "t2v-720p-distilled", "i2v-480p-distilled", "i2v-720p-distilled",
    "i2v-480p-step-distilled",
)
# Inference flow shift per flavour (Tencent's PIPELINE_CONFIGS; hvtui.core.samples.sampling has the whole table): 5.0 at
# 480p, 9.0 for 720p t2v, 7.0 for 720p i2v and for the step-distilled 480p i2v.
FLAVOUR_SHIFT = {
    "t2v-480p": 5.0, "t2v-720p": 9.0, "i2v-480p": 5.0, "i2v-720p": 7.0,
    "t2v-480p-distilled": 5.0, "t2v-720p-distilled": 9.0, "i2v-480p-distilled": 5.0, "i2v-720p-distilled": 7.0,
    "i2v-480p-step-distilled": 7.0,
}
# The built-in tiny model of the real classes (random weights, built in code): the demo and the tests.
BUILTIN_TINY = "builtin:tiny"


def is_i2v(flavour: str) -> bool:
    return flavour.startswith("i2v")


def flavour_height(flavour: str) -> int:
    return 720 if "720p" in flavour else 480


def meta(help: str, choices: tuple | None = None, minimum: float | None = None,
         maximum: float | None = None, section: str = "") -> dict:
    """Field metadata read by the validator, the TUI form and the SimpleTuner importer."""
    return {"help": help, "choices": choices, "min": minimum, "max": maximum, "section": section}


@dataclass
class VideoSpec:
    num_frames: int = field(default=61, metadata=meta(
        "frames per training sample; (frames-1) % 4 == 0", minimum=1, maximum=FRAMES_MAX))
    min_frames: int | None = field(default=None, metadata=meta(
        "discard clips shorter than this (after resampling)", minimum=1, maximum=STEPS_MAX))
    max_frames: int | None = field(default=None, metadata=meta(
        "discard clips longer than this (after resampling)", minimum=1, maximum=STEPS_MAX))
    frame_rate: float | None = field(default=None, metadata=meta(
        "resample clips to this fps before frame rules", minimum=1, maximum=240))
    bucket_strategy: str = field(default="aspect_ratio", metadata=meta(
        "how clips are grouped", choices=("aspect_ratio", "resolution_frames")))
    frame_interval: int | None = field(default=None, metadata=meta(
        "resolution_frames: frame counts are rounded down to multiples of this (then to 4n+1)",
        minimum=1, maximum=FRAMES_MAX))


@dataclass
class DatasetSpec:
    id: str = field(default="", metadata=meta("unique name of this dataset"))
    type: str = field(default="local", metadata=meta("storage backend", choices=("local",)))
    dataset_type: str = field(default="video", metadata=meta("what the folder holds",
                                                             choices=("video", "image", "text_embeds")))
    instance_data_dir: str | None = field(default=None, metadata=meta("folder of clips (searched recursively)"))
    caption_strategy: str = field(default="textfile", metadata=meta(
        "where captions come from", choices=("textfile", "filename", "instanceprompt", "metadata")))
    instance_prompt: str | None = field(default=None, metadata=meta("caption for every clip (instanceprompt)"))
    metadata_file: str | None = field(default=None, metadata=meta("JSONL or CSV with file + caption columns"))
    resolution: int = field(default=480, metadata=meta(
        "pixel-area target: 480 -> 848x480 at 16:9", minimum=64, maximum=SIDE_MAX))
    resolution_type: str = field(default="pixel_area", metadata=meta("how resolution is read", choices=("pixel_area",)))
    repeats: int = field(default=0, metadata=meta(
        "extra passes over this dataset per epoch (0 = once)", minimum=0, maximum=1000))
    cache_dir: str | None = field(default=None, metadata=meta("where this dataset's latents are cached"))
    default: bool = field(default=False, metadata=meta("text_embeds: the default text-embed cache"))
    disabled: bool = field(default=False, metadata=meta("skip this dataset"))
    video: VideoSpec = field(default_factory=VideoSpec)


@dataclass
class Preset:
    # --- model
    model_type: str = field(default="lora", metadata=meta("what is trained", choices=("lora",), section="model"))
    model_family: str = field(default="hunyuanvideo", metadata=meta(
        "model family", choices=("hunyuanvideo",), section="model"))
    pretrained_model_name_or_path: str = field(default="tencent/HunyuanVideo-1.5", metadata=meta(
        f"local model folder (diffusers or Tencent layout) or {BUILTIN_TINY}", section="model"))
    model_flavour: str = field(default="t2v-480p", metadata=meta(
        "checkpoint flavour", choices=FLAVOURS, section="model"))
    text_encoder_path: str | None = field(default=None, metadata=meta(
        "Qwen2.5-VL text encoder root (else $HUNYUANVIDEO_TEXT_ENCODER_PATH)", section="model"))
    vision_encoder_path: str | None = field(default=None, metadata=meta(
        "SigLIP vision encoder root for i2v (else $HUNYUANVIDEO_VISION_ENCODER_PATH)", section="model"))
    base_model_precision: str = field(default="bf16", metadata=meta(
        "frozen base weights; int8-torchao / fp8-torchao halve their memory (fp8: FP8 matmuls, GPUs of compute "
        "capability 8.9+)", choices=("bf16", "no_change", "int8-torchao", "fp8-torchao"), section="model"))
    mixed_precision: str = field(default="bf16", metadata=meta(
        "autocast dtype", choices=("bf16", "fp16", "no"), section="model"))
    output_dir: str = field(default="output/hunyuan-video", metadata=meta(
        "checkpoints, LoRA, samples, events", section="model"))
    # --- LoRA
    lora_rank: int = field(default=16, metadata=meta("LoRA rank", minimum=1, maximum=1024, section="lora"))
    lora_alpha: float | None = field(default=None, metadata=meta(
        "LoRA alpha (default: rank)", minimum=0, maximum=1e6, section="lora"))
    lora_dropout: float = field(default=0.0, metadata=meta("LoRA dropout", minimum=0, maximum=1, section="lora"))
    lora_targets: str = field(default="attention", metadata=meta(
        "which block layers get LoRA", choices=("attention", "attention+mlp"), section="lora"))
    export_comfyui: bool = field(default=True, metadata=meta(
        "also write the LoRA in ComfyUI's own key space (*_comfy.safetensors)", section="lora"))
    # --- training
    max_train_steps: int = field(default=1000, metadata=meta(
        "optimizer steps to run", minimum=1, maximum=STEPS_MAX, section="training"))
    train_batch_size: int = field(default=1, metadata=meta(
        "samples per step per GPU", minimum=1, maximum=64, section="training"))
    gradient_accumulation_steps: int = field(default=1, metadata=meta(
        "micro-batches per optimizer step", minimum=1, maximum=1024, section="training"))
    learning_rate: float = field(default=1e-4, metadata=meta(
        "peak learning rate", minimum=0, maximum=1, section="training"))
    optimizer: str = field(default="adamw_bf16", metadata=meta(
        "optimizer", choices=("adamw", "adamw_bf16", "adamw8bit", "adafactor", "prodigy"), section="training"))
    lr_scheduler: str = field(default="constant_with_warmup", metadata=meta(
        "LR schedule", choices=("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                                "polynomial"), section="training"))
    lr_warmup_steps: int = field(default=0, metadata=meta(
        "warmup steps", minimum=0, maximum=STEPS_MAX, section="training"))
    max_grad_norm: float = field(default=1.0, metadata=meta(
        "gradient clipping (0 = off)", minimum=0, maximum=1e6, section="training"))
    seed: int = field(default=42, metadata=meta("random seed", minimum=0, maximum=SEED_MAX, section="training"))
    flow_schedule_shift: float | None = field(default=None, metadata=meta(
        "timestep shift (default: the flavour's inference shift)", minimum=0, maximum=100, section="training"))
    timestep_sampling: str = field(default="shifted", metadata=meta(
        "how training sigmas are drawn", choices=("uniform", "logit_normal", "shifted"), section="training"))
    logit_mean: float = field(default=0.0, metadata=meta(
        "logit_normal mean", minimum=-10, maximum=10, section="training"))
    logit_std: float = field(default=1.0, metadata=meta("logit_normal std", minimum=0, maximum=10, section="training"))
    gradient_checkpointing: bool = field(default=True, metadata=meta(
        "recompute activations in backward", section="training"))
    max_nonfinite_steps: int = field(default=5, metadata=meta(
        "stop after this many non-finite losses in a row", minimum=1, maximum=STEPS_MAX, section="training"))
    checkpointing_steps: int = field(default=250, metadata=meta(
        "save a checkpoint every N steps (0 = only at the end)", minimum=0, maximum=STEPS_MAX, section="training"))
    checkpoints_total_limit: int = field(default=3, metadata=meta(
        "checkpoints kept", minimum=1, maximum=STEPS_MAX, section="training"))
    # --- speed and memory
    enable_group_offload: bool = field(default=False, metadata=meta(
        "stream frozen block weights from host memory", section="memory"))
    group_offload_type: str = field(default="block_level", metadata=meta(
        "offload granularity", choices=("block_level", "leaf_level"), section="memory"))
    group_offload_blocks_per_group: int = field(default=1, metadata=meta(
        "blocks per offload group", minimum=1, maximum=NUM_BLOCKS, section="memory"))
    group_offload_use_stream: bool = field(default=False, metadata=meta(
        "overlap transfers on a CUDA side stream", section="memory"))
    enable_model_cpu_offload: bool = field(default=False, metadata=meta(
        "move whole models to CPU when idle (caching)", section="memory"))
    vae_enable_tiling: bool = field(default=True, metadata=meta("tile VAE encode (much less memory)", section="memory"))
    vae_enable_patch_conv: bool = field(default=False, metadata=meta(
        "SimpleTuner's patch conv (not in diffusers; tiling used)", section="memory"))
    compile_blocks: bool = field(default=True, metadata=meta(
        "torch.compile the repeated blocks on CUDA", section="memory"))
    attention_backend: str = field(default="auto", metadata=meta(
        "SDPA backend", choices=("auto", "native", "flash", "_native_cudnn", "_native_efficient"), section="memory"))
    # --- validation
    validation_steps: int = field(default=0, metadata=meta(
        "sample a video every N steps (0 = off)", minimum=0, maximum=STEPS_MAX, section="validation"))
    validation_prompt: str = field(default="", metadata=meta("prompt for validation samples", section="validation"))
    validation_prompts: list[str] = field(default_factory=list, metadata=meta(
        "more validation prompts", section="validation"))
    validation_negative_prompt: str = field(default="", metadata=meta("negative prompt", section="validation"))
    validation_resolution: str = field(default="848x480", metadata=meta(
        "WxH of samples, multiples of 16", section="validation"))
    validation_num_video_frames: int = field(default=61, metadata=meta(
        "frames per sample; (frames-1) % 4 == 0", minimum=1, maximum=FRAMES_MAX, section="validation"))
    validation_guidance: float | None = field(default=None, metadata=meta(
        "classifier-free guidance (default: the checkpoint's guider: 6.0, 1.0 = no CFG for distilled flavours)",
        minimum=1, maximum=30, section="validation"))
    validation_num_inference_steps: int | None = field(default=None, metadata=meta(
        "sampling steps (default: the checkpoint's: 50, 12 for the step-distilled i2v)", minimum=1, maximum=200,
        section="validation"))
    validation_seed: int = field(default=0, metadata=meta(
        "sampling seed", minimum=0, maximum=SEED_MAX, section="validation"))
    # --- logging (experiment trackers through accelerate's; events.jsonl is always written)
    report_to: str = field(default="none", metadata=meta(
        "experiment tracker: tensorboard, wandb, all (both) or none", choices=("none", "tensorboard", "wandb", "all"),
        section="logging"))
    tracker_project_name: str = field(default="hvtui", metadata=meta("wandb project", section="logging"))
    tracker_run_name: str | None = field(default=None, metadata=meta(
        "run name in the tracker (default: the output_dir's folder name)", section="logging"))
    # --- data
    dataset_backend_config: str | None = field(default=None, metadata=meta(
        "separate dataset file (JSON list or TOML [[datasets]]) instead of [[datasets]] here", section="data"))
    caption_dropout_probability: float = field(default=0.0, metadata=meta(
        "drop captions (empty prompt) with this chance", minimum=0, maximum=1, section="data"))
    datasets: list[DatasetSpec] = field(default_factory=list)

    # --- not TOML keys: where it came from
    source: Path | None = field(default=None, repr=False, compare=False)

    @property
    def is_i2v(self) -> bool:
        return is_i2v(self.model_flavour)

    @property
    def shift(self) -> float:
        return self.flow_schedule_shift if self.flow_schedule_shift is not None else FLAVOUR_SHIFT[self.model_flavour]

    @property
    def all_validation_prompts(self) -> list[str]:
        return ([self.validation_prompt] if self.validation_prompt else []) + list(self.validation_prompts)

    @property
    def training_datasets(self) -> list[DatasetSpec]:
        return [d for d in self.datasets if not d.disabled and d.dataset_type in ("video", "image")]

    @overload
    def resolve_path(self, p: str) -> Path: ...
    @overload
    def resolve_path(self, p: str | None) -> Path | None: ...

    def resolve_path(self, p: str | None) -> Path | None:
        """Relative paths in a preset are relative to the preset file's folder (a str gives a Path: the
        overloads let callers that checked the key is set use the result without a None test)."""
        if p is None:
            return None
        q = Path(p).expanduser()
        if q.is_absolute() or self.source is None:
            return q
        try:
            return (self.source.parent / q).resolve()
        except (OSError, ValueError):   # a NUL byte, a name too long: check.py says so; never a traceback
            return self.source.parent / q


class PresetError(Exception):
    """A preset that cannot be read at all (syntax error, missing file). `problems` from validate."""

    def __init__(self, message: str, problems: list | None = None):
        super().__init__(message)
        self.problems = problems or []


def field_specs(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}


def _build(cls, table: dict[str, Any]):
    """Lenient mapping: known keys only, no type checks (check.py reports problems with line numbers)."""
    specs = field_specs(cls)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in specs:
            continue
        if cls is DatasetSpec and key == "video" and isinstance(value, dict):
            value = _build(VideoSpec, value)
        kwargs[key] = value
    return cls(**kwargs)


def read_dataset_file(path: Path) -> list[dict]:
    """A separate dataset file: SimpleTuner's multidatabackend JSON list, or TOML with [[datasets]]."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        return data if isinstance(data, list) else data.get("datasets", [])
    return tomllib.loads(text).get("datasets", [])


def _lenient_dataset_file(preset: Preset) -> list:
    """The dataset file's tables, or none when it is unusable (check.py says why, with the file's lines)."""
    if not isinstance(preset.dataset_backend_config, str):
        return []
    try:
        path = preset.resolve_path(preset.dataset_backend_config)
        tables = read_dataset_file(path) if path and path.is_file() else []
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):  # ValueError: bad JSON / TOML
        return []
    return tables if isinstance(tables, list) else []


def preset_from_dict(data: dict[str, Any], source: Path | None = None) -> Preset:
    tables = data.get("datasets", [])
    if not isinstance(tables, list):   # `datasets = 5`: check.py reports it with its line
        tables = []
    preset = _build(Preset, {k: v for k, v in data.items() if k != "datasets"})
    preset.source = source
    if preset.dataset_backend_config and not tables:
        tables = _lenient_dataset_file(preset)
    preset.datasets = [_build(DatasetSpec, t) for t in tables if isinstance(t, dict)]
    return preset


def load_preset(path: str | Path) -> Preset:
    """Read a preset without validating it. Raises PresetError for a missing file or bad TOML."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PresetError(f"{path}: cannot read preset: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))   # a UTF-8 BOM (Windows editors) is not an error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PresetError(f"{path}: not valid TOML: {e}") from None
    return preset_from_dict(data, source=path.resolve())
