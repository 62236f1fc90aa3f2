"""The text chunks of the PNGs oneword writes."""

from __future__ import annotations

import torch
from PIL import Image

from oneword.core.generate import a1111_parameters, save_png


def test_a1111_parameters_read_as_automatic1111_writes_them(tmp_path):
    meta = {
        "prompt": "a photo of <cat>, highly detailed",
        "negative": "blurry, low quality",
        "seed": 42,
        "steps": 20,
        "cfg": 7.0,
        "scheduler": "euler-a",
        "model": "/models/dreamshaper_8.safetensors",
    }
    path = save_png(torch.rand(3, 16, 24), tmp_path / "a.png", meta)
    text = Image.open(path).text
    assert text["parameters"] == (
        "a photo of <cat>, highly detailed\n"
        "Negative prompt: blurry, low quality\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 42, Size: 24x16, Model: dreamshaper_8"
    )
    assert text["prompt"] == meta["prompt"] and '"seed": 42' in text["oneword"]
    grid = {"prompts": ["a <cat>", "a <cat> on a beach"], "seeds": [5, 6], "size": 8}
    assert a1111_parameters(grid, (18, 18)) == "a <cat>\nSeed: 5, Size: 8x8"
    assert a1111_parameters({"subject": "ball"}, (8, 8)) is None  # no prompt: no A1111 chunk
    photo = save_png(torch.rand(3, 8, 8), tmp_path / "p.png", {"subject": "ball"})
    assert "parameters" not in Image.open(photo).text
