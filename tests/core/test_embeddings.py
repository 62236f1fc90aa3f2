"""Embedding files: round trips, safe loading, and loading by diffusers itself."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from oneword.core.embeddings import (
    LearnedEmbedding,
    check_width,
    load_embeddings,
    save_embedding,
    write_embedding_files,
)
from oneword.core.prompts import placeholder_names
from oneword.errors import OnewordError

META = {"init_word": "cat", "model": "tiny", "steps": "120", "seed": "7"}


def _emb(n=3, width=8, token="<my-cat>", seed=0) -> LearnedEmbedding:
    vectors = torch.randn(n, width, generator=torch.Generator().manual_seed(seed))
    return LearnedEmbedding(token=token, vectors=vectors, metadata=dict(META))


def _expected_metadata(emb, **extra):
    return {**emb.metadata, "token": emb.token, "oneword_format": "1", **extra}


# -- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt, filename",
    [
        ("diffusers", "learned_embeds.safetensors"),
        ("a1111", "cat.safetensors"),
        ("a1111-pt", "cat.pt"),
    ],
)
@pytest.mark.parametrize("n", [1, 3])
def test_round_trip(tmp_path, fmt, filename, n):
    emb = _emb(n)
    path = save_embedding(emb, tmp_path / filename, fmt)
    (loaded,) = load_embeddings(path)
    assert loaded.token == emb.token
    assert loaded.vectors.dtype == torch.float32 and loaded.vectors.shape == (n, 8)
    assert torch.equal(loaded.vectors, emb.vectors)
    extra = {"name": "cat"} if fmt == "a1111" else {}
    assert loaded.metadata == _expected_metadata(emb, **extra)
    assert [p.name for p in tmp_path.iterdir()] == [filename]  # no temp files left behind


def test_write_embedding_files_writes_the_three_layouts(tmp_path):
    emb = _emb(2)
    files = write_embedding_files(emb, tmp_path / "out", "my-cat")
    assert {k: p.name for k, p in files.items()} == {
        "diffusers": "learned_embeds.safetensors",
        "a1111": "my-cat.safetensors",
        "a1111-pt": "my-cat.pt",
    }
    assert set(load_file(files["diffusers"])) == {"<my-cat>"}
    assert set(load_file(files["a1111"])) == {"emb_params"}
    for path in files.values():
        (loaded,) = load_embeddings(path)
        assert loaded.token == "<my-cat>" and torch.equal(loaded.vectors, emb.vectors)


def test_a1111_pt_mirrors_automatic1111_and_loads_weights_only(tmp_path):
    emb = _emb(2)
    path = save_embedding(emb, tmp_path / "my-cat.pt", "a1111-pt")
    data = torch.load(path, weights_only=True)
    assert data["string_to_token"] == {"*": 265}
    assert set(data["string_to_param"]) == {"*"}
    assert torch.equal(data["string_to_param"]["*"], emb.vectors)
    assert data["name"] == "my-cat" and data["step"] == 120
    assert data["sd_checkpoint"] is None and data["sd_checkpoint_name"] == "tiny"


def test_token_defaults_for_foreign_a1111_files(tmp_path):
    vec = torch.randn(2, 8)
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vec},
            "name": "kitty",
            "step": 5,
            "sd_checkpoint": "abc",
            "sd_checkpoint_name": "sd15",
        },
        tmp_path / "kitty_v2.pt",
    )
    assert load_embeddings(tmp_path / "kitty_v2.pt")[0].token == "kitty"
    assert load_embeddings(tmp_path / "kitty_v2.pt", token="<k>")[0].token == "<k>"
    save_file({"emb_params": vec}, tmp_path / "comfy.safetensors")
    (loaded,) = load_embeddings(tmp_path / "comfy.safetensors")
    assert loaded.token == "<comfy>" and torch.equal(loaded.vectors, vec)


def test_several_tokens_bin_and_one_dimensional_vectors(tmp_path):
    a, b = torch.randn(8), torch.randn(2, 8, dtype=torch.float16)
    save_file({"<a>": a, "<b>": b}, tmp_path / "two.safetensors")
    loaded = load_embeddings(tmp_path / "two.safetensors")
    assert [e.token for e in loaded] == ["<a>", "<b>"]
    assert loaded[0].vectors.shape == (1, 8) and torch.equal(loaded[0].vectors[0], a)
    assert loaded[1].vectors.dtype == torch.float32 and torch.equal(loaded[1].vectors, b.float())
    assert [e.token for e in load_embeddings(tmp_path / "two.safetensors", token="<b>")] == ["<b>"]
    with pytest.raises(OnewordError, match="<c>"):
        load_embeddings(tmp_path / "two.safetensors", token="<c>")
    torch.save({"<x>": torch.randn(3, 8)}, tmp_path / "learned_embeds.bin")
    (binary,) = load_embeddings(tmp_path / "learned_embeds.bin")
    assert binary.token == "<x>" and binary.vectors.shape == (3, 8)


# -- refusing what is unsafe or broken -----------------------------------------------------
class Payload:
    """Anything that is not a plain tensor/dict/str: torch.load must not rebuild it."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


class Plain:
    pass


@pytest.mark.parametrize("obj", [Payload(), Plain()])
def test_pickled_objects_are_refused(tmp_path, obj):
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 8)}, "name": "x", "extra": obj}, path)
    with pytest.raises(OnewordError, match=r"evil.pt: refusing to load: .*pickled objects"):
        load_embeddings(path)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(pickle.dumps({"<t>": obj}))
    with pytest.raises(OnewordError, match="raw.bin: refusing to load"):
        load_embeddings(raw)


@pytest.mark.parametrize(
    "name, content",
    [
        ("bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"),
        ("bad.pt", b"\x00garbage" * 8),
        ("empty.pt", b""),
        ("bad.bin", b"PK\x03\x04broken zip"),
        ("notes.txt", b"hello"),
    ],
)
def test_broken_files_name_the_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(OnewordError, match=name.replace(".", r"\.")) as info:
        load_embeddings(tmp_path / name)
    assert "\n" not in str(info.value) and "refusing" not in str(info.value)


def test_wrong_layouts_are_errors(tmp_path):
    torch.save({"a": "just a string"}, tmp_path / "s.pt")
    torch.save(torch.zeros(2, 3, 4), tmp_path / "cube.pt")
    save_file(
        {"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(1, 1280)}, tmp_path / "xl.safetensors"
    )
    for name, match in (
        ("s.pt", "not a float tensor"),
        ("cube.pt", r"shape \(2, 3, 4\)"),
        ("xl.safetensors", "clip_l has 2 vectors but clip_g has 1"),
        ("missing.pt", "no such"),
    ):
        with pytest.raises(OnewordError, match=match):
            load_embeddings(tmp_path / name)


def test_bad_format_is_an_error(tmp_path):
    with pytest.raises(OnewordError, match="--format"):
        save_embedding(_emb(), tmp_path / "x.pt", "ckpt")


def test_width_mismatch_names_both_widths_and_families():
    check_width(_emb(width=768), 768, "sd15", "a.pt")
    with pytest.raises(OnewordError) as info:
        check_width(_emb(width=1024), 768, "runwayml/sd15", "kitty.pt")
    message = str(info.value)
    for part in (
        "kitty.pt",
        "1024-d",
        "768-d",
        "Stable Diffusion 2.x",
        "Stable Diffusion 1.x",
        "runwayml/sd15",
    ):
        assert part in message


# -- diffusers loads every file we write ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from oneword.adapters.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "tiny", seed=0)


@pytest.mark.parametrize("fmt", ["diffusers", "a1111", "a1111-pt"])
@pytest.mark.parametrize("n", [1, 3])
def test_diffusers_load_textual_inversion_reads_our_files(tmp_path, tiny_folder, fmt, n):
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        tiny_folder, safety_checker=None, requires_safety_checker=False
    )
    width = pipe.text_encoder.get_input_embeddings().embedding_dim
    emb = _emb(n, width=width, token="<zq-thing>", seed=n)
    path = write_embedding_files(emb, tmp_path, "zq-thing")[fmt]
    token = None if fmt == "diffusers" else emb.token  # diffusers files carry their token
    pipe.load_textual_inversion(str(path), token=token)
    names = placeholder_names(emb.token, n)
    ids = pipe.tokenizer.convert_tokens_to_ids(names)
    assert pipe.tokenizer.unk_token_id not in ids and len(set(ids)) == n
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[ids].detach(), emb.vectors)
    assert pipe.tokenizer(" ".join(names), add_special_tokens=False).input_ids == ids
