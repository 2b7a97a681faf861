"""Memory of every shipped GPU preset, end to end, on the full-size model: estimate (hvtui.core.fit) vs measured.

One command on the lent GPU (an H200) does all of it in one call:
  1. builds the full-size model ONCE with random bf16 weights on the GPU and saves it in the diffusers layout
     (transformer 8.3B, Qwen2.5-VL-7B text model, byT5, VAE, SigLIP; a tiny byte-level tokenizer stands in for
     Qwen's), about 34 GB on disk; the 720p and i2v model folders link to the same weight files with their own
     transformer config / scheduler;
  2. per preset (t2v-480p-24gb, t2v-480p-80gb, t2v-720p-80gb, i2v-480p) writes one synthetic clip of exactly the
     preset's largest bucket, and runs hvtui's own trainer on the preset in a fresh process (model loaded from disk
     through hvtui, caching with the encoders, 2 training steps, one validation sample with the preset's CFG and
     VAE decode, one checkpoint) with the allocator capped to the card the preset names
     (`torch.cuda.set_per_process_memory_fraction`: card total less the CUDA context);
  3. samples NVML every 10 ms and torch's allocated / reserved peaks per step of the run (caching:text,
     caching:vae, training, validation:denoise, validation:decode, checkpointing), prints estimate vs measured,
     solves the estimate's constants from the measurements (hvtui.core.fit_calibrate) and writes under $OUT:
       preset_memory.json        every measurement, the estimates before and after calibration, the run logs
       memory_calibration.json   the calibration: copy it to hvtui/core/memory_calibration.json
Time on an H200: about 7 minutes (no torch.compile: it would add ~1.5 minutes per preset; pass --compile for the
presets' own setting). Bench overrides that do not change the peaks: 2 optimizer steps, a checkpoint only at the
end, 2 sampling steps (each step's memory is the same), the synthetic clip.

    python3 bench/preset_memory.py                       # the GPU run (see BENCHMARKS.md for the full command)
    python3 bench/preset_memory.py --tiny                # the same path on the CPU with tiny weights (minutes)
    python3 bench/preset_memory.py --calibrate RESULTS   # re-solve the calibration from a saved preset_memory.json
    python3 bench/preset_memory.py --update-headers      # rewrite the presets' "estimates N GiB" header lines
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GiB = 1024 ** 3
# the card each preset names, as NVML reports its total (MiB -> GiB)
CARDS = {
    "t2v-480p-24gb": ("24 GB card (RTX 4090: 24564 MiB)", 24564 / 1024),
    "t2v-480p-24gb-int8": ("24 GB card (RTX 4090: 24564 MiB)", 24564 / 1024),
    "t2v-480p-80gb": ("80 GB card (H100 80GB HBM3: 81559 MiB)", 81559 / 1024),
    "t2v-720p-80gb": ("80 GB card (H100 80GB HBM3: 81559 MiB)", 81559 / 1024),
    "i2v-480p": ("40 GB card (A100 40GB: 40536 MiB)", 40536 / 1024),
}
MODEL_FOR = {"t2v-480p": "t2v-480p", "t2v-720p": "t2v-720p", "i2v-480p": "i2v-480p"}
STEP_OF_PHASE = {"loading": "loading", "caching": "caching:text", "training": "training",
                 "validating": "validation:denoise", "saving": "checkpointing", "done": "done"}
STEPS = ("caching:text", "caching:vae", "training", "validation:denoise", "validation:decode", "checkpointing")
MIN_FREE_GIB = 40


def log(*a) -> None:
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------- the model tree

def _tiny_tokenizer():
    from hvtui.core.train.tiny import tiny_qwen_tokenizer

    return tiny_qwen_tokenizer()


def build_tree(root: Path, tiny: bool) -> None:
    """Child process: the three model folders (t2v-480p, t2v-720p, i2v-480p) in the diffusers layout."""
    import torch
    from diffusers import (AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler,
                           HunyuanVideo15Pipeline, HunyuanVideo15Transformer3DModel)
    from transformers import (ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, SiglipVisionConfig,
                              SiglipVisionModel, T5Config, T5EncoderModel)

    t0 = time.perf_counter()
    cuda = torch.cuda.is_available() and not tiny
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    tok = _tiny_tokenizer()
    if tiny:
        from hvtui.core.train.tiny import tiny_components, tiny_image_encoder

        comps = tiny_components("t2v", seed=0)
        siglip, processor = tiny_image_encoder()
    else:
        torch.manual_seed(0)
        with torch.device(device):
            prev = torch.get_default_dtype()
            torch.set_default_dtype(dtype)
            transformer = HunyuanVideo15Transformer3DModel(task_type="t2v", target_size=640)
            vae = AutoencoderKLHunyuanVideo15()
            text = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
                vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rope_theta=1e6,
                rms_norm_eps=1e-6, rope_scaling={"mrope_section": [16, 24, 24], "rope_type": "default",
                                                 "type": "default"}))
            byt5 = T5EncoderModel(T5Config(vocab_size=384, d_model=1472, d_kv=64, d_ff=3584, num_layers=12,
                                           num_heads=6, feed_forward_proj="gated-gelu", tie_word_embeddings=False))
            siglip = SiglipVisionModel(SiglipVisionConfig(hidden_size=1152, intermediate_size=4304,
                                                          num_hidden_layers=27, num_attention_heads=16,
                                                          image_size=384, patch_size=14))
            torch.set_default_dtype(prev)
        try:
            from transformers import SiglipImageProcessorPil as Processor
        except ImportError:
            from transformers import SiglipImageProcessor as Processor
        processor = Processor(size={"height": 384, "width": 384})
        comps = dict(transformer=transformer, vae=vae, text_encoder=text, tokenizer=tok, text_encoder_2=byt5,
                     tokenizer_2=ByT5Tokenizer(), scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
                     guider=ClassifierFreeGuidance(guidance_scale=6.0))
    n = sum(p.numel() for p in comps["transformer"].parameters())
    log(f"built the model ({n / 1e9:.2f}B transformer params) on {device} in {time.perf_counter() - t0:.0f}s")
    t2v = root / "t2v-480p"
    HunyuanVideo15Pipeline(**comps).save_pretrained(t2v, max_shard_size="5GB")
    log(f"saved {t2v} ({_size(t2v) / 1e9:.1f} GB) at {time.perf_counter() - t0:.0f}s")
    # the 720p t2v and the 480p i2v folders: the same weights (linked), their own transformer config / scheduler
    for name, changes, shift in (("t2v-720p", {"target_size": 960}, 9.0), ("i2v-480p", {"task_type": "i2v"}, 5.0)):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for sub in ("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "guider"):
            (d / sub).symlink_to(t2v / sub, target_is_directory=True)
        (d / "transformer").mkdir()
        for f in (t2v / "transformer").iterdir():
            if f.name != "config.json":
                (d / "transformer" / f.name).symlink_to(f)
        cfg = json.loads((t2v / "transformer" / "config.json").read_text())
        (d / "transformer" / "config.json").write_text(json.dumps({**cfg, **changes}, indent=2))
        FlowMatchEulerDiscreteScheduler(shift=shift).save_pretrained(d / "scheduler")
        index = json.loads((t2v / "model_index.json").read_text())
        if name.startswith("i2v"):
            siglip.save_pretrained(d / "image_encoder")
            processor.save_pretrained(d / "feature_extractor")
            index.update(_class_name="HunyuanVideo15ImageToVideoPipeline",
                         image_encoder=["transformers", "SiglipVisionModel"],
                         feature_extractor=["transformers", type(processor).__name__])
        (d / "model_index.json").write_text(json.dumps(index, indent=2))
    (root / "COMPLETE").write_text("ok\n")
    log(f"model tree ready in {time.perf_counter() - t0:.0f}s")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


# ----------------------------------------------------------------------------------------- one measured run

class Sampler:
    """NVML used memory every 10 ms and torch's allocated / reserved peaks, per step of the run (a label)."""

    def __init__(self, cuda: bool):
        self.cuda, self.label, self.peaks = cuda, "loading", {}
        self._stop = threading.Event()
        self.h = self.nv = None
        if cuda:
            try:
                import pynvml

                pynvml.nvmlInit()
                import torch

                self.nv = pynvml
                self.h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            except Exception as e:   # no NVML: torch's figures only
                log(f"NVML unavailable ({e}); only torch's peaks are recorded")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def used(self) -> int:
        return int(self.nv.nvmlDeviceGetMemoryInfo(self.h).used) if self.h else 0

    def _peak(self, label: str) -> dict:
        return self.peaks.setdefault(label, {"nvml_gib": 0.0, "alloc_gib": 0.0, "reserved_gib": 0.0, "seconds": 0.0})

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            p = self._peak(self.label)
            p["nvml_gib"] = max(p["nvml_gib"], self.used() / GiB)

    def start(self) -> "Sampler":
        self._since = time.perf_counter()
        self.thread.start()
        return self

    def switch(self, label: str) -> None:
        """Close the current step (torch's peaks since the last switch), open `label`."""
        if label == self.label:
            return
        p = self._peak(self.label)
        p["seconds"] += time.perf_counter() - self._since
        if self.cuda:
            import torch

            p["alloc_gib"] = max(p["alloc_gib"], torch.cuda.max_memory_allocated() / GiB)
            p["reserved_gib"] = max(p["reserved_gib"], torch.cuda.max_memory_reserved() / GiB)
            p["nvml_gib"] = max(p["nvml_gib"], self.used() / GiB)
            torch.cuda.reset_peak_memory_stats()
        self.label, self._since = label, time.perf_counter()

    def stop(self) -> dict:
        self.switch("done")
        self._stop.set()
        self.thread.join()
        return {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in self.peaks.items()}


def _instrument(sampler: Sampler) -> None:
    """Name the step each part of the trainer runs in (wrappers around the functions the trainer calls)."""
    from hvtui.core.train import conditioning, loop, validate

    def labelled(fn, label, back=None):
        def wrapper(*a, **k):
            sampler.switch(label)
            try:
                return fn(*a, **k)
            finally:
                if back:
                    sampler.switch(back)
        return wrapper

    conditioning.encode_prompt = labelled(conditioning.encode_prompt, "caching:text")
    conditioning.encode_video = labelled(conditioning.encode_video, "caching:vae")
    validate.decode = labelled(validate.decode, "validation:decode", back="validation:denoise")
    # the transformer moves to the GPU (and gets its LoRA) after caching, before the "training" phase event
    loop.Trainer._prepare_transformer = labelled(loop.Trainer._prepare_transformer, "training")


def child(spec_path: Path) -> int:
    """Child process: one preset's run under the card's cap; writes the measurements next to the spec."""
    import torch

    from hvtui.core.bus import Bus
    from hvtui.core.control import Control
    from hvtui.core.preset import preset_from_dict
    from hvtui.core.session import RunOptions
    from hvtui.core.train.loop import train

    spec = json.loads(spec_path.read_text())
    cuda = torch.cuda.is_available() and not spec["tiny"]
    result = {"name": spec["name"], "card": spec["card"], "device": "cpu", "exit_code": None}
    sampler = Sampler(cuda)
    if cuda:
        torch.ones(1, device="cuda")          # the CUDA context exists from here on
        torch.cuda.synchronize()
        total = torch.cuda.get_device_properties(0).total_memory
        context = sampler.used() - torch.cuda.memory_reserved()
        cap = spec["card_gib"] * GiB - context
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
        result.update(device=torch.cuda.get_device_name(0), total_gib=round(total / GiB, 2),
                      context_at_start_gib=round(context / GiB, 3), cap_gib=round(cap / GiB, 3),
                      torch=torch.__version__)
    _instrument(sampler)
    if spec["tiny"]:
        # the doctor's fit check knows the full-size model and fails without a GPU: irrelevant to proving the path
        from hvtui.core.train import loop

        loop.Trainer._doctor = lambda self: None
    events = []

    def sink(e) -> None:
        if e.kind == "phase":
            sampler.switch(STEP_OF_PHASE.get(e.get("phase"), e.get("phase")))
        if e.kind in ("log", "error", "finished", "checkpoint", "sample") or (e.kind == "step"):
            events.append({"kind": e.kind, **{k: v for k, v in e.data.items() if k != "traceback"}})
            if e.kind in ("error", "log") and e.get("level", "error") in ("warning", "error"):
                log(f"  [{spec['name']}] {e.kind}: {e.get('message')}")

    bus = Bus()
    bus.add_sink(sink)
    preset = preset_from_dict(spec["preset"])
    sampler.start()
    t0 = time.perf_counter()
    code = train(preset, bus, Control(None), RunOptions(file_control=False, write_events=True))
    result.update(exit_code=code, seconds=round(time.perf_counter() - t0, 1), steps=sampler.stop(), events=events)
    result["oom"] = [e.get("message") for e in events if "out of memory" in str(e.get("message", "")).lower()]
    Path(spec["result"]).write_text(json.dumps(result, indent=1, default=str))
    return 0


# ----------------------------------------------------------------------------------------- the parent

def bench_preset(name: str, scratch: Path, models: Path, tiny: bool, compile_blocks: bool) -> tuple[dict, dict]:
    """(the preset as run, a spec for the child) for a shipped preset."""
    import tomllib

    from hvtui.core.fit import largest_bucket
    from hvtui.core.preset import preset_from_dict
    from hvtui.core.synth import write_clip

    raw = tomllib.loads((REPO / "presets" / f"{name}.toml").read_text())
    run = scratch / "runs" / name
    shutil.rmtree(run, ignore_errors=True)
    raw.update(pretrained_model_name_or_path=str(models / MODEL_FOR[raw["model_flavour"]]),
               output_dir=str(run / "output"), max_train_steps=2, checkpointing_steps=0, validation_steps=2,
               validation_num_inference_steps=2 if not tiny else 1, compile_blocks=compile_blocks)
    video = next(d for d in raw["datasets"] if d.get("dataset_type", "video") == "video")
    text = next(d for d in raw["datasets"] if d.get("dataset_type") == "text_embeds")
    clips = run / "clips"
    video.update(instance_data_dir=str(clips), cache_dir=str(run / "cache"))
    text.update(cache_dir=str(run / "cache" / "text"))
    if tiny:   # the same path, tiny sizes, fp32 on the CPU
        raw.update(mixed_precision="no", base_model_precision="no_change", validation_resolution="32x48",
                   validation_num_video_frames=5, group_offload_use_stream=False)
        video.update(resolution=64)
        video["video"].update(num_frames=5, min_frames=5)
    bucket = largest_bucket(preset_from_dict(raw), scan=False)
    write_clip(clips / "clip.mp4", bucket.width, bucket.height, fps=24, frames=bucket.frames, shape="circle",
               colour="green", direction="right")
    (clips / "clip.txt").write_text("a green circle moves right across a dark room\n")
    card, card_gib = CARDS[name]
    return raw, {"name": name, "preset": raw, "tiny": tiny, "card": card, "card_gib": card_gib,
                 "result": str(run / "result.json")}


def measured_steps(result: dict) -> dict:
    return {k: v for k, v in result.get("steps", {}).items() if k in STEPS}


def report(runs: list[dict], before: Path | None, after: Path | None) -> tuple[list[str], dict]:
    """The table (estimate before / after calibration vs measured, per step and the whole run) and a summary."""
    from hvtui.core.fit import estimate_memory, largest_bucket
    from hvtui.core.preset import preset_from_dict

    lines = ["| preset (card) | step | estimate NVML before | after calibration | measured NVML | measured "
             "allocated / reserved | after vs measured |", "|---|---|---|---|---|---|---|"]
    summary = {}
    for run in runs:
        preset = preset_from_dict(run["preset"])
        bucket = largest_bucket(preset, scan=False)
        est_b = estimate_memory(preset, bucket, calibration_file=before)
        est_a = estimate_memory(preset, bucket, calibration_file=after)
        steps = run["steps"]
        for step in STEPS:
            m = steps.get(step)
            eb, ea = est_b.phase(step), est_a.phase(step)
            if eb is None and m is None:
                continue
            err = f"{(ea.nvml_gib - m['nvml_gib']) / m['nvml_gib'] * 100:+.1f}%" if ea and m and m["nvml_gib"] else "-"
            lines.append(f"| {run['name']} | {step} | {eb.nvml_gib if eb else '-'} | {ea.nvml_gib if ea else '-'} | "
                         f"{m['nvml_gib'] if m else '-'} | {m['alloc_gib'] if m else '-'} / "
                         f"{m['reserved_gib'] if m else '-'} | {err} |")
        peak = max(steps.values(), key=lambda v: v["nvml_gib"], default=None)
        peak_step = max(steps, key=lambda k: steps[k]["nvml_gib"], default="-")
        if peak is not None and peak["nvml_gib"]:
            e = (est_a.peak_gib - peak["nvml_gib"]) / peak["nvml_gib"] * 100
            lines.append(f"| **{run['name']}** ({run['card']}) | **run peak** | {est_b.peak_gib:.1f} ({est_b.peak_phase}) | "
                         f"{est_a.peak_gib:.1f} ({est_a.peak_phase}) | {peak['nvml_gib']} ({peak_step}) | "
                         f"{peak['alloc_gib']} / {peak['reserved_gib']} | {e:+.1f}% |")
            summary[run["name"]] = {"estimate_before_gib": est_b.peak_gib, "estimate_after_gib": est_a.peak_gib,
                                    "measured_nvml_gib": peak["nvml_gib"], "measured_step": peak_step,
                                    "error_after_percent": round(e, 1)}
    return lines, summary


def update_headers() -> int:
    """Rewrite each preset's "hvtui doctor estimates N GiB at the peak (phase)" from the current estimate."""
    from hvtui.core.fit import estimate_memory, largest_bucket
    from hvtui.core.preset import load_preset

    pattern = re.compile(r"hvtui doctor estimates [\d.]+ GiB at the peak \(\w+\)")
    for name in CARDS:
        path = REPO / "presets" / f"{name}.toml"
        preset = load_preset(path)
        est = estimate_memory(preset, largest_bucket(preset, scan=False))
        text = path.read_text()
        new = pattern.sub(f"hvtui doctor estimates {est.peak_gib:.1f} GiB at the peak ({est.peak_phase})", text, 1)
        if new == text and not pattern.search(text):
            log(f"{path}: no 'hvtui doctor estimates N GiB at the peak (phase)' line in the header")
            return 1
        path.write_text(new)
        log(f"{path.name}: {est.peak_gib:.1f} GiB at the peak ({est.peak_phase})")
    return 0


def calibrate(runs: list[dict], out: Path, source: str) -> Path:
    from hvtui.core import fit_calibrate

    usable = [{"preset": r["preset"], "steps": r["steps"]} for r in runs if r.get("steps")]
    return fit_calibrate.write(fit_calibrate.solve(usable, source), out / "memory_calibration.json")


def finish(runs: list[dict], out: Path, meta: dict) -> None:
    from hvtui.core.fit import CALIBRATION_FILE

    measured = [r for r in runs if any(v.get("nvml_gib") for v in r["steps"].values())]
    cal = calibrate(measured, out, f"bench/preset_memory.py on {meta.get('device')}, {meta['date']}") \
        if measured else None
    before = CALIBRATION_FILE if CALIBRATION_FILE.is_file() else None
    lines, summary = report(runs, before, cal)
    meta.update(summary=summary, calibration=json.loads(cal.read_text()) if cal else None, runs=runs)
    (out / "preset_memory.json").write_text(json.dumps(meta, indent=1, default=str))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    log("\n".join(lines))
    for name, s in summary.items():
        log(f"{name}: doctor after calibration {s['estimate_after_gib']:.1f} GiB vs measured {s['measured_nvml_gib']} GiB "
            f"({s['error_after_percent']:+.1f}%)")
    log(f"\nwrote {out / 'preset_memory.json'}" + (f" and {cal}" if cal else " (no GPU measurements: no calibration)"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny weights on the CPU: proves the script, measures nothing")
    ap.add_argument("--presets", default=",".join(CARDS), help="comma-separated preset names")
    ap.add_argument("--scratch", default=os.environ.get("SCRATCH", "/tmp/hvtui-preset-memory"))
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/hvtui-preset-memory-out"))
    ap.add_argument("--time-limit", type=float, default=530.0, help="seconds; later presets are skipped past it")
    ap.add_argument("--compile", action="store_true", help="keep the presets' compile_blocks (slower)")
    ap.add_argument("--calibrate", metavar="RESULTS", help="re-solve the calibration from a preset_memory.json")
    ap.add_argument("--update-headers", action="store_true")
    ap.add_argument("--build-tree", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.update_headers:
        return update_headers()
    if args.build_tree:
        build_tree(Path(args.build_tree), args.tiny)
        return 0
    if args.child:
        return child(Path(args.child))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.calibrate:
        saved = json.loads(Path(args.calibrate).read_text())
        finish(saved["runs"], out, {k: v for k, v in saved.items() if k not in ("runs", "summary", "calibration")})
        return 0

    t_start = time.perf_counter()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(scratch).free / GiB
    models = scratch / ("models-tiny" if args.tiny else "models")
    if not (models / "COMPLETE").is_file():
        if not args.tiny and free < MIN_FREE_GIB:
            log(f"{scratch}: {free:.0f} GiB free; the full-size model needs about 34 GB (set SCRATCH)")
            return 2
        shutil.rmtree(models, ignore_errors=True)
        cmd = [sys.executable, __file__, "--build-tree", str(models)] + ["--tiny"] * args.tiny
        if subprocess.run(cmd).returncode != 0:
            log("building the model tree failed (output above)")
            return 1
    meta = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "tiny": args.tiny,
            "compile_blocks": args.compile, "scratch_free_gib": round(free, 1)}
    runs = []
    for name in [n.strip() for n in args.presets.split(",") if n.strip()]:
        elapsed = time.perf_counter() - t_start
        if elapsed > args.time_limit:
            log(f"skipping {name}: {elapsed:.0f}s spent (--time-limit {args.time_limit:.0f})")
            continue
        raw, spec = bench_preset(name, scratch, models, args.tiny, args.compile)
        spec_path = scratch / "runs" / name / "spec.json"
        spec_path.write_text(json.dumps(spec))
        log(f"== {name}: {spec['card']}, model {raw['pretrained_model_name_or_path']}")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(spec_path)], capture_output=True, text=True)
        (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
        result_path = Path(spec["result"])
        if proc.returncode != 0 or not result_path.is_file():
            log(f"   {name}: the run process failed (exit {proc.returncode}); tail of {out / (name + '.log')}:")
            log("\n".join((proc.stdout + proc.stderr).splitlines()[-15:]))
            runs.append({"name": name, "card": spec["card"], "preset": raw, "steps": {}, "failed": proc.returncode})
            continue
        result = json.loads(result_path.read_text())
        meta.setdefault("device", result.get("device"))
        meta.setdefault("torch", result.get("torch"))
        steps = measured_steps(result)
        runs.append({**result, "preset": raw, "steps": steps, "all_steps": result.get("steps")})
        log(f"   exit {result['exit_code']} in {time.perf_counter() - t0:.0f}s; "
            + ", ".join(f"{k} {v['nvml_gib']:.1f}" for k, v in steps.items()) + (f"; OOM: {result['oom']}"
                                                                             if result.get("oom") else ""))
    meta["seconds"] = round(time.perf_counter() - t_start, 1)
    finish(runs, out, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
