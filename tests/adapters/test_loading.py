"""Loading pipelines and the placeholder rows in the text encoder."""

from __future__ import annotations

import pytest
import torch

from oneword.adapters.loading import load_model, resolve_model
from oneword.adapters.tiny import TinyShapes, build_tiny_pipeline
from oneword.core.train import TrainConfig, train
from oneword.errors import OnewordError


def test_builtin_tiny_model_loads_through_from_pretrained(monkeypatch, tmp_path):
    monkeypatch.setenv("ONEWORD_CACHE", str(tmp_path))
    kind, location = resolve_model("tiny")
    assert kind == "folder" and (tmp_path / "models" / "tiny" / "model_index.json").exists()
    model = load_model("tiny")
    assert model.native_resolution == 32 and model.prediction_type == "epsilon"
    assert model.tokenizer.tokenize("a photo of a calico cat") == [
        "a</w>",
        "photo</w>",
        "of</w>",
        "a</w>",
        "calico</w>",
        "cat</w>",
    ]


def test_placeholder_rows_are_read_per_candidate(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    model.add_placeholder_tokens(["<t>"])
    ids = model.token_ids(["a photo of <t>"] * 2)
    rows = torch.randn(2, 1, model.embedding_width)
    both = model.encode_text(ids, rows, torch.tensor([0, 1]))
    first = model.encode_text(ids, rows, torch.tensor([0, 0]))
    torch.testing.assert_close(both[0], first[0])
    assert not torch.allclose(both[1], first[1])
    plain = model.encode_text(model.token_ids(["a photo of a cat"]))
    assert plain.shape == (1, 77, model.embedding_width)
    with pytest.raises(RuntimeError, match="no placeholder rows"):
        model.encode_text(ids)


def test_v_prediction_models_train_on_v(tmp_path):
    folder = build_tiny_pipeline(
        tmp_path / "v", seed=0, shapes=TinyShapes(prediction_type="v_prediction")
    )
    model = load_model(str(folder))
    assert model.prediction_type == "v_prediction"
    model.add_placeholder_tokens(["<v>"])
    photos = torch.zeros(2, 3, 32, 32)
    state = train(
        model,
        photos,
        TrainConfig(token="<v>", init_word="cat", steps=2, grad_accum=1),
        tmp_path / "run",
    )
    assert state.step == 2 and torch.isfinite(state.rows()).all()


def test_dtype_option_is_checked(tiny_model_dir):
    with pytest.raises(OnewordError, match="--dtype"):
        load_model(str(tiny_model_dir), dtype="int8")


def test_tokenizer_built_in_code_is_the_same_in_every_process():
    """Golden merges: ties between equally frequent pairs go to the smallest pair (the
    `tokenizers` trainer broke them differently per process, so token ids changed run to run)."""
    from oneword.adapters.tokenizer import bpe_merges, build_clip_tokenizer

    assert bpe_merges(("at", "cat", "cats", "dog")) == (
        ("a", "t</w>"),
        ("a", "t"),
        ("at", "s</w>"),
        ("c", "at</w>"),
        ("c", "ats</w>"),
        ("d", "o"),
        ("do", "g</w>"),
    )
    tokenizer = build_clip_tokenizer(["cat", "cats", "at", "dog"])
    assert [tokenizer.tokenize(w) for w in ("cats", "cat", "dog")] == [
        ["cats</w>"],
        ["cat</w>"],
        ["dog</w>"],
    ]
    assert tokenizer.get_vocab()["cats</w>"] == 256 * 2 + 4


def test_a_model_folder_can_carry_its_learning_length(tmp_path):
    from oneword.adapters.loading import SETTINGS_FILE, write_model_settings
    from oneword.api import DEFAULT_STEPS, default_steps

    folder = tmp_path / "copy-of-a-model"
    folder.mkdir()
    assert default_steps(str(folder)) == DEFAULT_STEPS  # no oneword.json: SD's default
    write_model_settings(folder, {"learn_steps": 120})
    assert default_steps(str(folder)) == 120
    assert default_steps("world") == 300 and default_steps("tiny") == DEFAULT_STEPS
    for bad in ('{"learn_steps": 0}', '{"learn_steps": "many"}', "[1]", "{not json"):
        (folder / SETTINGS_FILE).write_text(bad)
        with pytest.raises(OnewordError, match=SETTINGS_FILE):
            default_steps(str(folder))
