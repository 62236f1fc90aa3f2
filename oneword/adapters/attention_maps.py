"""The UNet's attention, read during one forward pass: where a prompt's tokens look in a photo.

Recorders wrap each attention layer's own processor, so the pass computes exactly what it
computes without them; beside it they recompute the layer's attention probabilities from its
query and key projections and keep what a mask needs: for cross-attention, the probability
that each latent cell attends to the chosen tokens (mean over heads); for self-attention, the
cells' attention to each other (mean over heads) at one resolution. Reading cross-attention at
a word's tokens as a heat map of where the word is drawn follows DAAM (Tang et al. 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .pipelines import SDXLText, TextToImageModel

SELF_ATTENTION_CELLS = 32 * 32  # largest self-attention map kept: [cells, cells] per image


@dataclass(frozen=True)
class AttentionMaps:
    """One pass's attention at the chosen tokens.

    cross: per cross-attention layer, [B, h_l, w_l]: each cell's attention to the tokens
    (summed over them, mean over heads), in the order the UNet runs the layers.
    self_attention: [B, n, n] mean over heads and layers of the self-attention at the finest
    resolution of at most SELF_ATTENTION_CELLS cells, rows summing to 1; None if none.
    self_size: (h, w) of that resolution.
    """

    cross: list[torch.Tensor]
    self_attention: torch.Tensor | None
    self_size: tuple[int, int] | None


class _Recorder:
    """A processor that runs the layer's own processor and keeps its attention at `tokens`."""

    def __init__(self, inner, sink: _Sink, cross: bool):
        self.inner, self.sink, self.cross = inner, sink, cross

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        context = encoder_hidden_states if self.cross else hidden_states
        if context is not None and hidden_states.dim() == 3:
            self.sink.add(attn, hidden_states, context, self.cross)
        return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


class _Sink:
    def __init__(self, tokens: list[int], latent_size: tuple[int, int], self_cells: int):
        self.tokens, self.latent_size = tokens, latent_size
        self.self_cells = self_cells
        self.cross: list[torch.Tensor] = []
        self.self_maps: list[torch.Tensor] = []

    def add(self, attn, hidden_states, context, cross: bool) -> None:
        cells = hidden_states.shape[1]
        if not cross and cells != self.self_cells:
            return
        if attn.norm_cross and cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        probs = attn.get_attention_scores(query, key, None).float()  # [B·heads, cells, L]
        batch = hidden_states.shape[0]
        probs = probs.view(batch, attn.heads, cells, -1).mean(1)  # [B, cells, L]
        if cross:
            h, w = _grid(cells, self.latent_size)
            self.cross.append(probs[..., self.tokens].sum(-1).view(batch, h, w))
        else:
            self.self_maps.append(probs)


def _grid(cells: int, latent_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a layer with `cells` cells under a latent grid of `latent_size`."""
    height, width = latent_size
    factor = round(math.sqrt(height * width / cells))
    h, w = math.ceil(height / factor), math.ceil(width / factor)
    if h * w != cells:
        raise ValueError(f"a layer of {cells} cells does not tile a {height}x{width} latent")
    return h, w


def self_attention_cells(latent_size: tuple[int, int]) -> int:
    """Cells of the finest UNet resolution (latent halved until) at most SELF_ATTENTION_CELLS."""
    h, w = latent_size
    while h * w > SELF_ATTENTION_CELLS:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h * w


def latent_multiple(model: TextToImageModel) -> int:
    """What each side of a latent must be a multiple of for the UNet's downsampling."""
    return 2 ** (len(model.pipe.unet.config.down_block_types) - 1)


@torch.no_grad()
def record_attention(
    model: TextToImageModel,
    noisy_latents: torch.Tensor,
    timesteps: torch.Tensor,
    text_states: torch.Tensor | SDXLText,
    tokens: list[int],
) -> AttentionMaps:
    """The attention at token positions `tokens` of one UNet pass on noisy latents [B, c, h, w]
    (the pass's output is dropped); the UNet's processors are restored afterwards."""
    unet = model.pipe.unet
    size = tuple(noisy_latents.shape[-2:])
    sink = _Sink(tokens, size, self_attention_cells(size))
    own = dict(unet.attn_processors)
    unet.set_attn_processor(
        {name: _Recorder(p, sink, ".attn2." in name) for name, p in own.items()}
    )
    try:
        model.predict_noise(noisy_latents, timesteps, text_states)
    finally:
        unet.set_attn_processor(own)
    self_attention = torch.stack(sink.self_maps).mean(0) if sink.self_maps else None
    self_size = _grid(sink.self_cells, size) if sink.self_maps else None
    return AttentionMaps(sink.cross, self_attention, self_size)
