"""`hvtui export LORA [--to comfyui|diffusers|tencent] [-o OUT] [--dtype ...] [--force]`: convert a LoRA file.

LORA is a .safetensors file, or a folder holding pytorch_lora_weights.safetensors (an hvtui output_dir or one of
its checkpoints). Any of the three key spaces is read (hvtui's files, other trainers' diffusers/PEFT files,
ComfyUI / diffusion-pipe files, Tencent's train.py files); the conversion is exact (hvtui.core.train.lora_export).
Exit 0 when written, 2 when the input cannot be read or converted or the output exists (--force replaces it).
"""
from __future__ import annotations

import sys
from pathlib import Path

from hvtui.core.run import exitcodes

DEFAULT_NAME = "pytorch_lora_weights.safetensors"
SUFFIX = {"comfyui": "_comfy.safetensors", "diffusers": "_diffusers.safetensors"}


def default_output(src: Path, fmt: str) -> Path:
    """Next to the input: NAME_comfy.safetensors / NAME_diffusers.safetensors, or for Tencent's generate.py (which
    loads a folder's pytorch_lora_weights.safetensors) NAME_tencent/pytorch_lora_weights.safetensors."""
    stem = src.name[:-len(".safetensors")] if src.name.endswith(".safetensors") else src.stem
    stem = stem.removesuffix("_comfy").removesuffix("_diffusers")
    if fmt == "tencent":
        return src.with_name(f"{stem}_tencent") / DEFAULT_NAME
    return src.with_name(stem + SUFFIX[fmt])


def _input(path: Path) -> Path:
    return path / DEFAULT_NAME if path.is_dir() else path


def main(args) -> int:
    import torch

    from hvtui.core.train.lora_export import LoraFormatError, read_lora_file, write_lora_file

    src = _input(Path(args.lora).expanduser())
    try:
        modules, scheme = read_lora_file(src)
    except LoraFormatError as e:
        print(f"hvtui export: {e}", file=sys.stderr)
        return exitcodes.INVALID
    out = Path(args.output).expanduser() if args.output else default_output(src, args.to)
    if out.is_dir() or (args.output and str(args.output).endswith("/")):
        out = out / DEFAULT_NAME
    if out.resolve() == src.resolve():
        print(f"hvtui export: {out} is the input file; choose another -o", file=sys.stderr)
        return exitcodes.INVALID
    if out.exists() and not args.force:
        print(f"hvtui export: {out} exists; pass --force to replace it, or -o another path", file=sys.stderr)
        return exitcodes.INVALID
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)
    try:
        write_lora_file(modules, args.to, out, dtype)
    except LoraFormatError as e:
        print(f"hvtui export: {src}: {e}", file=sys.stderr)
        return exitcodes.INVALID
    except OSError as e:
        print(f"hvtui export: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return exitcodes.INVALID
    ranks = sorted({m.rank for m in modules.values()})
    print(f"read {src}: {len(modules)} LoRA modules in {scheme} names (rank {', '.join(map(str, ranks))})")
    print(f"wrote {out} ({args.to}{'' if dtype is None else ', ' + args.dtype})")
    if args.to == "comfyui":
        print("ComfyUI: copy it to ComfyUI/models/loras/ and load it with a LoraLoaderModelOnly node after the "
              "HunyuanVideo 1.5 diffusion model")
    return exitcodes.OK
