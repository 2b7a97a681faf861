"""Memory of every shipped GPU preset, end to end, on the full-size model: estimate (hvtui.core.env.fit) vs measured.

One command on the lent GPU (an H200) does all of it:
  1. builds the full-size model ONCE with random bf16 weights on the GPU and saves it in the diffusers layout
     (transformer 8.3B, Qwen2.5-VL-7B text model, byT5, VAE, SigLIP; a tiny byte-level tokenizer stands in for
     Qwen's), about 34 GB on disk (~45 s); the 720p and i2v model folders link to the same weight files with their
     own transformer config / scheduler; a preset's text_encoder_path / vision_encoder_path point into this tree;
  2. per run (a preset, with hvtui's default allocator: expandable segments, or without them) writes one synthetic
     clip of exactly the preset's largest bucket and runs hvtui's own trainer on the preset in a fresh process
     (doctor, model loaded from disk, caching with the encoders, 2 optimizer steps, the final checkpoint right
     after the last step as in a run, then one validation sample with the preset's CFG and VAE decode) with the
     allocator capped to the card the preset names (`torch.cuda.set_per_process_memory_fraction`: card total
     less the CUDA context; speed.py's attention cache sizes itself for that card, not the H200);
  3. samples NVML every 10 ms and torch's allocated / reserved peaks per step of the run (caching:text,
     caching:vae, training, checkpointing, validation:denoise from after the validator gave training's segments
     back, validation:decode), prints estimate vs measured, solves the estimate's constants from the
     measurements together with the committed ones (hvtui.core.env.fit_calibrate) and writes under --out:
       preset_memory.json        every measurement, the run logs, what the trainer reported
       memory_calibration.json   the calibration solved from bench/results/ and this call
       table.md                  estimate (committed calibration, i.e. before this call) and after, vs measured
Runs go in the order given (a --without-expandable run right after the same preset's default run); one is
skipped rather than started when the time spent plus its expected length would pass --time-limit, so the command
ends in time and what ran comes back. About 70-85 s per run on the H200
without torch.compile (pass --compile for the presets' own setting: ~1.5 min more per run). Bench overrides that
do not change the peaks: 2 optimizer steps, 1 sampling step (each step's memory is the same), the synthetic clip.

    python3 bench/preset_memory.py --out $OUT                 # every shipped GPU preset (BENCHMARKS.md: the command)
    python3 bench/preset_memory.py --presets i2v-480p,t2v-720p-80gb --without-expandable t2v-720p-80gb
    python3 bench/preset_memory.py --tiny                     # the same path on the CPU with tiny weights (minutes)
    python3 bench/preset_memory.py --adopt RESULTS_DIR        # take a GPU call's results into the repository
    python3 bench/preset_memory.py --calibrate                # re-solve from bench/results/ (no GPU), print the table
    python3 bench/preset_memory.py --update-headers           # rewrite the presets' "estimates N GiB" header lines
`--adopt` does every step: copies RESULTS_DIR/preset_memory.json to bench/results/, solves the calibration from all
of bench/results/ into hvtui/core/env/memory_calibration.json, rewrites the preset headers and prints the tables for
BENCHMARKS.md; then `python3 -m pytest -q tests/core/env/test_fit.py` checks each measured run within 10%.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"

GiB = 1024 ** 3
BENCH_VERSION = 2   # 1 (2026-12-03, call 1): validation labelled before the validator released training's segments
# the card each preset names, as NVML reports its total (MiB -> GiB)
CARDS = {
    "t2v-480p-24gb": ("24 GB card (RTX 4090: 24564 MiB)", 24564 / 1024),
    "t2v-480p-24gb-int8": ("24 GB card (RTX 4090: 24564 MiB)", 24564 / 1024),
    "t2v-480p-80gb": ("80 GB card (H100 80GB HBM3: 81559 MiB)", 81559 / 1024),
    "t2v-720p-80gb": ("80 GB card (H100 80GB HBM3: 81559 MiB)", 81559 / 1024),
    "i2v-480p": ("40 GB card (A100 40GB: 40536 MiB)", 40536 / 1024),
}
# seconds one run took on the H200 in call 1 (process start to exit; i2v: like the 480p t2v presets), for
# deciding whether a run still fits in --time-limit; scaled by how the runs of this call compare
EXPECTED_S = {"t2v-480p-24gb": 80, "t2v-480p-24gb-int8": 100, "t2v-480p-80gb": 77, "t2v-720p-80gb": 86, "i2v-480p": 80}
TREE_EXPECTED_S = 50
MODEL_FOR = {"t2v-480p": "t2v-480p", "t2v-720p": "t2v-720p", "i2v-480p": "i2v-480p"}
# phase events -> step labels. "validating" is announced before the validator gives training's segments back:
# its own steps start at Validator.sample_frames (see _instrument)
STEP_OF_PHASE = {"loading": "loading", "caching": "caching:text", "training": "training",
                 "validating": "validation:start", "saving": "checkpointing", "done": "done"}
STEPS = ("caching:text", "caching:vae", "training", "checkpointing", "validation:denoise", "validation:decode")
MIN_FREE_GIB = 40
WITHOUT = "expandable_segments:False"   # what a run "without expandable segments" sets


def log(*a) -> None:
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------- the model tree

def _tiny_tokenizer():
    from hvtui.core.train.tiny import tiny_qwen_tokenizer

    return tiny_qwen_tokenizer()


def build_tree(root: Path, tiny: bool) -> None:
    """Child process: the three model folders (t2v-480p, t2v-720p, i2v-480p) in the diffusers layout."""
    import torch
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from transformers import (
        ByT5Tokenizer,
        Qwen2_5_VLTextConfig,
        Qwen2_5_VLTextModel,
        SiglipVisionConfig,
        SiglipVisionModel,
        T5Config,
        T5EncoderModel,
    )

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
        self.expandable_seen: bool | None = None
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

    def start(self) -> Sampler:
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
            if self.label == "training":   # were the step's segments expandable? (cuda_allocator.py's setting)
                try:
                    segments = torch.cuda.memory_snapshot()
                    self.expandable_seen = any(x.get("is_expandable") for x in segments) if segments else None
                except Exception as e:   # noqa: BLE001 - a measurement aid must never stop the run it measures
                    log(f"memory_snapshot failed ({e}); the run's allocator mode is taken as asked")
            torch.cuda.reset_peak_memory_stats()
        self.label, self._since = label, time.perf_counter()

    def stop(self) -> dict:
        self.switch("done")
        self._stop.set()
        self.thread.join()
        return {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in self.peaks.items()}


def _instrument(sampler: Sampler, spec: dict, seen: dict) -> None:
    """Name the step each part of the trainer runs in (wrappers around the functions the trainer calls), keep
    the speed handle for what it reports, and size speed.py's attention cache for the named card."""
    from hvtui.core.train import conditioning, run_setup, samples, speed

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
    # the validator releases training's segments, then samples: its steps start here (samples.Validator._run)
    samples.Validator.sample_frames = labelled(samples.Validator.sample_frames, "validation:denoise")
    samples.decode = labelled(samples.decode, "validation:decode", back="validation:end")
    # the transformer moves to the GPU (and gets its LoRA) after caching, before the "training" phase event
    prepare = run_setup.prepare_transformer

    def prepare_and_keep(*a, **k):
        transformer, params, handle = labelled(prepare, "training")(*a, **k)
        seen["speed"] = handle
        return transformer, params, handle

    run_setup.prepare_transformer = prepare_and_keep
    if sampler.cuda:   # room for the attention cache: the named card's, not the H200's (speed.HEADROOM x total)
        original = speed.prepare_transformer

        def for_the_card(*a, **k):
            k.setdefault("gpu_memory_bytes", int(spec["card_gib"] * GiB))
            return original(*a, **k)

        speed.prepare_transformer = for_the_card
    if spec["tiny"]:
        # the tiny tree is not the model the fit check and the system checks judge (no GPU, tiny weights): those
        # rows become warnings; every other doctor check (model files, encoder paths, preset) runs as in a run
        from hvtui.core.env import doctor

        run_doctor = doctor.run_doctor

        def doctor_for_tiny(*a, **k):
            report = run_doctor(*a, **k)
            for c in report.checks:
                if c.group in ("fit", "system") and c.status == doctor.FAIL:
                    c.status, c.detail = doctor.WARN, f"(tiny bench) {c.detail}"
            return report

        doctor.run_doctor = doctor_for_tiny


def child(spec_path: Path) -> int:
    """Child process: one run under the card's cap; writes the measurements next to the spec."""
    t_start = time.perf_counter()
    spec = json.loads(spec_path.read_text())
    # torch loads and CUDA starts before train() as in the TUI; train() then sets hvtui's allocator default the way
    # it does in every run (cuda_allocator.py), unless the parent set the "without" variable like a user's shell
    import torch

    from hvtui.core.env.cuda_allocator import user_setting
    from hvtui.core.preset.schema import preset_from_dict
    from hvtui.core.run.bus import Bus
    from hvtui.core.run.control import Control
    from hvtui.core.run.session import RunOptions
    from hvtui.core.train.loop import train

    cuda = torch.cuda.is_available() and not spec["tiny"]
    result = {"name": spec["name"], "card": spec["card"], "device": "cpu", "exit_code": None,
              "bench_version": BENCH_VERSION, "expandable": spec["expandable"],
              "allocator_setting_at_start": "=".join(user_setting(os.environ) or ())}
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
    seen: dict = {}
    _instrument(sampler, spec, seen)
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
    result["seconds_to_start"] = round(time.perf_counter() - t_start, 1)
    sampler.start()
    t0 = time.perf_counter()
    code = train(preset, bus, Control(None), RunOptions(file_control=False, write_events=True))
    result.update(exit_code=code, seconds=round(time.perf_counter() - t0, 1), steps=sampler.stop(), events=events)
    speed = seen.get("speed")
    if speed is not None and speed.shapes_seen:   # what the trainer ran: (batch, tokens) and the cached blocks
        batch, tokens = speed.shapes_seen[-1]
        result.update(train_tokens=int(tokens), train_batch=int(batch),
                      attention_cache_blocks=int(speed._cache_blocks.get((batch, tokens), 0)))
    result["allocator"] = next((e["message"] for e in events if str(e.get("message", "")).startswith("CUDA allocator")),
                               "")
    result["expandable_segments_seen"] = sampler.expandable_seen   # the training step's segments, as torch saw them
    result["oom"] = [e.get("message") for e in events if "out of memory" in str(e.get("message", "")).lower()]
    Path(spec["result"]).write_text(json.dumps(result, indent=1, default=str))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)   # the result is written: skip tearing down a process that held tens of GB (seconds per run)


# ----------------------------------------------------------------------------------------- the parent

def bench_preset(name: str, scratch: Path, models: Path, tiny: bool, compile_blocks: bool,
                 expandable: bool = True) -> tuple[dict, dict]:
    """(the preset as run, a spec for the child) for a shipped preset."""
    import tomllib

    from hvtui.core.dataset.synth import write_clip
    from hvtui.core.env.fit import largest_bucket
    from hvtui.core.preset.schema import preset_from_dict

    raw = tomllib.loads((REPO / "presets" / f"{name}.toml").read_text())
    tag = name if expandable else f"{name}-without-expandable"
    run = scratch / "runs" / tag
    shutil.rmtree(run, ignore_errors=True)
    model = models / MODEL_FOR[raw["model_flavour"]]
    # 2 steps; no mid-run checkpoint and no in-loop sample (validation_steps beyond the last step): the final
    # save then writes the checkpoint right after step 2, holding training's segments as a run's checkpoint
    # does, and the sample follows it (checkpointing.Checkpointer.final_save, then loop.Trainer._run)
    raw.update(pretrained_model_name_or_path=str(model), output_dir=str(run / "output"), max_train_steps=2,
               checkpointing_steps=0, validation_steps=1000, validation_num_inference_steps=1,
               compile_blocks=compile_blocks, lr_warmup_steps=0)
    for key in ("text_encoder_path", "vision_encoder_path"):   # the preset's ~/models/... -> this tree
        if raw.get(key) or (key == "vision_encoder_path" and raw["model_flavour"].startswith("i2v")):
            raw[key] = str(model)
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
    return raw, {"name": name, "tag": tag, "preset": raw, "tiny": tiny, "card": card, "card_gib": card_gib,
                 "expandable": expandable, "result": str(run / "result.json")}


def child_env(expandable: bool) -> dict:
    """The child's environment: hvtui's default allocator (neither variable set: train() sets expandable
    segments), or the user's choice "without"."""
    from hvtui.core.env.cuda_allocator import ENV, ENV_NEW

    env = {k: v for k, v in os.environ.items() if k not in (ENV, ENV_NEW)}
    if not expandable:
        env[ENV] = WITHOUT
    return env


def measured_steps(result: dict) -> dict:
    return {k: v for k, v in result.get("steps", {}).items() if k in STEPS}


def _label(run: dict) -> str:
    return run["name"] + ("" if run.get("expandable") else " (no expandable segments)")


def _err(est: float, measured: float) -> str:
    return f"{(est - measured) / measured * 100:+.1f}%" if measured else "-"


def load_results(paths: list[Path] | None = None) -> list[dict]:
    """Every measured run in bench/results/*preset-memory*.json (or `paths`), oldest first, each with its file."""
    runs = []
    for path in sorted(paths if paths is not None else RESULTS.glob("*preset-memory*.json")):
        data = json.loads(Path(path).read_text())
        for run in data.get("runs", []):
            if any(v.get("nvml_gib") for v in run.get("steps", {}).values()):
                runs.append({**run, "result_file": Path(path).name, "date": data.get("date", "")})
    return runs


def report(runs: list[dict], before: Path | None, after: Path | None) -> tuple[list[str], dict]:
    """The per-step table (estimate with the calibration before / after, vs measured) and a summary per run."""
    from hvtui.core.env import fit_calibrate

    lines = ["| run (card) | step | estimate before | after | measured NVML | measured allocated / reserved | "
             "after vs measured |", "|---|---|---|---|---|---|---|"]
    summary = {}
    for run in runs:
        est_b = fit_calibrate.estimate_for_run(run, before)
        est_a = fit_calibrate.estimate_for_run(run, after)
        steps = measured_steps(run)
        unreliable = fit_calibrate.UNRELIABLE_RESERVED.get(int(run.get("bench_version", 1)), set())
        for step in STEPS:
            m = steps.get(step)
            eb, ea = est_b.phase(step), est_a.phase(step)
            if eb is None and m is None:
                continue
            note = " (labelled before the release: training's segments)" if step in unreliable and m else ""
            if step == "checkpointing" and m and int(run.get("bench_version", 1)) < 2:
                note = " (written after the sample: training's segments already released)"
            lines.append(f"| {_label(run)} | {step} | {f'{eb.nvml_gib:.2f}' if eb else '-'} | "
                         f"{f'{ea.nvml_gib:.2f}' if ea else '-'} | "
                         f"{m['nvml_gib'] if m else '-'}{note} | {m['alloc_gib'] if m else '-'} / "
                         f"{m['reserved_gib'] if m else '-'} | "
                         f"{_err(ea.nvml_gib, m['nvml_gib']) if ea and m and not note else '-'} |")
        if not steps:
            continue
        stretches = {**steps, **(run.get("all_steps") or {})}   # the whole run, between steps too
        peak_step = max(stretches, key=lambda k: stretches[k]["nvml_gib"])
        peak = stretches[peak_step]
        e = (est_a.peak_gib - peak["nvml_gib"]) / peak["nvml_gib"] * 100
        lines.append(f"| **{_label(run)}** ({run['card']}) | **run peak** | "
                     f"{est_b.peak_gib:.1f} ({est_b.peak_phase}) | "
                     f"{est_a.peak_gib:.1f} ({est_a.peak_phase}) | {peak['nvml_gib']} ({peak_step}) | "
                     f"{peak['alloc_gib']} / {peak['reserved_gib']} | {e:+.1f}% |")
        summary[_label(run)] = {"estimate_before_gib": est_b.peak_gib, "estimate_after_gib": est_a.peak_gib,
                                "measured_nvml_gib": peak["nvml_gib"], "measured_step": peak_step,
                                "error_before_percent": round((est_b.peak_gib - peak["nvml_gib"])
                                                              / peak["nvml_gib"] * 100, 1),
                                "error_after_percent": round(e, 1)}
    return lines, summary


def evidence_table(cal: dict) -> list[str]:
    """Each constant of the calibration, its value and what it rests on."""
    lines = ["| constant | value | runs it rests on | per-run values |", "|---|---|---|---|"]
    for key, ev in sorted(cal.get("evidence", {}).items()):
        if key.startswith("fragmentation."):
            _, mode, step = key.split(".", 2)
            value = cal["fragmentation"][mode][step]
        else:
            value = cal.get(key)
        rests = f"{ev['n']}" if ev["n"] else "0 (prior)"
        lines.append(f"| {key} | {value} | {rests} | {', '.join(str(v) for v in ev['values'][:8])}"
                     f"{' ...' if len(ev['values']) > 8 else ''} |")
    return lines


def update_headers() -> int:
    """Rewrite each preset's "hvtui doctor estimates N GiB at the peak (phase)" from the current estimate."""
    from hvtui.core.env.fit import card_named_in, estimate_memory, largest_bucket
    from hvtui.core.preset.schema import load_preset

    pattern = re.compile(r"hvtui doctor estimates [\d.]+ GiB at the peak \(\w+\)")
    for name in CARDS:
        path = REPO / "presets" / f"{name}.toml"
        preset = load_preset(path)
        text = path.read_text()
        est = estimate_memory(preset, largest_bucket(preset, scan=False), expandable=True,
                              card_gib=card_named_in(text.split("\n\n", 1)[0]))
        new = pattern.sub(f"hvtui doctor estimates {est.peak_gib:.1f} GiB at the peak ({est.peak_phase})", text, 1)
        if new == text and not pattern.search(text):
            log(f"{path}: no 'hvtui doctor estimates N GiB at the peak (phase)' line in the header")
            return 1
        path.write_text(new)
        log(f"{path.name}: {est.peak_gib:.1f} GiB at the peak ({est.peak_phase})")
    return 0


def solve_all(extra: list[dict], source: str, out: Path) -> Path:
    """The calibration from every committed result plus `extra` (this call's runs), written to `out`."""
    from hvtui.core.env import fit_calibrate

    runs = load_results() + [r for r in extra if r.get("steps")]
    return fit_calibrate.write(fit_calibrate.solve(runs, source), out)


def print_tables(runs: list[dict], before: Path | None, after: Path, out: Path | None = None) -> dict:
    lines, summary = report(runs, before, after)
    cal = json.loads(after.read_text())
    from hvtui.core.env.fit_calibrate import leave_one_preset_out

    loo = leave_one_preset_out(load_results() + [r for r in runs if r.get("result_file") is None])
    text = ("\n".join(lines) + "\n\nLeave one preset out (each run estimated from a calibration solved without any "
            "run of its preset):\n\n| run | peak error |\n|---|---|\n"
            + "\n".join(f"| {k} | {v:+.1f}% |" for k, v in loo.items())
            + "\n\nThe calibration's constants:\n\n" + "\n".join(evidence_table(cal)) + "\n")
    if out is not None:
        (out / "table.md").write_text(text)
    log(text)
    for name, s in summary.items():
        log(f"{name}: doctor {s['estimate_after_gib']:.1f} GiB vs measured {s['measured_nvml_gib']} GiB "
            f"({s['error_after_percent']:+.1f}%; with the calibration before this call "
            f"{s['error_before_percent']:+.1f}%)")
    return {"summary": summary, "leave_one_preset_out": loo}


def committed_calibration(folder: Path) -> Path:
    """A copy, in `folder`, of the calibration the repository holds now (its priors where it holds none)."""
    from hvtui.core.env import fit_calibrate
    from hvtui.core.env.fit import CALIBRATION_FILE, calibration

    path = Path(folder) / "calibration-before.json"
    if CALIBRATION_FILE.is_file():
        return Path(shutil.copyfile(CALIBRATION_FILE, path))
    return fit_calibrate.write(calibration(priors=True), path)


def finish(runs: list[dict], out: Path, meta: dict) -> None:
    measured = [r for r in runs if any(v.get("nvml_gib") for v in r["steps"].values())]
    (out / "preset_memory.json").write_text(json.dumps({**meta, "runs": runs}, indent=1, default=str))
    if not measured:
        log(f"\nwrote {out / 'preset_memory.json'} (no GPU measurements: no calibration)")
        return
    try:
        before = committed_calibration(out)
        cal = solve_all(measured, f"bench/preset_memory.py: bench/results/ and {meta.get('device')} "
                                  f"{meta['date']}", out / "memory_calibration.json")
        meta.update(print_tables(measured, before, cal, out))
    except Exception:   # the measurements are already written: --adopt re-solves them on any machine
        import traceback

        log(traceback.format_exc()
            + f"\nsolving / printing failed; the measurements are in {out / 'preset_memory.json'}")
        return
    (out / "preset_memory.json").write_text(json.dumps({**meta, "runs": runs}, indent=1, default=str))
    log(f"\nwrote {out / 'preset_memory.json'}, {cal}, {out / 'table.md'}")


def adopt(results_dir: Path) -> int:
    """A GPU call's results into the repository: bench/results/, the calibration, the preset headers, the tables."""
    from hvtui.core.env import fit_calibrate
    from hvtui.core.env.fit import CALIBRATION_FILE

    src = Path(results_dir) / "preset_memory.json"
    if not src.is_file():
        log(f"{src}: not found (the GPU call writes preset_memory.json under its --out folder)")
        return 2
    data = json.loads(src.read_text())
    if data.get("tiny"):
        log(f"{src}: a --tiny run measures nothing; not adopted")
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "", str(data.get("device", "gpu")).lower().replace("nvidia", "")) or "gpu"
    mine = sorted(RESULTS.glob(f"{data['date']}-{slug}-preset-memory-*.json"))
    same = [p for p in mine if p.read_bytes() == src.read_bytes()]
    if same:
        dest = same[0]
        log(f"{src} is already {dest}")
    else:
        n = len(mine) + 1
        dest = RESULTS / f"{data['date']}-{slug}-preset-memory-{n}.json"
        shutil.copyfile(src, dest)
        log(f"copied {src} -> {dest}")
    runs = load_results()
    cal = fit_calibrate.solve(runs, f"bench/preset_memory.py --adopt: {len({r['result_file'] for r in runs})} "
                                    f"result file(s) in bench/results/, {len(runs)} runs, latest {data['date']}")
    with tempfile.TemporaryDirectory() as tmp:
        before = committed_calibration(Path(tmp))   # what this call was estimated with: the "before" column
        fit_calibrate.write(cal, CALIBRATION_FILE)
        log(f"wrote {CALIBRATION_FILE}")
        if update_headers():
            return 1
        print_tables([r for r in runs if r["result_file"] == dest.name], before, CALIBRATION_FILE)
    log("\nnext: python3 -m pytest -q tests/core/env/test_fit.py, then paste the tables into BENCHMARKS.md "
        "\"Memory calibration\" and commit bench/results/, hvtui/core/env/memory_calibration.json and presets/")
    return 0


def plan(args) -> list[tuple[str, bool]]:
    """(preset, expandable) in the order given, each with hvtui's default allocator (expandable segments); a
    preset named in --without-expandable runs again right after, without them (an A/B pair on the same tree)."""
    without = [n.strip() for n in (args.without_expandable or "").split(",") if n.strip()]
    runs = []
    for name in (n.strip() for n in args.presets.split(",") if n.strip()):
        runs.append((name, True))
        if name in without:
            runs.append((name, False))
    runs += [(n, False) for n in without if (n, False) not in runs]
    unknown = [n for n, _ in runs if n not in CARDS]
    if unknown:
        raise SystemExit(f"unknown preset(s) {', '.join(unknown)}; shipped GPU presets: {', '.join(CARDS)}")
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny weights on the CPU: proves the script, measures nothing")
    ap.add_argument("--presets", default=",".join(CARDS), help="comma-separated preset names, run in this order "
                    "with hvtui's default allocator (expandable segments)")
    ap.add_argument("--without-expandable", metavar="PRESETS", default="",
                    help=f"comma-separated presets to run again with PYTORCH_CUDA_ALLOC_CONF={WITHOUT}, each right "
                    "after its default run")
    ap.add_argument("--scratch", default=os.environ.get("SCRATCH", "/tmp/hvtui-preset-memory"))
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/hvtui-preset-memory-out"))
    ap.add_argument("--time-limit", type=float, default=530.0,
                    help="seconds for the whole command; a run that would end past it is skipped, not started")
    ap.add_argument("--compile", action="store_true", help="keep the presets' compile_blocks (slower)")
    ap.add_argument("--calibrate", action="store_true", help="re-solve from bench/results/ and print the tables")
    ap.add_argument("--adopt", metavar="RESULTS_DIR", help="take a GPU call's --out folder into the repository")
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
    if args.adopt:
        return adopt(Path(args.adopt))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.calibrate:
        before = committed_calibration(out)
        cal = solve_all([], "bench/preset_memory.py --calibrate: bench/results/", out / "memory_calibration.json")
        print_tables(load_results(), before, cal, out)
        return 0

    todo = plan(args)
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
    meta = {"date": time.strftime("%Y-%m-%d"), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(sys.argv), "tiny": args.tiny, "compile_blocks": args.compile,
            "scratch_free_gib": round(free, 1), "bench_version": BENCH_VERSION,
            "tree_seconds": round(time.perf_counter() - t_start, 1)}
    try:
        meta["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    runs, paces = [], []   # this call's run times over call 1's: the slowest so far sets the next estimate
    for name, expandable in todo:
        elapsed = time.perf_counter() - t_start
        expected = EXPECTED_S[name] * (max(paces) if paces else 1.0) * (0.1 if args.tiny else 1.0)
        label = name + ("" if expandable else " without expandable segments")
        if elapsed + expected > args.time_limit:
            log(f"skipping {label}: {elapsed:.0f}s spent, it would take ~{expected:.0f}s more "
                f"(--time-limit {args.time_limit:.0f})")
            runs.append({"name": name, "card": CARDS[name][0], "expandable": expandable, "steps": {},
                         "skipped": "time limit", "bench_version": BENCH_VERSION})
            continue
        raw, spec = bench_preset(name, scratch, models, args.tiny, args.compile, expandable)
        spec_path = scratch / "runs" / spec["tag"] / "spec.json"
        spec_path.write_text(json.dumps(spec))
        log(f"== {label}: {spec['card']}, model {raw['pretrained_model_name_or_path']}")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(spec_path)], capture_output=True, text=True,
                              env=child_env(expandable))
        took = time.perf_counter() - t0
        (out / f"{spec['tag']}.log").write_text(proc.stdout + proc.stderr)
        result_path = Path(spec["result"])
        if proc.returncode != 0 or not result_path.is_file():
            log(f"   {label}: the run process failed (exit {proc.returncode}); tail of {out / (spec['tag'] + '.log')}:")
            log("\n".join((proc.stdout + proc.stderr).splitlines()[-15:]))
            runs.append({"name": name, "card": spec["card"], "preset": raw, "steps": {}, "failed": proc.returncode,
                         "expandable": expandable, "bench_version": BENCH_VERSION})
            continue
        if not args.tiny:
            paces.append(took / EXPECTED_S[name])
        result = json.loads(result_path.read_text())
        meta.setdefault("device", result.get("device"))
        meta.setdefault("torch", result.get("torch"))
        steps = measured_steps(result)
        runs.append({**result, "preset": raw, "steps": steps, "all_steps": result.get("steps"),
                     "process_seconds": round(took, 1)})
        log(f"   exit {result['exit_code']} in {took:.0f}s ({result.get('seconds_to_start')}s to start, "
            f"{result.get('seconds')}s training run); {result.get('allocator')}; "
            + ", ".join(f"{k} {v['nvml_gib']:.1f}" for k, v in steps.items())
            + (f"; OOM: {result['oom']}" if result.get("oom") else ""))
        if result.get("expandable_segments_seen") not in (None, expandable):
            were = "were" if result["expandable_segments_seen"] else "were not"
            log(f"   the training step's segments {were} expandable, "
                f"although this run asked for {'them' if expandable else 'none'}: the calibration follows the segments")
        if result["exit_code"] != 0:
            log("   the run did not finish: " + "; ".join(str(e.get("message")) for e in result["events"]
                                                           if e["kind"] == "error")[:600])
    meta["seconds"] = round(time.perf_counter() - t_start, 1)
    finish(runs, out, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
