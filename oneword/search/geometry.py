"""A model's vocabulary as the search needs it, and which words live on its sphere.

Breeding mutates in units of the vocabulary's per-dimension spread; blends and mutations of
directional words (the directional recipe, `core.recipes`) stay on the sphere of the
vocabulary's median row norm (`sphere`). Both come from the model's token table.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..adapters.loading import load_model
from .sphere import Sphere, vocabulary_radii


@dataclass(frozen=True)
class Geometry:
    """A model's vocabulary as breeding needs it: the per-dimension spread (the unit of
    mutation) and each part's median row norm (the sphere of directional words)."""

    spread: float
    radii: tuple[float, ...]
    layout: tuple[int, ...]

    def sphere(self) -> Sphere:
        return Sphere(self.radii, self.layout)


def geometry_of(model_name: str) -> Geometry:
    from ..core.vectors import vocabulary_spread

    model = load_model(model_name, "cpu")
    table = model.vocabulary_table
    layout = tuple(getattr(model, "embedding_layout", (table.shape[-1],)))
    return Geometry(vocabulary_spread(table)[1], vocabulary_radii(table, layout), layout)


def vocabulary_spread_of(model_name: str) -> float:
    """The per-dimension standard deviation of a model's token table."""
    return geometry_of(model_name).spread


def directional(config) -> bool:
    """Whether words keep their norm fixed (the directional recipe): `config` is a
    TrainConfig, the dict a run records of one, or an embedding file's metadata (its
    "recipe" is the recipe's name); a recipe is read by its name."""
    recipe = config.get("recipe") if isinstance(config, dict) else getattr(config, "recipe", None)
    name = recipe.get("name") if isinstance(recipe, dict) else getattr(recipe, "name", recipe)
    return name == "directional"


def use_sphere(asked: bool | None, configs: list) -> bool:
    """Whether to blend on the sphere: as asked (--on-sphere / --off-sphere), else (None) when
    every word is directional."""
    if asked is not None:
        return asked
    return bool(configs) and all(directional(c) for c in configs)
