"""LoRA: targets, fp32 params, training moves the loss, save -> diffusers load_lora_adapter gives the same
output, the ComfyUI export uses ComfyUI's module names."""
import pytest
import torch
from safetensors.torch import load_file

from hvtui.core.preset.schema import Preset
from hvtui.core.train import lora, step
from hvtui.core.train.tiny import D_BYT5, D_IMG, D_TXT, tiny_transformer

pytestmark = pytest.mark.slow


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return step.collate([dict(latents=torch.randn(32, 3, 4, 4, generator=g), text=torch.randn(6, D_TXT, generator=g),
                              text_2=torch.randn(3, D_BYT5, generator=g), image=torch.zeros(0, D_IMG))])


def _eval_loss(tr, batch):
    g = torch.Generator().manual_seed(123)
    sig = torch.tensor([0.2, 0.5, 0.8, 0.95])
    noise = torch.randn(4, 1, 32, 3, 4, 4, generator=g)
    with torch.no_grad():
        return sum(step.flow_matching_loss(tr, batch, sig[i:i + 1], noise=noise[i]).item() for i in range(4)) / 4


@pytest.fixture(scope="module")
def trained():
    """30 steps overfitting one sample (lr 1e-2: the tiny LoRA starts at B = 0)."""
    torch.manual_seed(0)
    tr = tiny_transformer()
    base = {k: v.clone() for k, v in tr.state_dict().items()}
    p = Preset(lora_rank=4, lora_alpha=8, learning_rate=1e-2, timestep_sampling="shifted", flow_schedule_shift=5.0,
               gradient_checkpointing=False)   # (checkpointing is covered elsewhere; this keeps the test quick)
    params = lora.add_lora(tr, p)
    batch = _batch()
    before = _eval_loss(tr, batch)
    opt = torch.optim.AdamW(params, lr=p.learning_rate)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss = step.flow_matching_loss(tr, batch, step.sample_sigmas(p, 1, g), generator=g)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    tr.eval()
    return dict(tr=tr, base=base, params=params, batch=batch, before=before, after=_eval_loss(tr, batch),
                losses=losses, preset=p)


def test_targets_are_rooted_at_transformer_blocks():
    torch.manual_seed(0)
    tr = tiny_transformer()
    lora.add_lora(tr, Preset(lora_rank=4))
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in tr.named_modules() if n.endswith("lora_A")}
    assert len(wrapped) == 2 * 8 and all(n.startswith("transformer_blocks.") for n in wrapped)
    assert not any("token_refiner" in n or ".ff" in n for n in wrapped)
    torch.manual_seed(0)
    tr2 = tiny_transformer()
    lora.add_lora(tr2, Preset(lora_rank=4, lora_targets="attention+mlp"))
    wrapped2 = {n.rsplit(".lora_A", 1)[0] for n, _ in tr2.named_modules() if n.endswith("lora_A")}
    assert len(wrapped2) == 2 * 12 and "transformer_blocks.1.ff_context.net.2" in wrapped2
    assert tr2.gradient_checkpointing


def test_base_frozen_lora_fp32_even_on_bf16_base():
    torch.manual_seed(0)
    tr = tiny_transformer().to(torch.bfloat16)
    params = lora.add_lora(tr, Preset(lora_rank=4))
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    frozen = [p for n, p in tr.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad and p.dtype == torch.bfloat16 for p in frozen)
    loss = step.flow_matching_loss(tr, _batch(), torch.tensor([0.5]))
    loss.backward()
    assert loss.dtype == torch.float32 and any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_loss_falls_over_a_short_overfit(trained):
    assert trained["after"] < 0.95 * trained["before"]
    assert sum(trained["losses"][-5:]) < sum(trained["losses"][:5])


def test_saved_lora_reloads_into_fresh_transformer_with_same_output(trained, tmp_path):
    tr, batch = trained["tr"], trained["batch"]
    paths = lora.save_lora(tr, tmp_path, comfy=True)
    assert [p.name for p in paths] == ["pytorch_lora_weights.safetensors", "pytorch_lora_weights_comfy.safetensors"]
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(p.name for p in paths)   # no temp left
    fresh = tiny_transformer().eval()
    fresh.load_state_dict(trained["base"])
    fresh.load_lora_adapter(str(paths[0]), prefix="transformer")
    # the folder + weight_name form reads the file's adapter metadata: same result
    fresh2 = tiny_transformer().eval()
    fresh2.load_state_dict(trained["base"])
    fresh2.load_lora_adapter(str(tmp_path), weight_name=paths[0].name, prefix="transformer")
    noise = torch.randn(1, 32, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, want = step.flow_matching_loss(tr, batch, torch.tensor([0.7]), noise=noise, return_pred=True)
        _, got = step.flow_matching_loss(fresh, batch, torch.tensor([0.7]), noise=noise, return_pred=True)
        _, got2 = step.flow_matching_loss(fresh2, batch, torch.tensor([0.7]), noise=noise, return_pred=True)
        plain = tiny_transformer().eval()
        plain.load_state_dict(trained["base"])
        _, base_out = step.flow_matching_loss(plain, batch, torch.tensor([0.7]), noise=noise, return_pred=True)
    assert (want - got).abs().max() < 1e-5 and (want - got2).abs().max() < 1e-5
    assert (want - base_out).abs().max() > 1e-3    # the LoRA changed something


def test_comfy_export_uses_comfys_names_and_alpha(trained, tmp_path):
    """(How ComfyUI applies it is tests/core/train/test_lora_export.py.) The proj LoRA is the trained one with the
    alpha/rank 8/4 folded into lora_B, so the file's alpha equals its rank."""
    path = lora.save_lora(trained["tr"], tmp_path, comfy=True)[1]
    sd = load_file(str(path))
    assert all(k.startswith("diffusion_model.double_blocks.") for k in sd)
    assert "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight" in sd
    assert float(sd["diffusion_model.double_blocks.1.txt_attn.proj.alpha"]) == 4.0
    diff = {k: v * 2 if ".lora_B." in k else v for k, v in lora.lora_state_dict(trained["tr"]).items()}
    assert torch.equal(sd["diffusion_model.double_blocks.1.txt_attn.proj.lora_B.weight"],
                       diff["transformer_blocks.1.attn.to_add_out.lora_B.weight"])
    assert torch.equal(sd["diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"][:4],
                       diff["transformer_blocks.0.attn.to_q.lora_A.weight"])


def test_set_lora_state_dict_round_trip(trained):
    sd = {k: v.clone() for k, v in lora.lora_state_dict(trained["tr"]).items()}
    torch.manual_seed(0)
    other = tiny_transformer()
    lora.add_lora(other, trained["preset"])
    lora.set_lora_state_dict(other, sd)
    got = lora.lora_state_dict(other)
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_load_lora_file_restores_exact_training_weights(trained, tmp_path):
    """alpha != rank: the file is scale-folded, load_lora_file undoes it (what resume needs)."""
    path = lora.save_lora(trained["tr"], tmp_path)[0]
    torch.manual_seed(0)
    other = tiny_transformer()
    lora.add_lora(other, trained["preset"])
    lora.load_lora_file(other, path)
    want, got = lora.lora_state_dict(trained["tr"]), lora.lora_state_dict(other)
    assert all(torch.allclose(want[k], got[k], rtol=0, atol=1e-7) for k in want)
