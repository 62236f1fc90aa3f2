"""Seed sweeps: K candidates in one batched run equal K `learn` runs; store, resume, memory."""

from __future__ import annotations

import pytest
import torch

from oneword.api import ModelChoice, learn
from oneword.core.embeddings import load_embeddings
from oneword.core.train import CHECKPOINT_NAME, Candidate, TrainConfig
from oneword.errors import OnewordError
from oneword.events import Stepped
from oneword.experiments.micro_batch import resolve_max_batch
from oneword.experiments.store import Store
from oneword.experiments.sweep import CandidatePlan, sweep


def config(**kw) -> TrainConfig:
    base = dict(
        token="<c>",
        init_word="cat",
        steps=4,
        batch_size=1,
        grad_accum=2,
        checkpoint_every=2,
        lr=1e-2,
        crop="random",
        crops_per_photo=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def vectors(path) -> torch.Tensor:
    (emb,) = load_embeddings(path)
    return emb.vectors


def test_plan_crosses_inits_and_learning_rates():
    plan = CandidatePlan(
        count=5, seed=10, inits=("word", "random", "jitter"), jitter=0.2, lrs=(1e-3, 2e-3)
    )
    cands = plan.candidates()
    assert [c.seed for c in cands] == [10, 11, 12, 13, 14]
    assert [(c.init, c.jitter, c.lr) for c in cands] == [
        ("word", 0.0, 1e-3),
        ("word", 0.0, 2e-3),
        ("random", 0.0, 1e-3),
        ("random", 0.0, 2e-3),
        ("word", 0.2, 1e-3),
    ]
    with pytest.raises(OnewordError, match="--inits"):
        CandidatePlan(inits=("noise",))
    with pytest.raises(OnewordError, match="--candidates 0"):
        CandidatePlan(count=0)


def test_sweep_equals_separate_learn_runs(tmp_path, tiny_model_dir, photo_dir):
    """K=3 batched (random crops, seeds, init variants, per-candidate lr) against 3 runs of
    `learn`, each with one of the candidates."""
    choice = ModelChoice(str(tiny_model_dir))
    cands = (Candidate(11), Candidate(12, init="random", lr=3e-2), Candidate(13, jitter=0.5))
    result = sweep([str(photo_dir)], config(candidates=cands), choice, out=tmp_path / "sweep")
    assert [f["diffusers"].parent.name for f in result.files] == ["c00", "c01", "c02"]
    for k, cand in enumerate(cands):
        files = learn(
            [str(photo_dir)],
            config(seed=cand.seed, candidates=(cand,)),
            choice,
            out=tmp_path / f"learn{k}",
        )
        torch.testing.assert_close(
            vectors(result.files[k]["a1111"]), vectors(files["a1111"]), atol=1e-5, rtol=1e-5
        )
    batched = [vectors(f["diffusers"]) for f in result.files]
    assert not torch.allclose(batched[0], batched[1])
    (emb,) = load_embeddings(result.files[2]["diffusers"])
    assert emb.metadata["seed"] == "13" and emb.metadata["init"] == "jitter"
    assert emb.metadata["run"] == f"r{result.run_id}"
    with Store.open() as store:  # the sweep and the three learn runs are recorded
        runs = store.runs()
        assert [r.kind for r in runs] == ["sweep", "learn", "learn", "learn"]
        assert all(r.status == "done" for r in runs)
        recorded = store.candidates(result.run_id)
        assert [(c.seed, c.init, c.lr) for c in recorded] == [
            (11, "word", 1e-2),
            (12, "random", 3e-2),
            (13, "jitter", 1e-2),
        ]
        assert store.files(result.run_id, "embedding", recorded[1].id) == list(
            result.files[1].values()
        )


def test_killed_sweep_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, photo_dir):
    choice = ModelChoice(str(tiny_model_dir))
    cfg = config(steps=6, candidates=(Candidate(1), Candidate(2)))
    whole = sweep([str(photo_dir)], cfg, choice, out=tmp_path / "whole")

    def killed_at_5(event):
        if isinstance(event, Stepped) and event.step == 5:
            raise RuntimeError("killed")  # not an interrupt: no checkpoint is written now

    with pytest.raises(RuntimeError):
        sweep([str(photo_dir)], cfg, choice, out=tmp_path / "split", on_event=killed_at_5)
    saved = torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=True)
    assert saved["step"] == 4  # at most one checkpoint interval (2 steps) lost
    with Store.open() as store:
        assert store.runs()[-1].status == "failed" and store.runs()[-1].step == 4
    with pytest.raises(OnewordError, match="--resume"):
        sweep([str(photo_dir)], cfg, choice, out=tmp_path / "split")
    resumed = sweep([str(photo_dir)], cfg, choice, resume=True)  # finds the unfinished sweep
    assert resumed.folder == tmp_path / "split"
    for a, b in zip(resumed.files, whole.files):
        torch.testing.assert_close(vectors(a["diffusers"]), vectors(b["diffusers"]))
    with Store.open() as store:
        assert [r.status for r in store.runs()] == ["done", "done"]


def test_micro_batches_and_out_of_memory_retries_learn_the_same(
    tmp_path, tiny_model_dir, photo_dir, monkeypatch
):
    from oneword.adapters.loading import load_model

    choice = ModelChoice(str(tiny_model_dir))
    cfg = config(
        steps=2, crop="center", batch_size=2, candidates=(Candidate(1), Candidate(2), Candidate(3))
    )
    model = load_model(str(tiny_model_dir))
    assert resolve_max_batch(model, cfg, "auto") is None  # 6 samples fit a CPU pass
    assert resolve_max_batch(model, cfg, 4) == 4 and resolve_max_batch(model, cfg, 9) is None
    whole = sweep([str(photo_dir)], cfg, choice, out=tmp_path / "whole", max_batch="all")

    from oneword.adapters.pipelines import TextToImageModel

    real = TextToImageModel.predict_noise
    passes = []

    def small_memory(self, noisy, *args):
        passes.append(len(noisy))
        if len(noisy) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, noisy, *args)

    monkeypatch.setattr(TextToImageModel, "predict_noise", small_memory)
    messages = []
    fitted = sweep(
        [str(photo_dir)],
        cfg,
        choice,
        out=tmp_path / "fitted",
        max_batch=5,
        on_event=lambda e: messages.append(getattr(e, "text", "")),
    )
    assert passes[0] == 5 and set(passes[1:]) <= {2}  # 5 -> 2 samples per pass
    assert any("out of memory" in m for m in messages)
    for a, b in zip(fitted.files, whole.files):
        torch.testing.assert_close(
            vectors(a["diffusers"]), vectors(b["diffusers"]), atol=1e-5, rtol=1e-5
        )
