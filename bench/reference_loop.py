"""The plain reference LoRA step (stock diffusers + PEFT), pipeline-shaped padded conditioning.

Adapted from ../shared/reference/gpu_reference_loop.py ("padded" case), which produced REFERENCE.md's
anchors (9.84 s/step, 27.5 GiB at 848x480x61 on an H200). Kept here because ../shared does not travel to the
GPU machine. Stock processors: the text mask is padded to every token and reaches SDPA as a dense S x S mask.
"""
from __future__ import annotations

import statistics
import time

import torch

VALID_TXT = 120
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]


def build(device):
    from diffusers import HunyuanVideo15Transformer3DModel
    from peft import LoraConfig

    torch.manual_seed(0)
    with torch.device(device):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        model = HunyuanVideo15Transformer3DModel()
        torch.set_default_dtype(prev)
    model.requires_grad_(False)
    model.enable_gradient_checkpointing()
    model.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian", target_modules=TARGETS))
    lora = [p for p in model.parameters() if p.requires_grad]
    for p in lora:
        p.data = p.data.to(device).float()
    return model, lora


def padded_inputs(w: int, h: int, f: int, device):
    lt, lh, lw = (f - 1) // 4 + 1, h // 16, w // 16
    bf = torch.bfloat16
    x = torch.randn(1, 65, lt, lh, lw, device=device, dtype=bf)
    e1 = torch.randn(1, 1000, 3584, device=device, dtype=bf)
    m1 = torch.zeros(1, 1000, device=device, dtype=bf)
    m1[:, :VALID_TXT] = 1
    e2 = torch.zeros(1, 256, 1472, device=device, dtype=bf)
    m2 = torch.zeros(1, 256, device=device, dtype=bf)
    img = torch.zeros(1, 729, 1152, device=device, dtype=bf)
    return dict(hidden_states=x, encoder_hidden_states=e1, encoder_attention_mask=m1, encoder_hidden_states_2=e2,
                encoder_attention_mask_2=m2, image_embeds=img), (lt, lh, lw)


def run(model, lora, w: int, h: int, f: int, steps: int, device, on_step=None) -> dict:
    opt = torch.optim.AdamW(lora, lr=1e-4)
    kw, lat = padded_inputs(w, h, f, device)
    target = torch.randn(1, 32, *lat, device=device, dtype=torch.float32)
    times, losses = [], []
    for i in range(steps):
        if i == 1:
            torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        t = torch.rand(1, device=device) * 1000
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(timestep=t, return_dict=False, **kw)[0]
        loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if on_step:
            on_step(i, times[-1], losses[-1])
    timed = times[1:] if len(times) > 1 else times
    return dict(times=[round(x, 3) for x in times], s_per_step=round(statistics.median(timed), 3), losses=losses,
                finite=all(x == x and abs(x) != float("inf") for x in losses))
