"""Measuring learned words on the world model, where the oracle knows the truth of every image.

Shared by `oneword demo` and `bench/quality.py`: the subject's training photos, the novel-context
prompts, and their scores (concept fidelity and prompt fidelity, see `metrics.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .captions import parse_prompt
from .metrics import concept_similarity, prompt_fidelity, subject_hits
from .render import SUBJECTS_BY_ID, render_batch, subject_spec

PHOTO_SCENES = ("beach", "grass", "room", "city", "desert", "sea", "forest", "snow", "night")

# Novel contexts: scene and style combinations, "{}" stands for the subject's phrase.
NOVEL_PROMPTS = (
    "a painting of {} in the snow",
    "a sketch of {} at night",
    "a photo of {} in the forest",
    "a painting of {} on the beach",
    "a sketch of {} in the desert",
    "a photo of {} at sea",
    "a painting of {} in the city",
    "a sketch of {} on the grass",
    "a photo of {} in a room",
    "a painting of {} at night",
    "a sketch of {} in the snow",
    "a photo of {} in the desert",
)


def subject_photos(subject_id: str, count: int, generator: torch.Generator) -> torch.Tensor:
    """The user's photos [count, 3, 64, 64] in [0, 1]: the subject in varied scenes, as photos."""
    specs = [
        subject_spec(subject_id, PHOTO_SCENES[i % len(PHOTO_SCENES)], "photo", generator)
        for i in range(count)
    ]
    return render_batch(specs, generator)


def subject_phrase(subject_id: str, how: str, token: str | None = None) -> str:
    """How a prompt names the subject: the learned token, the class word, or its attributes."""
    subject = SUBJECTS_BY_ID[subject_id]
    if how == "learned":
        return token
    if how == "class":
        return f"a {subject.class_word}"
    if how == "description":
        article = "an" if subject.description[0] in "aeiou" else "a"
        return f"{article} {subject.description}"
    if how == "name":  # the ceiling: the word the world model was taught for the subject
        return f"a {subject.name}"
    raise ValueError(f"unknown phrase kind {how!r}")


@dataclass(frozen=True)
class Scores:
    concept_fidelity: float  # share of images the oracle calls the subject
    concept_similarity: float  # cosine of oracle features to the training photos
    prompt_fidelity: float  # share of images showing the prompted scene and style
    concept_hits: torch.Tensor | None = None  # [B] 0/1 per image, for confidence intervals
    prompt_hits: torch.Tensor | None = None  # [B] 0/1 per image


def context_of(prompt: str) -> dict:
    """The attributes a prompt asks of the context (scene, style), without the subject's."""
    requested = parse_prompt(prompt)
    return {k: v for k, v in requested.items() if k in ("scene", "style")}


def score_images(
    oracle, images: torch.Tensor, prompts: list[str], subject_id: str, photos: torch.Tensor
) -> Scores:
    """Scores of images [B, 3, 64, 64] drawn for prompts[i] (one prompt per image)."""
    concept = subject_hits(oracle, images, subject_id).float()
    similarity = concept_similarity(oracle, images, photos)
    prompt = torch.tensor(
        [prompt_fidelity(oracle, images[i : i + 1], context_of(p)) for i, p in enumerate(prompts)]
    )
    return Scores(concept.mean().item(), similarity, prompt.mean().item(), concept, prompt)
