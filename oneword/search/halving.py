"""The schedule of successive halving over the candidates of a sweep (pure functions).

Successive halving (Jamieson & Talwalkar 2016; the inner loop of Hyperband, Li et al. 2017)
trains every candidate for a short budget, keeps the best share by a score, trains those
further, and so on until one is left. A candidate is continued, never restarted: its steps at
rung r are `steps · keep^(R − r)` (R the last rung), so the survivor ends where a full run ends
and the cost of the cut ones is what they trained before their cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import OnewordError


@dataclass(frozen=True)
class Rung:
    """Train `count` candidates up to step `step`, then (but at the last rung) cut to the
    count of the next rung."""

    step: int
    count: int


def rung_counts(candidates: int, keep: float) -> list[int]:
    """Candidates alive at each rung: K, ceil(K · keep), ... down to 1."""
    check_keep(keep)
    if candidates < 1:
        raise OnewordError(f"--candidates {candidates}: must be 1 or more")
    counts = [candidates]
    while counts[-1] > 1:
        counts.append(max(1, min(counts[-1] - 1, math.ceil(counts[-1] * keep))))
    return counts


def halving_rungs(candidates: int, keep: float, steps: int) -> list[Rung]:
    """The rungs of a halving sweep whose survivor trains `steps` steps. Rung steps grow by
    1/keep and never repeat: with few steps, a rung that would fall on the step of the one
    before is left out, and that one's candidates are cut straight to the next count."""
    if steps < 1:
        raise OnewordError(f"--steps {steps}: must be 1 or more")
    counts = rung_counts(candidates, keep)
    last = len(counts) - 1
    rungs: list[Rung] = []
    for r, count in enumerate(counts):
        step = max(1, round(steps * keep ** (last - r)))
        if rungs and step <= rungs[-1].step:
            continue
        rungs.append(Rung(step, count))
    return rungs


def halving_cost(rungs: list[Rung]) -> int:
    """Candidate-steps the schedule trains: each rung's candidates from the previous rung's
    step to its own."""
    total, before = 0, 0
    for rung in rungs:
        total += rung.count * (rung.step - before)
        before = rung.step
    return total


def steps_for_budget(candidates: int, keep: float, budget_steps: int) -> int:
    """The largest survivor steps whose schedule costs at most `budget_steps` candidate-steps
    (a budget in samples divided by the samples of one step)."""
    if halving_cost(halving_rungs(candidates, keep, 1)) > budget_steps:
        floor = halving_cost(halving_rungs(candidates, keep, 1))
        raise OnewordError(
            f"--budget: {budget_steps} candidate-steps cannot train {candidates} candidates "
            f"one step each; give a budget of {floor} steps' samples or more, or fewer "
            "--candidates"
        )
    low, high = 1, max(1, budget_steps)
    while low < high:  # the cost grows with the steps, though not strictly (rounding)
        mid = (low + high + 1) // 2
        if halving_cost(halving_rungs(candidates, keep, mid)) <= budget_steps:
            low = mid
        else:
            high = mid - 1
    return low


def survivors(scores: list[float], count: int) -> list[int]:
    """Positions of the `count` best scores, best first (ties keep the earlier position; a
    NaN score, a candidate that could not be scored, goes last)."""

    def key(k: int):
        value = scores[k]
        return (math.isnan(value), -value if not math.isnan(value) else 0.0, k)

    return sorted(range(len(scores)), key=key)[:count]


def check_keep(keep: float) -> float:
    if not (isinstance(keep, (int, float)) and 0.0 < keep < 1.0):
        raise OnewordError(f"--keep {keep}: give the share kept at each cut, between 0 and 1")
    return keep
