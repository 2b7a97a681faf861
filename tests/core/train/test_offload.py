"""Block offloading, the attention cache and compiled blocks train exactly like the plain model.

CPU tests drive the real mechanism with the CPU as the "device" (host buffers, slots, placeholders, the
forward / recompute / inference schedule); the GPU test (`-m gpu`, run by bench/gpu_bench.py's command on
the lent GPU) repeats the comparison with pinned memory, the side stream and CUDA kernels.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch

from hvtui.core.preset.schema import Preset
from hvtui.core.train import lora, speed, step, tiny
from hvtui.core.train.offload import BlockOffloader
from tests.helpers.lora_training import batch as _batch
from tests.helpers.lora_training import train

PRESET = Preset(pretrained_model_name_or_path="builtin:tiny", lora_rank=4, gradient_checkpointing=True)


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return tiny.tiny_transformer("t2v", num_layers=3).float()


def _train(base, steps=3, shapes=((2, 7),), lr=1e-2, **speed_kw):
    """Add the same LoRA, optionally prepare the transformer, run `steps` AdamW steps on fixed data."""
    tr = copy.deepcopy(base)
    losses, sd, handle = train(tr, PRESET, steps, shapes, lr, **speed_kw)
    return losses, sd, handle, tr


@pytest.fixture(scope="module")
def plain(base):
    losses, sd, _, _ = _train(base)
    return losses, sd


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_offload_trains_exactly_like_plain(base, plain):
    losses, sd, handle, tr = _train(base, offload=True, attention_cache_share=0.0)
    moved = max(v.abs().max().item() for v in plain[1].values())
    assert moved > 1e-3                       # the LoRA really trained
    assert losses == plain[0]
    assert _max_diff(sd, plain[1]) == 0.0
    st = handle.stats()
    assert st["h2d_bytes"] > 0 and st["copies"] >= 3 * 3   # forward + recompute streamed weights
    assert st["resident"] == [0]                            # backward ends on block 0; the rest left
    # frozen weights of a non-resident block are placeholders (NaN), LoRA weights are real parameters
    blk = tr.transformer_blocks[2]
    assert torch.isnan(blk.attn.to_q.base_layer.weight).all()
    assert blk.attn.to_q.base_layer.weight.untyped_storage().nbytes() <= 8
    assert torch.isfinite(blk.attn.to_q.lora_A["default"].weight).all()
    handle.remove()
    for name, p in tr.named_parameters():
        assert torch.isfinite(p).all(), name
    assert torch.equal(tr.transformer_blocks[2].ff.net[2].weight, base.transformer_blocks[2].ff.net[2].weight)


def test_block_run_outside_the_schedule_fails_loudly(base):
    tr = copy.deepcopy(base)
    lora.add_lora(tr, PRESET)
    off = BlockOffloader(tr.transformer_blocks, "cpu")
    blk = tr.transformer_blocks[1]
    x = torch.randn(1, 5, blk.norm2.normalized_shape[0])
    assert torch.isnan(blk.ff(x)).all()       # not resident: placeholders, never stale weights
    off.before_block(1, "inference")
    assert torch.isfinite(blk.ff(x)).all()
    off.after_block(1, "inference")
    assert off.resident() == [2]              # released 1; 2 was prefetched
    off.restore()


def test_inference_through_offloaded_blocks_matches(base):
    tr = copy.deepcopy(base)
    lora.add_lora(tr, PRESET)
    ref = copy.deepcopy(tr)
    handle = speed.prepare_transformer(tr, PRESET, "cpu", offload=True)
    batch = _batch(0)
    s = torch.tensor([0.3])
    with torch.no_grad():
        a = step.flow_matching_loss(ref, batch, s, torch.ones_like(batch["latents"]), return_pred=True)[1]
        b = step.flow_matching_loss(tr, batch, s, torch.ones_like(batch["latents"]), return_pred=True)[1]
    assert torch.equal(a, b)
    assert handle.stats()["resident"] == []    # inference releases every block after use
    handle.remove()


def test_attention_cache_skips_recompute_and_keeps_gradients(base, plain):
    losses, sd, handle, _ = _train(base, attention_cache_share=1.0, offload=False)
    assert handle.store.stores == 3 * 3 and handle.stats()["attention_cache_hits"] == 3 * 3   # every block+step
    assert handle.stats()["attention_cache"] == "3/3 blocks"
    assert losses == plain[0]
    assert _max_diff(sd, plain[1]) < 1e-6
    handle.remove()


def test_attention_cache_share_limits_blocks(base, plain):
    losses, sd, handle, _ = _train(base, attention_cache_share=0.34, offload=True)
    assert handle.stats()["attention_cache_hits"] == 3 and list(handle.cache_blocks().values()) == [1]
    assert _max_diff(sd, plain[1]) < 1e-6
    handle.remove()


def test_attention_cache_self_check_on_cpu():
    from hvtui.core.train import attention_cache

    ok, detail = attention_cache.self_check("cpu", "flash", seq=64, heads=2, dim=16)
    assert ok, detail


@pytest.mark.slow
def test_compiled_blocks_share_one_graph_across_blocks_and_shapes(base):
    """All blocks and bucket shapes reuse one compiled graph set; recompute runs the forward's graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    shapes = ((2, 7), (3, 9), (2, 5))
    ref_losses, ref_sd, _, _ = _train(base, steps=3, shapes=shapes)
    counters.clear()
    losses, sd, handle, _ = _train(base, steps=3, shapes=shapes, offload=True, attention_cache_share=1.0,
                                   compile_blocks=True, compile_options={"backend": "aot_eager"})
    assert handle.stats()["compiled_blocks"]
    graphs_after = counters["stats"]["unique_graphs"]
    assert 0 < graphs_after <= 6, graphs_after    # one set of graph pieces, not one per block or shape
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    assert _max_diff(sd, ref_sd) < 1e-3
    handle.remove()
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------------------ GPU
def offload_check_on_gpu(layers: int = 4, steps: int = 5, size=(5, 16, 16), deterministic: bool = True,
                         device: str = "cuda") -> dict:
    """Full-width HV1.5 blocks, LoRA r16, gradient checkpointing, AdamW: LoRA after `steps` with hvtui's
    offload (pinned host, side stream) vs plain GPU training. Returns the numbers (used by the bench)."""
    from diffusers import HunyuanVideo15Transformer3DModel

    dev = torch.device(device)
    if deterministic and dev.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(0)
    with dev:
        prev = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        proto = HunyuanVideo15Transformer3DModel(num_layers=layers)
        torch.set_default_dtype(prev)
    base_sd = {k: v.cpu() for k, v in proto.state_dict().items()}
    del proto
    # flash: its backward is deterministic under use_deterministic_algorithms (cuDNN's is not), so plain and
    # offloaded training must agree to the bit, not just within run-to-run noise
    preset = Preset(lora_rank=16, gradient_checkpointing=True, enable_group_offload=True,
                    group_offload_use_stream=True, learning_rate=1e-3, attention_backend="flash")
    g = torch.Generator().manual_seed(0)
    t, h, w = size
    batches = []
    for _ in range(steps):
        item = dict(latents=torch.randn(32, t, h, w, generator=g), text=torch.randn(64, 3584, generator=g),
                    text_2=torch.zeros(0, 1472), image=torch.zeros(0, 1152))
        batches.append((step.collate([item]), torch.rand(1, generator=g), torch.randn(1, 32, t, h, w, generator=g)))

    def run(offload: bool):
        with torch.device("meta"):
            tr = HunyuanVideo15Transformer3DModel(num_layers=layers)
        tr.load_state_dict(base_sd, assign=True)
        torch.manual_seed(1)
        params = lora.add_lora(tr, preset)
        if not offload:
            tr.to(dev)
        handle = speed.prepare_transformer(tr, preset, dev, offload=offload, compile_blocks=False,
                                           attention_cache_share=0.0)
        init = {k: v.detach().float().cpu().clone() for k, v in lora.lora_state_dict(tr).items()}
        opt = torch.optim.AdamW(params, lr=preset.learning_rate)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        losses = []
        for batch, s, noise in batches:
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = step.flow_matching_loss(tr, batch, s, noise)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        final = {k: v.detach().float().cpu().clone() for k, v in lora.lora_state_dict(tr).items()}
        stats = handle.stats()
        devices = sorted({str(p.device) for p in params})
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0
        handle.remove()
        del tr, opt, params
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return losses, init, final, stats, devices, peak

    ref_losses, init, ref, _, _, ref_peak = run(False)
    again_losses, _, again, _, _, _ = run(False)    # plain twice: what run-to-run noise alone gives
    losses, init2, final, stats, devices, peak = run(True)
    if deterministic and dev.type == "cuda":
        torch.use_deterministic_algorithms(False)

    def max_abs(a, b):
        return max((a[k] - b[k]).abs().max().item() for k in a)

    def rel_delta(a, b):   # |(a - init) - (b - init)| / |b - init| over all LoRA tensors
        num = sum(((a[k] - b[k]).double() ** 2).sum().item() for k in a)
        den = sum(((b[k] - init[k]).double() ** 2).sum().item() for k in a)
        return (num / max(den, 1e-300)) ** 0.5

    stale = sum(1 for k in ref if torch.equal(final[k], init2[k]))
    stale_plain = sum(1 for k in ref if torch.equal(ref[k], init[k]))   # trap 2: last block's text-side LoRA
    out = dict(layers=layers, steps=steps, deterministic=deterministic, plain_losses=ref_losses,
               plain_again_losses=again_losses, offload_losses=losses, lora_moved=max_abs(ref, init),
               max_abs_diff=max_abs(final, ref), floor_max_abs_diff=max_abs(again, ref),
               rel_delta_diff=rel_delta(final, ref), floor_rel_delta_diff=rel_delta(again, ref),
               same_init=all(torch.equal(init[k], init2[k]) for k in init),
               params_never_updated=stale, plain_never_updated=stale_plain, of=len(ref), lora_devices=devices,
               peak_plain_gib=round(ref_peak, 2), peak_offload_gib=round(peak, 2), offload=stats)
    if os.environ.get("OUT"):
        import json

        with open(os.path.join(os.environ["OUT"], "gpu_offload_check.json"), "w") as f:
            json.dump(out, f, indent=1, default=str)
    return out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offload_trains_like_plain_on_gpu():
    r = offload_check_on_gpu()
    print("GPU offload check:", {k: v for k, v in r.items() if k != "offload"})
    assert r["same_init"] and r["lora_moved"] > 1e-4 and r["offload"]["h2d_bytes"] > 0
    assert r["params_never_updated"] == r["plain_never_updated"] < r["of"] // 4
    assert r["lora_devices"] == ["cuda:0"]
    assert r["offload_losses"][0] == r["plain_losses"][0]          # same weights, same forward
    # equal to plain training as far as plain training equals itself (bit-exact if the kernels are)
    assert r["rel_delta_diff"] <= max(3 * r["floor_rel_delta_diff"], 1e-6), r
