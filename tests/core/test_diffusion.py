"""Training math: golden values."""

import math

import pytest
import torch

from oneword.core import diffusion
from oneword.core.vectors import initial_rows, vector_words


def test_add_noise_and_velocity_golden():
    x, n = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 1.0)
    a = torch.tensor([0.25])
    assert diffusion.add_noise(x, n, a).item() == pytest.approx(0.5 * 2.0 + math.sqrt(0.75))
    assert diffusion.velocity(x, n, a).item() == pytest.approx(0.5 - math.sqrt(0.75) * 2.0)
    assert diffusion.prediction_target("epsilon", x, n, a) is n


def test_lr_schedules():
    assert diffusion.lr_factor(0, 100, "constant") == 1.0
    assert diffusion.lr_factor(0, 100, "cosine") == 1.0
    assert abs(diffusion.lr_factor(50, 100, "cosine") - 0.5) < 1e-12
    assert diffusion.lr_factor(75, 100, "linear") == 0.25
    assert diffusion.lr_factor(4, 100, "constant", warmup_steps=10) == 0.5


def test_initial_rows_from_a_multi_token_word():
    table = torch.arange(12.0).view(4, 3)
    gen = torch.Generator().manual_seed(0)
    in_order = initial_rows(table, [1, 3], 2, "word", 0.0, gen)
    assert torch.equal(in_order, table[[1, 3]])
    averaged = initial_rows(table, [1, 3], 3, "word", 0.0, gen)
    assert torch.equal(averaged, table[[1, 3]].mean(0).repeat(3, 1))
    rand = initial_rows(table, [], 2, "random", 0.0, gen)
    mean_norm = table.norm(dim=1).mean()
    torch.testing.assert_close(rand.norm(dim=1), mean_norm.repeat(2))


def test_each_vector_may_start_from_its_own_word():
    table = torch.arange(12.0).view(4, 3)
    gen = torch.Generator().manual_seed(0)
    rows = initial_rows(table, [[0], [1, 3], [2]], 3, "word", 0.0, gen)
    assert torch.equal(rows, torch.stack([table[0], table[[1, 3]].mean(0), table[2]]))
    assert vector_words("face, logo ,outfit") == ["face", "logo", "outfit"]
    assert vector_words("calico cat") is None


def test_weighted_mse_normalises_its_weights():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    uniform = torch.full((3, 1, 5, 5), 7.0)
    assert torch.allclose(
        diffusion.weighted_per_sample_mse(pred, target, uniform),
        diffusion.per_sample_mse(pred, target),
    )
    one_pixel = torch.zeros(3, 1, 5, 5)
    one_pixel[:, :, 2, 3] = 1.0
    expected = (pred - target)[:, :, 2, 3].pow(2).mean(1)
    assert torch.allclose(diffusion.weighted_per_sample_mse(pred, target, one_pixel), expected)
