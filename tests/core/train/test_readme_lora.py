"""README "Use your LoRA": the diffusers snippet runs as written on the tiny model saved in the diffusers layout.

Only the values of its settings lines change (model folder, LoRA file, device and a tiny size); every other line
runs as the README has it. The tiny tokenizer's template length is not the real one's (REFERENCE.md trap 6), so
`from_pretrained` is wrapped to set those attributes after the real loader ran.
"""
import re

import pytest
import torch

from hvtui.core.preset.schema import Preset
from hvtui.core.train import lora, tiny
from hvtui.core.train.video_io import count_frames
from tests.helpers.repo_paths import README

pytestmark = pytest.mark.slow


def readme_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Use your LoRA", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def with_settings(code: str, values: dict) -> str:
    lines = code.splitlines()
    for i, line in enumerate(lines):
        for name, value in values.items():
            if line.startswith(name + " = "):
                lines[i] = f"{name} = {value}"
    changed = [a for a, b in zip(code.splitlines(), lines, strict=True) if a != b]
    assert len(changed) == len(values), f"the README snippet's settings lines moved: {changed}"
    return "\n".join(lines)


def test_readme_diffusers_snippet_runs(tmp_path, monkeypatch):
    from diffusers import HunyuanVideo15Pipeline

    comps = tiny.tiny_components("t2v", seed=0)
    model = tmp_path / "HunyuanVideo-1.5-Diffusers-tiny"
    HunyuanVideo15Pipeline(**comps).save_pretrained(model)
    torch.manual_seed(1)
    tr = comps["transformer"]
    lora.add_lora(tr, Preset(lora_rank=4, lora_alpha=8, gradient_checkpointing=False))
    with torch.no_grad():
        for name, p in tr.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    lora_file = lora.save_lora(tr, tmp_path / "output")[0]

    real = HunyuanVideo15Pipeline.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        pipe = real(cls, *args, **kwargs)
        tiny.configure_pipeline(pipe)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    monkeypatch.setattr(HunyuanVideo15Pipeline, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.chdir(tmp_path)
    code = with_settings(readme_snippet(), {"model": repr(str(model)), "lora": repr(str(lora_file)),
                                            "device, height, width, frames, steps": '"cpu", 32, 48, 5, 2'})
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)

    assert count_frames(tmp_path / "sample.mp4") == 5
    pipe, video = ns["pipe"], ns["video"]
    assert "mine" in pipe.transformer.peft_config and video.shape == (5, 32, 48, 3)
    pipe.transformer.disable_adapters()          # the same call without the LoRA differs: it was applied
    plain = pipe(prompt="A golden retriever runs along a beach at sunset.", height=32, width=48, num_frames=5,
                 num_inference_steps=2, output_type="np", generator=torch.Generator("cpu").manual_seed(0)).frames[0]
    assert abs(plain - video).max() > 1e-3
