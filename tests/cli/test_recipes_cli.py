"""`learn --recipe`: the recipe is recorded in the word's file, run.json and the store, and
`inspect` sets the word's norm beside the vocabulary's."""

from __future__ import annotations

import json

import pytest

from oneword.cli import main
from oneword.core.embeddings import load_embeddings
from oneword.experiments.store import Store


def test_learn_with_a_recipe_records_it_and_inspect_compares_norms(
    capsys, tmp_path, tiny_model_dir, photo_dir
):
    run_dir = tmp_path / "run"
    argv = ["learn", photo_dir, "--token", "<my-cat>", "--init", "cat", "--steps", "3"]
    argv += ["--recipe", "directional", "--model", tiny_model_dir, "--out", run_dir]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    (word,) = load_embeddings(run_dir / "my-cat.safetensors")
    assert word.metadata["recipe"] == "directional"
    assert json.loads(word.metadata["recipe_settings"])["prior"] > 0
    assert json.loads((run_dir / "run.json").read_text())["config"]["recipe"]["name"] == (
        "directional"
    )
    with Store.open() as store:
        (run,) = store.runs()
        assert run.settings["config"]["recipe"]["name"] == "directional"
    capsys.readouterr()
    assert main(["show", "last"]) == 0
    assert 'recipe   directional {"prior"' in capsys.readouterr().out
    assert main(["inspect", str(run_dir / "my-cat.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "row norms median" in out and "learned by the directional recipe" in out
    assert "1.0x the vocabulary's median" in out  # a directional word keeps the median norm


def test_an_unknown_recipe_is_refused_by_name(capsys, tmp_path, tiny_model_dir, photo_dir):
    argv = ["learn", photo_dir, "--token", "<x>", "--init", "cat", "--recipe", "fancy"]
    argv += ["--model", tiny_model_dir, "--out", tmp_path / "run"]
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--recipe" in err and "plain" in err


def test_a_sweep_takes_a_recipe_with_masks_and_records_both(capsys, tmp_path, tiny_model_dir):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 48), (40 * i, 90, 160)).save(photos / f"p{i}.png")
        Image.new("L", (40, 48), 255).save(photos / f"p{i}.mask.png")
    argv = ["sweep", photos, "--mask", "--recipe", "core", "--token", "<m>", "--init", "cat"]
    argv += ["--candidates", 2, "--steps", 2, "--model", tiny_model_dir]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    with Store.open() as store:
        (run,) = store.runs()
        assert run.settings["config"]["recipe"]["name"] == "core"
        assert run.settings["mask"] and run.settings["config"]["mask_floor"] is not None
        files = [c.folder / "learned_embeds.safetensors" for c in store.candidates(run.id)]
    assert len(files) == 2
    for path in files:
        (word,) = load_embeddings(path)
        assert word.metadata["recipe"] == "core"
        assert json.loads(word.metadata["recipe_settings"])["context"] == pytest.approx(0.05)
