"""The Textual Inversion invariant as an object: only the placeholder rows ever change."""

from __future__ import annotations

import hashlib
import json

import torch

from .interface import TextToImage


class TextualInversionInvariant:
    """Only the placeholder rows may change: every weight of the model stays bit-identical.

    Take it before training and `check()` after; it fingerprints every parameter and buffer of
    the text encoder, UNet and VAE and the tokenizer's original vocabulary.
    """

    def __init__(self, model: TextToImage):
        self._model = model
        self._before = self._fingerprints()

    def _fingerprints(self) -> dict[str, str]:
        prints = {}
        for name, tensor in self._model.frozen_tensors():
            data = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8)
            prints[name] = hashlib.sha1(data.numpy().tobytes()).hexdigest()
        prints["tokenizer.vocabulary"] = hashlib.sha1(
            json.dumps(self._model.base_vocabulary(), sort_keys=True).encode()
        ).hexdigest()
        return prints

    def changed(self) -> list[str]:
        after = self._fingerprints()
        return sorted(
            k for k in self._before.keys() | after.keys() if self._before.get(k) != after.get(k)
        )

    def check(self) -> None:
        changed = self.changed()
        if changed:
            raise AssertionError(f"frozen weights changed: {', '.join(changed[:5])}")
