"""Masked training's weights: the pixel masks on the latent grid, and the weighted loss."""

from __future__ import annotations

import pytest
import torch

from oneword.core import diffusion
from oneword.core.latents import PhotoLatents, draw_batch, latent_weight, photos_fingerprint


def test_the_latent_weight_is_the_area_average_of_the_mask_above_the_floor():
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, :8, :8] = 1.0  # the top-left latent cell, whole
    mask[0, 0, 8:10, 8:16] = 1.0  # a quarter of the bottom-right cell
    weight = latent_weight(mask, (2, 2), floor=0.0)
    assert weight.shape == (1, 1, 2, 2)
    assert torch.allclose(weight[0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.25]]))
    floored = latent_weight(mask, (2, 2), floor=0.1)
    assert torch.allclose(floored[0, 0], torch.tensor([[1.0, 0.1], [0.1, 0.1 + 0.9 * 0.25]]))


def test_an_all_ones_weight_gives_the_plain_loss():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    ones = torch.ones(3, 1, 8, 8)
    assert torch.allclose(
        diffusion.per_sample_mse(pred, target, ones), diffusion.per_sample_mse(pred, target)
    )


def test_at_floor_zero_only_the_masked_region_counts():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, :, :4] = 1.0
    weight = latent_weight(mask, (8, 8), floor=0.0)
    target = torch.zeros(2, 4, 8, 8)
    outside = target.clone()
    outside[:, :, :, 4:] = 5.0  # wrong only where the mask is black
    assert torch.equal(diffusion.per_sample_mse(outside, target, weight), torch.zeros(2))
    inside = target.clone()
    inside[:, :, :, :4] = 2.0  # wrong (only) where it counts: the mean over the masked half
    assert torch.allclose(diffusion.per_sample_mse(inside, target, weight), torch.full((2,), 4.0))
    assert torch.allclose(diffusion.per_sample_mse(inside, target), torch.full((2,), 2.0))


def test_each_drawn_sample_carries_its_photos_weight_and_draws_the_same():
    gen = torch.Generator().manual_seed(0)
    mean, std = torch.randn(5, 4, 2, 2, generator=gen), torch.rand(5, 4, 2, 2, generator=gen)
    weight = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 2, 2)
    captions = torch.zeros(3, 7, dtype=torch.long)

    def draw(lat):
        gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
        return draw_batch(lat, captions, 1000, gens, 4)

    plain, masked = draw(PhotoLatents(mean, std)), draw(PhotoLatents(mean, std, weight))
    assert plain.weight is None and masked.weight.shape == (8, 1, 2, 2)
    assert torch.equal(plain.latents, masked.latents) and torch.equal(plain.noise, masked.noise)
    first = torch.randint(5, (4,), generator=torch.Generator().manual_seed(1))  # its 1st draw
    assert torch.equal(masked.weight[:4], weight[first])
    assert not torch.equal(masked.weight[:4], masked.weight[:4].flip(0))  # not all one photo


def test_the_fingerprint_changes_with_the_masks_and_not_without():
    photos = torch.zeros(2, 3, 8, 8)
    masks = torch.ones(2, 1, 8, 8)
    other = masks.clone()
    other[0, 0, 0, 0] = 0.5
    assert photos_fingerprint(photos, None) == photos_fingerprint(photos)
    assert photos_fingerprint(photos, masks) != photos_fingerprint(photos)
    assert photos_fingerprint(photos, masks) != photos_fingerprint(photos, other)


@pytest.mark.parametrize("floor", [-0.1, 1.5, float("nan")])
def test_the_mask_floor_is_refused_outside_zero_to_one(floor):
    from oneword.core.train import TrainConfig
    from oneword.errors import OnewordError

    with pytest.raises(OnewordError, match="--mask-floor"):
        TrainConfig(token="<c>", init_word="cat", mask_floor=floor)
