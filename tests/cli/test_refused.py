"""A refused command leaves no run in the store; errors give one plain reason."""

from __future__ import annotations

import base64
import io
import pickle

import torch
from PIL import Image, PngImagePlugin

from oneword.cli import main
from oneword.core.train import CHECKPOINT_NAME
from oneword.experiments.store import Store


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(code: int, err: str) -> str:
    assert code == 2 and "Traceback" not in err, err
    (line,) = [x for x in err.splitlines() if x.startswith("oneword: error:")]
    return line


def test_a_refused_learn_is_not_recorded_and_keeps_the_run(capsys, tmp_path, tiny_model_dir,
                                                           photo_dir):  # fmt: skip
    argv = ["learn", photo_dir, "--token", "<r>", "--init", "cat", "--steps", 2,
            "--grad-accum", 1, "--model", tiny_model_dir, "--out", tmp_path / "run"]  # fmt: skip
    assert run(capsys, *argv)[0] == 0
    info = (tmp_path / "run" / "run.json").read_text()
    line = error_line(*run(capsys, *argv, "--lr", "1e-2")[:3:2])
    assert "already has a checkpoint" in line
    assert (tmp_path / "run" / "run.json").read_text() == info  # the first run's settings
    line = error_line(*run(capsys, *argv, "--resume", "--vectors", 2)[:3:2])  # other settings
    with Store.open() as store:
        (only,) = store.runs()
        assert only.status == "done" and only.note == "" and len(store.candidates(only.id)) == 1
    sweep = ["sweep", photo_dir, "--token", "<q>", "--init", "cat", "--candidates", 2,
             "--steps", 1, "--model", tiny_model_dir, "--vectors", 99999]  # fmt: skip
    error_line(*run(capsys, *sweep)[:3:2])
    with Store.open() as store:
        assert [r.id for r in store.runs()] == [only.id]


def test_a_checkpoint_of_pickled_objects_is_one_plain_reason(capsys, tmp_path, tiny_model_dir,
                                                             photo_dir):  # fmt: skip
    argv = ["learn", photo_dir, "--token", "<r>", "--init", "cat", "--steps", 2,
            "--grad-accum", 1, "--model", tiny_model_dir, "--out", tmp_path / "run"]  # fmt: skip
    assert run(capsys, *argv)[0] == 0
    torch.save({"state": io.BytesIO(b"x")}, tmp_path / "run" / CHECKPOINT_NAME)
    line = error_line(*run(capsys, *argv, "--resume")[:3:2])
    assert "holds Python objects" in line and "PyTorch 2.6" not in line
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(pickle.dumps(4233867316)[:5])
    line = error_line(*run(capsys, *argv, "--resume")[:3:2])
    assert "damaged or cut short" in line and "4233867316" not in line


def test_a_card_nested_too_deep_is_one_line(capsys, tmp_path, tiny_model_dir):
    deep = "[" * 100_000 + "]" * 100_000
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(deep.encode()).decode())
    Image.new("RGB", (8, 8)).save(tmp_path / "deep.png", pnginfo=info)
    for argv in (
        ["inspect", tmp_path / "deep.png", "--model", tiny_model_dir],
        ["generate", "a <x>", "--embedding", tmp_path / "deep.png", "--model", tiny_model_dir],
        ["mix", tmp_path / "deep.png", tmp_path / "deep.png", "-o", tmp_path / "m.pt"],
    ):
        line = error_line(*run(capsys, *argv)[:3:2])
        assert "nested too deep" in line


def test_a_hub_model_that_is_not_cached_offline_is_said_plainly():
    from oneword.adapters.loading import load_failure

    said = (  # what diffusers 0.42 raises for a hub id offline and not in the cache
        "Cannot load model a/b: the model is not fully cached locally (Cannot find an "
        "appropriate cached snapshot folder ...) and an error occurred while trying to fetch "
        "metadata from the Hub. Please check out the root cause in the stacktrace above."
    )
    line = load_failure("a/b", OSError(said))
    assert (
        line.startswith("--model a/b: not in the Hugging Face cache") and "stacktrace" not in line
    )
    assert "(boom)" in load_failure("a/b", ValueError("boom\nmore"))


def test_a_run_refused_after_copying_its_masks_is_forgotten_and_a_begun_one_kept(tmp_path):
    import pytest

    from oneword.errors import OnewordError
    from oneword.experiments.recording import recording

    view = tmp_path / "view.png"
    Image.new("RGB", (8, 8)).save(view)
    with pytest.raises(OnewordError):
        with recording(tmp_path / "p", "learn", tmp_path / "a", "tiny", "<a>", {}) as rec:
            rec.files("mask_view", [view])
            raise OnewordError("--vectors 9999: more than the text encoder takes")
    (tmp_path / "b").mkdir()
    with pytest.raises(OnewordError):
        with recording(tmp_path / "p", "learn", tmp_path / "b", "tiny", "<b>", {}) as rec:
            (tmp_path / "b" / CHECKPOINT_NAME).write_bytes(b"a first checkpoint")
            raise OnewordError("out of memory at step 0")
    with Store.open(tmp_path / "p") as store:
        (kept,) = store.runs()
        assert kept.token == "<b>" and kept.status == "failed"
        assert store.conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0
