"""Labelled contact sheets: every preview, grid and score sheet says what each image is."""

from __future__ import annotations

import json

import torch
from PIL import Image

from oneword.cli import main
from oneword.core.generate import SHEET_TILE, labelled_sheet


def test_a_labelled_sheet_has_a_title_and_a_caption_under_each_tile():
    images = torch.zeros(3, 3, 16, 16)  # black tiles on a white sheet
    sheet = labelled_sheet(images, ["a photo · seed 1", "b · seed 2", "c · seed 3"], "title", 2)
    assert sheet.width == 2 * (SHEET_TILE + 8) + 8  # 16 px tiles shown at SHEET_TILE
    pixels = torch.tensor(list(sheet.convert("L").getdata())).view(sheet.height, sheet.width)
    below = pixels[30 + SHEET_TILE + 2 : 30 + SHEET_TILE + 18, 8 : 8 + SHEET_TILE]
    assert (below < 128).any()  # caption text under the first tile
    assert (pixels[6:24, 8:60] < 128).any()  # the title
    plain = labelled_sheet(images, [], "", 3)
    assert plain.height < sheet.height


def test_learn_previews_by_default_as_labelled_sheets(capsys, tmp_path, tiny_model_dir, photo_dir):
    argv = ["learn", photo_dir, "--token", "<p>", "--init", "cat", "--steps", 10,
            "--grad-accum", 1, "--model", tiny_model_dir, "--out", tmp_path / "run"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    previews = sorted(p.name for p in (tmp_path / "run" / "previews").iterdir())
    assert previews == [f"step-{s:06d}.png" for s in (2, 4, 6, 8, 10)]  # a fifth of --steps
    shown = Image.open(tmp_path / "run" / "previews" / "step-000010.png")
    assert json.loads(shown.text["step"]) == 10 and json.loads(shown.text["seeds"]) == [1000, 1001]
    assert shown.height > 2 * SHEET_TILE + 30  # two rows of tiles, captions and a title
    capsys.readouterr()
    assert main([str(a) for a in argv[:-2]] + ["--out", str(tmp_path / "off"),
                "--preview-every", "0"]) == 0  # fmt: skip
    assert not (tmp_path / "off" / "previews").exists()
