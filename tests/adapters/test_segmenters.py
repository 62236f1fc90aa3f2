"""`--mask-model`: a CLIPSeg model the user has, wired to make masks (its quality is its own)."""

from __future__ import annotations

import pytest
from PIL import Image

from oneword.adapters.segmenters import load_clipseg
from oneword.adapters.tiny import build_tiny_clipseg_model
from oneword.errors import OnewordError


@pytest.fixture(scope="module")
def clipseg_dir(tmp_path_factory):
    return build_tiny_clipseg_model(tmp_path_factory.mktemp("clipseg") / "clipseg", seed=0)


def test_clipseg_is_asked_for_the_class_word_and_gives_probabilities(clipseg_dir):
    segmenter = load_clipseg(str(clipseg_dir))
    seen = {}
    forward = segmenter.model.forward

    def spy(**inputs):
        seen.update(inputs)
        return forward(**inputs)

    segmenter.model.forward = spy
    heat = segmenter.heat(Image.new("RGB", (48, 40), (120, 60, 30)), "calico cat")
    tokens = segmenter.processor.tokenizer.convert_ids_to_tokens(seen["input_ids"][0])
    assert tokens[1:3] == ["calico</w>", "cat</w>"]
    assert seen["pixel_values"].shape == (1, 3, 32, 32)
    assert heat.shape == (32, 32) and 0 <= heat.min() and heat.max() <= 1


def test_a_folder_that_is_not_clipseg_is_one_line(tmp_path):
    with pytest.raises(OnewordError, match=r"--mask-model .*: a folder that loads as CLIPSeg"):
        load_clipseg(str(tmp_path))
    with pytest.raises(OnewordError, match="not a folder, nor in the local cache"):
        load_clipseg(str(tmp_path / "missing"))
