"""The combined score is one scale across runs, with an interval from the per-image values."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from oneword.experiments import score_math
from oneword.experiments.scoring import rank_candidates
from oneword.experiments.store import CandidateRecord


def cands(count: int) -> list[CandidateRecord]:
    return [CandidateRecord(k + 1, 1, k, k, "word", 0.0, 5e-3, None) for k in range(count)]


def raw(fidelity: float, prompt: float) -> dict[str, float]:
    return {"concept_similarity": fidelity, "prompt_fidelity": prompt}


def test_a_candidate_scores_the_same_whoever_it_is_scored_with():
    a, b, c = raw(0.9, 0.5), raw(0.7, 0.9), raw(0.2, 0.1)
    alone = rank_candidates(cands(1), [a], 0.5, [Path("s")])
    together = rank_candidates(cands(3), [a, b, c], 0.5, [Path("s")] * 3)
    (row_a,) = [r for r in together if r.candidate.index == 0]
    assert alone[0].metrics["combined"] == row_a.metrics["combined"] == 0.7
    assert [r.candidate.index for r in together] == [1, 0, 2]  # 0.8, 0.7, 0.15


def test_the_interval_comes_from_the_per_image_values():
    each = [raw(1.0, 1.0), raw(0.0, 1.0), raw(1.0, 0.0), raw(0.0, 0.0)]
    (row,) = rank_candidates(cands(1), [raw(0.5, 0.5)], 0.5, [Path("s")], [each])
    per_image = torch.tensor([1.0, 0.5, 0.5, 0.0], dtype=torch.float64)
    assert math.isclose(row.metrics["combined_pm"], 1.96 * float(per_image.std()) / 2)
    (one,) = rank_candidates(cands(1), [raw(0.5, 0.5)], 0.5, [Path("s")], [each[:1]])
    assert "combined_pm" not in one.metrics  # one image: no interval


def test_weighted_score_and_noise():
    f = torch.tensor([0.8, float("nan")], dtype=torch.float64)
    p = torch.tensor([0.4, 0.6], dtype=torch.float64)
    assert torch.allclose(score_math.weighted_score(f, p, 0.75), torch.tensor([0.7, 0.6]).double())
    assert score_math.within_noise(0.70, 0.05, 0.66, 0.05)
    assert not score_math.within_noise(0.70, 0.01, 0.60, 0.01)
    assert not score_math.within_noise(0.70, float("nan"), 0.70, 0.01)
    assert math.isnan(score_math.interval_half_width(torch.tensor([0.5])))


def test_the_ranking_never_reads_the_oracles_labels():
    a = {"concept_fidelity": 1.0, "concept_similarity": 0.5, "prompt_fidelity": 0.5}
    b = {"concept_fidelity": 0.0, "concept_similarity": 0.6, "prompt_fidelity": 0.5}
    rows = rank_candidates(cands(2), [a, b], 0.5, [Path("s")] * 2)
    assert [r.candidate.index for r in rows] == [1, 0]  # b: more like the photos
    assert rows[0].metrics["combined"] == 0.55 and rows[0].metrics["concept_fidelity"] == 0.0


def test_the_scatter_does_not_draw_a_small_difference_large(tmp_path):
    from oneword.experiments.report import _axis_range, scatter_plot

    lo, hi = _axis_range([0.94, 0.95], min_span=0.2)
    assert hi - lo >= 0.2 - 1e-12 and lo < 0.94 and hi > 0.95
    assert _axis_range([0.1, 0.9], min_span=0.2) == _axis_range([0.1, 0.9])
    points = [(0.94, 0.5, "c00", True), (0.95, 0.51, "c01", True)]
    assert scatter_plot(points, tmp_path / "s.png", "f", "p", min_span=0.2).is_file()
