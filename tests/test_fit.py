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
    assert untiled.caching_gib > 40 and untiled.peak_gib == untiled.caching_gib
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
    assert four.training_gib == pytest.approx(one.training_gib + F.DATA_PARALLEL_GIB)
    assert "NCCL 0.6" in four.breakdown()
