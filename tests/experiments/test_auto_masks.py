"""`--mask auto`: masks made by the loaded model from its class word's attention."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from oneword.adapters.loading import ModelChoice, load_model
from oneword.core import data
from oneword.core.masking import MaskRecipe
from oneword.errors import OnewordError
from oneword.events import Message
from oneword.experiments import auto_masks


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def photo(width=48, height=40, seed=0) -> Image.Image:
    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=gen) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def test_the_class_words_own_token_is_read_not_its_article(model):
    caption = "a photo of a calico cat"
    positions = auto_masks.class_token_positions(model, caption, "calico cat")
    ids = model.token_ids([caption])[0].tolist()
    assert [ids[p] for p in positions] == model.word_token_ids("calico cat")
    assert positions == [5, 6]  # start token, a, photo, of, a, then the word
    with pytest.raises(OnewordError, match="--class-word"):
        auto_masks.class_token_positions(model, caption, "dog")
    with pytest.raises(OnewordError, match="--class-word"):
        auto_masks.class_token_positions(model, caption, "")  # no word: nothing to look at


def test_a_mask_has_the_photos_size_and_is_the_same_for_the_same_seed(model):
    recipe = MaskRecipe(min_contrast=0.0)  # random weights: take whatever the map finds
    first = auto_masks.auto_masks(model, [photo()], "cat", 32, recipe, seed=3)[0]
    again = auto_masks.auto_masks(model, [photo()], "cat", 32, recipe, seed=3)[0]
    assert first.weight.shape == (40, 48)
    assert 0 <= first.weight.min() and first.weight.max() <= 1 and first.weight.max() > 0.5
    assert torch.equal(first.weight, again.weight) and first.verdict is None
    assert 0 < first.share < 1


def test_a_photo_where_the_map_finds_nothing_trains_unmasked_and_is_named(model, tmp_path):
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    photos = data.TrainingPhotos([photo(seed=0), photo(seed=1)], files)
    said = []
    auto = auto_masks.AutoMasking("cat", MaskRecipe(min_contrast=1e9))
    masked, record = auto_masks.mask_photos(photos, ModelChoice("tiny"), 32, auto, said.append)
    assert all(torch.equal(m.weight, torch.ones(40, 48)) for m in masked.masks)
    lines = [e.text for e in said if isinstance(e, Message)]
    assert any(line.startswith(f"{files[0]}: ") and "trains unmasked" in line for line in lines)
    assert "found nothing" in masked.masks[1].describe()
    assert record["class_word"] == "cat" and record["min_contrast"] == 1e9
    assert record["resolution"] == 32 and record["method"] == "attention"


def test_the_class_word_comes_from_class_word_else_the_init_words():
    assert auto_masks.class_word_of("face,logo", None) == "face logo"
    assert auto_masks.class_word_of("cat", "tabby cat") == "tabby cat"
    with pytest.raises(OnewordError, match="give --init WORD or --class-word WORD"):
        auto_masks.AutoMasking(auto_masks.class_word_of(None, None))


class Halves:
    """A segmenter that finds the word in the left half of every photo."""

    def __init__(self, left: float, right: float):
        self.left, self.right = left, right

    def heat(self, image, word):
        heat = torch.full((32, 32), self.right)
        heat[:, :16] = self.left
        return heat


def test_the_segmenters_map_is_cut_at_its_level_and_sized_as_the_photo():
    photo = Image.new("RGB", (48, 40))
    mask = auto_masks.segmenter_mask(Halves(0.9, 0.1), photo, "cat", MaskRecipe(feather=0.0))
    assert mask.weight.shape == (40, 48) and mask.share == pytest.approx(0.5)
    assert mask.weight[:, :20].min() > 0.999 and mask.weight[:, 28:].max() < 1e-3
    assert mask.verdict is None
    below = auto_masks.SEGMENTER_LEVEL - 0.1
    nothing = auto_masks.segmenter_mask(Halves(below, below), photo, "cat", MaskRecipe())
    assert nothing.verdict == "nothing" and torch.equal(
        nothing.training_weight(), torch.ones(40, 48)
    )


def test_sdxl_models_make_masks_too():
    sdxl = load_model("tiny-sdxl")
    (mask,) = auto_masks.auto_masks(sdxl, [photo()], "cat", 32, MaskRecipe(min_contrast=0.0))
    assert sdxl.family == "sdxl" and mask.weight.shape == (40, 48) and 0 < mask.share < 1
