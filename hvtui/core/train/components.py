"""Load the model components the trainer needs: the built-in tiny model, or local weights.

`load_components(preset, device, dtype, parts, publish)` returns a dict keyed like the diffusers pipeline's
components (transformer, vae, scheduler, text_encoder, tokenizer, text_encoder_2, tokenizer_2,
image_encoder, feature_extractor, guider) plus "info" (a `ModelInfo`: what was loaded, for cache keys).
Only the requested parts are kept ("transformer", "vae", "text" = both text encoders + tokenizers, "image" =
SigLIP + its processor for i2v; scheduler and guider always). Nothing is downloaded: real weights come from
the local folders `hvtui.core.env.assets.resolve_components` finds, loaded by the format it reports (diffusers
`from_pretrained`, or the official Tencent files converted with `tencent_keys`). `builtin:tiny` builds the
tiny random model of the real classes (tiny.py), seeded by `preset.seed`.

Every transformer gets hvtui's packed-attention processors (packed_attention.py).
"""
from __future__ import annotations

import gc
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hvtui.core.preset.schema import BUILTIN_TINY, FLAVOUR_SHIFT
from hvtui.core.run import events

PARTS = ("transformer", "vae", "text", "image")
TEXT_NAMES = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
IMAGE_NAMES = ("image_encoder", "feature_extractor")
SUPPORTED_PRECISION = ("bf16", "no_change", "int8-torchao", "fp8-torchao")


class ModelLoadError(Exception):
    """A model that cannot be loaded as asked; `hint` says how to fix it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


@dataclass
class ModelInfo:
    model_id: str            # stable identity for cache keys: "builtin:tiny/seed=42" or the resolved path
    flavour: str
    tiny: bool
    dtype: torch.dtype
    layouts: dict = field(default_factory=dict)   # part -> "builtin" | "diffusers" | "tencent"

    def key(self) -> str:
        return f"{self.model_id}|{self.flavour}|{str(self.dtype).replace('torch.', '')}"


def weight_dtype(preset) -> torch.dtype:
    """The frozen weights' dtype as loaded. bf16 -> bfloat16; no_change -> what training computes in (the
    mixed_precision dtype, fp32 for "no"). The quantized modes load like no_change: their transformer blocks
    are quantized later (train/quantize.py, once caching is done), the rest stays in that dtype. Other
    choices are not implemented: a clear error, no fallback."""
    p = preset.base_model_precision
    if p not in SUPPORTED_PRECISION:
        raise ModelLoadError(f"base_model_precision = {p!r} is not supported by hvtui",
                             "set base_model_precision to one of " + ", ".join(SUPPORTED_PRECISION))
    if p == "bf16":
        return torch.bfloat16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(preset.mixed_precision, torch.float32)


def _wanted(parts) -> set[str]:
    names: set[str] = set()
    for p in parts or PARTS:
        if p == "text":
            names.update(TEXT_NAMES)
        elif p == "image":
            names.update(IMAGE_NAMES)
        else:
            names.add(p)
    return names | {"scheduler", "guider"}


def _publish(publish, msg: str) -> None:
    if publish:
        publish(events.log(msg))


def model_info(preset, dtype: torch.dtype | None = None) -> ModelInfo:
    """What `load_components` would load, without loading it (cache keys, deciding which parts to load)."""
    dtype = dtype or weight_dtype(preset)
    if preset.pretrained_model_name_or_path == BUILTIN_TINY:
        return ModelInfo(f"{BUILTIN_TINY}/seed={int(preset.seed)}", preset.model_flavour, True, dtype)
    return ModelInfo(str(preset.resolve_path(preset.pretrained_model_name_or_path)), preset.model_flavour, False,
                     dtype)


def load_components(preset, device="cpu", dtype: torch.dtype | None = None, parts=PARTS, publish=None) -> dict:
    dtype = dtype or weight_dtype(preset)
    wanted = _wanted(parts)
    if not preset.is_i2v:
        wanted -= set(IMAGE_NAMES)
    if preset.pretrained_model_name_or_path == BUILTIN_TINY:
        comps, info = _load_tiny(preset, dtype)
    else:
        comps, info = _load_local(preset, dtype, wanted, publish)
    comps = {k: v for k, v in comps.items() if k in wanted}
    for module in comps.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
            if any(t.dtype != dtype for t in module.parameters()):
                module.to(dtype=dtype)
            if device is not None:
                module.to(device)
            module.eval()
    if "transformer" in comps:
        from hvtui.core.train import packed_attention

        packed_attention.install(comps["transformer"])
    comps["info"] = info
    return comps


def _load_tiny(preset, dtype):
    from hvtui.core.train.tiny import tiny_components

    task = "i2v" if preset.is_i2v else "t2v"
    # fork the RNG: building the tiny model must not move the trainer's random stream
    with torch.random.fork_rng(devices=[]):
        comps = tiny_components(task, shift=FLAVOUR_SHIFT[preset.model_flavour], seed=int(preset.seed))
    info = model_info(preset, dtype)
    info.layouts = {k: "builtin" for k in comps}
    return comps, info


# ---------------------------------------------------------------------------------------- local weights
def _load_local(preset, dtype, wanted: set[str], publish):
    from diffusers import ClassifierFreeGuidance

    from hvtui.core.env.assets import resolve_components

    found = {c.name: c for c in resolve_components(preset)}
    comps, layouts = {}, {}
    from hvtui.core.samples.sampling import sampling_settings

    comps["guider"] = ClassifierFreeGuidance(guidance_scale=sampling_settings(preset).guidance)
    for name in [n for n in found if n in wanted]:
        c = found[name]
        if not c.found or c.path is None:
            tried = "; ".join(c.tried)
            raise ModelLoadError(f"model component {name!r} not found" + (f" (looked at: {tried})" if tried else ""),
                                 c.hint or "run `hvtui doctor PRESET` to see where hvtui looks for it")
        _publish(publish, f"loading {name} from {c.path}")
        try:
            comps[name] = _load_one(c, dtype, preset)
        except ModelLoadError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ModelLoadError(f"cannot load {name} from {c.path}: {type(e).__name__}: {e}",
                                 "check the files with `hvtui doctor PRESET`") from e
        layouts[name] = c.layout
    info = model_info(preset, dtype)
    info.layouts = layouts
    return comps, info


def _load_one(c, dtype, preset):
    """One component by the format the resolver found (hvtui.core.env.assets.FORMATS)."""
    name, path, fmt = c.name, Path(c.path), c.format
    local: dict[str, Any] = dict(local_files_only=True)
    if name == "transformer":
        if fmt == "tencent-transformer":
            return load_tencent_transformer(path, preset.model_flavour, dtype)
        from diffusers import HunyuanVideo15Transformer3DModel

        return HunyuanVideo15Transformer3DModel.from_pretrained(path, torch_dtype=dtype, **local)
    if name == "vae":
        if fmt == "tencent-vae":
            return load_tencent_vae(path, dtype)
        from diffusers import AutoencoderKLHunyuanVideo15

        return AutoencoderKLHunyuanVideo15.from_pretrained(path, torch_dtype=dtype, **local)
    if name == "scheduler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        if fmt == "pretrained":
            return FlowMatchEulerDiscreteScheduler.from_pretrained(path, **local)
        # Tencent's own scheduler config: the diffusers scheduler at the flavour's inference shift
        return FlowMatchEulerDiscreteScheduler(shift=FLAVOUR_SHIFT[preset.model_flavour])
    if name == "text_encoder":
        return load_qwen_text_model(path, dtype, full_vl=(fmt == "qwen2_5_vl"))
    if name == "tokenizer":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, padding_side="right", **local)
    if name in ("text_encoder_2", "tokenizer_2") and fmt == "byt5-glyph":
        tok = load_glyph_byt5_tokenizer(path, c.files)
        return tok if name == "tokenizer_2" else load_glyph_byt5(path, c.files, tok, dtype)
    if name == "text_encoder_2":
        from transformers import T5EncoderModel

        return T5EncoderModel.from_pretrained(path, torch_dtype=dtype, **local)
    if name == "tokenizer_2":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, **local)
    if name == "image_encoder":
        from transformers import SiglipVisionModel

        return SiglipVisionModel.from_pretrained(path, torch_dtype=dtype, **local)
    if name == "feature_extractor":
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(path, **local)
    raise ModelLoadError(f"unknown model component {name!r}")


def load_qwen_text_model(path: Path, dtype, full_vl: bool = False):
    """Qwen2.5-VL's language model. A diffusers folder holds just it; a full Qwen2.5-VL download (Tencent's
    text_encoder/llm) is loaded whole and its language model kept (the vision tower is dropped)."""
    from transformers import Qwen2_5_VLTextModel

    if not full_vl:
        return Qwen2_5_VLTextModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
    from transformers import AutoModel

    full = AutoModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
    text = getattr(full, "language_model", None)
    if text is None and hasattr(full, "model"):
        text = getattr(full.model, "language_model", None)
    if text is None:
        raise ModelLoadError(f"{path}: no language model inside this Qwen2.5-VL checkpoint",
                             "point text_encoder_path at Qwen2.5-VL-7B-Instruct")
    del full
    return text


# ---------------------------------------------------------------------------------------- Tencent tree
def _safetensors_files(path: Path, pattern: str = "*.safetensors") -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.glob(pattern))
    if not files:
        raise ModelLoadError(f"{path}: no .safetensors files", "point the component at the weights folder")
    return files


def transformer_config_from_tencent(sd: dict, flavour: str, saved: dict | None = None) -> dict:
    """The diffusers config of a Tencent checkpoint, read off its tensor shapes (the file has no diffusers
    config). Only RoPE's split has no weights: (16, 56, 56) at head dim 128, else the config's
    `rope_dim_list` / `rope_axes_dim`."""
    saved = saved or {}
    hidden, in_ch = sd["img_in.proj.weight"].shape[:2]
    head_dim = sd["double_blocks.0.img_attn_q_norm.weight"].shape[0]
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("double_blocks.")}
    refiners = {int(k.split(".")[3]) for k in sd if k.startswith("txt_in.individual_token_refiner.blocks.")}
    rope = saved.get("rope_dim_list") or saved.get("rope_axes_dim") or (
        (16, 56, 56) if head_dim == 128 else None)
    if rope is None or sum(rope) != head_dim:
        raise ModelLoadError(f"cannot tell the RoPE split for head dim {head_dim}",
                             "add rope_dim_list to the transformer's config.json")
    return dict(
        in_channels=int(in_ch), out_channels=int(sd["final_layer.linear.weight"].shape[0]),
        num_attention_heads=int(hidden // head_dim), attention_head_dim=int(head_dim), num_layers=len(blocks),
        num_refiner_layers=len(refiners), mlp_ratio=float(sd["double_blocks.0.img_mlp.fc1.weight"].shape[0] / hidden),
        patch_size=int(sd["img_in.proj.weight"].shape[-1]), patch_size_t=int(sd["img_in.proj.weight"].shape[-3]),
        text_embed_dim=int(sd["txt_in.input_embedder.weight"].shape[1]),
        text_embed_2_dim=int(sd["byt5_in.fc1.weight"].shape[1]),
        image_embed_dim=int(sd["vision_in.proj.1.weight"].shape[1]), rope_axes_dim=tuple(int(r) for r in rope),
        target_size=int(saved.get("target_size", 960 if "720p" in flavour else 640)),
        task_type="i2v" if flavour.startswith("i2v") else "t2v")


def load_tencent_transformer(path: Path, flavour: str, dtype: torch.dtype):
    """Original Tencent transformer shards -> the diffusers class. diffusers 0.42 does not register the 1.5
    transformer for `from_single_file`; when a later one does, that loader is used for a single file."""
    from diffusers import HunyuanVideo15Transformer3DModel
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES
    from safetensors.torch import load_file

    from hvtui.core.train.tencent_keys import is_tencent_state_dict, tencent_to_diffusers

    files = _safetensors_files(path)
    if "HunyuanVideo15Transformer3DModel" in SINGLE_FILE_LOADABLE_CLASSES and len(files) == 1:
        return HunyuanVideo15Transformer3DModel.from_single_file(str(files[0]), torch_dtype=dtype)
    sd = {}
    for f in files:
        sd.update(load_file(str(f)))
    if not is_tencent_state_dict(sd):
        raise ModelLoadError(f"{path}: not an original HunyuanVideo 1.5 transformer (no double_blocks.* keys)",
                             "use the transformer/<flavour> folder of the Tencent download")
    cfg_file = (path if path.is_dir() else path.parent) / "config.json"
    saved = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    config = transformer_config_from_tencent(sd, flavour, saved)
    sd = {k: v.to(dtype) for k, v in tencent_to_diffusers(sd).items()}
    with torch.device("meta"):
        model = HunyuanVideo15Transformer3DModel(**config)
    model.load_state_dict(sd, strict=True, assign=True)  # type: ignore[attr-defined]  # an nn.Module; mypy does not see it through diffusers' ModelMixin
    return model


def load_tencent_vae(path: Path, dtype: torch.dtype):
    from diffusers import AutoencoderKLHunyuanVideo15
    from safetensors.torch import load_file

    from hvtui.core.train.tencent_keys import tencent_vae_to_diffusers

    cfg_file = (path if path.is_dir() else path.parent) / "config.json"
    config = {}
    if cfg_file.is_file():
        saved = json.loads(cfg_file.read_text())
        known = inspect.signature(AutoencoderKLHunyuanVideo15.__init__).parameters
        config = {k: v for k, v in saved.items() if k in known}
    sd = {}
    for f in _safetensors_files(path):
        sd.update(load_file(str(f)))
    sd = {k: v.to(dtype) for k, v in tencent_vae_to_diffusers(sd).items()}
    with torch.device("meta"):
        vae = AutoencoderKLHunyuanVideo15(**config)
    vae.load_state_dict(sd, strict=True, assign=True)  # type: ignore[attr-defined]  # an nn.Module; mypy does not see it through diffusers' ModelMixin
    return vae


def load_glyph_byt5_tokenizer(base: Path, files: dict):
    """google/byt5-small's tokenizer + Glyph-SDXL-v2's colour and font tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    colors = json.loads(Path(files["color_idx"]).read_text())
    fonts = json.loads(Path(files["font_idx"]).read_text())
    extra = [f"<color-{i}>" for i in range(len(colors))] + [f"<{code[:2]}-font-{fonts[code]}>" for code in fonts]
    tok.add_tokens(extra, special_tokens=True)
    return tok


def load_glyph_byt5(base: Path, files: dict, tokenizer, dtype):
    """Tencent's byT5: google/byt5-small's encoder, grown by the Glyph tokens, with the Glyph-SDXL-v2
    weights (checkpoints/byt5_model.pt, keys under module.text_tower.encoder.)."""
    from transformers import T5EncoderModel

    enc = T5EncoderModel.from_pretrained(base, local_files_only=True)
    enc.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ckpt = torch.load(Path(files["glyph_checkpoint"]), map_location="cpu", weights_only=True)
    ckpt = ckpt.get("state_dict", ckpt)
    prefix = "module.text_tower.encoder."
    sd = {"encoder." + (k[len(prefix):] if k.startswith(prefix) else k): v for k, v in ckpt.items()}
    missing, unexpected = enc.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "shared.weight"]
    if missing or unexpected:
        raise ModelLoadError(f"{files['glyph_checkpoint']}: byT5 Glyph weights do not fit (missing {missing[:2]}, "
                             f"unexpected {unexpected[:2]})", "use Glyph-SDXL-v2 with google/byt5-small")
    return enc.to(dtype)


# ---------------------------------------------------------------------------------------- helpers
def make_pipeline(components: dict, i2v: bool | None = None, pipeline_cls=None):
    """The real pipeline class around these components (missing ones None); tiny attributes set."""
    from diffusers import HunyuanVideo15ImageToVideoPipeline, HunyuanVideo15Pipeline

    info = components.get("info")
    if i2v is None:
        i2v = bool(info and info.flavour.startswith("i2v"))
    cls = pipeline_cls or (HunyuanVideo15ImageToVideoPipeline if i2v else HunyuanVideo15Pipeline)
    names = ("transformer", "vae", "scheduler", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
             "guider") + (IMAGE_NAMES if i2v else ())
    kw = {n: components.get(n) for n in names}
    if kw["vae"] is None:
        # the pipeline's __init__ reads vae.config even when vae is None (hasattr check): give it a VAE on
        # the meta device (no memory) for text-only work such as caching captions
        from diffusers import AutoencoderKLHunyuanVideo15

        with torch.device("meta"):
            kw["vae"] = AutoencoderKLHunyuanVideo15()
    if kw["scheduler"] is None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        kw["scheduler"] = FlowMatchEulerDiscreteScheduler(shift=FLAVOUR_SHIFT.get(info.flavour, 5.0) if info else 5.0)
    pipe = cls(**kw)
    if info is not None and info.tiny:
        configure_tiny(pipe)
    pipe.set_progress_bar_config(disable=True)  # type: ignore[union-attr]  # DiffusionPipeline's; mypy misses it
    return pipe


def configure_tiny(pipe) -> None:
    """Trap 6 attributes for the tiny stand-ins (the tokenizer-derived crop needs the tokenizer)."""
    from hvtui.core.train import tiny

    if pipe.tokenizer is not None:
        tiny.configure_pipeline(pipe)
    else:
        pipe.tokenizer_max_length = tiny.TEXT_MAX_TOKENS
        pipe.tokenizer_2_max_length = tiny.BYT5_MAX_TOKENS
        pipe.vision_num_semantic_tokens = tiny.IMAGE_TOKENS


def release_memory() -> None:
    """Collect garbage and give cached GPU memory back to the driver (after an OOM, a sample, a run)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def free(components: dict, *names: str) -> None:
    """Drop components and give their memory back (encoders after caching)."""
    for n in names:
        components.pop(n, None)
    release_memory()
