"""One way to name a word, through every command that takes one: a file, a run folder, a run
id (its best candidate, said which), r2/c01, last."""

from __future__ import annotations

import shutil

import torch

from oneword.cli import main
from oneword.core.embeddings import load_embeddings
from oneword.experiments.store import Store


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str) -> str:
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_every_command_names_words_the_same_way(capsys, tmp_path, tiny_model_dir, photo_dir):
    model = ["--model", tiny_model_dir]
    train = ["--init", "cat", "--steps", "1", "--grad-accum", "1", *model]
    learn_dir = tmp_path / "l"
    code, _, err = run(capsys, "learn", photo_dir, "--token", "<l>", *train, "--out", learn_dir)
    assert code == 0, err  # r1
    code, _, err = run(capsys, "sweep", photo_dir, "--token", "<s>", *train, "--candidates", "3")
    assert code == 0, err  # r2
    draw = ["-n", "1", "--sample-steps", "1", *model, "--out", tmp_path / "images"]

    # an unscored run: its first candidate, and what to run to rank them
    code, _, err = run(capsys, "generate", "a <s>", "--embedding", "r2", *draw)
    assert code == 0 and "r2 is r2/c00" in err and "oneword score r2" in err, err

    with Store.open() as store:  # scored: c01 ranked first
        cands = store.candidates(2)
        evaluation = store.add_evaluation(2, {})
        for cand, rank in zip(cands, (2, 1, 3)):
            store.add_scores(evaluation, cand.id, {"combined": -rank, "rank": rank})
        files = {
            c.name: store.files(2, "embedding", c.id)[0].parent / "learned_embeds.safetensors"
            for c in cands
        }
    for name, expected, said in (
        ("r2", "c01", "r2 is r2/c01: ranked first"),
        ("2", "c01", "ranked first"),
        ("last", "c01", "ranked first"),  # the newest run that made words
        ("r2/c02", "c02", ""),
        ("last/c00", "c00", ""),
    ):
        code, _, err = run(capsys, "generate", "a <s>", "--embedding", name, *draw)
        assert code == 0 and said in err, (name, err)
        with Store.open() as store:
            recorded = store.run(store.runs()[-1].id).settings
        assert recorded["words"] == [f"r2/{expected}"], name
        assert recorded["embeddings"] == [str(files[expected])], name

    learned = tmp_path / "l" / "learned_embeds.safetensors"
    for name in (tmp_path / "l", learned):  # a run folder, a file
        code, _, err = run(capsys, "generate", "a <l>", "--embedding", name, *draw)
        assert code == 0, err
        with Store.open() as store:
            assert store.runs()[-1].settings["embeddings"] == [str(learned)]

    copied = shutil.copytree(tmp_path / "l", tmp_path / "copied")  # a folder no run records
    code, _, err = run(capsys, "generate", "a <l>", "--embedding", copied, *draw)
    with Store.open() as store:
        assert store.runs()[-1].settings["embeddings"] == [str(copied / learned.name)]

    code, out, err = run(capsys, "mix", "r2", "r2/c02", tmp_path / "l", "-o", tmp_path / "m.pt")
    assert code == 0 and "ranked first" in err, err
    assert "r2/c01: norm" in out and "r2/c02: norm" in out
    (mixed,) = load_embeddings(tmp_path / "m.pt")
    assert mixed.metadata["parents"] == "r2/c01,r2/c02,r1/c00"  # the folder is run r1

    code, out, err = run(capsys, "card", "r2", "--sample-steps", "1")
    assert code == 0 and "r2 is r2/c01" in err, err
    card = files["c01"].parent / "s-card.png"
    assert out.strip() == str(card)
    (back,) = load_embeddings(card)
    assert torch.equal(back.vectors, load_embeddings(files["c01"])[0].vectors)

    code, out, err = run(capsys, "inspect", "r2/c02", tmp_path / "l", "--top", "1", *model)
    assert code == 0, err
    assert "r2/c02 <s>" in out and "r1/c00 <l>" in out

    code, _, err = run(capsys, "rate", "r2", "c02", "5")
    code, out, err = run(capsys, "evolve", "last", "--fitness", "rating", "--no-render",
                         "--population", "2")  # fmt: skip
    assert code == 0 and "generation 1: r" in out, err
    with Store.open() as store:
        bred = store.runs("evolve")[-1]
        assert bred.parent_run == 2
    code, _, err = run(capsys, "evolve", "r2/c01", "--fitness", "rating", "--no-render")
    assert "names one candidate" in one_line_error(code, err) and "give r2" in err

    for bad in ("r2/c09", "r99", tmp_path / "nowhere", "my-word"):
        code, _, err = run(capsys, "generate", "a <s>", "--embedding", bad, *draw)
        one_line_error(code, err)


def test_a_token_that_nothing_loaded_is_warned_of(capsys, tmp_path, tiny_model_dir):
    code, _, err = run(
        capsys, "generate", "a photo of <my-ball> on a table", "-n", "1", "--sample-steps", "1",
        "--model", tiny_model_dir, "--out", tmp_path / "images",
    )  # fmt: skip
    assert code == 0
    assert "warning: no --embedding defines <my-ball>" in err
