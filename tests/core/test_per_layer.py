"""Per-layer words (P+): the UNet's layer windows, training, the file layout, generation."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from oneword.adapters.layer_states import cross_attention_names
from oneword.adapters.loading import load_model
from oneword.core.embeddings import LearnedEmbedding, load_embeddings, write_embedding_files
from oneword.core.generate import register_words, text_states
from oneword.core.invariant import TextualInversionInvariant
from oneword.core.per_layer import (
    MEAN_KEY,
    SD1_LAYER_NAMES,
    layer_dict,
    layer_names,
    spread_over_layers,
    stacked_layers,
)
from oneword.core.train import TrainConfig, train
from oneword.errors import OnewordError


@pytest.fixture
def model(tiny_model_dir):
    m = load_model(str(tiny_model_dir))
    m.add_placeholder_tokens(["<c>"])
    return m


def _noise(model, states):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=gen)
    return model.predict_noise(latents, torch.tensor([500]), states)


def _states(model, rows):
    ids = model.token_ids(["a photo of <c>"])
    with torch.no_grad():
        return model.encode_text(ids, rows)


def test_the_tiny_unet_has_its_cross_attention_layers_in_running_order(model):
    names = cross_attention_names(model.pipe.unet)
    assert model.cross_attention_layers == len(names) >= 2
    blocks = [n.split(".")[0] for n in names]
    assert blocks == sorted(blocks, key=["down_blocks", "mid_block", "up_blocks"].index)


def test_a_word_equal_in_every_layer_draws_as_the_plain_word(model):
    plain = torch.randn(1, 1, model.embedding_width, generator=torch.Generator().manual_seed(1))
    layers = model.cross_attention_layers
    per_layer = spread_over_layers(plain, layers)  # [1, layers, 1, d]
    plain_states, layered_states = _states(model, plain), _states(model, per_layer)
    assert layered_states.shape[1] == layers * plain_states.shape[1]
    with torch.no_grad():
        reference = _noise(model, plain_states)
        assert torch.allclose(_noise(model, layered_states), reference, atol=1e-5)
        # the windows stay installed; plain states still pass through them unchanged
        assert torch.equal(_noise(model, plain_states), reference)


def test_every_layer_reads_its_own_vectors(model):
    gen = torch.Generator().manual_seed(2)
    layers = model.cross_attention_layers
    rows = spread_over_layers(torch.randn(1, 1, model.embedding_width, generator=gen), layers)
    with torch.no_grad():
        base = _noise(model, _states(model, rows))
        for layer in (0, layers - 1):
            changed = rows.clone()
            changed[0, layer] += torch.randn(model.embedding_width, generator=gen)
            assert not torch.allclose(_noise(model, _states(model, changed)), base, atol=1e-6)


def test_per_layer_training_changes_only_placeholder_rows_and_layers_drift_apart(model, tmp_path):
    photos = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    table_before = model.vocabulary_table.detach().clone()
    invariant = TextualInversionInvariant(model)
    config = TrainConfig(
        token="<c>", init_word="cat", per_layer=True, steps=4, batch_size=2, grad_accum=2, lr=1e-2
    )
    state = train(model, photos, config, tmp_path / "run")
    invariant.check()
    assert torch.equal(model.vocabulary_table, table_before)
    rows = state.rows()[0]  # [layers, N, d]
    assert rows.shape == (model.cross_attention_layers, 1, model.embedding_width)
    start = table_before[model.word_token_ids("cat")].mean(0)
    assert not torch.allclose(rows, start.expand_as(rows))  # it learned
    assert not torch.allclose(rows[0], rows[-1])  # and each layer learned its own vectors


def test_the_file_layout_round_trips_with_its_mean_beside_it(tmp_path):
    vectors = torch.randn(16, 2, 8, generator=torch.Generator().manual_seed(3))
    emb = LearnedEmbedding("<c>", vectors, {"model": "m"})
    paths = write_embedding_files(emb, tmp_path, "c")
    assert paths["per-layer"].name == "c.per-layer.safetensors"
    with safe_open(str(paths["per-layer"]), "pt") as f:
        assert tuple(f.keys()) == tuple(sorted(SD1_LAYER_NAMES))  # kohya's XTI names
        assert f.metadata()["layers"] == "16" and f.metadata()["token"] == "<c>"
    (back,) = load_embeddings(paths["per-layer"])
    assert back.token == "<c>" and back.layers == 16 and torch.equal(back.vectors, vectors)
    (mean,) = load_embeddings(paths["a1111"])
    assert mean.layers == 1 and torch.allclose(mean.vectors, vectors.mean(0))
    assert "16 layers" in mean.metadata[MEAN_KEY] and "layers" not in mean.metadata


def test_other_layer_counts_get_numbered_keys_and_other_dicts_are_not_per_layer():
    assert layer_names(3) == ("layer00", "layer01", "layer02")
    layered = layer_dict(torch.zeros(3, 1, 4))
    assert stacked_layers(layered).shape == (3, 1, 4)
    assert stacked_layers({"layer00": torch.zeros(1, 4), "x": torch.zeros(1, 4)}) is None
    assert stacked_layers({"<c>": torch.zeros(1, 4)}) is None


def test_a_plain_word_beside_a_per_layer_word_is_the_same_in_every_layer(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    layers = model.cross_attention_layers
    d = model.embedding_width
    gen = torch.Generator().manual_seed(4)
    per_layer = LearnedEmbedding("<p>", torch.randn(layers, 1, d, generator=gen))
    plain = LearnedEmbedding("<q>", torch.randn(2, d, generator=gen))
    words = register_words(model, [plain, per_layer])
    assert words.rows.shape == (1, layers, 3, d)
    assert torch.equal(words.rows[0, 3, :2], plain.vectors)
    assert text_states(model, ["<q> and <p>"], words).shape[1] == layers * model.max_length


def test_a_per_layer_word_of_another_model_is_refused(model):
    wrong = LearnedEmbedding("<p>", torch.zeros(model.cross_attention_layers + 1, 1, 32))
    with pytest.raises(OnewordError, match="cross-attention layers"):
        register_words(model, [wrong])


def test_a_stopped_per_layer_run_resumes_to_the_same_word(model, tmp_path):
    from oneword.events import Stepped

    photos = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    config = TrainConfig(token="<c>", init_word="cat", per_layer=True, steps=4, checkpoint_every=1)
    whole = train(model, photos, config, tmp_path / "whole")

    def stop_at_2(event):
        if isinstance(event, Stepped) and event.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(OnewordError, match="--resume"):
        train(model, photos, config, tmp_path / "split", on_event=stop_at_2)
    resumed = train(model, photos, config, tmp_path / "split", resume=True)
    assert torch.equal(resumed.rows(), whole.rows())
