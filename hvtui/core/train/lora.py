"""LoRA on the transformer blocks via PEFT, and saving it where diffusers and ComfyUI can load it
(the key spaces of each: lora_names.py / lora_export.py).

Targets are rooted at `transformer_blocks` (REFERENCE.md trap 2: bare `to_q` would also hit the token
refiner). The base is frozen, LoRA parameters are fp32 whatever the base dtype (bf16 updates of small
LoRA deltas would round away), and gradient checkpointing follows the preset.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

ATTENTION = r"attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
MLP = r"(ff|ff_context)\.net\.(0\.proj|2)"   # the video and text streams' GELU MLPs
LORA_FILE = "pytorch_lora_weights.safetensors"
COMFY_FILE = "pytorch_lora_weights_comfy.safetensors"
ADAPTER = "default"


def target_pattern(lora_targets: str = "attention") -> str:
    """Full-match regex for PEFT's `target_modules`."""
    if lora_targets == "attention":
        inner = ATTENTION
    elif lora_targets == "attention+mlp":
        inner = f"({ATTENTION}|{MLP})"
    else:
        raise ValueError(f"lora_targets {lora_targets!r}: use 'attention' or 'attention+mlp'")
    return rf"transformer_blocks\.\d+\.{inner}"


def _unwrap(transformer):
    return getattr(transformer, "module", transformer)


def lora_config(preset):
    from peft import LoraConfig

    alpha = preset.lora_alpha if preset.lora_alpha is not None else preset.lora_rank
    # peft annotates lora_alpha as int; a float works (scale = alpha / r) and presets may set one
    return LoraConfig(r=int(preset.lora_rank), lora_alpha=float(alpha),  # type: ignore[arg-type]
                      lora_dropout=float(preset.lora_dropout),
                      init_lora_weights=True, target_modules=target_pattern(preset.lora_targets))


def add_lora(transformer, preset) -> list[torch.nn.Parameter]:
    """Freeze the base, add the preset's LoRA (fp32 params), set gradient checkpointing, train mode.
    Returns the trainable parameters (what the optimizer gets)."""
    model = _unwrap(transformer)
    model.requires_grad_(False)
    with warnings.catch_warnings():
        # a quantized base (quantize.py) gets PEFT's TorchaoLoraLinear, which warns that merge() would need
        # a requantizer: hvtui never merges (the LoRA is saved on its own)
        warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated without")
        model.add_adapter(lora_config(preset), adapter_name=ADAPTER)
    params = []
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
            p.requires_grad_(True)
            params.append(p)
    if not params:
        raise RuntimeError("LoRA matched no modules of the transformer; is this a HunyuanVideo 1.5 transformer?")
    if preset.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    else:
        model.disable_gradient_checkpointing()
    model.train()
    return params


def lora_state_dict(transformer) -> dict[str, torch.Tensor]:
    """PEFT state dict in diffusers naming without the prefix (`transformer_blocks.0.attn.to_q.lora_A.weight`)."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(_unwrap(transformer), adapter_name=ADAPTER)


def set_lora_state_dict(transformer, sd: dict[str, torch.Tensor]) -> None:
    """Load a `lora_state_dict` back; every LoRA tensor must be present. For a file written by `save_lora`
    use `load_lora_file` (the file has the alpha/rank scale folded into lora_B)."""
    from peft.utils import set_peft_model_state_dict

    model = _unwrap(transformer)
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    result = set_peft_model_state_dict(model, sd, adapter_name=ADAPTER)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:
        raise KeyError(f"LoRA state is missing {len(missing)} tensors, e.g. {missing[0]}")


def load_lora_file(transformer, path) -> None:
    """Restore the LoRA from a diffusers-format file written by `save_lora` (or anyone else) into the
    transformer's existing adapter: undoes the file's scale folding (its adapter metadata says which
    alpha/rank it was saved with) so training resumes with exactly the trained weights."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    model = _unwrap(transformer)
    cfg = model.peft_config[ADAPTER]
    path = str(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    raw = json.loads(meta.get("lora_adapter_metadata", "{}") or "{}")
    file_r = float(raw.get("transformer.r", cfg.r))
    file_alpha = float(raw.get("transformer.lora_alpha", file_r))   # no metadata: loaders assume alpha = rank
    factor = (file_alpha / file_r) / (float(cfg.lora_alpha) / float(cfg.r))
    sd = {k.removeprefix("transformer."): v for k, v in load_file(path).items()}
    if factor != 1.0:
        sd = {k: v * factor if ".lora_B." in k else v for k, v in sd.items()}
    set_lora_state_dict(model, sd)


def export_state_dict(transformer) -> tuple[dict[str, torch.Tensor], dict]:
    """The LoRA as files store it: the PEFT scale alpha/r folded into lora_B, so the file reads as
    alpha == rank. diffusers' `load_lora_adapter(file_path)` (no weight_name) does not read the file's
    adapter metadata and assumes alpha = rank; with the scale folded in, every loader (and ComfyUI) gives
    the trained output.
    Returns (state dict, adapter config dict for the metadata)."""
    model = _unwrap(transformer)
    cfg = model.peft_config[ADAPTER]
    if cfg.use_rslora or cfg.rank_pattern or cfg.alpha_pattern:
        raise ValueError("hvtui saves plain LoRA only (no rsLoRA / per-module rank or alpha patterns)")
    scale = float(cfg.lora_alpha) / float(cfg.r)
    sd = {k: (v * scale if ".lora_B." in k and scale != 1.0 else v) for k, v in lora_state_dict(model).items()}
    meta = cfg.to_dict()
    meta["lora_alpha"] = cfg.r
    return sd, meta


def lora_modules(transformer) -> dict:
    """The trained LoRA as `{diffusers module: lora_export.LoraModule}` (scale folded in): what every export
    format is written from."""
    from hvtui.core.train.lora_export import LoraModule

    sd, _ = export_state_dict(transformer)
    modules: dict[str, dict] = {}
    for key, value in sd.items():
        module, _, rest = key.partition(".lora_")
        pair = modules.setdefault(module, {})
        pair[rest.split(".")[0]] = value.detach()
    return {m: LoraModule(down=p["A"], up=p["B"]) for m, p in modules.items()}


def comfy_state_dict(transformer, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The LoRA in ComfyUI's HunyuanVideo key space (q/k/v fused, see lora_export)."""
    from hvtui.core.train.lora_export import comfy_state_dict as to_comfy

    return to_comfy(lora_modules(transformer), dtype)


def save_lora(transformer, out_dir, comfy: bool = False, weight_name: str = LORA_FILE,
              dtype: torch.dtype | None = None) -> list[Path]:
    """Write the diffusers-format LoRA (`load_lora_adapter(path, prefix="transformer")` loads it) and, with
    `comfy`, the ComfyUI file next to it (ComfyUI's own module names, q/k/v fused: lora_export.py). Files
    appear atomically (temp dir + rename)."""
    from diffusers.loaders import HunyuanVideoLoraLoaderMixin
    from safetensors.torch import save_file

    from hvtui.core.file_mode import follow_umask

    model = _unwrap(transformer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd, meta = export_state_dict(model)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    paths = []
    tmp = Path(tempfile.mkdtemp(prefix=".lora-", dir=out_dir))
    try:
        layers: dict[str, torch.nn.Module | torch.Tensor] = dict(sd)   # the mixin's parameter type
        HunyuanVideoLoraLoaderMixin.save_lora_weights(tmp, transformer_lora_layers=layers, weight_name=weight_name,
                                                      transformer_lora_adapter_metadata=meta)
        follow_umask(tmp / weight_name)   # safetensors writes 0600: let the umask decide (others may read it)
        os.replace(tmp / weight_name, out_dir / weight_name)
        paths.append(out_dir / weight_name)
        if comfy:
            name = weight_name.replace(".safetensors", "_comfy.safetensors")
            csd = {k: v.detach().cpu().contiguous() for k, v in comfy_state_dict(model, dtype).items()}
            save_file(csd, str(tmp / name), metadata={"format": "pt", "hvtui": "comfyui-lora"})
            follow_umask(tmp / name)
            os.replace(tmp / name, out_dir / name)
            paths.append(out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths
