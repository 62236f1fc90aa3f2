"""Recipes: how a word is learned. Every recipe writes a plain word that any tool loads.

plain        Textual Inversion as Gal et al. (2022) wrote it: Adam on the free rows.
directional  Directional Textual Inversion (DTI, 2025): the norm of each vector stays at an
             in-vocabulary value (the vocabulary's median row norm) and only its direction is
             learned, by steps on the sphere (the gradient projected onto the tangent plane,
             Adam's step, the row put back on the sphere) under a von Mises-Fisher prior toward
             the init word's direction.
cross-init   Cross Initialisation (Pang et al., CVPR 2024): the rows start at the text
             encoder's *output* for the init word instead of its input row, with a small pull
             back toward that output.
core         CoRe's embedding stage (Wu et al., AAAI 2025): in context prompts, the encoder
             outputs of the other words stay close (in cosine) to what they are with the init
             word in the learned word's place; the norm is rescaled once, mid-training, to the
             init word's. CoRe's cross-attention term is not part of this recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import finite
from ..errors import OnewordError
from .interface import TextToImage
from .prompts import placeholder_names, token_string

RECIPES = ("plain", "directional", "cross-init", "core")
DEFAULT_RECIPE = "plain"

# Contexts a word should give way to (CoRe's regularisation prompts). They share style and
# scene words with the world's edit test but no colour or pattern word.
CONTEXT_TEMPLATES = (
    "a painting of a {}",
    "a sketch of a {} at night",
    "an oil painting of a {} in the city",
    "a drawing of a {} in the snow",
    "a photo of a {} on the beach",
    "a {} in the forest in a painting",
    "a pencil sketch of a {} in the desert",
    "a picture of a {} at sea",
)
CONTEXT_PER_STEP = 4  # context prompts per step and candidate, taken in turn


@dataclass(frozen=True)
class Recipe:
    """A recipe and its settings (`recipe_defaults` gives each one's)."""

    name: str = "plain"
    prior: float = 0.0  # directional: weight of the prior toward the init word's direction
    pull: float = 0.0  # cross-init: weight of the pull toward the init word's encoder output
    context: float = 0.0  # core: weight of the context term
    rescale_at: float = 0.0  # core: the share of the steps after which the norm is rescaled

    def __post_init__(self):
        if self.name not in RECIPES:
            raise OnewordError(f"--recipe {self.name}: choose one of {', '.join(RECIPES)}")
        for field in ("prior", "pull", "context"):
            finite(getattr(self, field), f"recipe {field}", low=0)
        finite(self.rescale_at, "recipe rescale_at", low=0, high=1)


def recipe_defaults(name: str) -> Recipe:
    """A recipe with the settings it is used with (chosen on the world model's tuning
    subjects, docs/experiments.md)."""
    settings = {
        "plain": {},
        "directional": {"prior": 0.001},
        "cross-init": {"pull": 0.05},
        "core": {"context": 0.05, "rescale_at": 0.5},
    }
    if name not in settings:
        raise OnewordError(f"--recipe {name}: choose one of {', '.join(RECIPES)}")
    return Recipe(name, **settings[name])


def vocabulary_radius(table: torch.Tensor, layout: tuple[int, ...]) -> list[float]:
    """The median row norm of each part of the token table (one part; SDXL's two)."""
    parts = table.detach().float().split(list(layout), dim=1)
    return [float(p.norm(dim=1).median()) for p in parts]


def to_sphere(rows: torch.Tensor, layout: tuple[int, ...], radius: list[float]) -> torch.Tensor:
    """Each vector's every part scaled to its radius (the direction kept) [..., d]."""
    parts = rows.split(list(layout), dim=-1)
    scaled = [p / p.norm(dim=-1, keepdim=True).clamp_min(1e-12) * r for p, r in zip(parts, radius)]
    return torch.cat(scaled, dim=-1)


def tangent(grad: torch.Tensor, rows: torch.Tensor, layout: tuple[int, ...]) -> torch.Tensor:
    """The gradient with each part's radial component removed (the sphere's tangent plane)."""
    out = []
    for g, r in zip(grad.split(list(layout), dim=-1), rows.split(list(layout), dim=-1)):
        u = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        out.append(g - (g * u).sum(-1, keepdim=True) * u)
    return torch.cat(out, dim=-1)


def part_cosine(rows: torch.Tensor, anchor: torch.Tensor, layout: tuple[int, ...]) -> torch.Tensor:
    """Cosine of each part of each vector to the anchor's [..., parts]."""
    pairs = zip(rows.split(list(layout), dim=-1), anchor.split(list(layout), dim=-1))
    return torch.stack([torch.cosine_similarity(r, a, dim=-1) for r, a in pairs], dim=-1)


def text_hidden(states) -> torch.Tensor:
    """The per-token states [B, L, D] of what `encode_text` returns (SDXL's keep them in
    `.hidden`, beside the pooled state)."""
    return getattr(states, "hidden", states)


def first_ids(ids: torch.Tensor) -> torch.Tensor:
    """[B, L] token ids of the first tokenizer ([B, 2, L] for SDXL's two)."""
    return ids if ids.dim() == 2 else ids[:, 0]


def encoder_output_rows(
    model: TextToImage, token: str, rows: torch.Tensor, layout: tuple[int, ...]
) -> torch.Tensor:
    """The text encoder's output [N, d] at the placeholder's N positions when its rows [N, d]
    are `rows`, read from the prompt that is the word alone (Cross Initialisation's start)."""
    n = rows.shape[0]
    ids = model.token_ids([token_string(token, n)])
    placeholder = placeholder_token_ids(model, token, n)
    positions = torch.isin(first_ids(ids)[0].cpu(), torch.tensor(placeholder))
    with torch.no_grad():
        hidden = text_hidden(model.encode_text(ids, rows[None].to(model.device)))
    out = hidden[0, positions.to(hidden.device)].float().cpu()
    if out.shape != rows.shape:
        raise OnewordError(
            f"--recipe cross-init: this text encoder's outputs ({tuple(out.shape)}) do not fit "
            f"its input rows ({tuple(rows.shape)}); choose another --recipe"
        )
    return out


def placeholder_token_ids(model: TextToImage, token: str, vectors: int) -> list[int]:
    return [model.word_token_ids(name)[0] for name in placeholder_names(token, vectors)]


class RecipeTerms:
    """What a recipe adds to the steps of K candidates that started at `start` [K, ...]: a
    loss term, a projection of the gradients and a change of the rows after the update.
    Everything here follows from the model, the recipe and the start, so a resumed run
    rebuilds it as the first start did."""

    def __init__(self, model: TextToImage, recipe: Recipe, token: str, start: torch.Tensor):
        self.recipe = recipe
        self.layout = tuple(getattr(model, "embedding_layout", (start.shape[-1],)))
        self.radius = vocabulary_radius(model.vocabulary_table, self.layout)
        self.anchor = start.detach().clone().to(model.device)  # [K, N, d] or [K, layers, N, d]
        self.context = None
        if recipe.name == "core" and recipe.context > 0:
            self.context = ContextTerm(model, token, self.anchor)

    def loss(self, model: TextToImage, params: list[torch.Tensor], step: int):
        """The recipe's term, summed over the candidates; None: the recipe adds none."""
        r = self.recipe
        rows = torch.stack(list(params))
        if r.name == "directional" and r.prior > 0:
            return r.prior * (1 - part_cosine(rows, self.anchor, self.layout)).sum()
        if r.name == "cross-init" and r.pull > 0:
            distance = (rows - self.anchor).pow(2).sum(-1)
            return r.pull * (distance / self.anchor.pow(2).sum(-1).clamp_min(1e-12)).sum()
        if self.context is not None:
            return r.context * self.context.loss(model, rows, step)
        return None

    def project(self, params: list[torch.nn.Parameter]) -> None:
        """Directional: only the gradient's tangent part moves a row."""
        if self.recipe.name != "directional":
            return
        for p in params:
            if p.grad is not None:
                p.grad = tangent(p.grad, p.detach(), self.layout)

    @torch.no_grad()
    def after_step(self, params: list[torch.nn.Parameter], step: int, steps: int) -> None:
        """Directional: the rows back on the sphere. Core: the rows rescaled to the start's
        norm once, after `rescale_at` of the steps."""
        r = self.recipe
        if r.name == "directional":
            for p in params:
                p.copy_(to_sphere(p, self.layout, self.radius))
        elif r.name == "core" and r.rescale_at > 0 and step == max(1, round(r.rescale_at * steps)):
            for p, start in zip(params, self.anchor):
                norms = start.split(list(self.layout), dim=-1)
                p.copy_(to_sphere_like(p, norms, self.layout))


def to_sphere_like(rows: torch.Tensor, like: tuple, layout: tuple[int, ...]) -> torch.Tensor:
    """Each part of rows scaled to the norm of the same part of `like` (vector by vector)."""
    parts = rows.split(list(layout), dim=-1)
    scaled = [
        p / p.norm(dim=-1, keepdim=True).clamp_min(1e-12) * q.norm(dim=-1, keepdim=True)
        for p, q in zip(parts, like)
    ]
    return torch.cat(scaled, dim=-1)


class ContextTerm:
    """CoRe's embedding regularisation: 1 - cosine between the encoder's outputs at the
    context words (not the placeholder's, nothing after the end token) of a context prompt
    with the learned rows and with the start rows (the init word's) in their place, averaged
    over positions and prompts, summed over candidates. A per-layer word is encoded layer by
    layer and the term averaged over its layers."""

    def __init__(self, model: TextToImage, token: str, start: torch.Tensor):
        vectors = start.shape[-2]
        texts = [t.format(token_string(token, vectors)) for t in CONTEXT_TEMPLATES]
        self.ids = model.token_ids(texts)  # [P, L] ([P, 2, L] for SDXL)
        ids = first_ids(self.ids).cpu()
        end = int(first_ids(model.token_ids([""]))[0, 1])
        placeholder = torch.tensor(placeholder_token_ids(model, token, vectors))
        position = torch.arange(ids.shape[1])[None]
        first_end = (ids == end).int().argmax(1, keepdim=True)
        keep = (position <= first_end) & ~torch.isin(ids, placeholder)
        self.keep = keep.float().to(model.device)  # [P, L]
        base = start[:, 0] if start.dim() == 4 else start  # a per-layer word starts alike
        with torch.no_grad():
            every = torch.arange(len(texts))
            self.reference = self._encode(model, base, every).detach()  # [K, P, L, D]

    def _encode(self, model: TextToImage, rows: torch.Tensor, chosen: torch.Tensor):
        k, c = rows.shape[0], len(chosen)
        ids = self.ids[chosen].repeat(k, *[1] * (self.ids.dim() - 1))
        candidate = torch.arange(k).repeat_interleave(c).to(model.device)
        hidden = text_hidden(model.encode_text(ids.to(model.device), rows, candidate))
        return hidden.float().reshape(k, c, *hidden.shape[1:])

    def loss(self, model: TextToImage, rows: torch.Tensor, step: int) -> torch.Tensor:
        count = self.reference.shape[1]
        chosen = torch.tensor([(step * CONTEXT_PER_STEP + j) % count for j in range(count)])
        chosen = chosen[: min(CONTEXT_PER_STEP, count)]
        layers = [rows[:, i] for i in range(rows.shape[1])] if rows.dim() == 4 else [rows]
        keep = self.keep[chosen]  # [C, L]
        total = 0.0
        for layer_rows in layers:
            hidden = self._encode(model, layer_rows, chosen)  # [K, C, L, D]
            cos = torch.cosine_similarity(hidden, self.reference[:, chosen], dim=-1)
            total = total + ((1 - cos) * keep).sum((1, 2)) / keep.sum()
        return (total / len(layers)).sum()


def recipe_first_rows(model: TextToImage, recipe: Recipe, token: str, rows: torch.Tensor):
    """A candidate's first rows [N, d] under the recipe, from its init rows: the encoder's
    output for them (cross-init), or their directions at the vocabulary's norm
    (directional)."""
    layout = tuple(getattr(model, "embedding_layout", (rows.shape[-1],)))
    if recipe.name == "cross-init":
        return encoder_output_rows(model, token, rows, layout)
    if recipe.name == "directional":
        return to_sphere(rows, layout, vocabulary_radius(model.vocabulary_table, layout))
    return rows
