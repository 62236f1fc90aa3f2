"""Per-layer words: P+ (Voynov et al. 2023, "P+: Extended Textual Conditioning in
Text-to-Image Generation"), also called Extended Textual Inversion.

A plain learned word has one set of vectors that every cross-attention layer of the UNet reads.
A per-layer word has one set per cross-attention layer ([layers, N, d]): the prompt is encoded
once per layer, each time with that layer's vectors, and each layer attends to its own
encoding. The paper reports this as more expressive and faster to converge than one set.

The file layout (`<name>.per-layer.safetensors`): one tensor [N, d] per cross-attention layer,
in the order the UNet runs them (down blocks, middle, up blocks). For Stable Diffusion 1.x's 16
layers the keys are kohya's XTI names (IN01 … OUT11), so kohya's `--XTI_embeddings` reads the
file; for other UNets they are layer00, layer01, … The metadata holds the token.
"""

from __future__ import annotations

import torch

from ..errors import OnewordError

# kohya sd-scripts' names of SD 1.x's 16 cross-attention layers, in the UNet's order
SD1_LAYER_NAMES = (
    "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID",
    "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11",
)  # fmt: skip
PER_LAYER_SUFFIX = ".per-layer.safetensors"
MEAN_KEY = "per_layer_mean"  # metadata of the plain word exported from a per-layer word


def layer_names(count: int) -> tuple[str, ...]:
    """The file keys of `count` cross-attention layers."""
    if count == len(SD1_LAYER_NAMES):
        return SD1_LAYER_NAMES
    return tuple(f"layer{i:02d}" for i in range(count))


def layer_dict(vectors: torch.Tensor) -> dict[str, torch.Tensor]:
    """[layers, N, d] → {layer name: [N, d]} (contiguous fp32 CPU copies)."""
    plain = vectors.detach().to("cpu", torch.float32)
    return {name: plain[i].contiguous().clone() for i, name in enumerate(layer_names(len(plain)))}


def stacked_layers(tensors: dict) -> torch.Tensor | None:
    """[layers, N, d] if `tensors` is a per-layer word's file (its keys are exactly the layer
    names of their count, each [N, d] of one shape); else None."""
    if not isinstance(tensors, dict) or len(tensors) < 2:
        return None
    names = layer_names(len(tensors))
    if set(tensors) != set(names):
        return None
    parts = [tensors[name] for name in names]
    if not all(isinstance(p, torch.Tensor) and p.dim() == 2 for p in parts):
        return None
    if len({tuple(p.shape) for p in parts}) != 1:
        return None
    return torch.stack(parts)


def spread_over_layers(rows: torch.Tensor, layers: int) -> torch.Tensor:
    """Plain rows [..., N, d] → the same rows for every layer [..., layers, N, d] (a per-layer
    word starts from its init word in every layer, as in the paper)."""
    return rows.unsqueeze(-3).expand(*rows.shape[:-2], layers, *rows.shape[-2:]).clone()


def mean_over_layers(vectors: torch.Tensor) -> torch.Tensor:
    """[layers, N, d] → [N, d]: the plain word closest to a per-layer word in the L2 sense,
    for tools that read one set of vectors."""
    return vectors.mean(dim=0)


def word_layers(layers: int, model_name: str) -> int:
    """The layers of a per-layer word on a model with `layers` cross-attention layers (the
    model's `cross_attention_layers`); one line where the model cannot take one."""
    if layers < 1:
        raise OnewordError(
            f"--per-layer: model {model_name} does not take per-layer words (SDXL is not "
            "supported); leave --per-layer out"
        )
    return layers
