"""Confidence intervals of the world's figures: percentile bootstrap over images."""

import torch

from oneword.world.metrics import bootstrap_interval


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_an_interval_holds_the_share_and_narrows_with_more_images():
    few = bootstrap_interval([torch.tensor([1.0, 0.0] * 10)], gen())
    many = bootstrap_interval([torch.tensor([1.0, 0.0] * 500)], gen())
    assert few[0] < 0.5 < few[1] and many[0] < 0.5 < many[1]
    assert many[1] - many[0] < (few[1] - few[0]) / 4
    # the normal approximation for 1,000 images at p = 0.5: +-1.96 * 0.0158 = +-0.031
    assert abs((many[1] - many[0]) / 2 - 0.031) < 0.005


def test_a_sample_without_spread_has_no_interval():
    assert bootstrap_interval([torch.ones(40)], gen()) == (1.0, 1.0)
    assert bootstrap_interval([torch.zeros(40)], gen(), statistic="mean") == (0.0, 0.0)


def test_the_median_over_subjects_resamples_each_subject():
    subjects = [torch.ones(50), torch.tensor([1.0, 0.0] * 25), torch.zeros(50)]
    low, high = bootstrap_interval(subjects, gen())
    assert 0.3 < low < 0.5 < high < 0.7  # the middle subject decides the median
    assert bootstrap_interval(subjects, gen()) == (low, high)  # the generator decides
    subjects[1] = torch.tensor([1.0, 0.0] * 500)
    narrow = bootstrap_interval(subjects, gen())
    assert narrow[1] - narrow[0] < (high - low) / 2
