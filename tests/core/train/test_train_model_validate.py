"""Validation sampling from cached embeddings (text encoders gone) with the LoRA active, written as mp4."""
import numpy as np
import pytest
import torch

from hvtui.core.dataset.scan import scan_preset
from hvtui.core.dataset.synth import write_clip
from hvtui.core.preset.schema import preset_from_dict
from hvtui.core.train import latent_cache, lora, samples, video_io
from hvtui.core.train.components import load_components, make_pipeline

pytestmark = pytest.mark.slow


def _setup(tmp_path, flavour, guidance=1.0):
    data = tmp_path / "clips"
    data.mkdir()
    write_clip(data / "a.mp4", 64, 64, fps=8, frames=5, colour="red")
    (data / "a.txt").write_text("a red square moves right")
    p = preset_from_dict({
        "pretrained_model_name_or_path": "builtin:tiny", "model_flavour": flavour, "mixed_precision": "no",
        "base_model_precision": "no_change", "output_dir": str(tmp_path / "out"), "lora_rank": 4,
        "validation_prompt": 'a red square "GO"', "validation_resolution": "32x48", "validation_num_video_frames": 5,
        "validation_num_inference_steps": 2, "validation_guidance": guidance, "validation_negative_prompt": "",
        "datasets": [{"id": "clips", "instance_data_dir": str(data), "resolution": 64,
                      "video": {"num_frames": 5, "min_frames": 5}}]}, source=tmp_path / "p.toml")
    comps = load_components(p, "cpu")
    index = latent_cache.build_cache(p, scan_preset(p, use_cache=False), comps, "cpu")
    tr = comps["transformer"]
    lora.add_lora(tr, p)
    g = torch.Generator().manual_seed(0)
    for name, prm in tr.named_parameters():   # a LoRA that visibly changes the output
        if "lora_B" in name:
            prm.data = torch.randn(prm.shape, generator=g) * 0.3
    return p, comps, index, tr


@pytest.fixture(scope="module")
def t2v(tmp_path_factory):
    return _setup(tmp_path_factory.mktemp("t2v"), "t2v-480p", guidance=3.0)


def test_t2v_validation_matches_stock_pipeline_and_writes_mp4(t2v):
    p, comps, index, tr = t2v
    assert "text_encoder" not in comps                       # encoders freed after caching
    events = []
    v = samples.Validator(p, comps, index, "cpu", publish=events.append)
    ours = v.sample_frames(tr, 0)
    assert ours.shape == (5, 48, 32, 3)
    # the stock pipeline, text encoders present, padded prompts + masks, same transformer and seed
    enc = load_components(p, "cpu", parts=("text",))
    full = dict(comps, transformer=tr, **{k: enc[k] for k in ("text_encoder", "tokenizer", "text_encoder_2",
                                                                 "tokenizer_2")})
    stock = make_pipeline(full)
    stock.guider = type(stock.guider)(guidance_scale=3.0)
    with torch.no_grad():
        ref = stock(prompt=p.validation_prompt, negative_prompt="", height=48, width=32, num_frames=5,
                    num_inference_steps=2, generator=torch.Generator().manual_seed(p.validation_seed),
                    output_type="np").frames[0]
    assert np.abs(ours - ref).max() < 1e-4
    tr.disable_adapters()
    base = v.sample_frames(tr, 0)
    tr.enable_adapters()
    assert np.abs(ours - base).max() > 1e-3                  # the LoRA is active in validation
    tr.train()
    paths = v.run(tr, step=7)
    assert [x.name for x in paths] == ["step000007-0.mp4"] and video_io.count_frames(paths[0]) == 5
    assert tr.training                                       # back to training mode
    assert events[-1].kind == "sample" and events[-1].data["step"] == 7


def test_failures_are_typed_and_training_mode_is_restored(t2v, monkeypatch):
    p, comps, index, tr = t2v
    tr.train()
    v = samples.Validator(p, comps, index, "cpu")

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(samples.Validator, "sample_frames", oom)
    with pytest.raises(samples.ValidationError) as e:
        v.run(tr, step=3)
    assert e.value.oom and tr.training
    monkeypatch.undo()
    monkeypatch.setattr(p, "validation_resolution", "big")
    with pytest.raises(samples.ValidationError, match="not WxH") as e:
        v.run(tr, step=3)
    assert not e.value.oom and tr.training
