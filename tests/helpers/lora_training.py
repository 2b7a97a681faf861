"""A few LoRA training steps on a tiny transformer with fixed data (tests of offload, the attention cache,
compiled blocks and quantized bases compare such runs)."""
from __future__ import annotations

import torch

from hvtui.core.train import lora, speed, step


def batch(seed: int, frames: int = 2, text: int = 7):
    g = torch.Generator().manual_seed(seed)
    item = dict(latents=torch.randn(32, frames, 4, 6, generator=g), text=torch.randn(text, 32, generator=g),
                text_2=torch.zeros(0, 32), image=torch.zeros(0, 32))
    return step.collate([item])


def train(tr, preset, steps=3, shapes=((2, 7),), lr=1e-2, **speed_kw):
    """Add the LoRA (seeded), optionally prepare the transformer, run `steps` AdamW steps on fixed data.
    Returns (losses, LoRA state dict, speed handle or None)."""
    torch.manual_seed(1)
    params = lora.add_lora(tr, preset)
    handle = speed.prepare_transformer(tr, preset, "cpu", **speed_kw) if speed_kw else None
    opt = torch.optim.AdamW(params, lr=lr)
    losses = []
    for s in range(steps):
        frames, text = shapes[s % len(shapes)]
        b = batch(s, frames, text)
        g = torch.Generator().manual_seed(100 + s)
        loss = step.flow_matching_loss(tr, b, step.sample_sigmas(preset, 1, g),
                                       torch.randn(b["latents"].shape, generator=g))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    sd = {k: v.detach().clone() for k, v in lora.lora_state_dict(tr).items()}
    return losses, sd, handle
