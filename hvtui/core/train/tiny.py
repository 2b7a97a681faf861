"""Tiny, randomly initialised HunyuanVideo 1.5 components of the real classes, built offline in code.

The demo and the tests train these. They keep the real model's structure where it matters (65 input
channels = 32 noisy + 32 cond latent + 1 mask, 32 latent channels, x16 spatial / x4 temporal VAE,
Qwen2.5-VL chat template with a cropped system prefix, byT5 for quoted text, SigLIP for i2v) and shrink
widths and depths. Pipeline attributes tied to the real tokenizer (REFERENCE.md trap 6) are set by
`configure_pipeline`.
"""
from __future__ import annotations

import json

import torch

D_TXT, D_BYT5, D_IMG = 32, 32, 32   # stand-ins for 3584 (Qwen2.5-VL-7B), 1472 (byT5), 1152 (SigLIP)
TEXT_MAX_TOKENS, BYT5_MAX_TOKENS, IMAGE_TOKENS = 64, 32, 16   # real: 1000, 256, 729

_CORPUS = ("A cat walks on the grass, realistic. You are a helpful assistant. Describe the video by "
           "detailing the following aspects: a red square moves right, a blue circle, a green bar.")


def tiny_transformer(task_type: str = "t2v", num_layers: int = 2):
    from diffusers import HunyuanVideo15Transformer3DModel

    return HunyuanVideo15Transformer3DModel(
        in_channels=65, out_channels=32, num_attention_heads=2, attention_head_dim=16,
        num_layers=num_layers, num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1,
        text_embed_dim=D_TXT, text_embed_2_dim=D_BYT5, image_embed_dim=D_IMG,
        rope_axes_dim=(4, 6, 6), target_size=64, task_type=task_type)


def tiny_vae():
    from diffusers import AutoencoderKLHunyuanVideo15

    # five levels like the real (128, 256, 512, 1024, 1024): x16 spatial, x4 temporal, 32 latent channels
    return AutoencoderKLHunyuanVideo15(latent_channels=32, block_out_channels=(32, 32, 64, 64, 64),
                                       layers_per_block=1)


def tiny_qwen_tokenizer():
    """Byte-level BPE trained in memory, wrapped as the real Qwen2Tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 10, trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    qt = Qwen2Tokenizer(vocab=tok.get_vocab(), merges=merges)
    qt.add_special_tokens({"additional_special_tokens": special[1:]})
    qt.padding_side = "right"
    qt.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return qt


def tiny_text_encoders():
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    tok = tiny_qwen_tokenizer()
    cfg = Qwen2_5_VLTextConfig(
        vocab_size=len(tok), hidden_size=D_TXT, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=2, bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tok.eos_token_id,
        # transformers 5 declares no rope_scaling parameter but still reads it from **kwargs (4.x declares it)
        rope_scaling={"mrope_section": [2, 2, 4], "rope_type": "default", "type": "default"})  # type: ignore[call-arg]
    text_encoder = Qwen2_5_VLTextModel(cfg).eval()
    tok2 = ByT5Tokenizer()   # byte-level: needs no vocab file
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=D_BYT5, d_kv=8, d_ff=64,
                                             num_layers=2, num_heads=4, feed_forward_proj="gated-gelu")).eval()
    return text_encoder, tok, text_encoder_2, tok2


def tiny_image_encoder():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    try:
        from transformers import SiglipImageProcessorPil as Processor  # transformers 5 without torchvision
    except ImportError:
        from transformers import SiglipImageProcessor as Processor  # type: ignore[assignment]  # same interface
    enc = SiglipVisionModel(SiglipVisionConfig(hidden_size=D_IMG, intermediate_size=64, num_hidden_layers=2,
                                               num_attention_heads=2, image_size=56, patch_size=14)).eval()
    return enc, Processor(size={"height": 56, "width": 56})   # 4x4 = 16 tokens (real: 27x27 = 729)


def tiny_components(task_type: str = "t2v", shift: float = 5.0, seed: int = 0) -> dict:
    """All pipeline components, deterministic for a given seed (same seed -> same base weights)."""
    from diffusers import ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    te, tok, te2, tok2 = tiny_text_encoders()
    comps = dict(transformer=tiny_transformer(task_type).eval(), vae=tiny_vae().eval(),
                 scheduler=FlowMatchEulerDiscreteScheduler(shift=shift), text_encoder=te, tokenizer=tok,
                 text_encoder_2=te2, tokenizer_2=tok2, guider=ClassifierFreeGuidance(guidance_scale=6.0))
    if task_type == "i2v":
        comps["image_encoder"], comps["feature_extractor"] = tiny_image_encoder()
    return comps


def configure_pipeline(pipe) -> None:
    """Set the attributes tied to the real tokenizer/encoders for the tiny stand-ins (trap 6)."""
    prefix = pipe.tokenizer.apply_chat_template(
        [{"role": "system", "content": pipe.system_message}, {"role": "user", "content": "X"}],
        add_generation_prompt=True, tokenize=False)
    pipe.prompt_template_encode_start_idx = len(pipe.tokenizer(prefix.split("X<|im_end|>")[0]).input_ids)
    pipe.tokenizer_max_length = TEXT_MAX_TOKENS
    pipe.tokenizer_2_max_length = BYT5_MAX_TOKENS
    pipe.vision_num_semantic_tokens = IMAGE_TOKENS
