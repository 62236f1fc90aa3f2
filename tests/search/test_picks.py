"""The label-free pick: made without the oracle's labels, among the candidates compared."""

from __future__ import annotations

import pytest

from oneword.search.picks import best_of_first, label_free_order


def candidate(similarity: float, prompt: float, labelled: float) -> dict[str, float]:
    return {
        "concept_similarity": similarity,
        "prompt_fidelity": prompt,
        "concept_fidelity": labelled,
    }


def test_the_pick_ignores_the_oracles_labels():
    rows = [candidate(0.9, 0.5, 0.0), candidate(0.1, 0.5, 1.0)]
    assert label_free_order(rows)[0] == 0


def test_best_of_the_first_k_compares_those_k_only():
    rows = [candidate(0.2, 0.2, 0), candidate(0.5, 0.5, 0), candidate(0.9, 0.9, 0)]
    assert best_of_first(rows, 1) == 0
    assert best_of_first(rows, 2) == 1
    assert best_of_first(rows, 3) == 2
    with pytest.raises(ValueError, match="best of 4"):
        best_of_first(rows, 4)
