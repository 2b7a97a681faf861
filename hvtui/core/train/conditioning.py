"""Turn captions, clips and first frames into what the transformer consumes, the way the pipelines do.

- Text: `pipeline.encode_prompt` (Qwen2.5-VL chat template, layer -3, template crop; byT5 over quoted text
  only), then only the valid tokens are kept (cropped by the masks). No quotes -> 0 byT5 tokens.
- Latents: VAE encode of frames in [-1, 1] as [1, 3, F, H, W], spatial tiling on by default, times
  `scaling_factor`. The posterior's mean and std are both returned: the cache stores them so every epoch can
  draw a fresh sample (mean + std * eps) or use the mean; see `cache.CacheIndex.load`.
- i2v: the first frame alone through the VAE (the pipeline's `_get_image_latents`: posterior mode, F = 1)
  placed at latent frame 0 of the 32 cond channels with mask 1 there; SigLIP tokens of the first frame via
  the i2v pipeline's own `_get_image_embeds`.
"""
from __future__ import annotations

import numpy as np
import torch

LATENT_CHANNELS = 32
TILE_SAMPLE = 256     # VAE tile in pixels; the latent tile must be given too (trap: ratio 16)


def valid_tokens(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[1, L, D] + [1, L] -> [n_valid, D] (the pipeline pads on the right)."""
    keep = mask[0].bool()
    return embeds[0][keep].contiguous()


@torch.no_grad()
def encode_prompt(pipe, prompt: str, device, dtype) -> dict[str, torch.Tensor]:
    """{"text": [L, D], "text_2": [L2, D2]} of valid tokens, on the CPU."""
    pe, pm, pe2, pm2 = pipe.encode_prompt(prompt, device=device, dtype=dtype)
    return {"text": valid_tokens(pe, pm).cpu(), "text_2": valid_tokens(pe2, pm2).cpu()}


def frames_to_video(frames: np.ndarray, device, dtype) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> [1, 3, F, H, W] in [-1, 1]."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [F, H, W, 3], got {tuple(frames.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    x = x.permute(3, 0, 1, 2).unsqueeze(0).to(dtype) / 127.5 - 1.0
    return x


def configure_tiling(vae, enabled: bool = True, tile: int = TILE_SAMPLE) -> None:
    if not enabled:
        vae.disable_tiling()
        return
    ratio = int(getattr(vae.config, "spatial_compression_ratio", 16) or 16)
    vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                      tile_latent_min_height=tile // ratio, tile_latent_min_width=tile // ratio)


@torch.no_grad()
def encode_video(vae, frames: np.ndarray, device, dtype) -> dict[str, torch.Tensor]:
    """{"mean", "std"}: scaled posterior of the clip, [32, T, h, w] each, on the CPU."""
    frames_n = frames.shape[0]
    if (frames_n - 1) % 4:
        raise ValueError(f"{frames_n} frames: the VAE needs 4k+1")
    dist = vae.encode(frames_to_video(frames, device, dtype)).latent_dist
    sf = float(vae.config.scaling_factor)
    return {"mean": (dist.mean[0] * sf).cpu(), "std": (dist.std[0] * sf).cpu()}


@torch.no_grad()
def encode_first_frame_cond(vae, frame: np.ndarray, latent_frames: int, device, dtype) -> torch.Tensor:
    """[33, T, h, w]: first-frame latent at frame 0 of the cond channels, mask channel 1 at frame 0."""
    x = frames_to_video(frame[None], device, dtype)
    latent = vae.encode(x).latent_dist.mode()[0, :, 0] * float(vae.config.scaling_factor)
    cond = torch.zeros(LATENT_CHANNELS + 1, latent_frames, *latent.shape[-2:], dtype=latent.dtype)
    cond[:LATENT_CHANNELS, 0] = latent.cpu()
    cond[LATENT_CHANNELS, 0] = 1.0
    return cond


@torch.no_grad()
def encode_image_tokens(image_encoder, feature_extractor, frame: np.ndarray, device) -> torch.Tensor:
    """SigLIP last hidden state of the first frame, [N, Di] on the CPU (729 x 1152 for the real encoder)."""
    from diffusers import HunyuanVideo15ImageToVideoPipeline
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame))
    out = HunyuanVideo15ImageToVideoPipeline._get_image_embeds(image_encoder, feature_extractor, image, device)
    return out[0].cpu()
