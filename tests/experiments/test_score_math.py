"""Score math (pure functions) and the CLIP and DINO feature models (tiny, built in code)."""

from __future__ import annotations

import math

import pytest
import torch

from oneword.adapters.feature_models import ImagePreprocess, load_clip_model, load_dino_model
from oneword.errors import OnewordError
from oneword.experiments import score_math as evaluate


def test_cosine_fidelity_is_the_mean_over_references():
    refs = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    gen = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(
        evaluate.cosine_to_references(gen, refs), torch.tensor([0.5, math.sqrt(0.5)])
    )
    torch.testing.assert_close(
        evaluate.paired_cosine(gen, refs), torch.tensor([1.0, math.sqrt(0.5)])
    )
    # real photos among themselves: distinct pairs only
    assert evaluate.self_similarity(
        torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ) == pytest.approx(2 / 6)
    assert math.isnan(evaluate.self_similarity(torch.tensor([[1.0, 0.0]])))


def test_pareto_front_and_combined_score():
    fidelity = torch.tensor([0.9, 0.8, 0.7, 0.85, 0.9])
    prompt = torch.tensor([0.20, 0.30, 0.10, 0.25, 0.20])
    front = evaluate.pareto_front(fidelity, prompt)
    # 2 is beaten by everyone; 0 and 4 tie (neither dominates the other)
    assert front.tolist() == [True, True, False, True, True]
    combined = evaluate.combined_score(fidelity, prompt, 0.5)
    assert int(combined.argmin()) == 2
    assert evaluate.ranking(combined)[-1] == 2
    only_fidelity = evaluate.combined_score(fidelity, prompt, 1.0)
    assert evaluate.ranking(only_fidelity)[:2] == [0, 4]  # ties keep index order
    # a missing axis counts zero; constant values standardize to zero
    nan = torch.full((5,), float("nan"))
    torch.testing.assert_close(
        evaluate.combined_score(fidelity, nan, 0.5), 0.5 * evaluate.standardize(fidelity)
    )
    assert evaluate.standardize(torch.ones(4)).abs().sum() == 0
    with pytest.raises(ValueError):
        evaluate.combined_score(fidelity, prompt, 1.5)


def test_axis_scores_average_the_metrics_of_each_axis():
    metrics = {
        "clip_i": torch.tensor([0.8, 0.6]),
        "dino": torch.tensor([0.6, 0.4]),
        "clip_t": torch.tensor([0.3, 0.2]),
    }
    fidelity, prompt = evaluate.axis_scores(metrics)
    torch.testing.assert_close(fidelity, torch.tensor([0.7, 0.5], dtype=torch.float64))
    torch.testing.assert_close(prompt, torch.tensor([0.3, 0.2], dtype=torch.float64))
    assert torch.isnan(evaluate.axis_scores({"dino": torch.ones(2)})[1]).all()


def test_spread_reports_the_true_median():
    s = evaluate.spread(torch.tensor([4.0, 1.0, 3.0, 2.0]))
    assert s == {"min": 1.0, "median": 2.5, "max": 4.0, "mean": 2.5}


def test_preprocess_resizes_the_short_side_and_center_crops():
    prep = ImagePreprocess(size=16, crop=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    image = torch.zeros(1, 3, 32, 64)
    image[..., :, 24:40] = 1.0  # a bright band in the middle
    out = prep(image)
    assert out.shape == (1, 3, 8, 8)
    assert out.min() >= -1 and out.max() <= 1 and out[..., 4].mean() > 0.9  # middle kept


def test_tiny_evaluators_load_like_real_ones(tiny_evaluators):
    clip = load_clip_model(str(tiny_evaluators["clip"]))
    dino = load_dino_model(str(tiny_evaluators["dino"]))
    images = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    for evaluator in (clip, dino):
        feats = evaluator.image_features(images)
        assert feats.shape[0] == 3 and torch.allclose(feats.norm(dim=1), torch.ones(3))
        torch.testing.assert_close(
            evaluator.image_features(images[:1]), feats[:1], atol=1e-5, rtol=1e-5
        )  # batching does not change features
    text = clip.text_features(["a dog in the snow", "a red cat"])
    assert text.shape == (2, clip.image_features(images).shape[1])  # one joint space
    assert not torch.allclose(text[0], text[1])
    with pytest.raises(OnewordError, match="no text tower"):
        dino.text_features(["a dog"])


def test_a_missing_evaluator_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(OnewordError, match="--clip-model ./nowhere: no such folder"):
        load_clip_model("./nowhere")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(OnewordError, match="--dino-model nobody/no-such-dino: could not load"):
        load_dino_model("nobody/no-such-dino")
