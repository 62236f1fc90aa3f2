"""The picture of quality against compute of a person's own search: its math, what it reads
from the store, and the PNG `oneword score` writes beside its scatter plot (in the report and
the gallery)."""

from __future__ import annotations

import math

import pytest

from oneword.experiments.compute_picture import (
    Point,
    Scored,
    best_so_far,
    candidate_compute,
    lineage_series,
    running_best,
)
from oneword.experiments.store import Store

NAN = math.nan


def test_a_candidate_costs_its_steps_and_its_images():
    assert candidate_compute(100, 8) == 108
    assert candidate_compute(0, 4) == 4  # a child as bred: only its images
    with pytest.raises(ValueError):
        candidate_compute(-1, 4)


def test_best_so_far_is_the_first_highest_of_each_prefix():
    assert best_so_far([0.2, 0.5, 0.4, 0.5, 0.7]) == [0, 1, 1, 1, 4]
    assert best_so_far([NAN, NAN, 0.1, NAN, 0.0]) == [None, None, 2, 2, 2]
    assert best_so_far([]) == []


def word(name: str, score: float, steps: int = 10, images: int = 2, half: float = NAN):
    return Scored(name, score, half, steps, images)


def test_running_best_adds_each_groups_cost_and_keeps_the_best_word():
    seeds = [word("c0", 0.3), word("c1", NAN), word("c2", 0.6, half=0.05), word("c3", 0.5)]
    points = running_best([[s] for s in seeds])
    assert [p.compute for p in points] == [12, 24, 36, 48]
    assert [p.word for p in points] == ["c0", "c0", "c2", "c2"]
    assert points[-1].score == 0.6 and points[-1].half == 0.05
    # generations from the end of the sweep: as bred (no steps), then one that beats it
    start = points[-1]
    gens = [[word("g1a", 0.55, 0), word("g1b", 0.4, 0)], [word("g2a", 0.7, 5), word("g2b", 0.1, 5)]]
    after = running_best(gens, start)
    assert [p.compute for p in after] == [48 + 4, 48 + 4 + 14]
    assert [p.word for p in after] == ["c2", "g2a"] and after[-1].score == 0.7
    assert running_best([[word("x", NAN)]]) == []  # nothing found yet, no point
    assert running_best([], Point(5, 0.1, NAN, "s")) == []


def add_scored_run(store, kind, candidates, step, parent=None, settings=None, images=2):
    """A run whose candidates (seed, combined score) were scored with `images` images each."""
    run = store.create_run(kind, None, "tiny", "<w>", settings or {}, [], parent)
    store.update_run(run.id, step=step, status="done")
    ev = store.add_evaluation(run.id, {"images": images})
    for k, (seed, score) in enumerate(candidates):
        cand = store.add_candidate(run.id, k, seed, "word", 0.0, 0.005)
        store.add_scores(ev, cand.id, {"combined": score, "combined_pm": 0.01})
        store.add_images(ev, cand.id, [("p", i, f"x{i}.png") for i in range(images)])
    return store.run(run.id)


def test_a_sweeps_lineage_gives_best_of_k_and_each_line_of_generations(tmp_path):
    with Store.open(tmp_path / "p") as store:
        sweep = add_scored_run(store, "sweep", [(2, 0.4), (0, 0.3), (1, 0.5)], step=10)
        bred = {"evolve": {"generation": 1}}
        g1 = add_scored_run(store, "evolve", [(0, 0.45), (1, 0.2)], 0, sweep.id, bred)
        g2 = add_scored_run(store, "evolve", [(0, 0.6), (1, 0.2)], 0, g1.id, bred)
        trained = {"evolve": {"generation": 1, "train_steps": 5}}
        t1 = add_scored_run(store, "evolve", [(0, 0.55)], 5, sweep.id, trained)
        store.create_run("evolve", None, "tiny", "<w>", bred, [], g2.id)  # not scored yet
        for run in (sweep, g2, t1):
            series = lineage_series(store, run)
            assert [s.label for s in series] == [
                "best of k seeds (r1, k = 1…3)",
                "evolution r2…r3 (children as bred)",
                "evolution r4 (children trained 5 steps)",
            ]
        best_of, bred_line, trained_line = series
        # seed order: seed 0 (0.3), seed 1 (0.5), seed 2 (0.4); each costs 10 steps + 2 images
        assert [(p.compute, p.score, p.word) for p in best_of.points] == [
            (12, 0.3, "r1/c01"),
            (24, 0.5, "r1/c02"),
            (36, 0.5, "r1/c02"),
        ]
        # each line of generations starts where the whole sweep ends
        assert [(p.compute, p.score) for p in bred_line.points] == [(36, 0.5), (40, 0.5), (44, 0.6)]
        assert [(p.compute, p.score) for p in trained_line.points] == [(36, 0.5), (36 + 7, 0.55)]


def test_a_halving_sweep_is_one_point_of_what_its_rungs_cost(tmp_path):
    """Four candidates, two cut at step 4 (each scored on 2 images there), two trained on to
    step 8 and scored again: 8 + 8 + 4 + 4 steps and 12 images, the best kept word."""
    from oneword.experiments.cuts import add_cut

    with Store.open(tmp_path / "p") as store:
        run = add_scored_run(store, "sweep", [(k, 0.1 * k) for k in range(4)], step=8,
                             settings={"halving": {"keep": 0.5}})  # fmt: skip
        cands = store.candidates(run.id)
        first = store.evaluations(run.id)[0]["id"]
        add_cut(store, run.id, 0, 4, first, [(c.id, 0.0, c.index < 2) for c in cands])
        final = store.add_evaluation(run.id, {"images": 2})
        for cand, score in zip(cands[:2], (0.5, 0.35)):
            store.add_scores(final, cand.id, {"combined": score})
            store.add_images(final, cand.id, [("p", i, f"y{i}.png") for i in range(2)])
        (halving,) = lineage_series(store, store.run(run.id))
    assert halving.label == "successive halving (r1)"
    assert [(p.compute, p.score, p.word) for p in halving.points] == [(36, 0.5, "r1/c00")]


def test_an_unscored_run_has_nothing_to_draw(tmp_path):
    with Store.open(tmp_path / "p") as store:
        run = store.create_run("sweep", None, "tiny", "<w>", {}, [])
        store.add_candidate(run.id, 0, 0, "word", 0.0, 0.005)
        assert lineage_series(store, store.run(run.id)) == []


def test_score_writes_the_picture_in_the_report_and_the_gallery_serves_it(
    capsys, tiny_model_dir, photo_dir, tiny_evaluators
):
    from fastapi.testclient import TestClient
    from PIL import Image

    from oneword.cli import main
    from oneword.web.app import GalleryOptions, create_app

    judges = ["--clip-model", tiny_evaluators["clip"], "--dino-model", tiny_evaluators["dino"]]
    argv = ["sweep", photo_dir, "--token", "<c>", "--init", "cat", "--candidates", 2]
    argv += ["--steps", 1, "--grad-accum", 1, "--no-mask", "--model", tiny_model_dir]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    argv = ["score", "r1", "--images", 2, "--steps", 1, *judges]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    with Store.open() as store:
        (ev,) = store.evaluations(1)
        (drawn,) = store.files(1, "compute_plot")
    assert drawn == ev["folder"] / "compute.png" and (ev["folder"] / "scatter.png").is_file()
    with Image.open(drawn) as picture:
        assert picture.format == "PNG" and picture.width >= 600
    assert "<img src='compute.png'" in (ev["folder"] / "report.html").read_text()
    client = TestClient(create_app(None, GalleryOptions()), base_url="http://127.0.0.1:8765")
    assert client.get("/api/runs/1").json()["compute"] is True
    served = client.get("/api/runs/1/compute")
    assert served.status_code == 200 and served.content == drawn.read_bytes()
    assert client.get("/api/runs/99/compute").status_code == 404
    drawn.unlink()  # a picture gone is not served (nor anything else in its place)
    assert client.get("/api/runs/1").json()["compute"] is False
    assert client.get("/api/runs/1/compute").status_code == 404
