"""The math of automatic masks: heat maps to a mask of the subject."""

import pytest
import torch

from oneword.core import masking


def blob(size=16, top=4, left=5, h=6, w=5, value=1.0) -> torch.Tensor:
    heat = torch.zeros(1, size, size)
    heat[:, top : top + h, left : left + w] = value
    return heat


def test_combine_layers_brings_every_layer_to_the_grid_at_equal_weight():
    fine = blob(16)
    coarse = torch.nn.functional.avg_pool2d(fine[None], 4)[0] * 50  # 16x more attention a cell
    combined = masking.combine_layers([fine, coarse], (16, 16))
    assert combined.shape == (1, 16, 16)
    alone = masking.combine_layers([fine, fine], (16, 16))
    # the coarse layer counts as much as the fine one, not 50 times more
    assert torch.corrcoef(torch.stack([combined.flatten(), alone.flatten()]))[0, 1] > 0.8
    with pytest.raises(ValueError):
        masking.combine_layers([], (16, 16))


def test_refine_with_identity_attention_keeps_the_heat_and_uniform_flattens_it():
    heat = blob(8)
    eye = torch.eye(64)[None]
    assert torch.allclose(masking.refine(heat, eye, (8, 8)), heat, atol=1e-6)
    uniform = torch.full((1, 64, 64), 1 / 64)
    flat = masking.refine(heat, uniform, (8, 8))
    assert torch.allclose(flat, torch.full_like(flat, heat.mean().item()), atol=1e-5)
    assert masking.refine(heat, uniform, (8, 8), passes=0) is heat


def test_refine_spreads_heat_along_attention_within_an_object():
    heat = torch.zeros(1, 4, 4)
    heat[0, 0, 0] = 1.0  # the cross-attention found one corner of an object of 4 cells
    obj = [0, 1, 4, 5]
    attention = torch.eye(16)
    for i in obj:
        attention[i] = 0
        attention[i, obj] = 0.25
    refined = masking.refine(heat, attention[None], (4, 4))
    assert torch.allclose(refined[0].flatten()[obj], torch.full((4,), 0.25))
    assert refined[0].flatten()[[2, 3, 15]].abs().max() == 0


def test_normalise_spans_zero_to_one_and_a_flat_map_is_zero():
    heat = torch.stack([blob(8)[0] * 3 + 2, torch.full((8, 8), 5.0)])
    out = masking.normalise(heat)
    assert out[0].min() == 0 and out[0].max() == 1
    assert out[1].abs().max() == 0


def test_otsu_splits_two_groups_between_them():
    values = torch.cat([torch.full((100,), 0.2), torch.full((50,), 0.8)])
    level = masking.otsu_level(values)
    assert 0.2 < level <= 0.8
    assert ((values >= level) == (values > 0.5)).all()


def test_largest_component_keeps_only_the_biggest_part():
    binary = torch.zeros(1, 10, 10, dtype=torch.bool)
    binary[0, 1:3, 1:3] = True  # 4 cells
    binary[0, 5:9, 5:8] = True  # 12 cells
    binary[0, 4, 4] = True  # touches the big part diagonally (8-connected)
    kept = masking.largest_component(binary)
    assert kept.sum() == 13
    assert not kept[0, 1:3, 1:3].any()
    assert masking.largest_component(torch.zeros(1, 4, 4, dtype=torch.bool)).sum() == 0


def test_grow_and_feather():
    binary = blob(12, 4, 4, 2, 2).bool()
    grown = masking.grow(binary, 1)
    assert grown.sum() == 16 and masking.grow(binary, 0) is binary
    soft = masking.feather(binary, 1.0)
    assert (soft[binary] == 1).all()  # the inside keeps full weight
    assert 0 < soft[0, 3, 5] < 1 and soft[0, 0, 0] < soft[0, 3, 5]  # falls off outside
    assert torch.equal(masking.feather(binary, 0), binary.float())


def test_heat_to_mask_finds_the_hot_blob_and_its_share():
    heat = masking.normalise(blob(16) + 0.1 * torch.rand(1, 16, 16, generator=torch.Generator()))
    recipe = masking.MaskRecipe(level=0.7, feather=0.0)
    mask, share = masking.heat_to_mask(heat, recipe)
    assert torch.equal(mask.bool(), blob(16).bool())
    assert share.item() == pytest.approx(30 / 256)


def test_a_flat_or_tiny_or_whole_map_is_not_used():
    recipe = masking.MaskRecipe()
    hot = blob(16) + 0.2
    assert masking.contrast(hot).item() > recipe.min_contrast
    flat = torch.full((1, 16, 16), 0.5) + 0.01 * blob(16)
    assert masking.contrast(flat).item() < recipe.min_contrast
    assert masking.found_subject(0.2, 3.0, recipe) is None
    assert masking.found_subject(0.2, 1.05, recipe) == "nothing"
    assert masking.found_subject(0.001, 3.0, recipe) == "nothing"
    assert masking.found_subject(0.95, 3.0, recipe) == "everything"


@pytest.mark.parametrize(
    "bad", [{"threshold": "mean"}, {"timestep": 0}, {"level": 1.5}, {"min_area": 0.9}]
)
def test_recipe_refuses_what_makes_no_mask(bad):
    with pytest.raises(ValueError):
        masking.MaskRecipe(**bad)
