"""The operators of search in embedding space (oneword.search.embedding_ops): pure tensor
math."""

from __future__ import annotations

import math

import pytest
import torch

from oneword.errors import OnewordError
from oneword.search.embedding_ops import (
    Breeding,
    Term,
    combine,
    cosine_matrix,
    crossover,
    mix,
    mutate,
    nearest_rows,
    next_generation,
    norm_percentile,
    norm_preserving_mean,
    parse_expression,
    select_top_k,
    select_tournament,
    slerp,
    weighted_mean,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_weighted_mean_and_the_shrinking_it_causes():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(weighted_mean([a, b]), torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(weighted_mean([a, b], [3, 1]), torch.tensor([[0.75, 0.25]]))
    assert float(weighted_mean([a, b]).norm()) == pytest.approx(math.cos(math.pi / 4))
    kept = norm_preserving_mean([a, 2 * b])  # direction of the mean, norm mean(1, 2)
    assert float(kept.norm()) == pytest.approx(1.5)
    torch.testing.assert_close(kept / kept.norm(), torch.tensor([[1.0, 2.0]]) / math.sqrt(5))
    with pytest.raises(ValueError, match="2 weights for 3"):
        weighted_mean([a, b, a], [1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        weighted_mean([a, b], [1, -1])


def test_slerp_follows_the_great_circle():
    a, b = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    # 45 degrees from both, norm halfway between 1 and 2
    torch.testing.assert_close(mid, 1.5 * torch.tensor([[1.0, 1.0, 0.0]]) / math.sqrt(2))
    third = slerp(a, b, 1 / 3)
    angle = math.degrees(math.acos(float(third[0, 0] / third.norm())))
    assert angle == pytest.approx(30.0, abs=1e-4)  # constant angular speed
    torch.testing.assert_close(slerp(a, 3 * a, 0.5), 2 * a)  # parallel: linear
    rows = torch.stack([a[0], b[0] / 2])  # per-row
    out = slerp(rows, rows.flip(0), 0.5)
    torch.testing.assert_close(out[0], out[1])


def test_mix_methods_keep_or_shrink_norms():
    g = gen()
    vs = [torch.randn(2, 16, generator=g) for _ in range(3)]
    norms = torch.stack([v.norm(dim=-1) for v in vs]).mean(0)
    assert bool((mix(vs, method="mean").norm(dim=-1) < norms).all())
    torch.testing.assert_close(mix(vs, method="norm-mean").norm(dim=-1), norms)
    two = mix(vs[:2], [1, 3], "slerp")
    torch.testing.assert_close(two, slerp(vs[0], vs[1], 0.75))
    torch.testing.assert_close(mix([vs[0], vs[0]], method="slerp"), vs[0])
    with pytest.raises(ValueError, match="different shapes"):
        mix([vs[0], vs[0][:1]])
    with pytest.raises(ValueError, match="choose one of"):
        mix(vs, method="median")


def test_word_arithmetic_parses_and_combines():
    assert parse_expression('"<my-cat>" - "cat" + dog') == [
        Term(1.0, "<my-cat>"),
        Term(-1.0, "cat"),
        Term(1.0, "dog"),
    ]
    assert parse_expression("<a> + 0.5*dog - 2 cat") == [
        Term(1.0, "<a>"),
        Term(0.5, "dog"),
        Term(-2.0, "cat"),
    ]
    with pytest.raises(ValueError, match="missing"):
        parse_expression("<a> dog")
    with pytest.raises(ValueError, match="empty"):
        parse_expression("  ")
    learned = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    cat, dog = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    raw = combine([(1.0, learned), (-1.0, cat), (1.0, dog)], keep_norm=False)
    torch.testing.assert_close(raw, torch.tensor([[1.0, 1.0], [-1.0, 3.0]]))
    kept = combine([(1.0, learned), (-1.0, cat), (1.0, dog)])
    torch.testing.assert_close(kept.norm(dim=-1), torch.tensor([2.0, 2.0]))
    with pytest.raises(ValueError, match="cannot be combined"):
        combine([(1.0, learned), (1.0, torch.zeros(3, 2))])


def test_nearest_rows_norms_and_cosines():
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    idx, cos = nearest_rows(torch.tensor([[2.0, 0.1]]), table, k=2)
    assert idx.tolist() == [[0, 2]] and cos[0, 0] > cos[0, 1]
    pct = norm_percentile(torch.tensor([1.2, 0.5, 2.0]), table)
    assert pct.tolist() == [75.0, 0.0, 100.0]
    m = cosine_matrix(
        [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 0.0]])]
    )
    torch.testing.assert_close(
        m, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    )


def test_selection_prefers_the_fit_and_is_seeded():
    fitness = torch.tensor([0.1, 5.0, 3.0, float("nan"), 4.0])
    picks = select_top_k(fitness, 200, 2, gen())
    assert set(picks.tolist()) == {1, 4}
    assert torch.equal(picks, select_top_k(fitness, 200, 2, gen()))
    t = select_tournament(fitness, 500, 3, gen(1))
    counts = torch.bincount(t, minlength=5)
    assert counts[1] > counts[2] > counts[0] and counts[3] == 0
    assert select_tournament(fitness, 50, 100, gen()).unique().tolist() == [1]


def test_crossovers_and_mutation():
    a, b = torch.zeros(2, 64), torch.ones(2, 64)
    u = crossover(a, b, "uniform", gen())
    assert set(u.unique().tolist()) == {0.0, 1.0} and 0.3 < float(u.mean()) < 0.7
    blend = crossover(a, b, "blend", gen(), alpha=0.5)
    assert float(blend.min()) >= -0.5 and float(blend.max()) <= 1.5 and float(blend.min()) < 0
    s = crossover(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), "slerp", gen())
    assert float(s.norm()) == pytest.approx(1.0)
    torch.testing.assert_close(crossover(a, b, "none", gen()), a)
    m = mutate(torch.zeros(1, 20000), 0.5, 0.2, gen())
    assert float(m.std()) == pytest.approx(0.1, rel=0.05)
    torch.testing.assert_close(mutate(a, 0.0, 1.0, gen()), a)
    with pytest.raises(ValueError):
        crossover(a, b, "two-point", gen())


def test_next_generation_keeps_elites_and_records_parents():
    g = gen(3)
    population = torch.randn(6, 1, 8, generator=g)
    fitness = torch.tensor([1.0, 6.0, 2.0, 5.0, 0.0, 3.0])
    breeding = Breeding(selection="top-k", top_k=2, crossover="uniform", mutation=0.0, elites=2)
    kids = next_generation(population, fitness, 5, breeding, 0.1, gen())
    assert [k.relation for k in kids[:2]] == ["elite", "elite"]
    assert [k.parents for k in kids[:2]] == [(1,), (3,)]
    torch.testing.assert_close(kids[0].vectors, population[1])
    for kid in kids[2:]:
        assert set(kid.parents) <= {1, 3} and kid.relation == "crossover-uniform"
        chosen = population[list(kid.parents)]
        assert bool(((kid.vectors == chosen[0]) | (kid.vectors == chosen[-1])).all())
    again = next_generation(population, fitness, 5, breeding, 0.1, gen())
    assert all(torch.equal(x.vectors, y.vectors) for x, y in zip(kids, again))
    mutated = next_generation(population, fitness, 3, Breeding(elites=0), 0.1, gen())
    assert len(mutated) == 3 and mutated[0].relation == "crossover-blend+mutation"
    assert len(next_generation(population, fitness, 1, Breeding(elites=3), 0.1, gen())) == 1
    with pytest.raises(OnewordError, match="--selection"):
        Breeding(selection="roulette")
