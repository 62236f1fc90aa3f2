"""`oneword mix`, `arith`, `inspect` and `evolve` end to end on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from oneword.adapters.loading import load_model
from oneword.cli import main
from oneword.core.embeddings import load_embeddings
from oneword.experiments.store import Store
from oneword.experiments.verdicts import rating_of
from oneword.search.evolve import metric_sum


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def scored_sweep(capsys, tmp_path, tiny_model_dir, photo_dir, tiny_evaluators):
    """r1: a sweep of 3 candidates of <c> (init cat), scored (e1)."""
    code, _, err = run(
        capsys,
        "sweep",
        photo_dir,
        "--token",
        "<c>",
        "--init",
        "cat",
        "--candidates",
        "3",
        "--inits",
        "word,random",
        "--steps",
        "2",
        "--grad-accum",
        "1",
        "--model",
        tiny_model_dir,
    )
    assert code == 0, err
    code, _, err = run(
        capsys, "score", "r1", "--images", "2", "--steps", "2", *judge_options(tiny_evaluators)
    )
    assert code == 0, err
    with Store.open() as store:
        return [store.files(1, "embedding", c.id)[0] for c in store.candidates(1)]


def judge_options(evaluators):
    return ["--clip-model", evaluators["clip"], "--dino-model", evaluators["dino"]]


def vectors(path):
    return load_embeddings(path)[0].vectors


def test_mix_arith_and_inspect(capsys, tmp_path, tiny_model_dir, scored_sweep):
    a, b = scored_sweep[0], scored_sweep[2]
    code, out, err = run(capsys, "mix", a, b, "-o", tmp_path / "m.safetensors")
    assert code == 0, err
    assert "norm-mean ->" in out
    mixed = vectors(tmp_path / "m.safetensors")
    expected = (vectors(a).norm(dim=-1) + vectors(b).norm(dim=-1)) / 2
    torch.testing.assert_close(mixed.norm(dim=-1), expected)
    code, out, err = run(
        capsys,
        "mix",
        a,
        b,
        "--slerp",
        "--weights",
        "1,3",
        "-o",
        tmp_path / "s.pt",
        "--token",
        "<s>",
    )
    assert code == 0, err
    (emb,) = load_embeddings(tmp_path / "s.pt")
    assert emb.token == "<s>" and emb.metadata["mix"] == "slerp"
    code, _, err = run(capsys, "mix", a, b, "--weights", "1", "-o", tmp_path / "x.safetensors")
    assert code == 2 and "--weights" in err

    code, out, err = run(
        capsys,
        "arith",
        '"<c>" - cat + dog',
        "--embedding",
        a,
        "--model",
        tiny_model_dir,
        "-o",
        tmp_path / "dog.safetensors",
    )
    assert code == 0, err
    assert "-1·cat" in out
    result = vectors(tmp_path / "dog.safetensors")
    torch.testing.assert_close(result.norm(dim=-1), vectors(a).norm(dim=-1))
    code, _, err = run(
        capsys, "arith", "<nope> + dog", "--model", tiny_model_dir, "-o", tmp_path / "n.safetensors"
    )
    assert code == 2 and "<nope>: not a learned token" in err

    code, out, err = run(
        capsys, "inspect", a, tmp_path / "dog.safetensors", "--model", tiny_model_dir, "--top", "3"
    )
    assert code == 0, err
    assert "row norms median" in out and "nearest: " in out and "percentile" in out
    assert "cosine between embeddings:" in out
    code, out, err = run(capsys, "inspect", "r1", "--model", tiny_model_dir)
    assert code == 0, err
    assert "r1/c02" in out
    # a candidate that started from the word 'cat' is still nearest to it after 2 steps
    first = next(line for line in out.splitlines() if line.strip().startswith("v0"))
    assert "nearest: cat</w>" in first


def test_evolve_with_automatic_fitness_records_lineage(capsys, scored_sweep, tiny_evaluators):
    code, out, err = run(
        capsys,
        "evolve",
        "r1",
        "--generations",
        "2",
        "--population",
        "3",
        "--images",
        "2",
        "--steps",
        "2",
        "--selection",
        "top-k",
        "--top-k",
        "2",
        *judge_options(tiny_evaluators),
    )
    assert code == 0, err
    assert "generation 1: r2" in out and "generation 2: r3" in out
    with Store.open() as store:
        r2, r3 = store.run(2), store.run(3)
        assert r2.kind == r3.kind == "evolve" and r3.parent_run == 2 and r2.parent_run == 1
        assert r2.settings["evolve"]["fitness"] == "combined"
        kids = store.candidates(3)
        assert len(kids) == 3 and kids[0].init == "elite"
        best_r2 = min(
            store.scores(store.evaluations(2)[0]["id"]).items(), key=lambda kv: kv[1]["rank"]
        )[0]
        assert [p.id for p in store.parents(kids[0].id)] == [best_r2]
        assert all(p.run_id == 2 for k in kids[1:] for p in store.parents(k.id))
        assert store.evaluations(3) and len(store.images(kids[1].id)) == 2
    code, out, err = run(capsys, "show", "r3")
    assert code == 0 and "from r2/" in out


def test_evolve_from_ratings_then_cma(capsys, scored_sweep, tiny_evaluators):
    code, _, err = run(capsys, "evolve", "r1", "--fitness", "rating")
    assert code == 2 and "no candidate is rated yet" in err
    run(capsys, "rate", "r1", "c01", "5")
    run(capsys, "rate", "r1", "c02", "2")
    code, out, err = run(
        capsys, "evolve", "r1", "--population", "2", "--images", "1", "--steps", "2", "--seed", "4"
    )
    assert code == 0, err
    assert "fitness rating" in out
    with Store.open() as store:
        kids = store.candidates(2)
        assert [p.name for p in store.parents(kids[0].id)] == ["c01"]  # the elite
        assert len(store.images(kids[1].id)) == 1  # drawn, for a person to rate
        assert not store.scores(store.evaluations(2)[0]["id"])
    code, _, err = run(capsys, "evolve", "r1", "--fitness", "rating", "--generations", "2")
    assert code == 2 and "--generations 2" in err
    code, out, err = run(
        capsys,
        "evolve",
        "r1",
        "--strategy",
        "cma",
        "--fitness",
        "combined",
        "--population",
        "2",
        "--images",
        "1",
        "--steps",
        "2",
        *judge_options(tiny_evaluators),
    )
    assert code == 0, err
    with Store.open() as store:
        cma_run = store.runs("evolve")[-1]
        assert cma_run.settings["evolve"]["strategy"] == "cma"
        kids = store.candidates(cma_run.id)
        assert {k.init for k in kids} == {"cma"} and len(store.parents(kids[0].id)) == 3
        assert store.scores(store.evaluations(cma_run.id)[0]["id"])


def test_search_commands_have_help(capsys):
    for command in ("mix", "arith", "inspect", "evolve", "serve"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        assert "usage: oneword" in capsys.readouterr().out
    code, _, err = run(capsys, "serve", "--port", "0")
    assert code == 2 and "--port 0" in err
    code, _, err = run(capsys, "evolve", "r1", "--generations", "0")
    assert code == 2 and "--generations 0" in err


def test_ratings_and_metric_sums():
    assert rating_of([]) != rating_of([])  # NaN: unrated
    rows = [
        {"image_id": 1, "rating": 2},
        {"image_id": 1, "rating": 4},
        {"image_id": 2, "rating": 5},
        {"image_id": None, "rating": 3},
    ]
    assert rating_of(rows) == 4.0  # the latest of each image (4, 5) and of the candidate (3)
    assert rating_of(rows + [{"image_id": None, "rating": 0}]) == 4.5  # 0 clears
    assert metric_sum({"a": 1.0, "b": 2.5}, "a + b") == 3.5
    assert metric_sum({"a": 1.0}, "a+b") != metric_sum({"a": 1.0}, "a+b")


def test_evolve_trains_the_children_on_and_resumes_a_stopped_generation(
    capsys, scored_sweep, tiny_evaluators, tiny_model_dir, children_stopped_at_step_one
):
    """--train-steps: the bred children (here on the sphere of the vocabulary's median norm)
    train 2 more steps in one batched run of kind evolve, recorded with their parents; stopped
    after its first step, --resume goes on in the same run from its checkpoint and the same
    bred rows."""
    from oneword.search import trained

    argv = ["evolve", "r1", "--population", "3", "--train-steps", "2", "--images", "2"]
    argv += ["--steps", "2", "--selection", "top-k", "--top-k", "2", "--mutation", "0.5"]
    argv += ["--on-sphere", *judge_options(tiny_evaluators)]
    with children_stopped_at_step_one("interrupted at step 1; run the same command with --resume"):
        code, _, err = run(capsys, *argv)
    assert code != 0 and "--resume" in err
    with Store.open() as store:
        stopped = store.run(2)
        assert stopped.kind == "evolve" and stopped.status == "interrupted" and stopped.step == 1
        bred = torch.load(stopped.folder / trained.BRED_ROWS, weights_only=True)
        (radius,) = stopped.settings["evolve"]["radii"]
    table = load_model(str(tiny_model_dir)).vocabulary_table
    assert radius == pytest.approx(float(table.double().norm(dim=-1).median()))
    norms = bred[1:].norm(dim=-1)  # the children bred on the sphere (not the elite)
    torch.testing.assert_close(norms, torch.full_like(norms, radius))
    code, out, err = run(capsys, *argv, "--resume")
    assert code == 0, err
    assert "generation 1: r2" in out and "trained 2 more steps" in out
    with Store.open() as store:
        assert [r.id for r in store.runs("evolve")] == [2]  # the same run went on
        r2 = store.run(2)
        assert r2.status == "done" and r2.step == 2 and r2.parent_run == 1
        assert r2.settings["evolve"]["train_steps"] == 2
        assert r2.settings["start_rows"] == trained.BRED_ROWS
        # r1 learned with automatic masks (the default with a class word): so do its children
        assert store.run(1).settings["mask"]["auto"]
        assert r2.settings["mask"]["from_run"] == "r1"
        assert r2.settings["mask_floor"] == store.run(1).settings["mask_floor"]
        kids = store.candidates(2)
        assert [k.init for k in kids][0] == "elite+trained"
        for k, kid in enumerate(kids):
            assert store.parents(kid.id) and all(p.run_id == 1 for p in store.parents(kid.id))
            rows = vectors(store.files(2, "embedding", kid.id)[0])
            assert rows.shape == bred[k].shape
            assert not torch.allclose(rows, bred[k])  # trained on from where it was bred
            assert (rows - bred[k]).abs().max() < 1.0  # ... by two small steps
        assert store.scores(store.evaluations(2)[-1]["id"])  # judged after training
    info = json.loads((r2.folder / "run.json").read_text())
    assert info["start_rows"] == "bred.pt" and info["evolve"]["generation"] == 1
    assert info["parents"]["c00"] and info["config"]["steps"] == 2
    from fastapi.testclient import TestClient

    from oneword.web.app import GalleryOptions, create_app

    client = TestClient(create_app(None, GalleryOptions()), base_url="http://127.0.0.1:8765")
    shown = client.get("/api/runs/2").json()
    assert sorted(c["name"] for c in shown["candidates"]) == ["c00", "c01", "c02"]
    lineage = client.get(f"/api/candidates/{kids[1].id}/lineage").json()
    assert lineage["relation"].endswith("+trained") and lineage["parents"]
    code, _, err = run(capsys, "evolve", "r1", "--train-steps", "0")
    assert code == 2 and "--train-steps 0" in err
