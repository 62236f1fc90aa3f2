"""Measuring learned words on the world model, where the oracle knows the truth of every image.

Shared by `oneword demo` and `bench/quality.py`: the subject's training photos, the novel-context
prompts, and their scores (concept fidelity and prompt fidelity, see `metrics.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .captions import parse_prompt
from .metrics import attribute_hits, concept_similarity, prompt_fidelity, subject_hits
from .render import (
    SUBJECTS_BY_ID,
    Spec,
    render_with_coverage,
    subject_spec,
)

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
    return subject_photos_and_masks(subject_id, count, generator)[0]


def subject_photos_and_masks(
    subject_id: str, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`subject_photos` and the subject's masks [count, 1, 64, 64] in [0, 1] (its coverage),
    as a user would cut the subject out."""
    specs = [
        subject_spec(subject_id, PHOTO_SCENES[i % len(PHOTO_SCENES)], "photo", generator)
        for i in range(count)
    ]
    images, coverage = render_with_coverage(specs, generator)
    return images, coverage[:, :1]


# The thing a subject is photographed with (the mascot's dish): a small green triangle, an
# ordinary object whose shape and colour no tested subject has, so the oracle can tell which of
# the two a learned word draws.
COMPANION = Spec("triangle", "green", "green", "solid", "small", "center", "grass", "photo")
COMPANION_ATTRIBUTES = {"shape": COMPANION.shape, "color": COMPANION.color}
_OTHER_SIDE = {"left": "right", "right": "left"}


def companion_photos(
    subject_id: str, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Photos [count, 3, 64, 64] in [0, 1] of the subject (left or right, medium) beside its
    companion on the other side, and the subject's masks [count, 1, 64, 64] in [0, 1] (its
    coverage where the companion does not hide it), as a user would paint them."""
    photos, masks, _ = companion_photos_and_cover(subject_id, count, generator)
    return photos, masks


def companion_photos_and_cover(
    subject_id: str, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`companion_photos`, and the companion's own coverage [count, 1, 64, 64] (where a mask of
    the subject must not reach)."""
    photos, masks, fronts = [], [], []
    for i in range(count):
        scene = PHOTO_SCENES[i % len(PHOTO_SCENES)]
        side = "left" if torch.rand((), generator=generator) < 0.5 else "right"
        subject = replace(subject_spec(subject_id, scene, "photo", generator), position=side)
        subject = replace(subject, size="medium")
        companion = replace(COMPANION, position=_OTHER_SIDE[side], scene=scene)
        seed = int(torch.randint(2**62, (), generator=generator))
        # the same seed draws the same background under both objects
        image, cover = render_with_coverage([subject], torch.Generator().manual_seed(seed))
        other, other_cover = render_with_coverage([companion], torch.Generator().manual_seed(seed))
        front = other_cover[:, :1]
        photos.append(image * (1 - front) + other * front)
        masks.append(cover[:, :1] * (1 - front))
        fronts.append(front)
    return torch.cat(photos), torch.cat(masks), torch.cat(fronts)


# Scenes whose own greens are too near the companion's for its colour to be told apart.
GREEN_SCENES = ("grass", "forest")
LEAK_PIXELS = 8  # pixels of the companion's green that count as a leak (a tenth of its area)


def companion_hits(oracle, images: torch.Tensor, scenes: list[str | None]) -> torch.Tensor:
    """[B] bool: image i shows the companion: the oracle reads its shape and colour (drawn as
    the main thing), or at least LEAK_PIXELS pixels are green (its colour leaked onto the
    subject; not counted in green scenes, scenes[i] the image's prompted scene)."""
    hits = attribute_hits(oracle, images, COMPANION_ATTRIBUTES)
    main = torch.stack(list(hits.values())).all(0)
    rgb = images.float().cpu()
    # no tested subject or non-green scene has pixels this much greener than red and blue
    greenness = rgb[:, 1] - torch.maximum(rgb[:, 0], rgb[:, 2])
    near = (greenness > 0.15).sum((1, 2)) >= LEAK_PIXELS
    checkable = torch.tensor([scene not in GREEN_SCENES for scene in scenes])
    return main | (near & checkable)


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
    companion_hits: torch.Tensor | None = None  # [B] 0/1: the image shows the companion


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
    scenes = [parse_prompt(p).get("scene") for p in prompts]
    companion = companion_hits(oracle, images, scenes).float()
    return Scores(
        concept.mean().item(), similarity, prompt.mean().item(), concept, prompt, companion
    )
