"""ComfyUI's rules for HunyuanVideo 1.5 weights and LoRAs, reimplemented from reading its source, so a test can
apply an exported LoRA the way ComfyUI does without ComfyUI installed.

Source: ComfyUI at commit 783545f689a0af730065994b46b382ae24844c99 (2026-08-22), read from the
github.com/yzkee/ComfyUI mirror of comfyanonymous/ComfyUI (the stored snapshots of comfyanonymous/ComfyUI and
Comfy-Org/ComfyUI predate HunyuanVideo 1.5 support):
  comfy/supported_models.py   HunyuanVideo.process_unet_state_dict (HunyuanVideo15 inherits it): checkpoint key
                              renames into the model's names
  comfy/ldm/flux/layers.py    DoubleStreamBlock: img_attn.qkv is ONE Linear(dim, 3*dim), split q|k|v by rows
  comfy/lora.py               model_lora_keys_unet (the generic `diffusion_model.<name>` entries and the
                              HunyuanVideo "diffusion-pipe" entries) and load_lora ("lora key not loaded")
  comfy/weight_adapter/lora.py  LoRAAdapter.load (which key suffixes are a LoRA) and calculate_weight (the merge)
ComfyUI's HunyuanVideo 1.5 checkpoints (Comfy-Org's repackaged files) store the original Tencent names with q, k
and v already fused (`double_blocks.N.img_attn_qkv`); `comfy_model_state_dict` builds that layout from a diffusers
transformer through hvtui's checkpoint converter, then applies ComfyUI's renames.
"""
from __future__ import annotations

import torch

from hvtui.core.train.tencent_keys import diffusers_to_tencent

# comfy/supported_models.py, HunyuanVideo.process_unet_state_dict: the replace calls, in order
_RENAMES = [
    ("txt_in.t_embedder.mlp.0.", "txt_in.t_embedder.in_layer."),
    ("txt_in.t_embedder.mlp.2.", "txt_in.t_embedder.out_layer."),
    ("txt_in.c_embedder.linear_1.", "txt_in.c_embedder.in_layer."),
    ("txt_in.c_embedder.linear_2.", "txt_in.c_embedder.out_layer."),
    ("_mod.linear.", "_mod.lin."), ("_attn_qkv.", "_attn.qkv."),
    ("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.2."),
    ("_attn_q_norm.weight", "_attn.norm.query_norm.weight"), ("_attn_k_norm.weight", "_attn.norm.key_norm.weight"),
    (".q_norm.weight", ".norm.query_norm.weight"), (".k_norm.weight", ".norm.key_norm.weight"),
    ("_attn_proj.", "_attn.proj."),
    (".modulation.linear.", ".modulation.lin."),
    ("_in.mlp.2.", "_in.out_layer."), ("_in.mlp.0.", "_in.in_layer."),
]


def process_unet_state_dict(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        key = k
        for old, new in _RENAMES:
            key = key.replace(old, new)
        if key.endswith(".scale"):
            key = key[:-len(".scale")] + ".weight"
        out[key] = v
    return out


def repackaged_checkpoint(diffusers_sd: dict) -> dict:
    """Tencent names with each double block's q/k/v fused (q rows first, then k, then v)."""
    sd = diffusers_to_tencent(dict(diffusers_sd))
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("double_blocks.")})
    for i in blocks:
        for side in ("img", "txt"):
            for suffix in (".weight", ".bias"):
                parts = [sd.pop(f"double_blocks.{i}.{side}_attn_{p}{suffix}") for p in "qkv"]
                sd[f"double_blocks.{i}.{side}_attn_qkv{suffix}"] = torch.cat(parts, 0)
    return sd


def comfy_model_state_dict(diffusers_sd: dict) -> dict:
    """What ComfyUI's HunyuanVideo 1.5 model's state_dict() holds for these weights (`diffusion_model.` prefix)."""
    return {"diffusion_model." + k: v for k, v in process_unet_state_dict(repackaged_checkpoint(diffusers_sd)).items()}


def model_lora_keys_unet(model_sd: dict) -> dict:
    """comfy/lora.py model_lora_keys_unet for a HunyuanVideo model (unet_to_diffusers gives nothing for it: its
    config has no num_res_blocks)."""
    key_map = {}
    for k in model_sd:
        if k.startswith("diffusion_model."):
            if k.endswith(".weight"):
                key_lora = k[len("diffusion_model."):-len(".weight")].replace(".", "_")
                key_map[f"lora_unet_{key_lora}"] = k
                key_map[k[:-len(".weight")]] = k
            else:
                key_map[k] = k
    for k in model_sd:   # isinstance(model, comfy.model_base.HunyuanVideo): diffusion-pipe lora format
        if k.startswith("diffusion_model.") and k.endswith(".weight"):
            key_lora = k.replace("_mod.lin.", "_mod.linear.").replace("_attn.qkv.", "_attn_qkv.")
            key_lora = key_lora.replace("_attn.proj.", "_attn_proj.")
            key_lora = key_lora.replace("mlp.0.", "mlp.fc1.").replace("mlp.2.", "mlp.fc2.")
            key_lora = key_lora.replace(".modulation.lin.", ".modulation.linear.")
            key_lora = key_lora[len("diffusion_model."):-len(".weight")]
            key_map[f"transformer.{key_lora}"] = k
            key_map[f"diffusion_model.{key_lora}"] = k
    return key_map


_UP_DOWN = [(".lora_up.weight", ".lora_down.weight"), ("_lora.up.weight", "_lora.down.weight"),
            (".lora_B.weight", ".lora_A.weight"), (".lora.up.weight", ".lora.down.weight"),
            (".lora_B", ".lora_A"), (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"),
            (".lora_B.default.weight", ".lora_A.default.weight")]


def load_lora(lora: dict, key_map: dict) -> tuple[dict, list[str]]:
    """comfy/lora.py load_lora with LoRAAdapter.load: {model weight key: (up, down, alpha)} and the LoRA keys it
    did not load (ComfyUI logs each as "lora key not loaded")."""
    patches, loaded = {}, set()
    for x, weight_key in key_map.items():
        alpha = None
        if f"{x}.alpha" in lora:
            alpha = lora[f"{x}.alpha"].item()
            loaded.add(f"{x}.alpha")
        for up_suffix, down_suffix in _UP_DOWN:
            if x + up_suffix in lora:
                patches[weight_key] = (lora[x + up_suffix], lora[x + down_suffix], alpha)
                loaded.update((x + up_suffix, x + down_suffix))
                break
    return patches, sorted(k for k in lora if k not in loaded)


def calculate_weight(weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor, alpha, strength: float = 1.0):
    """comfy/weight_adapter/lora.py LoRAAdapter.calculate_weight (no DoRA, no reshape), fp32 intermediate."""
    mat1, mat2 = up.float(), down.float()
    scale = alpha / mat2.shape[0] if alpha is not None else 1.0
    lora_diff = torch.mm(mat1.flatten(start_dim=1), mat2.flatten(start_dim=1)).reshape(weight.shape)
    return weight + ((strength * scale) * lora_diff).type(weight.dtype)


def apply_lora(model_sd: dict, lora: dict) -> tuple[dict, list[str]]:
    """Model weights after ComfyUI patches them with `lora` at strength 1, and the keys it did not load."""
    patches, not_loaded = load_lora(lora, model_lora_keys_unet(model_sd))
    out = dict(model_sd)
    for key, (up, down, alpha) in patches.items():
        out[key] = calculate_weight(model_sd[key].float(), up, down, alpha)
    return out, not_loaded
