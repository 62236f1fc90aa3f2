"""bench/recipes.py: the summary pools subjects and sets each row against the first recipe at
the last stage image by image; a stopped run's JSON is read back (no training)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("recipes_bench", BENCH / "recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCH))


def hits(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


def test_rows_are_set_against_the_first_recipe_image_by_image(bench, tmp_path):
    table = {
        "cat": {"plain": {300: {"concept": hits(1, 0, 1, 0), "norm": 1.2, "learn_s": 60.0}},
                "directional": {300: {"concept": hits(1, 1, 1, 0), "norm": 0.3, "learn_s": 50.0}}},
        "dog": {"plain": {300: {"concept": hits(0, 0, 0, 0), "norm": 1.1, "learn_s": 70.0}},
                "directional": {300: {"concept": hits(0, 1, 0, 1), "norm": 0.3, "learn_s": 40.0}}},
    }  # fmt: skip
    a = argparse.Namespace(recipes=["plain", "directional"], stages=[300], json=None)
    summary = bench.summarize(table, a)
    concept = summary["directional@300"]["concept"]
    assert concept["pooled"] == pytest.approx(5 / 8) and concept["each"] == [0.75, 0.5]
    assert concept["minus_reference"]["mean"] == pytest.approx(3 / 8)
    low, high = concept["minus_reference"]["ci95"]
    assert 0 < low < 3 / 8 < high <= 1
    assert summary["plain@300"]["concept"]["minus_reference"]["mean"] == 0
    assert summary["directional@300"]["learn_s"]["median"] == 45.0

    a.json = str(tmp_path / "r.json")
    bench.write_record(a, table, summary)
    back = bench.merged([a.json])
    assert torch.equal(back["dog"]["directional"][300]["concept"], hits(0, 1, 0, 1))
    assert bench.summarize(back, a)["directional@300"]["concept"]["pooled"] == concept["pooled"]
