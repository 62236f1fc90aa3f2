"""On the world model, whose truth is known: the automatic masks find the subject."""

from __future__ import annotations

import torch

from oneword.adapters.loading import load_model
from oneword.core.generate import to_pil
from oneword.experiments.auto_masks import auto_masks
from oneword.world import evaluate


def iou(weight: torch.Tensor, truth: torch.Tensor) -> float:
    a, b = weight > 0.5, truth > 0.5
    return float((a & b).sum() / (a | b).sum())


def test_the_masks_of_the_cats_photos_match_its_true_masks():
    model = load_model("world")
    photos, masks = evaluate.subject_photos_and_masks("cat", 5, torch.Generator().manual_seed(7))
    made = auto_masks(model, [to_pil(p) for p in photos], "cat", 64)
    scores = sorted(iou(m.weight, t[0]) for m, t in zip(made, masks))
    assert scores[2] > 0.7, scores  # the median photo
    assert all(m.verdict is None for m in made)


def test_a_photo_without_its_subject_is_found_empty():
    from PIL import Image

    model = load_model("world")
    (made,) = auto_masks(model, [Image.new("RGB", (64, 64), (128, 128, 128))], "cat", 64)
    assert made.verdict == "nothing" and torch.equal(made.training_weight(), torch.ones(64, 64))
