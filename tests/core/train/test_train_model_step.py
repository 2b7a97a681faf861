"""The training step: collation, sigma sampling, flow-matching maths, packed (no mask) == padded."""
import pytest
import torch

from hvtui.core.preset.schema import Preset
from hvtui.core.train import packed_attention, step
from hvtui.core.train.tiny import BYT5_MAX_TOKENS, D_BYT5, D_IMG, D_TXT, IMAGE_TOKENS, TEXT_MAX_TOKENS, tiny_transformer


def _item(n_txt, n_byt5, seed, i2v=False):
    g = torch.Generator().manual_seed(seed)
    it = dict(latents=torch.randn(32, 3, 4, 4, generator=g), text=torch.randn(n_txt, D_TXT, generator=g),
              text_2=torch.randn(n_byt5, D_BYT5, generator=g), sample_id=f"s{seed}",
              image=torch.randn(IMAGE_TOKENS, D_IMG, generator=g) if i2v else torch.zeros(0, D_IMG))
    if i2v:
        cond = torch.zeros(33, 3, 4, 4)
        cond[:32, 0] = torch.randn(32, 4, 4, generator=g)
        cond[32, 0] = 1
        it["cond"] = cond
    return it


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(0)
    return tiny_transformer().eval()


def test_collate_batch1_is_packed_and_t2v_has_empty_byt5_and_image():
    b = step.collate([_item(7, 0, 1)])
    assert b["text"].shape == (1, 7, D_TXT) and b["text_mask"] is None and b["text_2_mask"] is None
    assert b["text_2"].shape == (1, 0, D_BYT5) and b["image"].shape == (1, 0, 0)
    assert b["cond"].shape == (1, 33, 3, 4, 4) and not b["cond"].any() and not b["is_i2v"]


def test_collate_pads_and_masks_larger_batches():
    b = step.collate([_item(7, 0, 1), _item(12, 5, 2)])
    assert b["text"].shape == (2, 12, D_TXT) and b["text_mask"].tolist()[0] == [1] * 7 + [0] * 5
    assert b["text_2"].shape == (2, 5, D_BYT5) and b["text_2_mask"].sum(1).tolist() == [0, 5]
    assert not b["text"][0, 7:].any()


def test_collate_refuses_mixed_t2v_i2v_and_mixed_shapes():
    with pytest.raises(step.BatchError, match="mixes text-to-video and image-to-video"):
        step.collate([_item(7, 0, 1), _item(7, 0, 2, i2v=True)])
    other = _item(7, 0, 3)
    other["latents"] = torch.zeros(32, 2, 4, 4)
    with pytest.raises(step.BatchError, match="same bucket"):
        step.collate([_item(7, 0, 1), other])


@pytest.mark.parametrize("how", ["uniform", "logit_normal", "shifted"])
def test_sample_sigmas(how):
    p = Preset(timestep_sampling=how, flow_schedule_shift=3.0, logit_mean=0.5, logit_std=0.7)
    s = step.sample_sigmas(p, 4000, torch.Generator().manual_seed(0))
    assert s.shape == (4000,) and s.min() >= 0 and s.max() <= 1
    u = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    if how == "uniform":
        assert torch.equal(s, u)
    elif how == "shifted":   # s' = shift*u / (1 + (shift-1)*u): pushed towards noise
        assert torch.allclose(s, 3 * u / (1 + 2 * u)) and s.mean() > 0.6
    else:   # logit-normal draws, then the same shift (undo it to see the distribution)
        plain = s / (3 - 2 * s)
        assert abs(torch.logit(plain).mean() - 0.5) < 0.05 and abs(torch.logit(plain).std() - 0.7) < 0.05


def test_flow_matching_loss_is_the_scheduler_maths(transformer):
    """x_t = s*noise + (1-s)*x0, target noise - x0, timestep s*1000: recompute with a raw transformer call."""
    b = step.collate([_item(5, 3, 4)])
    noise = torch.randn(1, 32, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    s = torch.tensor([0.3])
    with torch.no_grad():
        loss = step.flow_matching_loss(transformer, b, s, noise=noise)
        x0 = b["latents"]
        pred = transformer(torch.cat([0.3 * noise + 0.7 * x0, b["cond"]], 1), torch.tensor([300.0]), b["text"],
                           torch.ones(1, 5), encoder_hidden_states_2=b["text_2"],
                           encoder_attention_mask_2=torch.ones(1, 3), image_embeds=torch.zeros(1, 0, D_IMG),
                           return_dict=False)[0]
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, ((pred - (noise - x0)) ** 2).mean(), atol=1e-6)


def test_packed_equals_pipeline_padded_stock_diffusers(transformer):
    """Batch 1 with valid tokens only and no mask == the stock model fed pipeline-shaped padding + masks."""
    stock = tiny_transformer().eval()
    stock.load_state_dict({k: v for k, v in transformer.state_dict().items()})
    assert not hasattr(stock, "_hvtui_mask_mode")
    it = _item(9, 4, 5)
    noise = torch.randn(1, 32, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, packed = step.flow_matching_loss(transformer, step.collate([it]), torch.tensor([0.6]), noise=noise,
                                            return_pred=True)
        txt = torch.zeros(1, TEXT_MAX_TOKENS, D_TXT)
        txt[0, :9] = it["text"]
        m = torch.zeros(1, TEXT_MAX_TOKENS)
        m[0, :9] = 1
        txt2 = torch.randn(1, BYT5_MAX_TOKENS, D_BYT5)   # padding content must not matter
        txt2[0, :4] = it["text_2"]
        m2 = torch.zeros(1, BYT5_MAX_TOKENS)
        m2[0, :4] = 1
        x = torch.cat([0.6 * noise + 0.4 * it["latents"][None], torch.zeros(1, 33, 3, 4, 4)], 1)
        padded = stock(x, torch.tensor([600.0]), txt, m, encoder_hidden_states_2=txt2, encoder_attention_mask_2=m2,
                       image_embeds=torch.zeros(1, IMAGE_TOKENS, D_IMG), return_dict=False)[0]
    assert (packed - padded).abs().max() < 2e-6


def test_no_mask_reaches_sdpa_at_batch1_and_masks_at_batch2(transformer, monkeypatch):
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*a, **kw):
        seen.append(kw["attn_mask"] if "attn_mask" in kw else (a[3] if len(a) > 3 else None))
        return real(*a, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        step.flow_matching_loss(transformer, step.collate([_item(7, 2, 1)]), torch.tensor([0.5]))
    # 2 dual-stream blocks + 1 refiner layer, and none of them got a mask
    assert len(seen) == 3 and all(m is None for m in seen)
    seen.clear()
    with torch.no_grad():
        step.flow_matching_loss(transformer, step.collate([_item(7, 2, 1), _item(11, 0, 2)]),
                                torch.tensor([0.5, 0.5]))
    assert len(seen) == 3 and all(m is not None for m in seen)


def test_packed_batch_equals_padded_batch_row(transformer):
    a, b = _item(7, 0, 1), _item(12, 5, 2)
    noise = torch.randn(2, 32, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    s = torch.tensor([0.4, 0.8])
    with torch.no_grad():
        _, p_a = step.flow_matching_loss(transformer, step.collate([a]), s[:1], noise=noise[:1], return_pred=True)
        _, p_b = step.flow_matching_loss(transformer, step.collate([b]), s[1:], noise=noise[1:], return_pred=True)
        _, p_ab = step.flow_matching_loss(transformer, step.collate([a, b]), s, noise=noise, return_pred=True)
    assert (p_ab[0] - p_a[0]).abs().max() < 2e-6 and (p_ab[1] - p_b[0]).abs().max() < 2e-6


def test_i2v_batch_runs_with_image_tokens(transformer):
    b = step.collate([_item(6, 0, 3, i2v=True)])
    assert b["is_i2v"] and b["image"].shape == (1, IMAGE_TOKENS, D_IMG) and b["cond"][0, 32, 0].all()
    with torch.no_grad():
        loss = step.flow_matching_loss(transformer, b, torch.tensor([0.5]))
    assert torch.isfinite(loss)


def test_packed_attention_context_restores_mode(transformer):
    mode = packed_attention.install(transformer)
    mode.packed = False
    with packed_attention.packed_attention(transformer):
        assert mode.packed
    assert not mode.packed


def test_bf16_base_under_autocast_trains_fp32_lora():
    """What accelerate does with mixed_precision = "bf16": autocast around a bf16 base with fp32 LoRA."""
    from hvtui.core.train import lora

    torch.manual_seed(0)
    tr = tiny_transformer().to(torch.bfloat16)
    params = lora.add_lora(tr, Preset(lora_rank=4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = step.flow_matching_loss(tr, step.collate([_item(6, 2, 7)]), torch.tensor([0.5]))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    names = {id(q): n for n, q in tr.named_parameters()}
    # the last block's text output is unused, so its to_add_out LoRA gets no gradient (REFERENCE trap 2)
    no_grad = sorted(names[id(q)] for q in params if q.grad is None)
    assert no_grad == ["transformer_blocks.1.attn.to_add_out.lora_A.default.weight",
                       "transformer_blocks.1.attn.to_add_out.lora_B.default.weight"]
    assert all(q.grad.dtype == torch.float32 for q in params if q.grad is not None)
