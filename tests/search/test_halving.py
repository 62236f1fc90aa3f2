import math

import pytest

from oneword.errors import OnewordError
from oneword.search.halving import (
    Rung,
    halving_cost,
    halving_rungs,
    rung_counts,
    steps_for_budget,
    survivors,
)


def test_sixteen_candidates_halve_to_one_that_trains_the_full_steps():
    rungs = halving_rungs(16, 0.5, 300)
    assert rungs == [Rung(19, 16), Rung(38, 8), Rung(75, 4), Rung(150, 2), Rung(300, 1)]
    # 16·19 + 8·19 + 4·37 + 2·75 + 1·150: under a fifth of 16 full runs
    assert halving_cost(rungs) == 904 < 16 * 300 / 5


def test_counts_shrink_every_cut_whatever_the_share_kept():
    assert rung_counts(16, 0.25) == [16, 4, 1]
    assert rung_counts(5, 0.9) == [5, 4, 3, 2, 1]  # ceil(5 · 0.9) would keep all five
    assert rung_counts(1, 0.5) == [1]


def test_too_few_steps_merge_rungs_instead_of_repeating_a_step():
    # 16 · 0.5^4 and 4 · 0.5^3 both round to step 1: all 16 train it, then 2 go on
    assert halving_rungs(16, 0.5, 4) == [Rung(1, 16), Rung(2, 2), Rung(4, 1)]
    assert halving_rungs(16, 0.5, 1) == [Rung(1, 16)]


def test_the_budget_gives_the_longest_schedule_that_fits():
    steps = steps_for_budget(16, 0.5, 904)
    assert steps == 300 or halving_cost(halving_rungs(16, 0.5, steps + 1)) > 904
    assert halving_cost(halving_rungs(16, 0.5, steps)) <= 904
    with pytest.raises(OnewordError, match="--budget"):
        steps_for_budget(16, 0.5, 3)


def test_survivors_are_the_best_scores_with_nan_last():
    assert survivors([0.1, 0.9, math.nan, 0.5], 2) == [1, 3]
    assert survivors([0.2, 0.2, 0.1], 1) == [0]
    assert survivors([math.nan, 0.0], 2) == [1, 0]


@pytest.mark.parametrize("keep", [0.0, 1.0, -0.5, 2])
def test_a_share_outside_zero_and_one_is_refused(keep):
    with pytest.raises(OnewordError, match="--keep"):
        halving_rungs(8, keep, 100)
