"""THE training step: batch collation, sigma sampling, the flow-matching loss, and the two calls a step is made
of: `loss_and_gradients` (a batch -> its loss and the LoRA's gradients) and `apply_update` (clip, optimizer,
schedule).

The trainer (train_step.py) and the GPU benchmarks (bench/gpu_bench.py, bench/quant_bench.py) both call these
two, so what is measured is what trains.

Conditioning without padding (REFERENCE.md trap 1): at batch 1 only valid tokens are sent (0-length byT5 /
image tensors for t2v) and no attention mask reaches SDPA; larger batches are padded here and masked.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from hvtui.core.train import packed_attention
from hvtui.core.train.conditioning import LATENT_CHANNELS


class BatchError(ValueError):
    """Items that cannot form one batch (mixed t2v/i2v, different shapes)."""


def _is_i2v(item: dict) -> bool:
    image = item.get("image")
    return image is not None and image.shape[0] > 0


def _pad_stack(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[L_i, D] -> zero-padded [B, max L, D] and a 0/1 mask [B, max L]."""
    longest = max(t.shape[0] for t in tensors)
    dim = tensors[0].shape[-1]
    out = tensors[0].new_zeros(len(tensors), longest, dim)
    mask = torch.zeros(len(tensors), longest, dtype=torch.int64)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = 1
    return out, mask


def collate(items: list[dict]) -> dict:
    """Cache items -> a model batch.

    Keys: latents [B,32,T,H,W], cond [B,33,T,H,W] (zeros for t2v), text [B,L,D], text_2 [B,L2,D2] (L2 may
    be 0), image [B,N,Di] (t2v: [B,0,0], sized to the model in `model_inputs`), text_mask / text_2_mask
    ([B,L] int; None at batch 1 = every token valid, no mask anywhere), is_i2v, sample_ids.
    """
    if not items:
        raise BatchError("empty batch")
    kinds = {_is_i2v(it) for it in items}
    if len(kinds) > 1:
        ids = ", ".join(str(it.get("sample_id", "?")) for it in items)
        raise BatchError(f"a batch mixes text-to-video and image-to-video samples ({ids}); "
                         "the model decides t2v/i2v per batch, so they must be batched separately")
    i2v = kinds.pop()
    shapes = {tuple(it["latents"].shape) for it in items}
    if len(shapes) > 1:
        raise BatchError(f"latents of different shapes in one batch: {sorted(shapes)}; "
                         "batch samples from the same bucket only")
    latents = torch.stack([it["latents"] for it in items])
    conds = []
    for it in items:
        cond = it.get("cond")
        if cond is None:   # t2v: cond latents 0, mask 0
            cond = latents.new_zeros(LATENT_CHANNELS + 1, *latents.shape[2:])
        conds.append(cond.to(latents.dtype))
    batch = {"latents": latents, "cond": torch.stack(conds), "is_i2v": i2v,
             "sample_ids": [it.get("sample_id") for it in items]}

    if len(items) == 1:
        it = items[0]
        batch["text"] = it["text"].unsqueeze(0)
        batch["text_2"] = it["text_2"].unsqueeze(0)
        batch["image"] = it["image"].unsqueeze(0) if i2v else latents.new_zeros(1, 0, 0)
        batch["text_mask"] = batch["text_2_mask"] = None
        return batch

    batch["text"], batch["text_mask"] = _pad_stack([it["text"] for it in items])
    batch["text_2"], batch["text_2_mask"] = _pad_stack([it["text_2"] for it in items])
    if not i2v:
        batch["image"] = latents.new_zeros(len(items), 0, 0)
        return batch
    images = [it["image"] for it in items]
    if len({tuple(im.shape) for im in images}) > 1:
        raise BatchError("image embeddings of different lengths in one batch")
    batch["image"] = torch.stack(images)
    return batch


def shift_sigmas(s: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow-matching time shift (the scheduler's, and Tencent's train.py `timestep_transform`):
    s -> shift*s / (1 + (shift-1)*s); shift 1 leaves s as it is."""
    return s if shift == 1.0 else shift * s / (1 + (shift - 1) * s)


def sample_sigmas(preset, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Training sigmas in [0, 1] as the preset asks. Every mode that takes a shift gets `preset.shift`
    (flow_schedule_shift, default the flavour's inference shift):
      uniform       u ~ U(0, 1), no shift
      shifted       u ~ U(0, 1), then shifted
      logit_normal  sigmoid(N(logit_mean, logit_std)), then shifted (Tencent's train.py and SimpleTuner both
                    shift their logit-normal draws; flow_schedule_shift = 1 gives the plain distribution)"""
    how = preset.timestep_sampling
    if how == "uniform":
        s = torch.rand(n, generator=generator)
    elif how == "logit_normal":
        s = shift_sigmas(torch.sigmoid(torch.randn(n, generator=generator) * preset.logit_std + preset.logit_mean),
                         float(preset.shift))
    elif how == "shifted":
        s = shift_sigmas(torch.rand(n, generator=generator), float(preset.shift))
    else:
        raise ValueError(f"timestep_sampling {how!r} is not one of uniform, logit_normal, shifted")
    return s.clamp(0.0, 1.0).to(device)


def model_dtype(transformer) -> torch.dtype:
    model = getattr(transformer, "module", transformer)
    return model.x_embedder.proj.weight.dtype


def model_inputs(transformer, batch: dict, noisy: torch.Tensor, timestep: torch.Tensor) -> dict:
    """Keyword arguments of the transformer call for a collated batch (switches packed attention)."""
    device, dtype = noisy.device, model_dtype(transformer)
    packed = batch["text_mask"] is None
    packed_attention.set_packed(transformer, packed)
    text = batch["text"].to(device, dtype)
    text_2 = batch["text_2"].to(device, dtype)
    if packed:
        mask = torch.ones(text.shape[:2], dtype=torch.int64, device=device)
        mask_2 = torch.ones(text_2.shape[:2], dtype=torch.int64, device=device)
    else:
        mask, mask_2 = batch["text_mask"].to(device), batch["text_2_mask"].to(device)
    image = batch["image"]
    if image.shape[1] == 0:   # t2v: 0 image tokens, sized to the model's image_embed_dim
        model = getattr(transformer, "module", transformer)
        image = image.new_zeros(image.shape[0], 0, model.config.image_embed_dim)
    kwargs = dict(hidden_states=torch.cat([noisy, batch["cond"].to(device, dtype)], 1),
                  timestep=timestep.to(device, dtype), encoder_hidden_states=text, encoder_attention_mask=mask,
                  encoder_hidden_states_2=text_2, encoder_attention_mask_2=mask_2,
                  image_embeds=image.to(device, dtype), return_dict=False)
    if getattr(getattr(transformer, "module", transformer).config, "use_meanflow", False):
        # the step-distilled checkpoint is a MeanFlow model u(x, r, t): with r = t it is the instantaneous
        # velocity, which is what the flow-matching target (noise - x0) is
        kwargs["timestep_r"] = kwargs["timestep"]
    return kwargs


def flow_matching_loss(transformer, batch: dict, sigmas: torch.Tensor, noise: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, return_pred: bool = False):
    """x_t = s*noise + (1-s)*x0, target = noise - x0, model timestep = s*1000; MSE in fp32.

    `transformer` may be wrapped (accelerate's autocast forward); inputs go to its device and
    weight dtype. The noise is drawn from `generator` when not given.
    """
    x0 = batch["latents"]
    device = next(getattr(transformer, "module", transformer).parameters()).device
    x0 = x0.to(device, torch.float32)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(device)
    noise = noise.to(device, torch.float32)
    s = sigmas.to(device, torch.float32).view(-1, 1, 1, 1, 1)
    noisy = s * noise + (1 - s) * x0
    kwargs = model_inputs(transformer, batch, noisy.to(model_dtype(transformer)), s.flatten() * 1000.0)
    pred = transformer(**kwargs)[0]
    loss = F.mse_loss(pred.float(), (noise - x0).float())
    return (loss, pred) if return_pred else loss


def loss_and_gradients(model, batch: dict, preset, generator: torch.Generator,
                       backward: Callable[[torch.Tensor], None] | None = None,
                       forward_context: Callable = nullcontext,
                       loss_hook: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """One batch through the model and back: sigmas, then noise, drawn from `generator` (in that order, so a
    seeded generator repeats the step), the flow-matching loss, and its backward pass, which leaves the LoRA's
    gradients in `.grad` (accumulating onto any already there). Returns the loss.

    A non-finite loss gets no backward pass (its gradients would be NaN too); the caller skips the step.
    `backward`: how to run it (the trainer passes accelerate's, which scales for fp16 and gradient accumulation;
    default `loss.backward()`). `forward_context`: a context manager factory around the forward pass only
    (the benchmarks' autocast; the trainer's autocast is inside its prepared model). `loss_hook`: the trainer's
    NaN test hook (failures.Injector)."""
    sigmas = sample_sigmas(preset, len(batch["sample_ids"]), generator)
    noise = torch.randn(batch["latents"].shape, generator=generator, dtype=torch.float32)
    with forward_context():
        loss = flow_matching_loss(model, batch, sigmas, noise)
    # the trainer hands the batch over (no other reference): its tensors go before the backward pass needs room
    del batch, noise
    if loss_hook is not None:
        loss = loss_hook(loss)
    value = float(loss.detach())
    if math.isfinite(value):
        if backward is None:
            loss.backward()
        else:
            backward(loss)
    return value


def apply_update(params, optimizer, scheduler, max_grad_norm: float | None, clip=None,
                 scaler=None) -> tuple[str, str, float]:
    """Clip the gradients to `max_grad_norm` (0 / None: measure only), then step the optimizer and the schedule.
    Returns (status, what failed, gradient norm): "ok"; "nonfinite" with "gradient norm" (no update);
    "overflow" when an fp16 loss `scaler` is in use (the optimizer step call lets it skip this update and lower
    its scale). `clip`: the trainer passes accelerate's (unscales fp16 gradients first); default torch's.
    The gradients are left in place: the caller drops them."""
    clip = clip or torch.nn.utils.clip_grad_norm_
    norm = clip(params, max_grad_norm or float("inf"))
    grad_norm = float(norm) if norm is not None else float("nan")
    if not math.isfinite(grad_norm) and scaler is not None:
        optimizer.step()
        return "overflow", "fp16 gradient overflow", grad_norm
    if not math.isfinite(grad_norm):
        return "nonfinite", "gradient norm", grad_norm
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return "ok", "", grad_norm
