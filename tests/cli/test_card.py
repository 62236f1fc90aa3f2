"""Embedding cards: a PNG that carries the word in AUTOMATIC1111's `sd-ti-embedding` chunk."""

from __future__ import annotations

import base64
import json

import pytest
import torch
from PIL import Image

from oneword.cli import main
from oneword.core.embedding_card import card_chunks
from oneword.core.embeddings import LearnedEmbedding, layout_metadata, load_embeddings
from oneword.core.generate import save_png
from oneword.errors import OnewordError


def a1111_decode(text: str):
    """The card's chunk decoded as A1111 decodes it: base64, JSON, {"TORCHTENSOR": lists}."""
    return json.loads(
        base64.b64decode(text),
        object_hook=lambda d: torch.tensor(d["TORCHTENSOR"]) if "TORCHTENSOR" in d else d,
    )


def test_a_run_card_round_trips(capsys, tmp_path, tiny_model_dir, photo_dir):
    learn = ["learn", photo_dir, "--token", "<my-cat>", "--init", "cat", "--vectors", "2"]
    learn += ["--steps", "1", "--grad-accum", "1", "--model", tiny_model_dir]
    assert main([str(a) for a in learn + ["--out", tmp_path / "run"]]) == 0
    capsys.readouterr()
    assert main(["card", "last", "--steps", "2"]) == 0
    card = tmp_path / "run" / "my-cat-card.png"
    assert capsys.readouterr().out.strip() == str(card)
    text = Image.open(card).text
    data = a1111_decode(text["sd-ti-embedding"])
    (learned,) = load_embeddings(tmp_path / "run" / "my-cat.safetensors")
    assert data["name"] == "my-cat" and list(data["string_to_token"]) == ["*"]
    assert torch.equal(data["string_to_param"]["*"].float(), learned.vectors)
    assert text["parameters"].startswith("a photo of a <my-cat>\nSteps: 2")
    (back,) = load_embeddings(card)  # every --embedding reads the card
    assert back.token == "<my-cat>" and torch.equal(back.vectors, learned.vectors)
    assert back.metadata["init_word"] == "cat"
    out = tmp_path / "images"
    generate = ["generate", "a <my-cat>", "--embedding", card, "-n", "1", "--steps", "2"]
    assert main([str(a) for a in generate + ["--model", tiny_model_dir, "--out", out]]) == 0
    assert (out / "a-my-cat-0.png").is_file()


def test_a_file_card_and_an_sdxl_card(capsys, tmp_path, tiny_model_dir):
    emb = LearnedEmbedding("<dot>", torch.randn(1, 32), {"model": str(tiny_model_dir)})
    from oneword.core.embeddings import save_embedding

    save_embedding(emb, tmp_path / "dot.pt", "a1111-pt")
    assert main(["card", str(tmp_path / "dot.pt"), "--out", str(tmp_path / "c.png")]) == 0
    (back,) = load_embeddings(tmp_path / "c.png")
    assert torch.equal(back.vectors, emb.vectors)

    pair = LearnedEmbedding("<xl>", torch.randn(2, 20), layout_metadata((8, 12)))
    chunks = card_chunks(pair.vectors, pair.layout, "xl", {"token": "<xl>"})
    data = a1111_decode(chunks["sd-ti-embedding"])
    assert set(data) == {"clip_l", "clip_g"} and data["clip_g"].shape == (2, 12)
    save_png(torch.zeros(3, 8, 8), tmp_path / "xl.png", {}, chunks)
    (back,) = load_embeddings(tmp_path / "xl.png")
    assert back.token == "<xl>" and back.layout == (8, 12)
    assert torch.equal(back.vectors, pair.vectors)


def test_a_png_without_a_word_is_one_line(tmp_path):
    plain = save_png(torch.zeros(3, 8, 8), tmp_path / "plain.png", {"prompt": "a cat"})
    with pytest.raises(OnewordError, match="carries no embedding") as info:
        load_embeddings(plain)
    assert "\n" not in str(info.value)
    broken = save_png(torch.zeros(3, 8, 8), tmp_path / "b.png", {}, {"sd-ti-embedding": "%%"})
    with pytest.raises(OnewordError, match="damaged"):
        load_embeddings(broken)
