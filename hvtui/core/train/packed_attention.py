"""Attention processors that can run without a mask when every conditioning token is valid.

Stock diffusers builds a dense S x S bool mask in every block from the (reordered) text mask, even when all
tokens are valid (REFERENCE.md trap 1): 0.75 GB per copy at 480p x 61 and it rules out flash kernels. At
batch 1 hvtui sends only valid tokens, so the mask is all True and can be dropped. Whether to build it is a
per-transformer switch (`set_packed`), not a data check, because inspecting the mask would force a device
sync in every block. `flow_matching_loss` flips it from the batch it gets (no mask -> packed), and the
validator sets it around sampling. Both processors keep the stock maths otherwise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models import attention_dispatch  # looked up per call: speed.py swaps in its own dispatcher
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15AttnProcessor2_0


class MaskMode:
    """Shared by all processors of one transformer: `packed` True = no attention mask anywhere."""

    def __init__(self) -> None:
        self.packed = False


class PackedHunyuanVideo15AttnProcessor(HunyuanVideo15AttnProcessor2_0):
    """The dual-stream block attention; skips the dense mask in packed mode."""

    def __init__(self, mode: MaskMode):
        super().__init__()
        self.mode = mode

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None):
        def heads(x):
            return x.unflatten(2, (attn.heads, -1))

        query = attn.norm_q(heads(attn.to_q(hidden_states)))
        key = attn.norm_k(heads(attn.to_k(hidden_states)))
        value = heads(attn.to_v(hidden_states))
        if image_rotary_emb is not None:   # RoPE on the video tokens only
            from diffusers.models.embeddings import apply_rotary_emb

            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        n_ctx = 0
        if encoder_hidden_states is not None:
            n_ctx = encoder_hidden_states.shape[1]
            eq = heads(attn.add_q_proj(encoder_hidden_states))
            ek = heads(attn.add_k_proj(encoder_hidden_states))
            ev = heads(attn.add_v_proj(encoder_hidden_states))
            if attn.norm_added_q is not None:
                eq = attn.norm_added_q(eq)
            if attn.norm_added_k is not None:
                ek = attn.norm_added_k(ek)
            query, key, value = torch.cat([query, eq], 1), torch.cat([key, ek], 1), torch.cat([value, ev], 1)

        mask = None
        if not self.mode.packed and attention_mask is not None:
            # stock behaviour: video tokens are always valid; a pair attends iff both tokens are valid
            b, s = query.shape[0], query.shape[1]
            valid = F.pad(attention_mask, (s - attention_mask.shape[1], 0), value=True).bool().view(b, 1, 1, s)
            mask = valid & valid.transpose(2, 3)

        out = attention_dispatch.dispatch_attention_fn(
            query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=self._parallel_config)
        out = out.flatten(2, 3).to(query.dtype)

        if encoder_hidden_states is None:
            return out, None
        video, context = out[:, : out.shape[1] - n_ctx], out[:, out.shape[1] - n_ctx:]
        if getattr(attn, "to_out", None) is not None:
            video = attn.to_out[1](attn.to_out[0](video))
        if getattr(attn, "to_add_out", None) is not None:
            context = attn.to_add_out(context)
        return video, context


class PackedRefinerAttnProcessor(AttnProcessor2_0):
    """The token refiner's self-attention over the Qwen tokens: drops its (all-True) mask in packed mode."""

    def __init__(self, mode: MaskMode):
        super().__init__()
        self.mode = mode

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if self.mode.packed:
            attention_mask = None
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


def install(transformer) -> MaskMode:
    """Install the processors once (idempotent); returns the transformer's shared MaskMode."""
    transformer = getattr(transformer, "module", transformer)   # a wrapper with .module (DDP, if a caller adds one)
    mode = getattr(transformer, "_hvtui_mask_mode", None)
    if mode is not None:
        return mode
    mode = MaskMode()
    for name, module in transformer.named_modules():
        proc = getattr(module, "processor", None)
        if proc is None:
            continue
        backend = getattr(proc, "_attention_backend", None)
        new: PackedHunyuanVideo15AttnProcessor | PackedRefinerAttnProcessor
        if isinstance(proc, HunyuanVideo15AttnProcessor2_0):
            new = PackedHunyuanVideo15AttnProcessor(mode)
            new._attention_backend = backend
        elif name.startswith("context_embedder.") and isinstance(proc, AttnProcessor2_0):
            new = PackedRefinerAttnProcessor(mode)
        else:
            continue
        module.set_processor(new)
    transformer._hvtui_mask_mode = mode
    return mode


def set_packed(transformer, packed: bool) -> None:
    """Switch between packed (no mask: every token valid) and masked (stock) attention."""
    install(transformer).packed = bool(packed)


class packed_attention:
    """Context manager: packed mode inside, the previous mode after (used by the validator)."""

    def __init__(self, transformer, packed: bool = True):
        self.mode = install(transformer)
        self.packed = packed

    def __enter__(self):
        self.prev = self.mode.packed
        self.mode.packed = self.packed
        return self.mode

    def __exit__(self, *exc):
        self.mode.packed = self.prev
        return False
