"""LoRA files in three key spaces: diffusers (PEFT), ComfyUI (fused q/k/v) and Tencent's original names.

Every reader turns a file into `{diffusers module: LoraModule(down, up)}` with the file's scale folded into `up`
(the delta of a module is `up @ down`, whatever alpha and rank the file was written with); every writer turns
that back into one scheme's keys with `alpha == rank` (scale 1), which diffusers, PEFT, ComfyUI and kohya-style
loaders all read the same way.

ComfyUI fuses q, k and v of each attention into one `qkv` weight and reads a LoRA only under its own module
names (lora_names.py). A per-projection LoRA becomes one LoRA on the fused weight: the down matrices stacked
(rank r_q + r_k + r_v) and the up matrices placed block-diagonally, so `up_fused @ down_fused` is exactly the three
deltas stacked; `alpha` = the stacked rank makes ComfyUI's `alpha / rank` scale 1. Reading a fused LoRA back
splits it exactly: when its up matrix is block-diagonal each projection gets its own rows of down; otherwise each
projection shares the whole down matrix with its third of the up rows (rank 3r, still exact).

Scale rules of the sources: a PEFT file's scale is lora_alpha / r from its `lora_adapter_metadata` (diffusers'
pipeline writer prefixes the keys with "transformer."; `rank_pattern` / `alpha_pattern` per module), default
alpha = rank; a kohya / ComfyUI file's `.alpha` tensor gives alpha / rank, no alpha means scale 1 (ComfyUI's rule).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hvtui.core.train import lora_names
from hvtui.core.train.lora_names import Target

FORMATS = ("comfyui", "diffusers", "tencent")
COMFY_PREFIX = "diffusion_model."
DIFFUSERS_PREFIX = "transformer."
_PREFIXES = ("diffusion_model.", "transformer.", "base_model.model.", "unet.")
_PAIRS = ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight"),
          (".lora.down.weight", ".lora.up.weight"))


class LoraFormatError(ValueError):
    """A LoRA file hvtui cannot read or convert; the message names the file and the tensor."""


@dataclass
class LoraModule:
    down: torch.Tensor     # [rank, in]
    up: torch.Tensor       # [out, rank], the file's alpha / rank scale folded in

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self) -> torch.Tensor:
        return self.up.float() @ self.down.float()


# ---------------------------------------------------------------------------------------------- reading

def _strip(name: str) -> str:
    for p in _PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


def _peft_alphas(meta: dict) -> tuple[float | None, float | None, dict, dict]:
    """(r, lora_alpha, rank_pattern, alpha_pattern) from a file's lora_adapter_metadata (either key form)."""
    raw = meta.get("lora_adapter_metadata")
    if not raw:
        return None, None, {}, {}
    try:
        cfg = json.loads(raw)
    except ValueError:
        return None, None, {}, {}
    cfg = {k.removeprefix("transformer."): v for k, v in cfg.items()}
    r, alpha = cfg.get("r"), cfg.get("lora_alpha")
    return (float(r) if r else None, float(alpha) if alpha else None, dict(cfg.get("rank_pattern") or {}),
            dict(cfg.get("alpha_pattern") or {}))


def _pattern_value(pattern: dict, module: str):
    """PEFT's rule for rank_pattern / alpha_pattern keys: a regex matching the end of the module name."""
    import re

    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return None


def _scale(name: str, rank: int, sd: dict, meta: dict, peft: bool) -> float:
    alpha_t = sd.get(name + ".alpha")
    if alpha_t is not None:
        return float(alpha_t) / rank
    if peft:
        _, alpha, _, alpha_p = _peft_alphas(meta)
        a = _pattern_value(alpha_p, _strip(name))
        if a is None:
            a = alpha
        if a is None:
            return 1.0   # diffusers' convention without metadata: alpha == rank
        return float(a) / rank
    return 1.0       # ComfyUI / kohya without an alpha tensor: scale 1


def _split(name: str, entries: list[tuple[str, Target]], down: torch.Tensor, up: torch.Tensor,
           where: str) -> dict[str, LoraModule]:
    """A LoRA of a fused q/k/v weight -> one LoRA per projection (exact, see the module doc)."""
    if up.shape[0] % 3:
        raise LoraFormatError(f"{where}: {name} is a fused q/k/v LoRA but its up matrix has {up.shape[0]} rows "
                              "(not a multiple of 3)")
    out = up.shape[0] // 3
    blocks = [up[s * out:(s + 1) * out] for s in range(3)]
    used = [b.abs().sum(0) > 0 for b in blocks]          # which rank columns each projection uses
    shared = (torch.stack(used).sum(0) > 1).any()
    result = {}
    for module, t in entries:
        assert t.slot is not None   # _split gets the targets of a fused q/k/v weight only
        b = blocks[t.slot]
        if shared:
            result[module] = LoraModule(down, b)
        else:
            cols = used[t.slot].nonzero().flatten()
            if cols.numel():
                result[module] = LoraModule(down[cols], b[:, cols])
    return result


def read_lora_state_dict(sd: dict[str, torch.Tensor], meta: dict | None = None,
                         where: str = "the LoRA") -> tuple[dict[str, LoraModule], str]:
    """(modules by diffusers name, the scheme the file used). Raises LoraFormatError naming what it cannot read."""
    meta = meta or {}
    modules: dict[str, LoraModule] = {}
    schemes: set[str] = set()
    seen: set[str] = set()
    for key in sorted(sd):
        for a_suffix, b_suffix in _PAIRS:
            if not key.endswith(a_suffix):
                continue
            name = key[:-len(a_suffix)]
            up_key = name + b_suffix
            if up_key not in sd:
                raise LoraFormatError(f"{where}: {key} has no matching {up_key}")
            seen.update((key, up_key, name + ".alpha"))
            down, up = sd[key], sd[up_key]
            if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
                raise LoraFormatError(f"{where}: {name} is not a LoRA of a Linear layer (down {tuple(down.shape)}, "
                                      f"up {tuple(up.shape)}); hvtui converts plain Linear LoRAs only")
            bare = _strip(name)
            entries = lora_names.parse(bare)
            if not entries:
                raise LoraFormatError(f"{where}: {name} is not a module of the HunyuanVideo 1.5 transformer in "
                                      "diffusers, Tencent or ComfyUI naming; hvtui cannot place it")
            scale = _scale(name, down.shape[0], sd, meta, peft=a_suffix == ".lora_A.weight")
            up = up.float() * scale if scale != 1.0 else up
            schemes.add(_scheme_of(bare, entries))
            if entries[0][1].swap:
                up = _swap_halves(up)
            if entries[0][1].slot is not None and len(entries) == 3:
                modules.update(_split(name, entries, down, up, where))
            else:
                modules[entries[0][0]] = LoraModule(down, up)
            break
    unread = sorted(k for k in sd if k not in seen)
    if unread:
        raise LoraFormatError(f"{where}: {len(unread)} tensor(s) are not plain LoRA down/up/alpha, e.g. {unread[0]} "
                              "(DoRA, LoKr, LoHa and full diffs are not converted)")
    if not modules:
        raise LoraFormatError(f"{where}: no LoRA tensors (expected keys ending in .lora_A.weight / .lora_B.weight)")
    return modules, ("mixed" if len(schemes) > 1 else schemes.pop())


def _scheme_of(bare: str, entries: list[tuple[str, Target]]) -> str:
    if bare.startswith(("transformer_blocks.", "context_embedder", "time_embed.", "image_embedder.", "norm_out.",
                        "proj_out")):
        return "diffusers"
    first = entries[0][0]
    tencent = lora_names.target(first, "tencent")
    comfy = lora_names.target(first, "comfyui")
    if comfy is not None and bare == comfy.name and (tencent is None or bare != tencent.name):
        return "comfyui"
    if ".img_attn_qkv" in bare or ".txt_attn_qkv" in bare:
        return "comfyui"   # diffusion-pipe's spelling of ComfyUI's fused weight
    return "tencent"


def read_lora_file(path) -> tuple[dict[str, LoraModule], str]:
    """A .safetensors LoRA file -> (modules by diffusers name, its scheme). Errors name the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise LoraFormatError(f"{path}: no such file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise LoraFormatError(f"{path}: not a readable .safetensors file ({e})") from None
    return read_lora_state_dict(sd, meta, where=str(path))


# ---------------------------------------------------------------------------------------------- writing

def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _fuse(parts: dict[int, LoraModule], out_rows: int) -> LoraModule:
    """Per-slot LoRAs -> one LoRA of the fused [3*out, in] weight (down stacked, up block-diagonal)."""
    ref = next(iter(parts.values()))
    dtype = torch.promote_types(ref.down.dtype, ref.up.dtype)
    downs, col = [], 0
    total = sum(p.rank for p in parts.values())
    up = torch.zeros(3 * out_rows, total, dtype=dtype)
    for slot in sorted(parts):
        p = parts[slot]
        downs.append(p.down.to(dtype))
        up[slot * out_rows:(slot + 1) * out_rows, col:col + p.rank] = p.up.to(dtype)
        col += p.rank
    return LoraModule(torch.cat(downs, 0), up)


def to_scheme(modules: dict[str, LoraModule], scheme: str) -> dict[str, LoraModule]:
    """Modules renamed (and fused where `scheme` fuses q/k/v) for `scheme`; raises for a module it cannot name."""
    out: dict[str, LoraModule] = {}
    fused: dict[str, dict[int, LoraModule]] = {}
    for module in sorted(modules):
        m = modules[module]
        t = lora_names.target(module, scheme)
        if t is None:
            raise LoraFormatError(f"LoRA module {module} has no {scheme} name")
        up = _swap_halves(m.up) if t.swap else m.up
        if t.slot is None:
            out[t.name] = LoraModule(m.down, up)
        else:
            fused.setdefault(t.name, {})[t.slot] = LoraModule(m.down, up)
    for name, parts in fused.items():
        out[name] = _fuse(parts, next(iter(parts.values())).up.shape[0])
    return out


def comfy_state_dict(modules: dict[str, LoraModule], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """ComfyUI's key space: `diffusion_model.<comfy module>.lora_{A,B}.weight` + `.alpha` = rank (scale 1)."""
    sd = {}
    for name, m in to_scheme(modules, "comfyui").items():
        key = COMFY_PREFIX + name
        sd[key + ".lora_A.weight"] = m.down.to(dtype) if dtype else m.down
        sd[key + ".lora_B.weight"] = m.up.to(dtype) if dtype else m.up
        sd[key + ".alpha"] = torch.tensor(float(m.rank))
    return sd


def peft_state_dict(modules: dict[str, LoraModule], scheme: str, prefix: str = "",
                    dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """PEFT keys (`<prefix><module>.lora_A.weight`) in `scheme`'s names and a LoraConfig dict with alpha == rank
    for every module (rank_pattern / alpha_pattern when the ranks differ)."""
    named = to_scheme(modules, scheme)
    sd = {}
    for name, m in named.items():
        sd[f"{prefix}{name}.lora_A.weight"] = m.down.to(dtype) if dtype else m.down
        sd[f"{prefix}{name}.lora_B.weight"] = m.up.to(dtype) if dtype else m.up
    ranks = {name: m.rank for name, m in named.items()}
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    pattern = {name: k for name, k in ranks.items() if k != r}
    config = {"r": r, "lora_alpha": r, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
              "target_modules": sorted(named), "lora_dropout": 0.0, "bias": "none", "use_dora": False,
              "use_rslora": False, "init_lora_weights": True, "peft_type": "LORA"}
    return sd, config


def write_lora_file(modules: dict[str, LoraModule], fmt: str, path, dtype: torch.dtype | None = None) -> Path:
    """Write `modules` as one file in `fmt` (atomically: a temp file, then rename)."""
    import os

    from safetensors.torch import save_file

    if fmt not in FORMATS:
        raise ValueError(f"unknown LoRA format {fmt!r} (one of {', '.join(FORMATS)})")
    path = Path(path)
    meta = {"format": "pt"}
    if fmt == "comfyui":
        sd = comfy_state_dict(modules, dtype)
        meta["hvtui"] = "comfyui-lora"
    else:
        # diffusers: the pipeline writer's prefix and metadata keys (`load_lora_adapter(path, prefix="transformer")`);
        # tencent: what Tencent's generate.py loads (`load_lora_adapter(dir, prefix=None)`), no prefix
        prefix = DIFFUSERS_PREFIX if fmt == "diffusers" else ""
        sd, config = peft_state_dict(modules, "diffusers" if fmt == "diffusers" else "tencent", prefix, dtype)
        if fmt == "diffusers":
            config = {f"transformer.{k}": v for k, v in config.items()}
        meta["lora_adapter_metadata"] = json.dumps(config, indent=2, sort_keys=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(sd, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
