"""`oneword masks` and `learn/sweep --mask auto` end to end on the tiny model."""

from __future__ import annotations

import json
import shlex

import pytest
from PIL import Image

from oneword.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_masks_writes_a_mask_folder_that_learn_reads(capsys, tmp_path, tiny_model_dir, photo_dir):
    out = tmp_path / "masks"
    code, printed, err = run(
        capsys, "masks", photo_dir, "--init", "cat", "--out", out, "--model", tiny_model_dir
    )
    assert code == 0, err
    for k in range(4):
        mask = Image.open(out / f"photo{k}.png")
        assert mask.mode == "L" and mask.size == (48, 40)  # the photo's size
    sheet = Image.open(out / "review" / "contact_sheet.png")
    assert sheet.height > 4 * 40 and "contact_sheet.png" in printed
    # the next command it prints learns with these masks
    hint = shlex.split(printed.split("next: ")[1].splitlines()[0])
    assert hint[:2] == ["oneword", "learn"]
    extra = ["--steps", 1, "--grad-accum", 1, "--model", tiny_model_dir, "--out", tmp_path / "run"]
    code, _, err = run(capsys, *hint[1:], *extra)
    assert code == 0, err
    settings = json.loads((tmp_path / "run" / "run.json").read_text())
    assert settings["mask"]["dir"] == str(out.absolute())


def learn_auto(tmp_path, photos, *extra):
    return ["learn", photos, "--token", "<x>", "--init", "cat", "--grad-accum", 1,
            "--model", "world", "--out", tmp_path / "run", "--mask", "auto", *extra]  # fmt: skip


@pytest.fixture
def cat_photos(tmp_path):
    """Five photos of the world's hidden cat (the world model finds it in each)."""
    import torch

    from oneword.core.generate import save_png
    from oneword.world import evaluate

    photos = evaluate.subject_photos("cat", 5, torch.Generator().manual_seed(0))
    for k, image in enumerate(photos):
        save_png(image, tmp_path / "cats" / f"cat{k}.png", {})
    return tmp_path / "cats"


def test_learn_with_automatic_masks_records_them_and_resumes(capsys, tmp_path, cat_photos):
    code, _, err = run(capsys, *learn_auto(tmp_path, cat_photos, "--steps", 2))
    assert code == 0, err
    run_dir = tmp_path / "run"
    settings = json.loads((run_dir / "run.json").read_text())
    auto = settings["mask"]["auto"]
    assert auto["class_word"] == "cat" and auto["caption"] == "a photo of a cat"
    assert settings["mask_floor"] == 0.1
    assert all(f["mask"].startswith("automatic ('cat'") for f in settings["mask"]["files"])
    names = sorted(p.name for p in (run_dir / "masks").glob("*.png"))
    assert names == [f"cat{k}.png" for k in range(5)]
    mask = Image.open(run_dir / "masks" / "cat0.png")
    assert 0 < sum(mask.point(lambda v: v > 127).getdata()) < 64 * 64 / 2  # the cat, not all
    assert len(list((run_dir / "masks" / "shown").glob("*.png"))) == 5
    from oneword.experiments.store import Store

    with Store.open(None) as store:  # the gallery draws the masks over the photos from these
        (recorded,) = store.runs("learn")
        assert len(store.files(recorded.id, "mask_view")) == 5
    code, shown, _ = run(capsys, "show", "last")
    assert code == 0 and "--mask auto: the model's attention to 'cat'" in shown
    assert "cat0.png: automatic ('cat', covers" in shown
    # a resumed run reads back the masks it kept (a GPU may not make them again to the bit)
    import oneword.experiments.auto_masks as made

    def not_again(*args, **kwargs):
        raise AssertionError("the kept masks are read back, not made again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(made, "make_masks", not_again)
        code, _, err = run(capsys, *learn_auto(tmp_path, cat_photos, "--steps", 2, "--resume"))
    assert code == 0 and "read back from" in err, err
    # masks asked for otherwise are made anew: other masks, another run
    argv = learn_auto(tmp_path, cat_photos, "--steps", 2, "--resume", "--class-word", "dog")
    code, _, err = run(capsys, *argv)
    assert code == 2 and "trained on other photos" in err


def test_sweep_with_automatic_masks(capsys, tmp_path, tiny_model_dir, photo_dir):
    code, printed, err = run(
        capsys, "sweep", photo_dir, "--token", "<x>", "--init", "cat", "--steps", 1,
        "--grad-accum", 1, "--candidates", 2, "--model", tiny_model_dir, "--mask", "auto",
        "--class-word", "calico cat",
    )  # fmt: skip
    assert code == 0, err
    code, shown, _ = run(capsys, "show", "last")
    assert "the model's attention to 'calico cat'" in shown and "c01" in shown


def test_mask_takes_only_auto_as_a_value(capsys, tmp_path, tiny_model_dir, photo_dir):
    with pytest.raises(SystemExit) as stop:
        main(["learn", "--mask", str(photo_dir), "--token", "<x>"])
    assert stop.value.code == 2
    assert "give --mask alone (mask files) or --mask auto" in capsys.readouterr().err


def test_learn_with_a_clipseg_model_on_disk(capsys, tmp_path, tiny_model_dir, photo_dir):
    from oneword.adapters.tiny import build_tiny_clipseg_model

    clipseg = build_tiny_clipseg_model(tmp_path / "clipseg")
    code, printed, err = run(
        capsys, "learn", photo_dir, "--token", "<x>", "--init", "cat", "--steps", 1,
        "--grad-accum", 1, "--model", tiny_model_dir, "--out", tmp_path / "run",
        "--mask", "auto", "--mask-model", clipseg,
    )  # fmt: skip
    assert code == 0, err
    auto = json.loads((tmp_path / "run" / "run.json").read_text())["mask"]["auto"]
    assert auto["method"] == "clipseg" and auto["mask_model"] == str(clipseg)
    assert len(list((tmp_path / "run" / "masks").glob("*.png"))) == 4
