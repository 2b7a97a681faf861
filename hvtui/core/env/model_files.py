"""What a model component's files hold, read without loading any weights: safetensors headers (tensor count,
parameters, dtype, key format), whole-file sizes of pickled checkpoints, and which tokenizer files a folder has.
For `hvtui doctor` (doctor_model.py), which says what is missing or broken before a run would find out."""
from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from hvtui.core.env.assets import read_json

# ----------------------------------------------------------------------------------------- inspection

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U16": 2, "U32": 4, "U64": 8}
DTYPE_NAMES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "F8_E4M3": "fp8_e4m3", "F8_E5M2": "fp8_e5m2",
               "I8": "int8", "U8": "uint8", "F64": "fp64"}


class HeaderError(Exception):
    pass


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file (8-byte little-endian length + JSON), checked against the file
    size so a truncated download is caught. No tensor data is read."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise HeaderError("shorter than a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n <= 1 or n > min(size - 8, 200_000_000):
                raise HeaderError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
    except OSError as e:
        raise HeaderError(e.strerror or str(e)) from None
    except ValueError as e:
        raise HeaderError(f"header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise HeaderError("header is not a JSON object")
    data_len = size - 8 - n
    end = 0
    for key, t in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(t["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise HeaderError(f"tensor {key!r} has no data_offsets") from None
    if end > data_len:
        raise HeaderError(f"truncated: tensors need {end} bytes of data, the file has {data_len}")
    return header


@dataclass
class WeightsInfo:
    files: list[Path] = field(default_factory=list)      # weight files found (shards included)
    kind: str = ""                                        # safetensors | index | pickle | none
    params: int = 0
    bytes: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype name -> params
    keys_sample: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)      # shards named by an index but absent
    broken: list[str] = field(default_factory=list)       # "file: why"
    unchecked: list[str] = field(default_factory=list)    # pickle files (not readable without loading)

    @property
    def ok(self) -> bool:
        return bool(self.files) and not self.missing and not self.broken

    @property
    def dtype(self) -> str:
        if not self.dtypes:
            return "unknown"
        return "+".join(sorted(self.dtypes, key=lambda d: -self.dtypes[d]))

    @property
    def key_format(self) -> str:
        """diffusers | tencent (original double_blocks.* keys) | '' (neither seen)."""
        if any(k.startswith("double_blocks.") or k.startswith("encoder.down.") for k in self.keys_sample):
            return "tencent"
        if any(k.startswith("transformer_blocks.") or k.startswith("encoder.down_blocks.") for k in self.keys_sample):
            return "diffusers"
        return ""


def _add_header(info: WeightsInfo, path: Path) -> None:
    try:
        header = read_safetensors_header(path)
    except HeaderError as e:
        info.broken.append(f"{path.name}: {e}")
        return
    info.bytes += path.stat().st_size
    for key, t in header.items():
        if key == "__metadata__" or not isinstance(t, dict):
            continue
        n = 1
        for d in t.get("shape", []):
            n *= int(d)
        info.params += n
        dtype = str(t.get("dtype"))
        name = DTYPE_NAMES.get(dtype, dtype.lower())
        info.dtypes[name] = info.dtypes.get(name, 0) + n
        if len(info.keys_sample) < 4000:
            info.keys_sample.append(key)


def inspect_weights(folder: Path, files: list[Path] | None = None) -> WeightsInfo:
    """Every weight file of a model folder: an index's shards (all must exist, every header readable), else
    the single .safetensors files, else pickle checkpoints (.bin/.pt: found, not read)."""
    info = WeightsInfo()
    if files is None:
        indexes = sorted(folder.glob("*.safetensors.index.json"))
        if indexes:
            info.kind = "index"
            for index in indexes:
                data = read_json(index)
                if data is None or not isinstance(data.get("weight_map"), dict):
                    info.broken.append(f"{index.name}: not a valid index (no weight_map)")
                    continue
                for shard in dict.fromkeys(data["weight_map"].values()):
                    p = folder / str(shard)
                    if not p.is_file():
                        info.missing.append(str(shard))
                        continue
                    info.files.append(p)
                    _add_header(info, p)
            return info
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            files = sorted(p for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth")) \
                if folder.is_dir() else []
    for p in files:
        if not p.is_file():
            info.missing.append(str(p))
            continue
        info.files.append(p)
        if p.suffix == ".safetensors":
            info.kind = info.kind or "safetensors"
            _add_header(info, p)
        else:
            info.kind = info.kind or "pickle"
            info.bytes += p.stat().st_size
            # torch.save writes a zip archive; an old-style pickle starts with 0x80 (PROTO)
            try:
                with open(p, "rb") as f:
                    head = f.read(2)
            except OSError as e:
                info.broken.append(f"{p.name}: {e.strerror}")
                continue
            if not (zipfile.is_zipfile(p) or head[:1] == b"\x80"):
                info.broken.append(f"{p.name}: neither a torch zip archive nor a pickle")
            else:
                info.unchecked.append(p.name)
    if not info.kind:
        info.kind = "none"
    return info


TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json", "spiece.model"}


def _is_tokenizer_file(name: str) -> bool:
    return name in TOKENIZER_FILES


QWEN_TOKENIZER_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def tokenizer_files(component: str, folder: Path) -> tuple[list[str], list[str]]:
    """(present, missing) tokenizer files for the Qwen (tokenizer) or byT5 (tokenizer_2) tokenizer."""
    present = sorted(p.name for p in folder.iterdir() if p.is_file() and _is_tokenizer_file(p.name)) \
        if folder.is_dir() else []
    if component == "tokenizer":
        for need in QWEN_TOKENIZER_SETS:
            if all(n in present for n in need):
                return present, []
        return present, ["tokenizer.json (or vocab.json + merges.txt)"]
    # ByT5 is byte-level (no vocabulary file); its config carries the special tokens
    if "tokenizer_config.json" in present or "special_tokens_map.json" in present:
        return present, []
    return present, ["tokenizer_config.json"]
