"""The memory estimate against the measured points in REFERENCE.md, and how the preset moves it."""
from pathlib import Path

import pytest

from hvtui.core import fit as F
from hvtui.core.preset import Preset, load_preset

ROOT = Path(__file__).resolve().parent.parent
GB = 1e9 / F.GiB   # GiB per GB

# The reference runs: full-size transformer, LoRA r16 on the 8 attention projections, AdamW (fp32 state),
# gradient checkpointing, batch 1, diffusers' stock attention processor, 120 valid text tokens.
REF = Preset(pretrained_model_name_or_path="/m", lora_rank=16, optimizer="adamw", lora_targets="attention")


def within(estimate, measured, tol=0.15):
    return abs(estimate - measured) / measured <= tol


@pytest.mark.parametrize("bucket, kwargs, measured_gib", [
    ((848, 480, 61), dict(stock_attention=True, text_tokens=120), 24.8),       # valid tokens, no mask in SDPA
    ((1280, 720, 61), dict(stock_attention=True, text_tokens=120), 39.5),
    ((848, 480, 61), dict(padded=True), 27.5),                                 # pipeline-shaped padded reference
])
def test_calibrated_against_measured_peaks(bucket, kwargs, measured_gib):
    est = F.estimate_memory(REF, bucket, **kwargs)
    assert within(est.training_gib, measured_gib), (est.training_gib, measured_gib, est.breakdown())


def test_offload_floor():
    # REFERENCE.md: all block weights offloaded at 848x480x61 -> "about 10-11 GB"
    est = F.estimate_memory(REF, (848, 480, 61), offload=True, text_tokens=120)
    assert within(est.training_gib / GB, 10.5), est.breakdown()
    assert est.weights_gib < 1.0 and est.offload


def test_shapes_and_counts():
    assert F.video_tokens(848, 480, 61) == 16 * 30 * 53 == 25_440
    assert F.video_tokens(1280, 720, 121) == 31 * 45 * 80
    assert F.lora_params(16) == 54 * 8 * 16 * 4096 == 28_311_552
    assert F.lora_params(16, "attention+mlp") > 2 * F.lora_params(16)
    assert F.NONBLOCK_PARAMS + F.NUM_BLOCKS * F.BLOCK_PARAMS == F.TRANSFORMER_PARAMS


def test_preset_settings_move_the_estimate():
    base = F.estimate_memory(REF, (848, 480, 61))
    assert base.mask_gib == 0              # hvtui's packed attention at batch 1: no mask
    assert 15.4 < base.weights_gib < 15.6  # 8.33B bf16 params
    for mode in ("int8-torchao", "fp8-torchao"):   # quantized blocks: 1 byte per weight (+ bf16 rest)
        quantized = F.estimate_memory(Preset(pretrained_model_name_or_path="/m", base_model_precision=mode),
                                      (848, 480, 61))
        assert 7.8 < quantized.weights_gib < 0.52 * base.weights_gib
    batch2 = F.estimate_memory(Preset(pretrained_model_name_or_path="/m", train_batch_size=2), (848, 480, 61))
    assert batch2.mask_gib > 0 and batch2.activations_gib > 1.9 * base.activations_gib
    no_ckpt = F.estimate_memory(Preset(pretrained_model_name_or_path="/m", gradient_checkpointing=False),
                                (848, 480, 61))
    assert no_ckpt.training_gib > 100
    bigger = F.estimate_memory(REF, (1280, 720, 121))
    assert bigger.training_gib > F.estimate_memory(REF, (1280, 720, 61)).training_gib
    untiled = F.estimate_memory(Preset(pretrained_model_name_or_path="/m", vae_enable_tiling=False), (848, 480, 61))
    assert untiled.caching_gib > 40 and untiled.peak_phase == "caching"
    i2v = F.estimate_memory(Preset(pretrained_model_name_or_path="/m", model_flavour="i2v-480p"), (848, 480, 61))
    assert i2v.tokens == base.tokens + F.IMAGE_TOKENS


def test_builtin_tiny_is_negligible():
    est = F.estimate_memory(load_preset(ROOT / "presets" / "demo.toml"))
    assert est.builtin and est.peak_gib < 0.5 and "builtin tiny model" in est.breakdown()


def test_largest_bucket_from_preset_maths():
    p = Preset(pretrained_model_name_or_path="/m", datasets=[])
    assert F.largest_bucket(p, scan=False).key == "848x480@61"            # the flavour default
    from hvtui.core.preset import DatasetSpec, VideoSpec

    p.datasets = [DatasetSpec(id="a", resolution=480, video=VideoSpec(num_frames=61)),
                  DatasetSpec(id="b", resolution=720, video=VideoSpec(num_frames=33)),
                  DatasetSpec(id="c", resolution=720, video=VideoSpec(num_frames=121), disabled=True)]
    shape = F.largest_bucket(p, scan=False)
    assert (shape.key, shape.source) == ("1280x720@33", "preset maths")


def test_largest_bucket_from_the_dataset_scan():
    shape = F.largest_bucket(load_preset(ROOT / "presets" / "demo.toml"))
    assert shape.source in ("dataset scan", "preset maths")
    assert shape.frames == 9 and shape.width * shape.height <= 128 * 128


def test_a_data_parallel_run_adds_nccls_buffers_to_each_gpu():
    one = F.estimate_memory(REF, (848, 480, 61))
    four = F.estimate_memory(REF, (848, 480, 61), processes=4)
    assert one.comm_gib == 0 and "NCCL" not in one.breakdown()
    assert four.training_gib == pytest.approx(one.training_gib)          # outside torch's allocator
    assert four.peak_gib == pytest.approx(one.peak_gib + F.DATA_PARALLEL_GIB)
    assert "NCCL 0.6" in four.breakdown()


# ------------------------------------------------------------------------------------------ the run, by phase

VAL = dict(validation_steps=100, validation_prompt="a dog", validation_resolution="848x480",
           validation_num_video_frames=61)


def test_every_phase_and_the_peak_as_nvml_sees_it():
    p = Preset(pretrained_model_name_or_path="/m", **VAL)
    est = F.estimate_memory(p, (848, 480, 61))
    assert [x.name for x in est.phases] == list(F.PHASES)
    assert est.peak_gib == max(x.nvml_gib for x in est.phases)
    cal = F.calibration()
    for x in est.phases[:3]:   # nvml = allocated x (1 + the phase's reserved overhead) + the CUDA context
        want = x.allocated_gib * (1 + cal["reserved_overhead"][x.name]) + cal["cuda_context_gib"]
        assert x.nvml_gib == pytest.approx(want, abs=2e-3) and x.allocated_gib == pytest.approx(sum(x.parts.values()), abs=2e-3)
    train, ckpt = est.phase("training"), est.phase("checkpointing")
    assert ckpt.nvml_gib == train.nvml_gib and ckpt.allocated_gib < train.allocated_gib   # cache still held
    assert "VAE" not in train.parts and "VAE" in est.phase("validation").parts   # parked in host memory while training
    val = est.phase("validation")
    assert "activations" not in val.parts and val.parts["LoRA+optimizer"] < train.parts["LoRA+optimizer"]
    no_val = F.estimate_memory(Preset(pretrained_model_name_or_path="/m"), (848, 480, 61))
    assert no_val.phase("validation") is None and "VAE" not in no_val.phase("training").parts


def test_validation_decode_and_tiling_move_the_peak():
    big = dict(VAL, validation_resolution="1280x720", validation_num_video_frames=121)
    tiled = F.estimate_memory(Preset(pretrained_model_name_or_path="/m", enable_group_offload=True, **big),
                              (848, 480, 61))
    untiled = F.estimate_memory(Preset(pretrained_model_name_or_path="/m", enable_group_offload=True,
                                       vae_enable_tiling=False, **big), (848, 480, 61))
    assert untiled.peak_phase == "validation" and "VAE decode" in untiled.phase("validation").note
    assert untiled.phase("validation").nvml_gib > tiled.phase("validation").nvml_gib + 10
    assert "validation sampling needs" in __import__("hvtui.core.doctor", fromlist=["x"])._fit_hint(
        untiled, Preset(pretrained_model_name_or_path="/m", vae_enable_tiling=False, **big), 20 * F.GiB)


def test_offload_moves_the_peak_to_caching_and_counts_the_pinned_weights():
    est = F.estimate_memory(Preset(pretrained_model_name_or_path="/m", enable_group_offload=True, **VAL),
                            (848, 480, 61))
    assert est.peak_phase == "caching" and "text encoders" in est.phase("caching").parts
    assert 14 < est.host_pinned_gib < 15.5 and est.weights_gib < 1.0


def test_the_transformers_weight_bytes_come_from_one_place():
    bf16, _ = F.transformer_weight_bytes(Preset(), offload=False)
    int8, _ = F.transformer_weight_bytes(Preset(base_model_precision="int8-torchao"), offload=False)
    assert bf16 == F.TRANSFORMER_PARAMS * 2
    assert int8 == F.NONBLOCK_PARAMS * 2 + F.NUM_BLOCKS * F.BLOCK_PARAMS
    gpu, host = F.transformer_weight_bytes(Preset(group_offload_blocks_per_group=2), offload=True)
    assert gpu == F.NONBLOCK_PARAMS * 2 + 4 * F.BLOCK_PARAMS * 2 and host == F.NUM_BLOCKS * F.BLOCK_PARAMS * 2
    est = F.estimate_memory(Preset(pretrained_model_name_or_path="/m", base_model_precision="int8-torchao"),
                            (848, 480, 61))
    assert est.weights_gib == pytest.approx(int8 / F.GiB, abs=1e-6)


def test_a_calibration_file_replaces_the_defaults(tmp_path):
    p = Preset(pretrained_model_name_or_path="/m", **VAL)
    base = F.estimate_memory(p, (848, 480, 61))
    path = tmp_path / "memory_calibration.json"
    path.write_text('{"source": "test", "cuda_context_gib": 2.0, "reserved_overhead": {"training": 0.5},'
                    ' "not_a_constant": 1}')
    est = F.estimate_memory(p, (848, 480, 61), calibration_file=path)
    assert est.calibration == "test"
    ctx = 2.0 - F.DEFAULT_CALIBRATION["cuda_context_gib"]
    assert est.phase("caching").nvml_gib == pytest.approx(base.phase("caching").nvml_gib + ctx, abs=2e-3)
    assert est.phase("training").nvml_gib == pytest.approx(est.phase("training").allocated_gib * 1.5 + 2.0, abs=2e-3)


def test_i2v_samples_decode_at_the_training_clips_size():
    p = Preset(pretrained_model_name_or_path="/m", model_flavour="i2v-480p", **dict(VAL, validation_resolution="64x64"))
    shape = F.validation_shape(p, F.BucketShape(848, 480, 61))
    assert (shape.width, shape.height, shape.frames) == (848, 480, 61)
    t2v = F.validation_shape(Preset(**dict(VAL, validation_resolution="640x368")), F.BucketShape(848, 480, 61))
    assert (t2v.width, t2v.height) == (640, 368)


def test_shipped_preset_headers_quote_the_estimate():
    """Header, doctor and hints quote one number: the header says what estimate_memory says for the preset."""
    import re

    for name in ("t2v-480p-24gb", "t2v-480p-80gb", "t2v-720p-80gb", "i2v-480p"):
        path = ROOT / "presets" / f"{name}.toml"
        header = path.read_text().split("\n\n", 1)[0]
        m = re.search(r"hvtui doctor estimates ([\d.]+) GiB at the peak \((\w+)", header)
        assert m, f"{path}: the header must quote the estimate ('hvtui doctor estimates N GiB at the peak (phase')"
        preset = load_preset(path)
        est = F.estimate_memory(preset, F.largest_bucket(preset, scan=False))
        assert (float(m.group(1)), m.group(2)) == (round(est.peak_gib, 1), est.peak_phase), (
            f"{path}: update the header to {est.peak_gib:.1f} GiB ({est.peak_phase}); "
            "`python bench/preset_memory.py --update-headers` does it")
        card = re.search(r"on an? (\d+) GB card", header)
        assert card and est.peak_gib <= int(card.group(1)) * 1e9 / F.GiB, (path, est.peak_gib)


def test_calibration_recovers_the_constants_that_made_the_measurements(tmp_path):
    """fit_calibrate.solve inverts the estimate: runs whose every step's peaks come from a known calibration
    give that calibration back (the bench feeds it the H200's measurements)."""
    import json

    from hvtui.core import fit_calibrate

    true = {"cuda_context_gib": 1.3, "train_work_per_token": 130_000, "infer_work_per_token": 55_000,
            "text_encode_work_gib": 1.7, "vae_encode_tiled_gib_per_frame": 0.09, "vae_decode_tiled_gib_per_frame": 0.21,
            "reserved_overhead": {"caching": 0.02, "training": 0.22, "validation": 0.07, "checkpointing": 0.0}}
    true_file = tmp_path / "true.json"
    true_file.write_text(json.dumps(true))
    runs = []
    for name in ("t2v-480p-24gb", "t2v-480p-80gb", "t2v-720p-80gb", "i2v-480p"):
        raw = __import__("tomllib").loads((ROOT / "presets" / f"{name}.toml").read_text())
        preset = load_preset(ROOT / "presets" / f"{name}.toml")
        est = F.estimate_memory(preset, F.largest_bucket(preset, scan=False), calibration_file=true_file)
        steps = {x.name: {"alloc_gib": x.allocated_gib, "nvml_gib": x.nvml_gib,
                          "reserved_gib": x.nvml_gib - true["cuda_context_gib"]} for x in est.steps}
        raw["datasets"][0]["instance_data_dir"] = str(tmp_path)      # the same preset, data anywhere
        runs.append({"preset": raw, "steps": steps})
    got = fit_calibrate.solve(runs, "test")
    for key, value in true.items():
        if key == "reserved_overhead":
            for phase in ("caching", "training", "validation"):
                assert got[key][phase] == pytest.approx(value[phase], abs=2e-3), phase
        else:
            assert got[key] == pytest.approx(value, rel=2e-2), key
    path = fit_calibrate.write(got, tmp_path / "memory_calibration.json")
    again = F.estimate_memory(load_preset(ROOT / "presets" / "t2v-480p-80gb.toml"), calibration_file=path)
    want = F.estimate_memory(load_preset(ROOT / "presets" / "t2v-480p-80gb.toml"), calibration_file=true_file)
    assert again.peak_gib == pytest.approx(want.peak_gib, rel=1e-2)


def test_the_estimate_is_within_10_percent_of_the_measured_preset_runs():
    """bench/preset_memory.py's full-size runs (bench/results/*-preset-memory.json, BENCHMARKS.md "Memory
    calibration"): with the committed calibration, each run's estimated peak is within 10% of its NVML peak."""
    import json

    from hvtui.core.preset import preset_from_dict

    results = sorted((ROOT / "bench" / "results").glob("*preset-memory*.json"))
    if not results:
        pytest.skip("no measured preset runs yet: run bench/preset_memory.py on the GPU (BENCHMARKS.md)")
    data = json.loads(results[-1].read_text())
    checked = 0
    for run in data["runs"]:
        steps = {k: v for k, v in run.get("steps", {}).items() if v.get("nvml_gib")}
        if not steps:
            continue
        preset = preset_from_dict(run["preset"])
        est = F.estimate_memory(preset, F.largest_bucket(preset, scan=False))
        measured = max(v["nvml_gib"] for v in steps.values())
        assert abs(est.peak_gib - measured) / measured <= 0.10, (run["name"], est.peak_gib, measured)
        checked += 1
    assert checked, f"{results[-1]} holds no measured run"
