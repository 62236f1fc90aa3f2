"""The adapters implement the model interface the core is written against."""

import pytest

from oneword.adapters.loading import load_model
from oneword.core.interface import TextToImage


def interface_members() -> set[str]:
    declared = {n for n in vars(TextToImage) if not n.startswith("_")}
    return declared | set(TextToImage.__annotations__)


def missing_members(model) -> set[str]:
    return {n for n in interface_members() if not hasattr(model, n)}


@pytest.mark.parametrize("name", ["tiny", "tiny-sdxl"])
def test_the_loaded_models_have_every_member_of_the_interface(name):
    model = load_model(name, "cpu")
    assert missing_members(model) == set()
    assert {"encode_text", "predict_noise", "frozen_tensors", "family"} <= interface_members()


def test_a_model_without_a_member_is_caught():
    class Partial:
        name = "partial"

    assert "predict_noise" in missing_members(Partial())
