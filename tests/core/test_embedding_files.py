"""Embedding files from elsewhere: the original Textual Inversion .pt, diffusers' SDXL pair,
damaged vectors; and the mode of every file written."""

from __future__ import annotations

import os
import pickle
import stat

import pytest
import torch
from safetensors.torch import save_file

from oneword.core.embeddings import LearnedEmbedding, load_embeddings, write_embedding_files
from oneword.errors import OnewordError
from oneword.files import file_stem


def test_the_original_textual_inversion_pt_loads(tmp_path):
    """Its string_to_param is an nn.ParameterDict (a module), as that code saves it."""
    rows = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(rows.clone())})
    torch.save({"string_to_token": {"*": 265}, "string_to_param": params}, tmp_path / "ti.pt")
    (found,) = load_embeddings(tmp_path / "ti.pt")
    assert found.token == "<ti>" and torch.equal(found.vectors, rows)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo owned > owned.txt",))


def test_a_parameter_dict_with_code_inside_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.zeros(1, 32))})
    params.extra = Payload()  # pickled along with the module's state
    torch.save({"string_to_param": params}, tmp_path / "evil.pt")
    with pytest.raises(OnewordError, match="refusing to load"):
        load_embeddings(tmp_path / "evil.pt")
    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"string_to_param": {"*": Payload()}}, f)
    with pytest.raises(OnewordError, match="refusing to load"):
        load_embeddings(tmp_path / "plain.pt")
    assert not (tmp_path / "owned.txt").exists()


def test_diffusers_sdxl_pair_loads_as_one_word(tmp_path):
    clip_l, clip_g = torch.randn(2, 768), torch.randn(2, 1280)
    save_file({"<dog>": clip_l}, str(tmp_path / "learned_embeds.safetensors"))
    save_file({"<dog>": clip_g}, str(tmp_path / "learned_embeds_2.safetensors"))
    for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):
        (word,) = load_embeddings(tmp_path / name)
        assert word.token == "<dog>" and word.layout == (768, 1280)
        assert torch.equal(word.vectors, torch.cat([clip_l, clip_g], dim=1))


def test_nan_and_inf_vectors_are_refused_naming_file_and_token(tmp_path):
    for bad in (float("nan"), float("inf")):
        rows = torch.zeros(3, 32)
        rows[2, 0] = bad
        save_file({"<bad>": rows}, str(tmp_path / "e.safetensors"))
        with pytest.raises(OnewordError, match=r"e\.safetensors: the vectors of <bad>.*vector 2"):
            load_embeddings(tmp_path / "e.safetensors")


def test_written_files_get_a_plain_writes_mode(tmp_path):
    old = os.umask(0o022)
    try:
        files = write_embedding_files(LearnedEmbedding("<m>", torch.ones(1, 32)), tmp_path, "m")
    finally:
        os.umask(old)
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_tokens_in_any_script_get_distinct_readable_stems():
    stems = [file_stem(t, "embedding") for t in ("<うちのねこ>", "<наш-кот>", "<🐱>", "<🐶>")]
    assert stems[:2] == ["うちのねこ", "наш-кот"]
    assert len(set(stems)) == 4 and all(s.startswith("embedding-") for s in stems[2:])
