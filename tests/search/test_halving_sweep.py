"""`oneword sweep --halving` end to end on the tiny model."""

from __future__ import annotations

from oneword.cli import main
from oneword.core.embeddings import load_embeddings
from oneword.experiments.cuts import run_cuts
from oneword.experiments.store import Store


def test_halving_cuts_rung_by_rung_records_each_cut_and_shows_it(
    capsys, tmp_path, tiny_model_dir, photo_dir, tiny_evaluators
):
    project = tmp_path / "proj"
    args = ["sweep", str(photo_dir), "--token", "<c>", "--init", "cat", "--candidates", "4"]
    args += ["--steps", "4", "--grad-accum", "1", "--halving", "--score-images", "2"]
    args += ["--score-steps", "2", "--clip-model", str(tiny_evaluators["clip"])]
    args += ["--dino-model", str(tiny_evaluators["dino"])]
    args += ["--model", str(tiny_model_dir), "--project", str(project)]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "halving of 4 candidates" in out
    with Store.open(project) as store:
        cuts = run_cuts(store, 1)
        cands = {c.id: c for c in store.candidates(1)}
        # rungs: 4 candidates to step 1, 2 to step 2, the survivor to step 4
        assert [(c["step"], c["kept"]) for c in cuts].count((1, True)) == 2
        assert len([c for c in cuts if c["step"] == 1]) == 4
        assert len([c for c in cuts if c["step"] == 2]) == 2
        (winner,) = [c["candidate_id"] for c in cuts if c["step"] == 2 and c["kept"]]
        kept_first = [c["candidate_id"] for c in cuts if c["step"] == 1 and c["kept"]]
        assert winner in kept_first
        # each rung scored only the candidates still in it
        assert [len(store.scores(e["id"])) for e in store.evaluations(1)] == [4, 2]
        steps = {}
        for cid, cand in cands.items():
            (emb,) = load_embeddings(next(f for f in store.files(1, "embedding", cid)))
            steps[cid] = int(emb.metadata["steps"])
    assert steps[winner] == 4
    assert sorted(steps.values()) == [1, 1, 2, 4]
    assert main(["show", "r1", "--project", str(project)]) == 0
    shown = capsys.readouterr().out
    assert "halving (label-free score; kept first):" in shown
    assert "  step 1: kept " in shown and "  step 2: kept " in shown


def test_a_halving_stopped_after_a_cut_resumes_to_the_same_survivor(
    capsys, tmp_path, tiny_model_dir, photo_dir, tiny_evaluators, monkeypatch
):
    import torch

    from oneword.errors import Interrupted
    from oneword.search import halving_sweep

    def args(project):
        a = ["sweep", str(photo_dir), "--token", "<c>", "--init", "cat", "--candidates", "4"]
        a += ["--steps", "4", "--grad-accum", "1", "--halving", "--score-images", "2"]
        a += ["--score-steps", "2", "--clip-model", str(tiny_evaluators["clip"])]
        a += ["--dino-model", str(tiny_evaluators["dino"])]
        return a + ["--model", str(tiny_model_dir), "--project", str(project)]

    assert main(args(tmp_path / "whole")) == 0
    real, calls = halving_sweep.train_candidates, []

    def stop_at_second_rung(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted("interrupted; run the same command with --resume")
        return real(*a, **k)

    monkeypatch.setattr(halving_sweep, "train_candidates", stop_at_second_rung)
    assert main(args(tmp_path / "stopped")) != 0
    monkeypatch.undo()
    assert main(args(tmp_path / "stopped") + ["--resume"]) == 0
    capsys.readouterr()
    survivors = []
    for name in ("whole", "stopped"):
        with Store.open(tmp_path / name) as store:
            cuts = run_cuts(store, 1)
            (winner,) = [c["candidate_id"] for c in cuts if c["step"] == 2 and c["kept"]]
            path = next(f for f in store.files(1, "embedding", winner))
            survivors.append((store.candidate(winner).name, load_embeddings(path)[0].vectors))
    assert survivors[0][0] == survivors[1][0]
    assert torch.allclose(survivors[0][1], survivors[1][1])
    from fastapi.testclient import TestClient

    from oneword.web.app import GalleryOptions, create_app

    client = TestClient(
        create_app(tmp_path / "whole", GalleryOptions()), base_url="http://127.0.0.1:8765"
    )
    shown_cuts = {c["name"]: c["cut"] for c in client.get("/api/runs/1").json()["candidates"]}
    assert sorted((c["step"], c["kept"]) for c in shown_cuts.values()) == [
        (1, False),
        (1, False),
        (2, False),
        (2, True),
    ]
