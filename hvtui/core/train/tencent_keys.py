"""Key names of Tencent's original HunyuanVideo 1.5 checkpoints <-> diffusers' module names.

Written from the layout diffusers' conversion script (`scripts/convert_hunyuan_video1_5_to_diffusers.py`)
maps; diffusers 0.42 does not register the 1.5 transformer for `from_single_file`, so hvtui converts the
original transformer itself. lora_names.py builds the LoRA key spaces (diffusers, Tencent, ComfyUI) from
these tables.
"""
from __future__ import annotations

import re

# transformer_blocks.{i}.<diffusers>  <->  double_blocks.{i}.<tencent>
BLOCK_MODULES = {
    "norm1.linear": "img_mod.linear",
    "norm1_context.linear": "txt_mod.linear",
    "attn.to_q": "img_attn_q",
    "attn.to_k": "img_attn_k",
    "attn.to_v": "img_attn_v",
    "attn.norm_q": "img_attn_q_norm",
    "attn.norm_k": "img_attn_k_norm",
    "attn.to_out.0": "img_attn_proj",
    "attn.add_q_proj": "txt_attn_q",
    "attn.add_k_proj": "txt_attn_k",
    "attn.add_v_proj": "txt_attn_v",
    "attn.norm_added_q": "txt_attn_q_norm",
    "attn.norm_added_k": "txt_attn_k_norm",
    "attn.to_add_out": "txt_attn_proj",
    "ff.net.0.proj": "img_mlp.fc1",
    "ff.net.2": "img_mlp.fc2",
    "ff_context.net.0.proj": "txt_mlp.fc1",
    "ff_context.net.2": "txt_mlp.fc2",
}

# modules outside the blocks (the token refiner's fused qkv is handled in `tencent_to_diffusers`)
TOP_MODULES = {
    "time_embed.timestep_embedder.linear_1": "time_in.mlp.0",
    "time_embed.timestep_embedder.linear_2": "time_in.mlp.2",
    "context_embedder.time_text_embed.timestep_embedder.linear_1": "txt_in.t_embedder.mlp.0",
    "context_embedder.time_text_embed.timestep_embedder.linear_2": "txt_in.t_embedder.mlp.2",
    "context_embedder.time_text_embed.text_embedder.linear_1": "txt_in.c_embedder.linear_1",
    "context_embedder.time_text_embed.text_embedder.linear_2": "txt_in.c_embedder.linear_2",
    "context_embedder.proj_in": "txt_in.input_embedder",
    "context_embedder_2.norm": "byt5_in.layernorm",
    "context_embedder_2.linear_1": "byt5_in.fc1",
    "context_embedder_2.linear_2": "byt5_in.fc2",
    "context_embedder_2.linear_3": "byt5_in.fc3",
    "image_embedder.norm_in": "vision_in.proj.0",
    "image_embedder.linear_1": "vision_in.proj.1",
    "image_embedder.linear_2": "vision_in.proj.3",
    "image_embedder.norm_out": "vision_in.proj.4",
    "x_embedder.proj": "img_in.proj",
    "cond_type_embed": "cond_type_embedding",
    "norm_out.linear": "final_layer.adaLN_modulation.1",   # scale/shift halves swapped
    "proj_out": "final_layer.linear",
}

REFINER_MODULES = {
    "norm1": "norm1",
    "attn.to_out.0": "self_attn_proj",
    "norm2": "norm2",
    "ff.net.0.proj": "mlp.fc1",
    "ff.net.2": "mlp.fc2",
    "norm_out.linear": "adaLN_modulation.1",
}

def is_tencent_state_dict(keys) -> bool:
    keys = set(keys)
    return any(k.startswith("double_blocks.") for k in keys) and "img_in.proj.weight" in keys


def _move(src: dict, out: dict, old: str, new: str, fn=None) -> None:
    """Module `old`'s weight and bias in `src` -> module `new` in `out` (through `fn`)."""
    for suffix in (".weight", ".bias"):
        if old + suffix in src:
            t = src.pop(old + suffix)
            out[new + suffix] = fn(t) if fn else t


def _swap_halves(t):
    """Tencent stores (shift, scale); diffusers' AdaLayerNormContinuous wants (scale, shift). Its own inverse."""
    import torch

    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def tencent_to_diffusers(sd: dict) -> dict:
    """Convert a Tencent transformer state dict (all shards merged) to diffusers names. Raises KeyError
    naming the first key it cannot place, so a wrong file fails loudly instead of loading half a model."""
    src = dict(sd)
    out: dict = {}

    def take(tencent: str, diffusers: str, fn=None):
        _move(src, out, tencent, diffusers, fn)

    for d, t in TOP_MODULES.items():
        take(t, d, _swap_halves if d == "norm_out.linear" else None)
    refiners = sorted({int(k.split(".")[3]) for k in src if k.startswith("txt_in.individual_token_refiner.blocks.")})
    for i in refiners:
        pre_t = f"txt_in.individual_token_refiner.blocks.{i}."
        pre_d = f"context_embedder.token_refiner.refiner_blocks.{i}."
        for d, t in REFINER_MODULES.items():
            take(pre_t + t, pre_d + d)
        for suffix in (".weight", ".bias"):
            qkv = src.pop(pre_t + "self_attn_qkv" + suffix)
            for part, chunk in zip(("to_q", "to_k", "to_v"), qkv.chunk(3, dim=0), strict=True):
                out[pre_d + "attn." + part + suffix] = chunk
    blocks = sorted({int(k.split(".")[1]) for k in src if k.startswith("double_blocks.")})
    for i in blocks:
        for d, t in BLOCK_MODULES.items():
            take(f"double_blocks.{i}.{t}", f"transformer_blocks.{i}.{d}")
    if src:
        raise KeyError(f"unexpected key in the Tencent transformer checkpoint: {sorted(src)[0]} "
                       f"({len(src)} left unmapped)")
    return out


def diffusers_to_tencent(sd: dict) -> dict:
    """Inverse of `tencent_to_diffusers` (used by tests to build a Tencent-layout file from a tiny model)."""
    import torch

    src = dict(sd)
    out: dict = {}

    def put(diffusers: str, tencent: str, fn=None):
        _move(src, out, diffusers, tencent, fn)

    for d, t in TOP_MODULES.items():
        put(d, t, _swap_halves if d == "norm_out.linear" else None)
    refiners = sorted({int(k.split(".")[3]) for k in src
                       if k.startswith("context_embedder.token_refiner.refiner_blocks.")})
    for i in refiners:
        pre_t = f"txt_in.individual_token_refiner.blocks.{i}."
        pre_d = f"context_embedder.token_refiner.refiner_blocks.{i}."
        for d, t in REFINER_MODULES.items():
            put(pre_d + d, pre_t + t)
        for suffix in (".weight", ".bias"):
            parts = [src.pop(pre_d + "attn." + p + suffix) for p in ("to_q", "to_k", "to_v")]
            out[pre_t + "self_attn_qkv" + suffix] = torch.cat(parts, dim=0)
    blocks = sorted({int(k.split(".")[1]) for k in src if k.startswith("transformer_blocks.")})
    for i in blocks:
        for d, t in BLOCK_MODULES.items():
            put(f"transformer_blocks.{i}.{d}", f"double_blocks.{i}.{t}")
    if src:
        raise KeyError(f"no Tencent name for {sorted(src)[0]}")
    return out


# VAE: Tencent `encoder.down.{i}.block.{j}` / `mid.block_1` / `mid.attn_1.q` ... -> diffusers names
_VAE_RULES = [
    (r"^(encoder)\.down\.(\d+)\.block\.(\d+)\.", r"\1.down_blocks.\2.resnets.\3."),
    (r"^(encoder)\.down\.(\d+)\.downsample\.", r"\1.down_blocks.\2.downsamplers.0."),
    (r"^(decoder)\.up\.(\d+)\.block\.(\d+)\.", r"\1.up_blocks.\2.resnets.\3."),
    (r"^(decoder)\.up\.(\d+)\.upsample\.", r"\1.up_blocks.\2.upsamplers.0."),
    (r"^(encoder|decoder)\.mid\.block_1\.", r"\1.mid_block.resnets.0."),
    (r"^(encoder|decoder)\.mid\.block_2\.", r"\1.mid_block.resnets.1."),
    (r"^(encoder|decoder)\.mid\.attn_1\.(q|k|v)\.", r"\1.mid_block.attentions.0.to_\2."),
    (r"^(encoder|decoder)\.mid\.attn_1\.", r"\1.mid_block.attentions.0."),
]
_VAE_INVERSE = [
    (r"^(encoder)\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"\1.down.\2.block.\3."),
    (r"^(encoder)\.down_blocks\.(\d+)\.downsamplers\.0\.", r"\1.down.\2.downsample."),
    (r"^(decoder)\.up_blocks\.(\d+)\.resnets\.(\d+)\.", r"\1.up.\2.block.\3."),
    (r"^(decoder)\.up_blocks\.(\d+)\.upsamplers\.0\.", r"\1.up.\2.upsample."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.to_(q|k|v)\.", r"\1.mid.attn_1.\2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1."),
]


def _rename(sd: dict, rules) -> dict:
    out = {}
    for k, v in sd.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, k)
            if n:
                k = new
                break
        out[k] = v
    return out


def tencent_vae_to_diffusers(sd: dict) -> dict:
    return _rename(sd, _VAE_RULES)


def diffusers_vae_to_tencent(sd: dict) -> dict:
    return _rename(sd, _VAE_INVERSE)
