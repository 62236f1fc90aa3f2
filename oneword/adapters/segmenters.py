"""A segmentation model the user already has on disk, prompted with the class word: CLIPSeg
(Lüddecke & Ecker 2022), loaded with transformers. oneword never downloads one: a folder, or
a hub id that the local cache holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import OnewordError


@dataclass
class ClipSeg:
    """A CLIPSeg model and its processor."""

    model: object
    processor: object
    name: str

    @torch.no_grad()
    def heat(self, image, word: str) -> torch.Tensor:
        """Probability [h, w] (CLIPSeg's own output size) that each pixel shows `word`."""
        inputs = self.processor(text=[word], images=[image], return_tensors="pt", padding=True)
        logits = self.model(**inputs).logits  # [h, w], or [1, h, w]
        return torch.sigmoid(logits.float().reshape(-1, *logits.shape[-2:])[0])


def load_clipseg(path: str) -> ClipSeg:
    """A CLIPSeg folder (or a hub id in the local cache), refused in one line otherwise."""
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    try:
        processor = CLIPSegProcessor.from_pretrained(path, local_files_only=True)
        model = CLIPSegForImageSegmentation.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        where = "a folder" if Path(path).exists() else "not a folder, nor in the local cache"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnewordError(
            f"--mask-model {path}: {where} that loads as CLIPSeg ({reason[:160]}); give a "
            "CLIPSeg folder saved with save_pretrained, or leave --mask-model out"
        ) from None
    model.eval()
    return ClipSeg(model, processor, path)
