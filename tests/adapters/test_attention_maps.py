"""Reading the UNet's attention during a pass, without changing what the pass computes."""

from __future__ import annotations

import pytest
import torch

from oneword.adapters.attention_maps import latent_multiple, record_attention
from oneword.adapters.loading import load_model


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def noisy_batch(model, size=(8, 12)):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, model.latent_channels, *size, generator=gen)
    states = model.encode_text(model.token_ids(["a photo of a cat"] * 2))
    return latents, torch.tensor([150, 150]), states


def test_cross_attention_maps_are_probabilities_on_each_layers_grid(model):
    latents, t, states = noisy_batch(model)
    everything = list(range(states.shape[1]))
    maps = record_attention(model, latents, t, states, everything)
    assert len(maps.cross) == model.cross_attention_layers
    for m in maps.cross:
        h, w = m.shape[-2:]
        assert m.shape[0] == 2 and 8 / h == 12 / w  # the latent's aspect, at the layer's scale
        assert torch.allclose(m, torch.ones_like(m), atol=1e-5)  # all tokens: probability 1
    one = record_attention(model, latents, t, states, [5])
    assert all(((0 <= m) & (m <= 1)).all() for m in one.cross)
    rows = maps.self_attention.sum(-1)
    assert maps.self_attention.shape == (2, 96, 96) and maps.self_size == (8, 12)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_the_pass_and_the_processors_are_unchanged(model):
    latents, t, states = noisy_batch(model)
    before = model.predict_noise(latents, t, states)
    processors = dict(model.pipe.unet.attn_processors)
    record_attention(model, latents, t, states, [5])
    assert dict(model.pipe.unet.attn_processors) == processors
    assert torch.equal(model.predict_noise(latents, t, states), before)


def test_the_latent_multiple_is_what_the_unet_downsamples_by(model):
    blocks = len(model.pipe.unet.config.down_block_types)
    assert latent_multiple(model) == 2 ** (blocks - 1)
