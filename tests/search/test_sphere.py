"""Blends and mutations on the sphere: the norm is kept, the ends are the parents, the noise
lies in the tangent plane; and evolution uses them for directional words."""

from __future__ import annotations

import math

import pytest
import torch

from oneword.search.embedding_ops import Breeding, next_generation
from oneword.search.geometry import directional
from oneword.search.sphere import (
    Sphere,
    exp_map,
    sphere_crossover,
    sphere_slerp,
    tangent_mutation,
    tangent_noise,
    to_sphere,
    vocabulary_radii,
)

LAYOUT = (4, 6)  # two parts side by side, as SDXL's [clip_l | clip_g]
RADII = (0.5, 2.0)


def words(seed: int, n: int = 3, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(n, sum(LAYOUT), generator=torch.Generator().manual_seed(seed)) * scale


def part_norms(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([p.norm(dim=-1) for p in x.split(list(LAYOUT), dim=-1)], dim=-1)


def on_radii(x: torch.Tensor) -> bool:
    return torch.allclose(part_norms(x), torch.tensor(RADII).expand(x.shape[0], -1), atol=1e-5)


def test_vocabulary_radii_are_each_parts_median_row_norm():
    table = torch.zeros(3, 10)
    table[:, :4] = torch.tensor([[1.0], [2.0], [3.0]])  # part norms 2, 4, 6
    table[:, 4:] = torch.tensor([[1.0], [1.0], [5.0]])  # part norms ~2.45, 2.45, 12.2
    radii = vocabulary_radii(table, LAYOUT)
    assert radii[0] == pytest.approx(4.0)
    assert radii[1] == pytest.approx(math.sqrt(6))


def test_slerp_starts_at_a_ends_at_b_and_keeps_each_parts_norm():
    a, b = words(0), words(1)
    start = sphere_slerp(a, b, 0.0, RADII, LAYOUT)
    end = sphere_slerp(a, b, 1.0, RADII, LAYOUT)
    torch.testing.assert_close(start, to_sphere(a, RADII, LAYOUT), atol=1e-5, rtol=0)
    torch.testing.assert_close(end, to_sphere(b, RADII, LAYOUT), atol=1e-5, rtol=0)
    for t in (0.25, 0.5, -0.3, 1.3):
        assert on_radii(sphere_slerp(a, b, t, RADII, LAYOUT))


def test_slerp_halfway_is_equally_far_from_both_ends_along_the_circle():
    a, b = words(2), words(3)
    mid = sphere_slerp(a, b, 0.5, RADII, LAYOUT)
    for part_mid, part_a, part_b in zip(*(x.split(list(LAYOUT), dim=-1) for x in (mid, a, b))):
        cos_a = torch.cosine_similarity(part_mid, part_a, dim=-1)
        cos_b = torch.cosine_similarity(part_mid, part_b, dim=-1)
        torch.testing.assert_close(cos_a, cos_b, atol=1e-5, rtol=0)


def test_tangent_noise_is_orthogonal_to_the_word():
    x = words(4, n=5)
    noise = tangent_noise(x, 1.0, torch.Generator().manual_seed(0))
    assert float(noise.norm()) > 1.0  # not vanishing: there is noise to be orthogonal
    torch.testing.assert_close((noise * x).sum(dim=-1), torch.zeros(5), atol=1e-4, rtol=0)


def test_the_exponential_map_keeps_the_radius_and_moves_by_the_tangent_length():
    x = torch.tensor([[3.0, 0.0, 0.0]])
    v = torch.tensor([[0.0, 2.0, 0.0]])  # an arc of length 2 on the sphere of radius 4
    y = exp_map(x, v, 4.0)
    torch.testing.assert_close(y.norm(dim=-1), torch.tensor([4.0]))
    angle = torch.arccos(torch.cosine_similarity(x, y, dim=-1))
    torch.testing.assert_close(angle, torch.tensor([0.5]))
    assert float(y[0, 1]) > 0  # it moved towards v


def test_tangent_mutation_keeps_the_norm_and_changes_the_direction_by_its_scale():
    x = to_sphere(words(5, n=64), RADII, LAYOUT)
    gen = torch.Generator().manual_seed(1)
    small = tangent_mutation(x, 0.01, RADII, LAYOUT, gen)
    large = tangent_mutation(x, 0.3, RADII, LAYOUT, gen)
    assert on_radii(small) and on_radii(large)
    moved = [float((1 - torch.cosine_similarity(m, x, dim=-1)).mean()) for m in (small, large)]
    assert 0 < moved[0] < moved[1]
    torch.testing.assert_close(
        tangent_mutation(words(5), 0.0, RADII, LAYOUT, gen), to_sphere(words(5), RADII, LAYOUT)
    )


@pytest.mark.parametrize("kind", ["slerp", "blend", "uniform", "none"])
def test_every_crossover_on_the_sphere_keeps_the_norm(kind):
    a, b = words(6), words(7)
    child = sphere_crossover(a, b, kind, RADII, LAYOUT, torch.Generator().manual_seed(0))
    assert on_radii(child)


def test_a_slerp_child_lies_between_its_parents():
    a, b = to_sphere(words(8), RADII, LAYOUT), to_sphere(words(9), RADII, LAYOUT)
    child = sphere_crossover(a, b, "slerp", RADII, LAYOUT, torch.Generator().manual_seed(3))
    across = torch.cosine_similarity(a, b, dim=-1)
    assert bool((torch.cosine_similarity(child, a, dim=-1) >= across - 1e-6).all())
    assert bool((torch.cosine_similarity(child, b, dim=-1) >= across - 1e-6).all())


def test_a_generation_on_the_sphere_keeps_every_child_but_the_elite_at_the_radii():
    population = torch.stack([words(s) for s in range(6)])  # far longer than the radii
    fitness = torch.arange(6, dtype=torch.float64)
    breeding = Breeding(selection="top-k", top_k=3, crossover="blend", mutation=0.2, elites=1)
    children = next_generation(
        population, fitness, 5, breeding, 0.1, torch.Generator().manual_seed(0),
        Sphere(RADII, LAYOUT),
    )  # fmt: skip
    assert children[0].relation == "elite"
    torch.testing.assert_close(children[0].vectors, population[5])
    assert all(c.relation == "sphere-blend+mutation" for c in children[1:])
    assert all(on_radii(c.vectors) for c in children[1:])
    plain = next_generation(population, fitness, 5, breeding, 0.1, torch.Generator().manual_seed(0))
    assert not any(on_radii(c.vectors) for c in plain[1:])


def test_directional_words_are_read_from_a_config_or_its_record():
    class Recipe:
        name = "directional"

    class Config:
        recipe = Recipe()

    assert directional(Config())
    assert directional({"recipe": {"name": "directional"}})
    assert not directional({"recipe": {"name": "plain"}})
    assert not directional({})  # a run from before recipes
    assert not directional(object())


def test_blends_on_the_sphere_keep_every_part_at_its_radius():
    """`mix` on a sphere: slerp walks the great circles (two words' blend is `sphere_slerp`
    at the second word's weight), mean and norm-mean take the mean's direction; every part
    ends at its radius, while the plain mean of the same words shrinks."""
    from oneword.search.embedding_ops import mix, mix_by_layout, sphere_mix

    sphere = Sphere(RADII, LAYOUT)
    a, b, c = (to_sphere(words(s), RADII, LAYOUT) for s in (1, 2, 3))
    for method in ("slerp", "mean", "norm-mean"):
        blended = mix_by_layout([a, b, c], LAYOUT, [1.0, 2.0, 1.0], method, sphere)
        assert on_radii(blended), method
    two = mix([a, b], [1.0, 3.0], "slerp", sphere)
    torch.testing.assert_close(two, sphere_slerp(a, b, 0.75, RADII, LAYOUT))
    mean = mix([a, b], None, "mean", sphere)
    torch.testing.assert_close(mean, to_sphere((a + b) / 2, RADII, LAYOUT))
    assert not on_radii(mix_by_layout([a, b], LAYOUT, None, "mean"))  # off the sphere: shorter
    with pytest.raises(ValueError, match="mix method"):
        sphere_mix([a, b], None, "median", sphere)


def test_use_sphere_is_as_asked_else_when_every_word_is_directional():
    from oneword.search.geometry import use_sphere

    directional_word = {"recipe": "directional"}  # an embedding file's metadata
    plain_word = {"recipe": "plain"}
    assert use_sphere(None, [directional_word, {"recipe": {"name": "directional"}}])
    assert not use_sphere(None, [directional_word, plain_word])
    assert not use_sphere(None, [])
    assert use_sphere(True, [plain_word]) and not use_sphere(False, [directional_word])
