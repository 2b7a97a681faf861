"""Where a LoRA module of the HunyuanVideo 1.5 transformer lives in each naming scheme.

Three schemes name the same Linear layers:
  diffusers  `transformer_blocks.3.attn.to_q` (what hvtui trains; diffusers / PEFT files)
  tencent    `double_blocks.3.img_attn_q` (Tencent's original checkpoint and train.py's PEFT files; the token
             refiner's q/k/v are one fused `self_attn_qkv` there)
  comfyui    `double_blocks.3.img_attn.qkv` (ComfyUI's HunyuanVideo model: q/k/v fused in every attention,
             `_mod.lin`, `mlp.0` / `mlp.2`, `time_in.in_layer`, ...)

ComfyUI's names are what its loader renames Tencent-layout checkpoints to (`HunyuanVideo.process_unet_state_dict`
in comfy/supported_models.py); its LoRA loader matches a LoRA module to a model weight only by that name
(`diffusion_model.<name>`), and it has no rule that splits a fused weight, so a LoRA on `to_q` must be written
as a slice of the fused `img_attn.qkv` LoRA (see lora_export.py).

`Target(name, slot, swap)`: the module's name in a scheme; `slot` 0/1/2 when that scheme fuses q/k/v into one
weight of 3x the rows (None otherwise); `swap` when the scheme stores the two halves of the output rows the other
way round (the final layer's scale/shift, tencent_keys._swap_halves).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from hvtui.core.train.tencent_keys import BLOCK_MODULES, REFINER_MODULES, TOP_MODULES

SCHEMES = ("diffusers", "tencent", "comfyui")

# Tencent -> ComfyUI spelling, in the order ComfyUI applies its renames (the rest of a name is kept)
_COMFY_RENAMES = (
    ("txt_in.t_embedder.mlp.0.", "txt_in.t_embedder.in_layer."),
    ("txt_in.t_embedder.mlp.2.", "txt_in.t_embedder.out_layer."),
    ("txt_in.c_embedder.linear_1.", "txt_in.c_embedder.in_layer."),
    ("txt_in.c_embedder.linear_2.", "txt_in.c_embedder.out_layer."),
    ("_mod.linear.", "_mod.lin."), ("_attn_qkv.", "_attn.qkv."), ("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.2."),
    ("_attn_proj.", "_attn.proj."), ("_in.mlp.2.", "_in.out_layer."), ("_in.mlp.0.", "_in.in_layer."),
)
# Modules of the tables in tencent_keys that are not Linear layers (norms, the patch conv, an embedding):
# PEFT puts no LoRA there that any of these loaders would read
_NOT_LINEAR = re.compile(r"(norm(_\w+)?$|norm\d$|norm_(in|out)$|^x_embedder\.proj$|^cond_type_embed$)")


@dataclass(frozen=True)
class Target:
    name: str
    slot: int | None = None
    swap: bool = False


@dataclass(frozen=True)
class _Row:
    diffusers: str          # templates with {i} for a block / refiner index
    tencent: Target
    comfyui: Target


def comfy_name(tencent: str) -> str:
    name = tencent + "."
    for old, new in _COMFY_RENAMES:
        name = name.replace(old, new)
    return name[:-1]


def _rows() -> list[_Row]:
    rows = []
    for d, t in BLOCK_MODULES.items():
        if _NOT_LINEAR.search(d):
            continue
        m = re.fullmatch(r"(img|txt)_attn_([qkv])", t)
        if m:   # split in Tencent's checkpoint, fused in ComfyUI's model
            comfy = Target(f"double_blocks.{{i}}.{m.group(1)}_attn.qkv", "qkv".index(m.group(2)))
        else:
            comfy = Target(comfy_name(f"double_blocks.{{i}}.{t}"))
        rows.append(_Row(f"transformer_blocks.{{i}}.{d}", Target(f"double_blocks.{{i}}.{t}"), comfy))
    ref_d, ref_t = "context_embedder.token_refiner.refiner_blocks.{i}.", "txt_in.individual_token_refiner.blocks.{i}."
    for slot, part in enumerate(("to_q", "to_k", "to_v")):   # fused in both original schemes
        rows.append(_Row(ref_d + "attn." + part, Target(ref_t + "self_attn_qkv", slot),
                         Target(comfy_name(ref_t + "self_attn_qkv"), slot)))
    for d, t in REFINER_MODULES.items():
        if not _NOT_LINEAR.search(d):
            rows.append(_Row(ref_d + d, Target(ref_t + t), Target(comfy_name(ref_t + t))))
    for d, t in TOP_MODULES.items():
        if not _NOT_LINEAR.search(d):
            swap = d == "norm_out.linear"
            rows.append(_Row(d, Target(t, swap=swap), Target(comfy_name(t), swap=swap)))
    return rows


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


@lru_cache(maxsize=1)
def _index():
    """(pattern over diffusers names -> row) and (pattern over any scheme's name -> [(row, scheme)])."""
    rows = _rows()
    forward = [(_pattern(r.diffusers), r) for r in rows]
    reverse: dict[str, list] = {}
    for r in rows:
        for scheme, template in (("diffusers", r.diffusers), ("tencent", r.tencent.name),
                                 ("comfyui", r.comfyui.name)):
            reverse.setdefault(template, []).append((r, scheme))
    # the diffusion-pipe spelling ComfyUI also reads: Tencent's underscores with q/k/v fused (`img_attn_qkv`)
    for r in rows:
        m = re.fullmatch(r"(double_blocks\.\{i\}\.(img|txt))_attn\.qkv", r.comfyui.name)
        if m:
            reverse.setdefault(m.group(1) + "_attn_qkv", []).append((r, "comfyui"))
    return forward, [(_pattern(t), entries) for t, entries in reverse.items()]


def target(diffusers_module: str, scheme: str) -> Target | None:
    """The module's name in `scheme` (None when hvtui has no name for it there)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown naming scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    if scheme == "diffusers":
        return Target(diffusers_module) if parse(diffusers_module) else None
    for pattern, row in _index()[0]:
        m = pattern.match(diffusers_module)
        if m:
            t = getattr(row, scheme)
            return Target(t.name.replace("{i}", m.group(1)) if m.groups() else t.name, t.slot, t.swap)
    return None


def parse(name: str) -> list[tuple[str, Target]]:
    """A module name in any scheme -> [(diffusers module, how it sits in `name`)]: three entries (slots 0-2)
    for a fused q/k/v name, one otherwise, none for a name no scheme knows."""
    found: dict[str, Target] = {}
    for pattern, entries in _index()[1]:
        m = pattern.match(name)
        if not m:
            continue
        idx = m.group(1) if m.groups() else None
        for row, scheme in entries:
            d = row.diffusers.replace("{i}", idx) if idx is not None else row.diffusers
            t = Target(d) if scheme == "diffusers" else getattr(row, scheme)
            found[d] = Target(name, t.slot, t.swap)
    return sorted(found.items(), key=lambda kv: (kv[1].slot or 0, kv[0]))
