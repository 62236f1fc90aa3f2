"""Test support: a diffusers SD pipeline folder rewritten as one checkpoint file in the original
latent-diffusion (LDM) key layout, the layout of the `.safetensors`/`.ckpt` files people share.

The mapping is written out here, independently of diffusers, so that loading the file back
through diffusers' own `from_single_file` checks both directions against each other.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET = "model.diffusion_model."
VAE = "first_stage_model."
TEXT = "cond_stage_model.transformer."

_UNET_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
]
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = [
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
]


def _resnet(rest: str) -> str:
    for ours, theirs in _UNET_RESNET:
        if rest.startswith(ours + "."):
            return theirs + rest[len(ours) :]
    raise KeyError(rest)


def unet_key(key: str, layers: int, up_has_attention: list[bool]) -> str:
    """The LDM name of a diffusers UNet2DConditionModel weight (`layers` per down block)."""
    parts = key.split(".")
    for ours, theirs in _UNET_TOP.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours) :]
    if parts[0] == "down_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":
            return f"input_blocks.{1 + level * (layers + 1) + layers}.0.op.{parts[-1]}"
        index = 1 + level * (layers + 1) + int(parts[3])
        rest = ".".join(parts[4:])
        return f"input_blocks.{index}." + (
            f"0.{_resnet(rest)}" if kind == "resnets" else f"1.{rest}"
        )
    if parts[0] == "mid_block":
        rest = ".".join(parts[3:])
        if parts[1] == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{2 * int(parts[2])}.{_resnet(rest)}"
    if parts[0] == "up_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":
            slot = 2 if up_has_attention[level] else 1
            return f"output_blocks.{level * (layers + 1) + layers}.{slot}.conv.{parts[-1]}"
        index = level * (layers + 1) + int(parts[3])
        rest = ".".join(parts[4:])
        return f"output_blocks.{index}." + (
            f"0.{_resnet(rest)}" if kind == "resnets" else f"1.{rest}"
        )
    raise KeyError(key)


def vae_key(key: str, levels: int) -> str:
    """The LDM name of a diffusers AutoencoderKL weight."""
    parts = key.split(".")
    side = parts[0]
    renamed = {"conv_norm_out": "norm_out"}
    if parts[1] in ("down_blocks", "up_blocks"):
        level = int(parts[2]) if side == "encoder" else levels - 1 - int(parts[2])
        name = "down" if side == "encoder" else "up"
        if parts[3] in ("downsamplers", "upsamplers"):
            what = "downsample" if side == "encoder" else "upsample"
            return f"{side}.{name}.{level}.{what}.conv.{parts[-1]}"
        rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
        return f"{side}.{name}.{level}.block.{parts[4]}.{rest}"
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.mid.block_{int(parts[3]) + 1}.{rest}"
        rest = ".".join(parts[4:])
        for ours, theirs in _VAE_ATTENTION:
            if rest.startswith(ours + "."):
                return f"{side}.mid.attn_1.{theirs}{rest[len(ours) :]}"
    if len(parts) == 3 and parts[1] in renamed:
        return f"{side}.{renamed[parts[1]]}.{parts[2]}"
    return key


def write_ldm_checkpoint(folder: str | Path, path: str | Path) -> Path:
    """One `.safetensors` file in the LDM layout holding a diffusers SD 1.x-layout folder's
    UNet, VAE and text encoder (the format of a shared SD 1.x checkpoint)."""
    import json

    folder, path = Path(folder), Path(path)
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    layers = unet_config["layers_per_block"]
    up_attention = ["CrossAttn" in t for t in unet_config["up_block_types"]]
    out = {}
    for key, value in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items():
        out[UNET + unet_key(key, layers, up_attention)] = value
    levels = len(vae_config["up_block_types"])
    for key, value in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        if ".mid_block.attentions." in key and value.dim() == 2:
            value = value[:, :, None, None]  # LDM's VAE attention is made of 1x1 convolutions
        out[VAE + vae_key(key, levels)] = value
    for key, value in load_file(folder / "text_encoder" / "model.safetensors").items():
        out[TEXT + "text_model." + key.removeprefix("text_model.")] = value
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    return path


def diffusers_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every weight of a diffusers folder's UNet, VAE and text encoder, named by part."""
    folder = Path(folder)
    files = {
        "unet": "unet/diffusion_pytorch_model.safetensors",
        "vae": "vae/diffusion_pytorch_model.safetensors",
        "text_encoder": "text_encoder/model.safetensors",
    }
    return {
        f"{part}.{key}": value
        for part, name in files.items()
        for key, value in load_file(folder / name).items()
    }
