"""`oneword mix` of directional words: blended on the sphere of the vocabulary's median row
norm unless asked otherwise; plain words as before."""

from __future__ import annotations

import torch

from oneword.adapters.loading import load_model
from oneword.cli import main
from oneword.core.embeddings import load_embeddings


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def learn(capsys, tmp_path, model, photos, init: str, recipe: str):
    """A word learned 2 steps from `init` (two inits: two directions far apart)."""
    out = tmp_path / f"{recipe}-{init}"
    argv = ["learn", photos, "--token", "<w>", "--init", init, "--steps", 2, "--grad-accum", 1]
    argv += ["--recipe", recipe, "--model", model, "--out", out, "--no-mask"]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    return out / "w.safetensors"


def norms(path):
    return load_embeddings(path)[0].vectors.double().norm(dim=-1)


def test_mixing_directional_words_stays_at_the_vocabulary_radius(
    capsys, tmp_path, tiny_model_dir, photo_dir
):
    a, b = (
        learn(capsys, tmp_path, tiny_model_dir, photo_dir, init, "directional")
        for init in ("cat", "dog")
    )
    table = load_model(str(tiny_model_dir)).vocabulary_table.double()
    radius = float(table.norm(dim=-1).median())
    for method in ("mean", "norm-mean", "slerp"):
        out = tmp_path / f"{method}.safetensors"
        code, printed, err = run(capsys, "mix", a, b, "--method", method, "-o", out)
        assert code == 0, err
        assert f"{method} on the sphere ->" in printed
        assert torch.allclose(norms(out), torch.full_like(norms(out), radius), atol=1e-4)
        mixed = load_embeddings(out)[0]
        assert mixed.metadata["recipe"] == "directional" and "mix_radii" in mixed.metadata
    # the two words point apart, so their plain mean is shorter than either: off the sphere
    code, printed, err = run(capsys, "mix", a, b, "--method", "mean", "--off-sphere", "-o",
                             tmp_path / "off.safetensors")  # fmt: skip
    assert code == 0 and "on the sphere" not in printed, err
    assert bool((norms(tmp_path / "off.safetensors") < radius - 1e-4).all())
    # the gallery's mix of the two runs' words (candidates in the store) alike
    from oneword.experiments.store import Store
    from oneword.search.evolve import mix_candidates

    with Store.open() as store:
        ids = [store.candidates(r.id)[0].id for r in store.runs("learn")]
    mixed = mix_candidates(ids, None, "mean")
    assert mixed.kind == "mix" and mixed.settings["mix"]["on_sphere"] is True
    with Store.open() as store:
        (word,) = store.files(mixed.id, "embedding", store.candidates(mixed.id)[0].id)[:1]
    assert torch.allclose(norms(word), torch.full_like(norms(word), radius), atol=1e-4)


def test_plain_words_mix_as_before_unless_put_on_the_sphere(
    capsys, tmp_path, tiny_model_dir, photo_dir
):
    a, b = (
        learn(capsys, tmp_path, tiny_model_dir, photo_dir, init, "plain") for init in ("cat", "dog")
    )
    out = tmp_path / "m.safetensors"
    code, printed, err = run(capsys, "mix", a, b, "-o", out)
    assert code == 0 and "norm-mean ->" in printed, err
    torch.testing.assert_close(norms(out), (norms(a) + norms(b)) / 2)
    assert "mix_radii" not in load_embeddings(out)[0].metadata
    forced = tmp_path / "forced.safetensors"
    code, printed, err = run(capsys, "mix", a, b, "--on-sphere", "-o", forced)
    assert code == 0 and "on the sphere" in printed, err
    table = load_model(str(tiny_model_dir)).vocabulary_table.double()
    radius = float(table.norm(dim=-1).median())
    assert torch.allclose(norms(forced), torch.full_like(norms(forced), radius), atol=1e-4)


def test_a_word_that_names_no_model_cannot_be_put_on_the_sphere(capsys, tmp_path):
    from oneword.core.embeddings import LearnedEmbedding, save_embedding

    files = []
    for k in range(2):
        rows = torch.randn(1, 32, generator=torch.Generator().manual_seed(k))
        emb = LearnedEmbedding("<w>", rows, {"recipe": "directional"})
        files.append(save_embedding(emb, tmp_path / f"w{k}.safetensors", "diffusers"))
    code, _, err = run(capsys, "mix", *files, "-o", tmp_path / "m.safetensors")
    assert code == 2 and "does not say which model" in err and "--off-sphere" in err
    code, _, err = run(capsys, "mix", *files, "--off-sphere", "-o", tmp_path / "m.safetensors")
    assert code == 0, err
