"""Validation sampling follows the checkpoint: guidance from its guider (CFG-distilled: none), steps and shift from
its configs or Tencent's table; a preset's explicit values win, with a warning for CFG on a distilled checkpoint.
Training sigmas: every mode that takes a shift uses flow_schedule_shift."""
import json

import pytest
import torch

from hvtui.core.preset.schema import Preset
from hvtui.core.samples.sampling import sampling_settings
from hvtui.core.train import step
from tests.helpers.doctor_trees import copy_tree


def test_flavour_table_when_the_checkpoint_has_no_guider():
    s = sampling_settings(Preset(pretrained_model_name_or_path="builtin:tiny", model_flavour="t2v-480p-distilled"))
    assert (s.guidance, s.steps, s.shift, s.uses_cfg) == (1.0, 50, 5.0, False)
    assert "480p_t2v_distilled" in s.guidance_source and not s.warning()
    s = sampling_settings(Preset(pretrained_model_name_or_path="builtin:tiny", model_flavour="i2v-480p-step-distilled"))
    assert (s.guidance, s.steps, s.shift) == (1.0, 12, 7.0)
    s = sampling_settings(Preset(pretrained_model_name_or_path="builtin:tiny", model_flavour="t2v-720p"))
    assert (s.guidance, s.steps, s.shift, s.uses_cfg) == (6.0, 50, 9.0, True)


def test_the_checkpoints_guider_and_scheduler_win_over_the_table(tmp_path, model_trees):
    tree = copy_tree(model_trees["diffusers"], tmp_path / "model")
    guider = tree / "guider" / "guider_config.json"
    cfg = json.loads(guider.read_text())
    cfg["guidance_scale"] = 1.0                      # a CFG-distilled checkpoint, whatever the flavour says
    guider.write_text(json.dumps(cfg))
    sched = tree / "scheduler" / "scheduler_config.json"
    sched.write_text(json.dumps({**json.loads(sched.read_text()), "shift": 7.0}))
    p = Preset(pretrained_model_name_or_path=str(tree), model_flavour="i2v-480p")
    s = sampling_settings(p, env={})
    assert (s.guidance, s.shift, s.cfg_distilled) == (1.0, 7.0, True)
    assert "guider_config.json" in s.guidance_source and "scheduler_config.json" in s.shift_source
    p.validation_guidance, p.validation_num_inference_steps = 6.0, 20
    s = sampling_settings(p, env={})
    assert (s.guidance, s.steps, s.uses_cfg) == (6.0, 20, True)
    assert "CFG-distilled" in s.warning() and "validation_guidance = 6" in s.warning()


@pytest.mark.slow
@pytest.mark.parametrize("flavour, guidance, calls_per_step", [("t2v-480p-distilled", None, 1),
                                                               ("t2v-480p", None, 2), ("t2v-480p-distilled", 3.0, 2)])
def test_validation_calls_the_transformer_as_the_guidance_says(tmp_path, flavour, guidance, calls_per_step):
    from tests.core.train.test_train_model_validate import _setup

    from hvtui.core.train import samples

    p, comps, index, tr = _setup(tmp_path, flavour, guidance=guidance)
    logs = []
    v = samples.Validator(p, comps, index, "cpu", publish=logs.append)
    calls = []
    hook = tr.register_forward_pre_hook(lambda *a: calls.append(1))
    frames = v.sample_frames(tr, 0)
    hook.remove()
    assert frames.shape == (5, 48, 32, 3)
    assert len(calls) == 2 * calls_per_step                  # 2 steps (validation_num_inference_steps = 2)
    text = " ".join(str(e.data.get("message", "")) for e in logs)
    assert "validation sampling: guidance" in text
    assert ("CFG-distilled" in text) == (flavour.endswith("distilled") and guidance is not None)


def test_the_shift_applies_to_logit_normal_and_shifted_draws():
    g = lambda: torch.Generator().manual_seed(0)   # noqa: E731
    plain = Preset(timestep_sampling="logit_normal", flow_schedule_shift=1.0)
    shifted = Preset(timestep_sampling="logit_normal", flow_schedule_shift=3.0)
    a, b = step.sample_sigmas(plain, 2000, g()), step.sample_sigmas(shifted, 2000, g())
    assert torch.allclose(b, 3 * a / (1 + 2 * a), atol=1e-6) and b.mean() > a.mean() + 0.1
    default = Preset(timestep_sampling="logit_normal", model_flavour="t2v-720p")   # the flavour's shift: 9
    assert torch.allclose(step.sample_sigmas(default, 2000, g()), 9 * a / (1 + 8 * a), atol=1e-6)
    u = step.sample_sigmas(Preset(timestep_sampling="uniform", flow_schedule_shift=3.0), 2000, g())
    assert torch.equal(u, torch.rand(2000, generator=g()))        # uniform takes no shift


def test_a_meanflow_transformer_trains_with_r_equal_t():
    """The step-distilled checkpoint (use_meanflow): the loss's model call passes timestep_r = timestep."""
    from diffusers import HunyuanVideo15Transformer3DModel

    from hvtui.core.train.tiny import D_BYT5, D_IMG, D_TXT

    torch.manual_seed(0)
    tr = HunyuanVideo15Transformer3DModel(
        in_channels=65, out_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=1,
        num_refiner_layers=1, mlp_ratio=2.0, text_embed_dim=D_TXT, text_embed_2_dim=D_BYT5,
        image_embed_dim=D_IMG, rope_axes_dim=(4, 6, 6), target_size=64, task_type="i2v", use_meanflow=True).eval()
    g = torch.Generator().manual_seed(0)
    batch = step.collate([dict(latents=torch.randn(32, 2, 4, 4, generator=g), text=torch.randn(5, D_TXT, generator=g),
                               text_2=torch.zeros(0, D_BYT5), image=torch.zeros(0, D_IMG))])
    noise = torch.randn(1, 32, 2, 4, 4, generator=g)
    with torch.no_grad():
        _, pred = step.flow_matching_loss(tr, batch, torch.tensor([0.4]), noise=noise, return_pred=True)
        kw = step.model_inputs(tr, batch, (0.4 * noise + 0.6 * batch["latents"]), torch.tensor([400.0]))
        assert torch.equal(kw["timestep_r"], kw["timestep"])
        without_r = tr(**{k: v for k, v in kw.items() if k != "timestep_r"})[0]
    assert torch.allclose(pred, tr(**kw)[0]) and not torch.allclose(pred, without_r)
