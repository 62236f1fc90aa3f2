"""Picking words without labels: which of several scored candidates the automatic search
takes (the best of K seeds, a rung's survivors, a generation's fittest).

A user has no oracle: a pick is made on the label-free metrics (CLIP-I/DINO or the world's
concept similarity to the photos, and prompt-following), each standardized across the
candidates compared (`score_math.label_free_score`), so a pick among K depends on those K only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..experiments.score_math import label_free_score, ranking


def label_free_scores(
    metrics: Sequence[dict[str, float]], fidelity_weight: float = 0.5
) -> torch.Tensor:
    """[K] label-free score of K candidates' metrics (compared among themselves)."""
    if not metrics:
        raise ValueError("no candidates to pick from")
    names = [m for m in metrics[0] if all(m in row for row in metrics)]
    table = {m: torch.tensor([row[m] for row in metrics], dtype=torch.float64) for m in names}
    return label_free_score(table, fidelity_weight)


def label_free_order(metrics: Sequence[dict[str, float]], fidelity_weight: float = 0.5) -> list:
    """Positions of the candidates, the label-free pick first."""
    return ranking(label_free_scores(metrics, fidelity_weight))


def best_of_first(metrics: Sequence[dict[str, float]], k: int, fidelity_weight: float = 0.5) -> int:
    """The position of the label-free pick among the first k candidates (best of k seeds,
    read off a sweep of more: the first k seeds are what a sweep of k trains)."""
    if not 1 <= k <= len(metrics):
        raise ValueError(f"best of {k}: between 1 and {len(metrics)} candidates")
    return label_free_order(metrics[:k], fidelity_weight)[0]


def label_free_pick(board):
    """The candidate record a scoreboard's label-free score ranks first (a scoreboard of
    `scoring.score_run`; its rows in candidate order are what is compared)."""
    rows = sorted(board.rows, key=lambda r: r.candidate.index)
    return rows[label_free_order([r.metrics for r in rows])[0]].candidate
