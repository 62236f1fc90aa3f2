"""Tiny models with random weights, built in code and saved like real ones (for tests and
the built-in `tiny`/`tiny-sdxl` models), and the parts a trained model is made of."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .tokenizer import TINY_EXTRA_WORDS, build_clip_tokenizer


@dataclass(frozen=True)
class TinyShapes:
    """Sizes of a built-in tiny SD-architecture model."""

    text_width: int = 32
    text_layers: int = 2
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (32, 32, 32)
    unet_layers: int = 1
    latent_size: int = 8
    context: int = 77
    prediction_type: str = "epsilon"


@dataclass
class Components:
    """The parts of an SD-architecture pipeline, as plain torch modules (for training them)."""

    tokenizer: object
    text_encoder: nn.Module
    unet: nn.Module
    vae: nn.Module
    scheduler: object


def build_components(
    words: list[str], shapes: TinyShapes = TinyShapes(), seed: int = 0
) -> Components:
    """Randomly initialised SD-architecture parts with a tokenizer that knows `words`."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_clip_tokenizer(words)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # diffusers/transformers initialise weights from the global RNG
    try:
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=shapes.text_width,
                intermediate_size=shapes.text_width * 4,
                num_hidden_layers=shapes.text_layers,
                num_attention_heads=max(2, shapes.text_width // 64),
                max_position_embeddings=shapes.context,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                projection_dim=shapes.text_width,
            )
        )
        unet = _build_unet(shapes)
        vae = _build_vae(shapes)
    finally:
        torch.random.set_rng_state(torch_state)
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=shapes.prediction_type,
    )
    return Components(tokenizer, text_encoder, unet, vae, scheduler)


def _build_vae(shapes, **config):
    """A tiny AutoencoderKL with one layer per block (SD's layout, small channels)."""
    import diffusers

    m = len(shapes.vae_channels)
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=8,
        block_out_channels=shapes.vae_channels,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * m,
        up_block_types=("UpDecoderBlock2D",) * m,
        sample_size=shapes.latent_size * 2 ** (m - 1),
        **config,
    )


def _build_unet(shapes: TinyShapes):
    import diffusers

    n = len(shapes.unet_channels)
    return diffusers.UNet2DConditionModel(
        sample_size=shapes.latent_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=shapes.unet_layers,
        block_out_channels=shapes.unet_channels,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=shapes.text_width,
        attention_head_dim=8,
    )


def sd_pipeline(parts: Components):
    """A diffusers StableDiffusionPipeline over the parts (no safety checker)."""
    import diffusers

    return diffusers.StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=parts.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_components(parts: Components, folder: str | Path) -> Path:
    """Save the parts as a diffusers StableDiffusionPipeline folder (atomically)."""
    import diffusers

    diffusers.utils.logging.disable_progress_bar()
    folder = Path(folder)
    save_pipeline_atomically(sd_pipeline(parts), folder)
    return folder


def load_components(folder: str | Path) -> Components:
    """The fp32 parts of a saved SD-architecture folder, to continue training them."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    fp32 = {"torch_dtype": torch.float32}
    return Components(
        CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        CLIPTextModel.from_pretrained(folder / "text_encoder", **fp32),
        diffusers.UNet2DConditionModel.from_pretrained(folder / "unet", **fp32),
        diffusers.AutoencoderKL.from_pretrained(folder / "vae", **fp32),
        diffusers.DDIMScheduler.from_pretrained(folder / "scheduler"),
    )


def build_tiny_pipeline(
    folder: str | Path,
    seed: int = 0,
    words: list[str] | None = None,
    shapes: TinyShapes = TinyShapes(),
) -> Path:
    """Build an SD-architecture pipeline with random weights and save it as a diffusers folder.

    It is loaded back through the same `from_pretrained` path as real checkpoints.
    """
    from ..core.prompts import template_words

    vocabulary = list(words or []) + template_words() + list(TINY_EXTRA_WORDS)
    return save_components(build_components(vocabulary, shapes, seed), folder)


@dataclass(frozen=True)
class TinySDXLShapes:
    """Sizes of the built-in tiny SDXL-architecture model (two text encoders of different
    widths, like CLIP ViT-L 768 and OpenCLIP bigG 1280)."""

    width_l: int = 32
    width_g: int = 48
    text_layers: int = 2
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (32, 32, 32)
    time_embed_dim: int = 8
    latent_size: int = 8


def build_sdxl_components(
    words: list[str], shapes: TinySDXLShapes = TinySDXLShapes(), seed: int = 0
) -> dict:
    """Randomly initialised SDXL-architecture parts (as diffusers' own SDXL tests build them):
    the keyword arguments of `StableDiffusionXLPipeline`."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_clip_tokenizer(words)
    tokenizer_2 = copy.deepcopy(tokenizer)  # the same ids, as SDXL's two tokenizers have
    tokenizer_2.pad_token = "!"  # bigG's tokenizer pads with "!"

    def text_config(width: int, legacy_eos: bool):
        # SDXL's real bigG config has the legacy eos id 2 (pooling at the highest id)
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=width * 4,
            num_hidden_layers=shapes.text_layers,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=2 if legacy_eos else tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=width,
        )

    def make():
        return dict(
            text_encoder=CLIPTextModel(text_config(shapes.width_l, False)),
            text_encoder_2=CLIPTextModelWithProjection(text_config(shapes.width_g, True)),
            unet=_build_sdxl_unet(shapes),
            vae=_build_vae(shapes, scaling_factor=0.13025),
        )

    parts = seeded(seed, make)
    # as SDXL base's own config: Euler ignores the last two keys, DDIM and DDPM read them
    scheduler = diffusers.EulerDiscreteScheduler.from_config(
        dict(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
            clip_sample=False,
            set_alpha_to_one=False,
        )
    )
    return dict(parts, tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler)


def _build_sdxl_unet(shapes: TinySDXLShapes):
    import diffusers

    n = len(shapes.unet_channels)
    return diffusers.UNet2DConditionModel(
        sample_size=shapes.latent_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=shapes.unet_channels,
        norm_num_groups=8,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=shapes.width_l + shapes.width_g,
        attention_head_dim=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=shapes.time_embed_dim,
        projection_class_embeddings_input_dim=6 * shapes.time_embed_dim + shapes.width_g,
    )


def build_tiny_sdxl_pipeline(
    folder: str | Path,
    seed: int = 0,
    words: list[str] | None = None,
    shapes: TinySDXLShapes = TinySDXLShapes(),
) -> Path:
    """Build an SDXL-architecture pipeline with random weights and save it as a diffusers
    folder, loaded back through `from_pretrained` like a real SDXL checkpoint."""
    import diffusers

    from ..core.prompts import template_words

    diffusers.utils.logging.disable_progress_bar()
    vocabulary = list(words or []) + template_words() + list(TINY_EXTRA_WORDS)
    pipe = diffusers.StableDiffusionXLPipeline(
        **build_sdxl_components(vocabulary, shapes, seed),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    folder = Path(folder)
    save_pipeline_atomically(pipe, folder)
    return folder


def save_pipeline_atomically(pipe, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    pipe.save_pretrained(tmp, safe_serialization=True)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


TINY_FEATURE_PREPROCESS = {"size": 32, "crop": 32}


def build_tiny_clip_model(
    folder: str | Path, seed: int = 0, words: list[str] | None = None
) -> Path:
    """A CLIP model with random weights and tiny sizes, saved as a transformers folder and
    loaded back by `load_clip_model` like a real one (for tests)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = build_clip_tokenizer(list(words or []) + list(TINY_EXTRA_WORDS))
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    model = seeded(seed, lambda: CLIPModel(config))
    side = TINY_FEATURE_PREPROCESS
    processor = CLIPImageProcessor(
        size={"shortest_edge": side["size"]},
        crop_size={"height": side["crop"], "width": side["crop"]},
    )
    return save_parts_atomically(Path(folder), [model, tokenizer, processor])


def build_tiny_clipseg_model(folder: str | Path, seed: int = 0) -> Path:
    """A CLIPSeg model with random weights and tiny sizes, saved as a transformers folder with
    its processor (for tests: it segments nothing in particular)."""
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        ViTImageProcessor,
    )

    tokenizer = build_clip_tokenizer(list(TINY_EXTRA_WORDS))
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=32, patch_size=8)  # fmt: skip
    config = CLIPSegConfig(
        text_config=text, vision_config=vision, projection_dim=16, extract_layers=(0, 1),
        reduce_dim=16, decoder_intermediate_size=32,
    )  # fmt: skip
    model = seeded(seed, lambda: CLIPSegForImageSegmentation(config))
    images = ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )  # fmt: skip
    processor = CLIPSegProcessor(image_processor=images, tokenizer=tokenizer)
    return save_parts_atomically(Path(folder), [model, processor])


def build_tiny_dino_model(folder: str | Path, seed: int = 0) -> Path:
    """A DINOv2 model with random weights and tiny sizes, saved as a transformers folder."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    model = seeded(seed, lambda: Dinov2Model(config))
    side = TINY_FEATURE_PREPROCESS
    processor = BitImageProcessor(
        size={"shortest_edge": side["size"]},
        crop_size={"height": side["crop"], "width": side["crop"]},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return save_parts_atomically(Path(folder), [model, processor])


def seeded(seed: int, make):
    """make() with the global RNG seeded (transformers initialises weights from it), then
    the RNG restored."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return make()
    finally:
        torch.random.set_rng_state(state)


def save_parts_atomically(folder: Path, parts: list) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    for part in parts:
        part.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder
