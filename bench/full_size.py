"""Stable Diffusion 1.5 and SDXL base at their real sizes with random weights, built from their
configs without a download: they compute, time and fill memory like the real models and draw
nothing. For speed benchmarks (`train_speed.py`) and a shape test; not part of the package."""

from __future__ import annotations

import copy

import torch

from oneword.adapters.tiny import Components, seeded
from oneword.adapters.tokenizer import TINY_EXTRA_WORDS, build_clip_tokenizer
from oneword.core.prompts import template_words


def build_sd15_components(seed: int = 0, device: str | torch.device = "cpu") -> Components:
    """Stable Diffusion 1.5's exact architecture with random weights, built from its config
    (no download): it computes, times and fills memory like the real model, draws nothing."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_clip_tokenizer(template_words() + list(TINY_EXTRA_WORDS), vocab_size=49408)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            text_encoder = CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=49408,
                    hidden_size=768,
                    intermediate_size=3072,
                    num_hidden_layers=12,
                    num_attention_heads=12,
                    max_position_embeddings=77,
                    hidden_act="quick_gelu",
                    projection_dim=768,
                    bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
            )
            unet = diffusers.UNet2DConditionModel(
                sample_size=64, cross_attention_dim=768, attention_head_dim=8
            )
            vae = diffusers.AutoencoderKL(
                block_out_channels=(128, 256, 512, 512),
                layers_per_block=2,
                latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                sample_size=512,
            )
    finally:
        torch.random.set_rng_state(torch_state)
    scheduler = diffusers.PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return Components(tokenizer, text_encoder, unet, vae, scheduler)


def build_sdxl_base_components(seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """SDXL base 1.0's exact architecture with random weights, built from its config (no
    download), as `StableDiffusionXLPipeline` keyword arguments: for speed benchmarks."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_clip_tokenizer(template_words() + list(TINY_EXTRA_WORDS), vocab_size=49408)

    def text_config(width, layers, heads, act, eos):
        return CLIPTextConfig(
            vocab_size=49408,
            hidden_size=width,
            intermediate_size=width * 4,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            hidden_act=act,
            projection_dim=width,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )

    def make():
        with torch.device(device):
            return dict(
                text_encoder=CLIPTextModel(
                    text_config(768, 12, 12, "quick_gelu", tokenizer.eos_token_id)
                ),
                text_encoder_2=CLIPTextModelWithProjection(text_config(1280, 32, 20, "gelu", 2)),
                unet=diffusers.UNet2DConditionModel(
                    sample_size=128,
                    block_out_channels=(320, 640, 1280),
                    down_block_types=(
                        "DownBlock2D",
                        "CrossAttnDownBlock2D",
                        "CrossAttnDownBlock2D",
                    ),
                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                    transformer_layers_per_block=(1, 2, 10),
                    attention_head_dim=(5, 10, 20),
                    cross_attention_dim=2048,
                    use_linear_projection=True,
                    addition_embed_type="text_time",
                    addition_time_embed_dim=256,
                    projection_class_embeddings_input_dim=2816,
                ),
                vae=diffusers.AutoencoderKL(
                    block_out_channels=(128, 256, 512, 512),
                    layers_per_block=2,
                    latent_channels=4,
                    down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4,
                    sample_size=1024,
                    scaling_factor=0.13025,
                ),
            )

    tokenizer_2 = copy.deepcopy(tokenizer)
    tokenizer_2.pad_token = "!"
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return dict(
        seeded(seed, make), tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler
    )
