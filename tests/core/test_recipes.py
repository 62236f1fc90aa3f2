"""Recipes: directional, cross-init and core words, on the sphere math and on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from oneword.core.invariant import TextualInversionInvariant
from oneword.core.recipes import (
    RECIPES,
    Recipe,
    RecipeTerms,
    encoder_output_rows,
    part_cosine,
    recipe_defaults,
    tangent,
    to_sphere,
    vocabulary_radius,
)
from oneword.core.train import TrainConfig, start_state, train
from oneword.errors import OnewordError


def config(recipe="plain", **kw):
    base = dict(
        token="<c>",
        init_word="cat",
        vectors=2,
        steps=4,
        batch_size=2,
        grad_accum=1,
        checkpoint_every=2,
        lr=5e-2,
        recipe=recipe if isinstance(recipe, Recipe) else recipe_defaults(recipe),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_sphere_math_keeps_each_part_on_its_own_sphere():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 2, 8, generator=gen)
    layout, radius = (3, 5), [0.5, 2.0]
    on = to_sphere(rows, layout, radius)
    left, right = on.split([3, 5], dim=-1)
    assert torch.allclose(left.norm(dim=-1), torch.full((3, 2), 0.5))
    assert torch.allclose(right.norm(dim=-1), torch.full((3, 2), 2.0))
    assert torch.allclose(part_cosine(on, rows, layout), torch.ones(3, 2, 2), atol=1e-6)
    grad = torch.randn(3, 2, 8, generator=gen)
    flat = tangent(grad, on, layout)
    for g, r in zip(flat.split([3, 5], -1), on.split([3, 5], -1)):
        assert torch.allclose((g * r).sum(-1), torch.zeros(3, 2), atol=1e-5)
    assert not torch.allclose(flat, grad)


def test_a_recipe_is_named_and_read_back_from_the_config():
    with pytest.raises(OnewordError, match="--recipe"):
        Recipe("sideways")
    with pytest.raises(OnewordError, match="prior"):
        Recipe("directional", prior=-1)
    saved = config("core")
    assert TrainConfig.from_json(saved.to_json()) == saved
    old = json.loads(saved.to_json())
    del old["recipe"]  # a run recorded before recipes existed is a plain one
    assert TrainConfig.from_json(json.dumps(old)).recipe == Recipe("plain")


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_learns_only_the_placeholder_rows(model, photos, tmp_path, name):
    invariant = TextualInversionInvariant(model)
    start = start_state(model, config(name)).rows()
    state = train(model, photos, config(name), tmp_path / name)
    invariant.check()
    assert torch.isfinite(state.rows()).all()
    assert not torch.allclose(state.rows(), start)


def test_a_directional_word_keeps_the_vocabulary_norm(model, photos, tmp_path):
    (radius,) = vocabulary_radius(model.vocabulary_table, model.embedding_layout)
    start = start_state(model, config("directional")).rows()
    state = train(model, photos, config("directional"), tmp_path / "run")
    for rows in (start, state.rows()):
        assert torch.allclose(rows.norm(dim=-1).cpu(), torch.full((1, 2), radius), atol=1e-5)
    plain = train(model, photos, config("plain"), tmp_path / "plain").rows()
    assert not torch.allclose(plain.norm(dim=-1).cpu(), torch.full((1, 2), radius), atol=1e-3)


def test_cross_init_starts_at_the_encoders_output_for_the_init_word(model):
    cat = model.vocabulary_table[model.word_token_ids("cat")].mean(0).detach().cpu()
    want = encoder_output_rows(model, "<c>", cat.repeat(2, 1), model.embedding_layout)
    start = start_state(model, config("cross-init")).rows()[0].cpu()
    assert torch.allclose(start, want)
    assert not torch.allclose(start, cat.repeat(2, 1), atol=1e-2)


def test_core_rescales_to_the_init_words_norm_and_its_term_starts_at_zero(model, photos, tmp_path):
    start = start_state(model, config("core")).rows()
    terms = RecipeTerms(model, recipe_defaults("core"), "<c>", start)
    assert float(terms.loss(model, [start[0]], step=0)) == pytest.approx(0.0, abs=1e-5)
    moved = start[0] + 0.5 * torch.randn(start[0].shape, generator=torch.Generator().manual_seed(1))
    assert float(terms.loss(model, [moved], step=0)) > 1e-3
    # rescaled after half of the 4 steps: at step 2 the norms are the start's again
    state = train(model, photos, config("core", stop_at=2), tmp_path / "run")
    assert torch.allclose(state.rows().norm(dim=-1), start.norm(dim=-1), atol=1e-5)
    assert not torch.allclose(state.rows(), start)


@pytest.mark.parametrize("name", ["directional", "core"])
def test_a_recipe_run_resumes_to_the_same_result(model, photos, tmp_path, name):
    whole = train(model, photos, config(name), tmp_path / "whole").rows()
    train(model, photos, config(name, stop_at=2), tmp_path / "parts")
    parts = train(model, photos, config(name), tmp_path / "parts", resume=True).rows()
    assert torch.allclose(whole, parts, atol=1e-6)
    with pytest.raises(OnewordError, match="recipe"):
        train(model, photos, config("plain"), tmp_path / "parts", resume=True)


@pytest.mark.parametrize("name", ["directional", "cross-init", "core"])
def test_recipes_take_per_layer_words_and_batched_candidates(model, photos, tmp_path, name):
    from oneword.core.train import Candidate

    candidates = (Candidate(seed=0), Candidate(seed=1, jitter=0.5))
    per_layer = config(name, per_layer=True, candidates=candidates)
    state = train(model, photos, per_layer, tmp_path / "run")
    assert state.rows().dim() == 4 and state.rows().shape[0] == 2  # [K, layers, N, d]
    assert torch.isfinite(state.rows()).all()
    assert not torch.allclose(state.rows()[0], state.rows()[1])
    if name == "directional":
        (radius,) = vocabulary_radius(model.vocabulary_table, model.embedding_layout)
        assert torch.allclose(state.rows().norm(dim=-1), torch.tensor(radius), atol=1e-5)
