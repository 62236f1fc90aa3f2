"""bench/search_compute.py and bench/simulated_person.py: the rater's noise, the pooled table
with its intervals, and the picture, on results made up here (no training)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def verdict(concept: float, images: int = 40, prompt: float = 0.5) -> dict:
    return {"concept_fidelity": concept, "prompt_fidelity": prompt, "images": images}


def row(steps: int, images: int, concept: float) -> dict:
    return {"candidate_steps": steps, "images": images, "held_out": verdict(concept)}


def test_the_rater_gets_about_one_star_in_six_wrong():
    person = load("simulated_person")
    rater = person.Rater.__new__(person.Rater)
    rater.error_rate, rater.stars_given = 1 / 6, 0
    rater.generator = torch.Generator().manual_seed(0)
    rater.true_stars = lambda path, prompt: 3
    stars = [rater.stars(Path("x.png"), "a cat") for _ in range(1200)]
    wrong = sum(s != 3 for s in stars) / len(stars)
    assert abs(wrong - 1 / 6) < 0.04
    assert set(stars) == {1, 2, 3, 4, 5}


def test_rounds_until_the_person_beats_the_automatic_pick():
    person = load("simulated_person")
    run = person.PersonRun(
        [
            {"round": r, "concept_fidelity": c, "minus_automatic_pick": c - 0.5}
            for r, c in [(1, 0.4), (2, 0.5), (3, 0.6), (4, 0.7), (5, 0.7)]
        ]  # fmt: skip
    )
    found = person.summary(run, verdict(0.5))
    assert found["first_round_beating_the_automatic_pick"] == 3
    assert found["minus_automatic_pick_after_5"] == pytest.approx(0.2)
    assert found["minus_automatic_pick_after_10"] is None


def test_the_table_pools_subjects_and_the_picture_is_drawn(tmp_path):
    bench = load("search_compute")
    subjects = {
        s: {
            "rows": {
                "one": row(100, 0, base),
                "best of 2": row(200, 48, base + 0.1),
                "halving": row(150, 40, base + 0.2),
            },
            "person": [row(200, 64, base), row(200, 128, base + 0.3)],
        }
        for s, base in (("cat", 0.2), ("dog", 0.4))
    }
    rows = bench.table(subjects)
    assert list(rows) == ["one", "best of 2", "halving", "person, round 1", "person, round 2"]
    mean, low, high = rows["halving"]["concept"]
    assert mean == pytest.approx(0.5) and low < mean < high
    assert rows["best of 2"]["minus best of 2"][0] == pytest.approx(0.0)
    diff, low, high = rows["person, round 2"]["minus best of 2"]
    assert diff == pytest.approx(0.2) and low < diff < high
    assert rows["person, round 2"]["compute"] == 328
    assert {s: round(v[0], 3) for s, v in rows["halving"]["per subject"].items()} == {
        "cat": 0.4,
        "dog": 0.6,
    }
    low, high = rows["halving"]["per subject"]["cat"][1:]
    assert low < 0.4 < high
    assert bench.person_beats(subjects) == {"cat": 2, "dog": 2}
    path = bench.picture(rows, tmp_path / "p.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_person_limits_ranks_ties_and_shortfall():
    limits = load("person_limits")
    assert limits.ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [2.5, 0.0, 2.5, 1.0]
    assert limits.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert limits.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert limits.spearman([5, 5, 5, 5], [1, 2, 3, 4]) == 0.0  # a ranking that ties everything
    cands = [
        {"id": 1, "stars": 4.75, "truth": 0.75},
        {"id": 2, "stars": 4.75, "truth": 0.95},
        {"id": 3, "stars": 4.5, "truth": 0.85},
    ]
    # tied first: the pick is a coin toss between 0.75 and 0.95
    assert limits.shortfall(cands, "stars") == pytest.approx(0.95 - 0.85)
    assert limits.tied_first(cands, "stars") == 2
