"""The built-in world model loads through the standard loader, like a real checkpoint."""

from __future__ import annotations

import torch

from oneword.api import DEFAULT_MODEL
from oneword.models import WORLD_MODEL_FOLDER, load_model


def test_world_model_loads_like_a_checkpoint():
    model = load_model(str(WORLD_MODEL_FOLDER))
    assert model.native_resolution == 64
    assert model.tokenizer.tokenize("a painting of a cat in the snow") == [
        "a</w>", "painting</w>", "of</w>", "a</w>", "cat</w>", "in</w>", "the</w>", "snow</w>"]


def test_world_model_is_the_default_and_draws_64px():
    assert DEFAULT_MODEL == "world"
    model = load_model(DEFAULT_MODEL)
    states = model.encode_text(model.token_ids(["a photo of a cat on the beach"]))
    images = model.generate(states, model.encode_text(model.token_ids([""])),
                            [torch.Generator().manual_seed(0)], 2, 5.0, 64)
    assert images.shape == (1, 3, 64, 64) and 0 <= images.min() and images.max() <= 1
