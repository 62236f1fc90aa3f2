"""SD 2.x single files without a .yaml: noise or v is told from the photos, not guessed. The
world model (pretrained, predicts noise) and the same model turned into an exact v-predictor
are the two kinds."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from oneword.adapters.loading import load_model
from oneword.adapters.prediction import set_prediction_type, settle_prediction
from oneword.adapters.single_file import (
    checkpoint_config,
    remember_prediction,
    remembered_prediction,
)
from oneword.api import ModelChoice, learn
from oneword.core.prediction import pick_prediction, prediction_errors
from oneword.core.train import TrainConfig
from oneword.errors import OnewordError
from oneword.world.evaluate import subject_photos

UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"
SD1 = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SD2 = "cond_stage_model.model.token_embedding.weight"


@pytest.fixture(scope="module")
def photos():
    return subject_photos("robot", 4, torch.Generator().manual_seed(0)) * 2 - 1


def world(kind: str, name: str = "world"):
    """The world model predicting noise, or the same knowledge predicting v: with x_t =
    sqrt(a) x0 + sqrt(1 - a) eps, v = sqrt(a) eps - sqrt(1 - a) x0 = (eps - sqrt(1 - a) x_t) /
    sqrt(a)."""
    model = load_model("world", "cpu")
    model.name = name
    if kind == "epsilon":
        return model
    real = model.predict_noise

    def predict_v(noisy, timesteps, text):
        a = model.alphas_cumprod[timesteps.cpu()].float().view(-1, 1, 1, 1).to(noisy.device)
        return (real(noisy, timesteps, text) - (1 - a).sqrt() * noisy) / a.sqrt()

    model.predict_noise = predict_v
    return model


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_the_photos_tell_noise_from_v(kind, photos):
    errors = prediction_errors(world(kind), photos, torch.Generator().manual_seed(0))
    assert pick_prediction(errors) == kind, errors


def test_errors_that_do_not_tell_are_no_answer():
    assert pick_prediction({"epsilon": 0.2, "v_prediction": 0.9}) == "epsilon"
    assert pick_prediction({"epsilon": 1.0, "v_prediction": 0.3}) == "v_prediction"
    assert pick_prediction({"epsilon": 1.0, "v_prediction": 0.9}) is None  # a random model


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_a_guessed_model_is_settled_and_remembered(kind, photos, tmp_path):
    path = tmp_path / "v2-1_512-ema-pruned.safetensors"
    path.write_bytes(b"weights")
    model = world(kind, str(path))
    model.prediction_guessed = True
    note = settle_prediction(model, photos)
    assert ("predicts noise" in note) == (kind == "epsilon") and "\n" not in note
    assert model.prediction_type == kind and not model.prediction_guessed
    assert model.pipe.scheduler.config.prediction_type == kind
    assert remembered_prediction(path, tmp_path / "cache") is None  # another cache
    from oneword.adapters.builtin import cache_folder

    assert remembered_prediction(path, cache_folder()) == kind
    path.write_bytes(b"other weights")  # another file at the same place: asked again
    assert remembered_prediction(path, cache_folder()) is None


def test_a_model_that_does_not_tell_is_refused_in_one_line(tiny_model_dir, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    model = load_model(str(tiny_model_dir))  # random weights: neither target fits
    model.name, model.prediction_guessed = str(path), True
    photos = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    errors = prediction_errors(model, photos, torch.Generator().manual_seed(0))
    assert pick_prediction(errors) is None, errors
    with pytest.raises(OnewordError, match=r"model\.yaml.*parameterization") as info:
        settle_prediction(model, photos)
    assert "\n" not in str(info.value) and model.prediction_guessed
    with pytest.raises(OnewordError, match="its keys do not say which"):  # drawing too
        model.generate(*[None] * 2, [torch.Generator()], 2, 5.0, 32)


def test_only_sd2_files_without_a_yaml_are_unknown(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    vocabulary = cache / "single-file" / "clip-tokenizer"
    vocabulary.mkdir(parents=True)
    (vocabulary / "vocab.json").write_text("{}")
    (vocabulary / "merges.txt").write_text("#version: 0.2\n")
    files = {}
    for name, key, width in (("sd15", SD1, 768), ("sd21", SD2, 1024)):
        files[name] = tmp_path / f"{name}.safetensors"
        save_file({UNET_KEY: torch.zeros(1), key: torch.zeros(2, width)}, files[name])
    assert checkpoint_config(files["sd15"], cache).prediction_known
    unknown = checkpoint_config(files["sd21"], cache)
    assert unknown.family == "sd2-v" and not unknown.prediction_known
    files["sd21"].with_suffix(".yaml").write_text("model: {}\n")
    assert checkpoint_config(files["sd21"], cache).prediction_known
    remember_prediction(files["sd15"], cache, "epsilon")
    assert remembered_prediction(files["sd15"], cache) == "epsilon"


def test_learn_tells_it_from_the_photos_before_training(photos, tmp_path, monkeypatch):
    """The path a user takes: learn on an SD 2.x file loaded as v without knowing; the note
    says what the photos told, and the run trains on that target."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, photo in enumerate(((photos + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)):
        Image.fromarray(photo.permute(1, 2, 0).numpy()).save(folder / f"robot{i}.png")
    path = tmp_path / "sd2.safetensors"
    path.write_bytes(b"weights")
    model = world("epsilon", str(path))
    set_prediction_type(model, "v_prediction")  # as a file without a yaml is loaded
    model.prediction_guessed = True
    targets = []
    real = model.predict_noise
    model.predict_noise = lambda *a: targets.append(model.prediction_type) or real(*a)
    monkeypatch.setattr(ModelChoice, "load", lambda self: model)
    messages = []
    config = TrainConfig(token="<r>", init_word="robot", steps=2, grad_accum=1)
    learn(
        [str(folder)],
        config,
        ModelChoice("world"),
        tmp_path / "run",
        on_event=lambda e: messages.append(getattr(e, "text", "")),
    )
    assert [m for m in messages if "predicts noise" in m], messages
    assert model.prediction_type == "epsilon" and targets[-1] == "epsilon"
    assert dataclasses.asdict(config)["steps"] == 2
