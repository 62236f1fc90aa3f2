"""Per-layer text states for a diffusers UNet (P+, Voynov et al. 2023).

A per-layer word encodes a prompt once per cross-attention layer. The encodings travel to the
UNet side by side along the sequence axis ([B, layers × L, d]), so the UNet, the pipeline and
classifier-free guidance pass them on unchanged; each cross-attention layer's processor then
reads its own window of L states. States of plain length L (prompts without per-layer words)
pass through untouched, so the windows can stay installed.
"""

from __future__ import annotations

import re

import torch

_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def cross_attention_names(unet) -> list[str]:
    """The processor names of the UNet's cross-attention layers, in the order the UNet runs
    them (down blocks, middle, up blocks; diffusers registers the middle block last)."""
    names = [n for n in unet.attn_processors if ".attn2." in n]

    def order(name: str):
        return (_ORDER.get(name.split(".")[0], 3), [int(x) for x in re.findall(r"\.(\d+)", name)])

    return sorted(names, key=order)


class LayerWindow:
    """The processor of cross-attention layer `index` of `layers`: it attends to states
    [index × L, (index + 1) × L) of per-layer text states, and to plain states as they are."""

    def __init__(self, inner, index: int, layers: int, context: int):
        self.inner, self.index, self.layers, self.context = inner, index, layers, context

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        states = encoder_hidden_states
        if states is not None and states.shape[1] == self.layers * self.context:
            start = self.index * self.context
            states = states[:, start : start + self.context]
        return self.inner(attn, hidden_states, states, attention_mask, temb, **kwargs)


def install_layer_windows(unet, context: int) -> None:
    """Give every cross-attention layer its window of per-layer states of length `context`
    (installed once; later calls only set the context)."""
    names = cross_attention_names(unet)
    processors = dict(unet.attn_processors)
    installed = [p for n in names if isinstance(p := processors[n], LayerWindow)]
    if len(installed) == len(names):  # every training micro-batch comes here: no re-install
        for window in installed:
            window.context = context
        return
    for i, name in enumerate(names):
        processors[name] = LayerWindow(processors[name], i, len(names), context)
    unet.set_attn_processor(processors)
