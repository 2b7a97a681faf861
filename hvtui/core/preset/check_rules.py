"""The rules of `hvtui check` that need more than one field or a look at the machine: the model and its
encoders, optional packages (optimizers, attention), memory options without a GPU, validation sizes, dataset
folders, frame counts and writable output folders. Each rule adds its problems to the Checker; `run_checks`
runs them all in order. Stat()-cheap, no torch, as check.py's rule asks."""
from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

from hvtui.core.preset.check_bounds import check_clip_memory, check_output_outside_datasets, check_paths
from hvtui.core.preset.check_fields import Checker, parse_resolutions
from hvtui.core.preset.schema import BUILTIN_TINY, SIDE_MAX, DatasetSpec, Preset, VideoSpec, flavour_height, is_i2v

VISION_ENV = "HUNYUANVIDEO_VISION_ENCODER_PATH"
# Optimizers that need a package the base install lacks: name -> (import name, pip name).
OPTIONAL_OPTIMIZERS = {"adamw8bit": ("bitsandbytes", "bitsandbytes"), "prodigy": ("prodigyopt", "prodigyopt")}
# diffusers' "flash" backend is the flash-attn package (the SDPA flash kernel is used by "native"/"auto").
OPTIONAL_ATTENTION = {"flash": ("flash_attn", "flash-attn")}


def nearest_frame_counts(n: int) -> tuple[int, int]:
    """The valid (4k+1) frame counts either side of n."""
    low = max(1, (n - 1) // 4 * 4 + 1)
    return low, low + 4


def nearest_multiples(n: int, m: int = 16) -> tuple[int, int]:
    low = n // m * m
    return (low, low + m) if low > 0 else (m, 2 * m)



@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Is there an NVIDIA GPU? Without importing torch: the driver's proc entry, else NVML."""
    if Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()):
        return True
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVMLError_LibraryNotFound without a driver (REFERENCE trap 7), ImportError
        return False


def package_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False



# ----------------------------------------------------------------------------------------------- checks

def _check_model(c: Checker, p: Preset, env) -> None:
    tiny = p.pretrained_model_name_or_path == BUILTIN_TINY
    if c.good(("pretrained_model_name_or_path",)):
        name = p.pretrained_model_name_or_path
        if not name.strip():
            c.error(("pretrained_model_name_or_path",), "is empty",
                    f"set it to the local model folder (or {BUILTIN_TINY} for the demo model)")
        elif name.startswith("builtin:") and not tiny:
            c.error(("pretrained_model_name_or_path",), f"unknown built-in model {json.dumps(name)}",
                    f"the only built-in model is {BUILTIN_TINY}")
    if c.good(("model_flavour",)) and is_i2v(p.model_flavour) and not tiny and c.good(("vision_encoder_path",)):
        if not (p.vision_encoder_path or "").strip() and not env.get(VISION_ENV, "").strip():
            c.error(("vision_encoder_path",),
                    f"{p.model_flavour} needs the SigLIP vision encoder, and no path is set",
                    f'set vision_encoder_path = "/path/to/vision_encoder_root" or export {VISION_ENV} '
                    "(hvtui doctor checks that it exists)", at=("model_flavour",) if
                    ("vision_encoder_path",) not in c.main_lines else None)
    if c.good(("output_dir",)) and not p.output_dir.strip():
        c.error(("output_dir",), "is empty", 'set output_dir = "output/my-lora"')


def _check_training(c: Checker, p: Preset) -> None:
    opt = p.optimizer
    if c.good(("optimizer",)) and opt in OPTIONAL_OPTIMIZERS:
        module, pip = OPTIONAL_OPTIMIZERS[opt]
        if not package_available(module):
            c.error(("optimizer",), f"{opt} needs the {pip} package, which is not installed",
                    f'pip install {pip}, or use optimizer = "adamw_bf16"')
    if c.good(("attention_backend",)) and p.attention_backend in OPTIONAL_ATTENTION:
        module, pip = OPTIONAL_ATTENTION[p.attention_backend]
        if not package_available(module):
            c.error(("attention_backend",), f"{p.attention_backend} needs the {pip} package, which is not installed",
                    f'pip install {pip}, or use attention_backend = "auto"')
    if c.good(("max_train_steps",), ("lr_warmup_steps",)) and p.lr_warmup_steps > p.max_train_steps:
        c.warn(("lr_warmup_steps",), f"{p.lr_warmup_steps} warmup steps is more than max_train_steps "
               f"({p.max_train_steps}): the learning rate never reaches its peak",
               f"use fewer warmup steps (e.g. {max(0, p.max_train_steps // 10)})")
    if c.good(("learning_rate",)) and p.learning_rate == 0:
        c.warn(("learning_rate",), "is 0: the LoRA will not change", "use e.g. learning_rate = 1e-4")
    if (c.good(("max_train_steps",), ("checkpointing_steps",))
            and p.checkpointing_steps > p.max_train_steps):
        c.warn(("checkpointing_steps",), f"{p.checkpointing_steps} is more than max_train_steps "
               f"({p.max_train_steps}): only the final save happens",
               "lower it to checkpoint during the run (0 means only at the end)")


def _check_memory(c: Checker, p: Preset) -> None:
    group = c.good(("enable_group_offload",)) and p.enable_group_offload
    if group and c.good(("enable_model_cpu_offload",)) and p.enable_model_cpu_offload:
        c.error(("enable_model_cpu_offload",), "cannot be combined with enable_group_offload",
                "turn one off: keep enable_group_offload = true for training on small cards")
    if c.good(("group_offload_use_stream",)) and p.group_offload_use_stream:
        if not group:
            c.warn(("group_offload_use_stream",), "has no effect without enable_group_offload",
                   "set enable_group_offload = true, or remove this key")
        elif not cuda_available():
            c.warn(("group_offload_use_stream",), "no CUDA GPU on this machine: streams are not used here",
                   "fine for checking; on a machine without an NVIDIA GPU set it to false")


def _check_validation(c: Checker, p: Preset) -> None:
    tiny = p.pretrained_model_name_or_path == BUILTIN_TINY
    steps_ok = c.good(("validation_steps",))
    if (steps_ok and p.validation_steps > 0 and c.good(("validation_prompt",), ("validation_prompts",))
            and not p.all_validation_prompts):
        c.error(("validation_prompt",), f"validation_steps = {p.validation_steps} but no validation prompt is set",
                'set validation_prompt = "..." or validation_steps = 0', at=("validation_steps",))
    if steps_ok and c.good(("max_train_steps",)) and p.validation_steps > p.max_train_steps:
        c.warn(("validation_steps",), f"{p.validation_steps} is more than max_train_steps ({p.max_train_steps}): "
               "no sample is made during the run", f"lower it (e.g. {max(1, p.max_train_steps // 4)})")
    if c.good(("validation_num_video_frames",)):
        _check_frames(c, ("validation_num_video_frames",), p.validation_num_video_frames)
    if c.good(("validation_resolution",)):
        resolutions = parse_resolutions(p.validation_resolution)
        if resolutions is None:
            c.error(("validation_resolution",), f"{json.dumps(p.validation_resolution)} is not WIDTHxHEIGHT",
                    'write it like "848x480" (several: "848x480,480x848")')
            return
        for w, h in resolutions:
            bad = [(name, v) for name, v in (("width", w), ("height", h)) if v % 16]
            if not (16 <= w <= SIDE_MAX and 16 <= h <= SIDE_MAX):   # "0x0" divides by 16 too
                c.error(("validation_resolution",), f"{w}x{h}: each side must be 16 to {SIDE_MAX} pixels",
                        "use a size like 848x480 (480p) or 1280x720 (720p)")
            elif bad:
                fixed_w = w if w % 16 == 0 else _closest16(w)
                fixed_h = h if h % 16 == 0 else _closest16(h)
                what = " and ".join(f"{name} {v}" for name, v in bad)
                options = "; ".join(f"{name} {a} or {b}" for name, v in bad for a, b in [nearest_multiples(v)])
                c.error(("validation_resolution",), f"{w}x{h}: {what} not a multiple of 16",
                        f"use {options} (e.g. {fixed_w}x{fixed_h})")
            elif not tiny and c.good(("model_flavour",)):
                _check_flavour_size(c, ("validation_resolution",), p.model_flavour, min(w, h), f"{w}x{h}")


def _closest16(v: int) -> int:
    low, high = nearest_multiples(v)
    return low if v - low <= high - v else high


def _check_flavour_size(c: Checker, path: tuple, flavour: str, short_side: int, what: str) -> None:
    native = flavour_height(flavour)
    if native == 720 and short_side < 600:
        c.warn(path, f"{what} is a 480p size but model_flavour is {flavour} (trained at 1280x720)",
               "use 1280x720-class sizes, or a 480p flavour")
    elif native == 480 and short_side > 600:
        c.warn(path, f"{what} is a 720p size but model_flavour is {flavour} (trained at 848x480)",
               "use 848x480-class sizes, or a 720p flavour")


def _check_frames(c: Checker, path: tuple, n: int) -> bool:
    if (n - 1) % 4 == 0:
        return True
    low, high = nearest_frame_counts(n)
    c.error(path, f"{n} frames is not 4k+1 (the VAE packs 4 frames per latent after the first)",
            f"use {low} or {high}")
    return False


def folder_problem(folder: Path) -> str | None:
    """Why a folder the run writes into cannot be used (it, or the nearest part of it that exists, is a file or
    not writable), or None. Nothing is created."""
    if folder.exists():
        if not folder.is_dir():
            return f"{folder} is a file, not a folder"
        return None if os.access(folder, os.W_OK) else f"{folder} is not writable"
    parent = next((a for a in folder.parents if a.exists()), None)
    if parent is None:
        return None
    if not parent.is_dir():
        return f"{folder} cannot be created: {parent} is a file"
    return None if os.access(parent, os.W_OK) else f"{folder} cannot be created: {parent} is not writable"


def _check_writable_folders(c: Checker, p: Preset) -> None:
    """output_dir and the cache folders: found unusable here, not after the model has loaded."""
    places: list[tuple[tuple[str | int, ...], str | None]] = [(("output_dir",), p.output_dir)]
    places += [(("datasets", k, "cache_dir"), d.cache_dir) for k, d in enumerate(p.datasets)
               if isinstance(d.cache_dir, str) and d.cache_dir.strip()]
    for path, value in places:
        if not c.good(path) or not isinstance(value, str) or not value.strip():
            continue
        problem = folder_problem(p.resolve_path(value))
        if problem:
            c.error(path, problem, f"set {path[-1]} to a folder you can write to")


def _check_datasets(c: Checker, p: Preset) -> None:
    tiny = p.pretrained_model_name_or_path == BUILTIN_TINY
    seen: dict[str, int] = {}
    defaults = []
    for k, d in enumerate(p.datasets):
        base = ("datasets", k)
        if c.good(base + ("id",)):
            if not d.id.strip():
                c.error(base + ("id",), "every dataset needs an id", f'add id = "dataset-{k}"', at=base)
            elif d.id in seen:
                c.error(base + ("id",), f"{json.dumps(d.id)} is already used by {c.raw_key(('datasets', seen[d.id]))}",
                        "give each dataset its own id")
            else:
                seen[d.id] = k
        if not c.good(base + ("disabled",)) or d.disabled:
            continue
        if not c.good(base + ("dataset_type",)):
            continue
        if d.dataset_type == "text_embeds":
            if c.good(base + ("default",)) and d.default:
                defaults.append(k)
            continue
        _check_dataset_dir(c, p, base, d)
        if c.good(base + ("caption_strategy",), base + ("instance_prompt",)):
            if d.caption_strategy == "instanceprompt" and not (d.instance_prompt or "").strip():
                c.error(base + ("instance_prompt",), "caption_strategy is instanceprompt but no instance_prompt is set",
                        'set instance_prompt = "a photo of ..." (used as every clip\'s caption)',
                        at=base + ("caption_strategy",))
        if c.good(base + ("caption_strategy",), base + ("metadata_file",)) and d.caption_strategy == "metadata":
            if not (d.metadata_file or "").strip():
                c.error(base + ("metadata_file",), "caption_strategy is metadata but no metadata_file is set",
                        'set metadata_file = "captions.jsonl" (JSONL or CSV with file + caption columns)',
                        at=base + ("caption_strategy",))
            else:
                path = p.resolve_path(d.metadata_file or "")   # set: the test above
                if not path.is_file():
                    c.error(base + ("metadata_file",), f"{path} does not exist",
                            "fix the path (relative paths start at the preset file's folder)")
        if not tiny and c.good(base + ("resolution",), ("model_flavour",)) and d.dataset_type == "video":
            _check_flavour_size(c, base + ("resolution",), p.model_flavour, d.resolution, f"resolution {d.resolution}")
        _check_video(c, base, d)
    if len(defaults) > 1:
        c.error(("datasets", defaults[1], "default"), f"more than one text_embeds dataset is the default "
                f"(also {c.raw_key(('datasets', defaults[0]))})", "set default = true on one of them only")
    unreadable = ("datasets",) in c.bad or any(("datasets", k, key) in c.bad for k in range(len(p.datasets))
                                               for key in ("dataset_type", "disabled"))
    if not p.training_datasets and not unreadable:
        c.error(("datasets",), "no training dataset (an enabled dataset with dataset_type video or image)",
                'add a [[datasets]] table with dataset_type = "video" and instance_data_dir = "your/clips"',
                at=("datasets",) if p.datasets else ("dataset_backend_config",))


def _check_dataset_dir(c: Checker, p: Preset, base: tuple, d: DatasetSpec) -> None:
    path_key = base + ("instance_data_dir",)
    if not c.good(path_key):
        return
    if not (d.instance_data_dir or "").strip():
        c.error(path_key, f"a {d.dataset_type} dataset needs a folder of clips",
                'add instance_data_dir = "path/to/clips" (relative to the preset file)', at=base)
        return
    folder = p.resolve_path(d.instance_data_dir or "")   # set: the test above
    if not folder.exists():
        c.error(path_key, f"folder {folder} does not exist",
                "create it and put your clips (with .txt captions) there, or fix the path "
                "(relative paths start at the preset file's folder)")
    elif not folder.is_dir():
        c.error(path_key, f"{folder} is a file, not a folder", "point instance_data_dir at the folder of clips")


def _check_video(c: Checker, base: tuple, d: DatasetSpec) -> None:
    v = d.video
    vb = base + ("video",)
    if not isinstance(v, VideoSpec) or d.dataset_type != "video":
        return
    per_bucket = c.good(vb + ("bucket_strategy",)) and v.bucket_strategy == "resolution_frames"
    # resolution_frames takes each clip's own length: num_frames is not used there.
    n_ok = not per_bucket and c.good(vb + ("num_frames",)) and _check_frames(c, vb + ("num_frames",), v.num_frames)
    lo = v.min_frames if c.good(vb + ("min_frames",)) else None
    hi = v.max_frames if c.good(vb + ("max_frames",)) else None
    if per_bucket:
        # Bucket lengths are clip lengths capped at max_frames and rounded down to 4k+1 (dataset/frames.py):
        # a bound that is not 4k+1 works, but not as written.
        if hi is not None and (hi - 1) % 4:
            low, high = nearest_frame_counts(hi)
            c.warn(vb + ("max_frames",), f"{hi} is not 4k+1: samples are at most {low} frames",
                   f"use {low} or {high}")
        if lo is not None and (lo - 1) % 4:
            low, high = nearest_frame_counts(lo)
            c.warn(vb + ("min_frames",), f"{lo} is not 4k+1: the shortest sample is {high} frames",
                   f"use {low} or {high}")
        if lo is not None and hi is not None and lo > hi:
            c.error(vb + ("min_frames",), f"min_frames {lo} is more than max_frames {hi}: every clip is discarded",
                    "swap or fix them")
        return
    if lo is not None and hi is not None and lo > hi:
        c.error(vb + ("min_frames",), f"min_frames {lo} is more than max_frames {hi}: every clip is discarded",
                "swap or fix them")
    elif n_ok and hi is not None and hi < v.num_frames:
        c.error(vb + ("max_frames",), f"max_frames {hi} is below num_frames {v.num_frames}: "
                "no clip is both long enough and short enough", f"set max_frames >= {v.num_frames} or remove it")



def run_checks(c: Checker, p: Preset, env) -> None:
    c.fields(p, Preset, ())
    for k, d in enumerate(p.datasets):
        c.fields(d, DatasetSpec, ("datasets", k))
        if isinstance(d.video, VideoSpec):
            c.fields(d.video, VideoSpec, ("datasets", k, "video"))
    check_paths(c, p)   # first: the checks below stat these paths
    check_clip_memory(c, p)
    check_output_outside_datasets(c, p)
    _check_model(c, p, env)
    _check_training(c, p)
    _check_memory(c, p)
    _check_validation(c, p)
    _check_datasets(c, p)
    _check_writable_folders(c, p)
