"""A preset fuzzer: mutated copies of the demo preset (values swapped for edge values of every type, keys
dropped or invented, bytes garbled) run through what reads presets first: `hvtui check`, `hvtui buckets`
(for those that pass), load_preset and the TUI's validate_preset. Each must end in a clean answer (exit 0 or
2, a PresetError), never a traceback. Used by tests/core/preset/test_reliability_presets.py (a bounded number of cases)
and bench/reliability.py (many).
"""
from __future__ import annotations

import contextlib
import io
import json
import random
import tomllib
from pathlib import Path

from tests.helpers.repo_paths import REPO

DEMO = REPO / "presets" / "demo.toml"

PATH_KEYS = ("output_dir", "instance_data_dir", "cache_dir", "metadata_file", "dataset_backend_config",
             "text_encoder_path", "vision_encoder_path", "pretrained_model_name_or_path")
PATH_VALUES = ["a\x00b", "x" * 300, "/".join(["d" * 200] * 30), "", "~nobody/x", "/proc/1/x", "/dev/null",
               "presets", ".", "..", "demo-data/out"]
EDGE_VALUES = [
    float("nan"), float("inf"), float("-inf"), 0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64, 1e308, 1e-308, 0.5,
    "", " ", "x", "nan", "0x0", "4096x4096", "848x480", "64x64,x", "\x00", "a\x00b", "é" * 200, "a" * 300,
    "/".join(["d" * 200] * 30), "../../../../etc", "~", "builtin:nope", True, False, [], [1, 2], ["a", "b"], {},
    {"a": 1}, [{"id": "x"}],
]


def _near(rng: random.Random, value):
    """A plausible neighbour of a value (most pass `check`, so `buckets` sees them too)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([value + 1, value - 1, value * 2, value * 10, value // 2, 4 * value + 1])
    if isinstance(value, float):
        return rng.choice([value * 2, value / 10, value * 1000, -value])
    if isinstance(value, str):
        return rng.choice([value.upper(), value + "x", value[:-1], value.replace("x", "X")])
    return value


def _get(data, path):
    for p in path:
        data = data[p]
    return data


def _paths(data: dict) -> list[tuple]:
    """Every key path in the preset: top-level keys, dataset keys, video keys."""
    out = [(k,) for k in data if k != "datasets"]
    tables = data.get("datasets", [])
    for i, d in enumerate(tables if isinstance(tables, list) else []):
        if not isinstance(d, dict):
            continue
        out += [("datasets", i, k) for k in d if k != "video"]
        if isinstance(d.get("video"), dict):
            out += [("datasets", i, "video", k) for k in d["video"]]
    return out


def _set(data, path, value) -> None:
    for p in path[:-1]:
        data = data[p]
    data[path[-1]] = value


def _delete(data, path) -> None:
    for p in path[:-1]:
        data = data[p]
    data.pop(path[-1], None)


def mutate(rng: random.Random, base: dict, out_dir: Path) -> tuple[str, bytes]:
    """(what was done, the preset's bytes)."""
    import copy

    import tomlkit

    data = copy.deepcopy(base)
    done = []
    for _ in range(rng.randint(1, 3)):
        paths = _paths(data)
        kind = rng.random()
        if kind < 0.75 and paths:
            path = rng.choice(paths)
            keyed = [q for q in paths if q[-1] in PATH_KEYS]
            if keyed and rng.random() < 0.25:   # paths: what the OS refuses, and places a run must not write
                path = rng.choice(keyed)
                value = rng.choice(PATH_VALUES)
            else:
                value = rng.choice(EDGE_VALUES) if rng.random() < 0.5 else _near(rng, _get(data, path))
            _set(data, path, value)
            done.append(f"{'.'.join(map(str, path))} = {value!r}"[:80])
        elif kind < 0.85 and paths:
            path = rng.choice(paths)
            _delete(data, path)
            done.append(f"del {'.'.join(map(str, path))}")
        elif kind < 0.9:
            data[rng.choice(["lora_rnak", "datasets_", "video", "[x]"])] = rng.choice(EDGE_VALUES)
            done.append("unknown key")
        else:
            tables = data.get("datasets", [])
            data["datasets"] = rng.choice([[], {}, "x", [1], (tables if isinstance(tables, list) else []) * 2])
            done.append("datasets reshaped")
    try:
        text = tomlkit.dumps(data)
    except Exception:   # a value TOML cannot hold (tomlkit refuses): write it by hand as garbage
        text = json.dumps(data, default=str)
        done.append("not TOML")
    raw = text.encode("utf-8", "surrogatepass")
    garble = rng.random()
    if garble < 0.05:
        raw = b"\xef\xbb\xbf" + raw
        done.append("BOM")
    elif garble < 0.1:
        raw = raw[:rng.randint(0, len(raw))]
        done.append("truncated")
    elif garble < 0.13:
        i = rng.randint(0, len(raw))
        raw = raw[:i] + bytes(rng.randint(0, 255) for _ in range(4)) + raw[i:]
        done.append("bytes inserted")
    return "; ".join(done), raw


def base_preset(out_dir: Path) -> dict:
    """The demo preset with absolute paths (the fuzzed copies live elsewhere) and output under out_dir."""
    data = tomllib.loads(DEMO.read_text())
    data["output_dir"] = str(out_dir / "out")
    for d in data["datasets"]:
        if d.get("instance_data_dir"):
            d["instance_data_dir"] = str(DEMO.parent / d["instance_data_dir"])
        d["cache_dir"] = str(out_dir / "cache" / d["id"])
    return data


def run_case(path: Path) -> tuple[str, str]:
    """("ok" | "refused" | "TRACEBACK", detail) for one preset file."""
    import traceback

    from hvtui.cli import main
    from hvtui.core.preset.check import validate_file, validate_preset
    from hvtui.core.preset.schema import PresetError, load_preset

    stage = "check"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(["check", str(path), "--json"])
            if code not in (0, 2):
                return "TRACEBACK", f"check exit {code}"
            for q in validate_file(path).errors:   # clean: each error says what and how to fix it
                if not q.message or not q.fix or "Traceback" in q.message:
                    return "TRACEBACK", f"unclear error: {q}"
            stage = "load_preset"
            try:
                validate_preset(load_preset(path))   # the TUI's path: load, then check the model
            except PresetError:
                pass
            if code == 0:
                stage = "buckets"
                b = main(["buckets", str(path), "--json"])
                if b not in (0, 2):
                    return "TRACEBACK", f"buckets exit {b}"
    except SystemExit as e:
        return "TRACEBACK", f"{stage}: SystemExit {e.code}"
    except Exception:
        return "TRACEBACK", f"{stage}: {traceback.format_exc(limit=-3)}"
    return ("ok" if code == 0 else "refused"), ""


def fuzz(n: int, seed: int, work: Path) -> dict:
    """Run n mutated presets; returns counts and the failures (what was mutated, the traceback)."""
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    base = base_preset(work)
    counts = {"ok": 0, "refused": 0, "TRACEBACK": 0}
    failures = []
    for i in range(n):
        what, raw = mutate(rng, base, work)
        path = work / f"fuzz-{i}.toml"
        path.write_bytes(raw)
        result, detail = run_case(path)
        counts[result] += 1
        if result == "TRACEBACK":
            failures.append({"case": i, "mutation": what, "detail": detail})
    return {"cases": n, "seed": seed, **counts, "failures": failures}
