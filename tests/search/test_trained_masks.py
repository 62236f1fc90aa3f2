"""`evolve --train-steps` of a masked run's words: the children train with the masks, photos
and recipe their parents learned with, also when bred from an untrained generation."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from oneword.cli import main
from oneword.experiments import sweep as pipeline
from oneword.experiments.store import Store


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def masked_photos(folder):
    """Four photos, each with a mask file beside it: the left half counts, the right not."""
    gen = torch.Generator().manual_seed(3)
    folder.mkdir()
    mask = Image.new("L", (48, 40), 0)
    mask.paste(255, (0, 0, 24, 40))
    for i in range(4):
        pixels = (torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"p{i}.png")
        mask.save(folder / f"p{i}.mask.png")
    return folder


def rate_all(run_id: int) -> None:
    with Store.open() as store:
        for k, cand in enumerate(store.candidates(run_id)):
            store.rate(cand.id, 1 + k)


def test_children_of_a_masked_run_train_with_its_masks(capsys, tmp_path, tiny_model_dir):
    photos = masked_photos(tmp_path / "photos")
    code, _, err = run(
        capsys, "sweep", photos, "--mask", "--mask-floor", "0.2", "--token", "<m>", "--init",
        "cat", "--candidates", 2, "--steps", 1, "--grad-accum", 1, "--model", tiny_model_dir,
    )  # fmt: skip
    assert code == 0, err
    rate_all(1)
    breed = ["--fitness", "rating", "--no-render", "--population", 2, "--mutation", 0.5]
    code, _, err = run(capsys, "evolve", "r1", *breed)  # r2: bred, not trained
    assert code == 0, err
    rate_all(2)
    seen = []
    real = pipeline.train_fitting_memory

    def spy(*args, **kwargs):
        seen.append(args[7])  # the loss weights of the crops (None: whole photos)
        return real(*args, **kwargs)

    with_training = ["evolve", "r2", *breed, "--train-steps", 1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "train_fitting_memory", spy)
        code, out, err = run(capsys, *with_training)
    assert code == 0, err
    assert "the children train with the masks of r1" in err
    (masks,) = seen
    assert masks is not None
    weights = torch.cat([m.flatten() for m in (masks if isinstance(masks, list) else [masks])])
    assert float(weights.max()) > 0.99 and float(weights.min()) < 0.01  # both halves reached it
    with Store.open() as store:
        r1, r3 = store.run(1), store.run(3)
        assert r3.kind == "evolve" and r3.parent_run == 2 and r3.settings["evolve"]["train_steps"]
        assert r3.settings["mask_floor"] == r1.settings["mask_floor"] == 0.2
        assert r3.settings["config"]["mask_floor"] == 0.2
        assert r3.settings["mask"]["from_run"] == "r1" and len(r3.settings["mask"]["files"]) == 4
        assert r3.photos == r1.photos
        assert len(store.files(3, "mask")) == 4 and len(store.files(3, "mask_view")) == 4
        kept = r1.folder / "masks"
    # the masks the parents learned with are gone: said, not trained without them
    shutil.rmtree(kept)
    code, _, err = run(capsys, *with_training)
    assert code == 2 and "p0.png" in err and "r1 trained with is gone" in err


def test_children_of_an_unmasked_run_train_on_whole_photos(capsys, tmp_path, tiny_model_dir):
    photos = masked_photos(tmp_path / "photos")
    code, _, err = run(
        capsys, "sweep", photos, "--no-mask", "--token", "<m>", "--init", "cat",
        "--candidates", 2, "--steps", 1, "--grad-accum", 1, "--model", tiny_model_dir,
    )  # fmt: skip
    assert code == 0, err
    rate_all(1)
    code, _, err = run(capsys, "evolve", "r1", "--fitness", "rating", "--no-render",
                       "--population", 2, "--train-steps", 1)  # fmt: skip
    assert code == 0, err
    with Store.open() as store:
        r2 = store.run(2)
        assert "mask" not in r2.settings and r2.settings["config"]["mask_floor"] is None
        assert not store.files(2, "mask")
