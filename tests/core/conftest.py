"""The core tests' model (two placeholder rows) and photos; a test module may define its own."""

from __future__ import annotations

import pytest
import torch

from oneword.adapters.loading import load_model


@pytest.fixture
def model(tiny_model_dir):
    m = load_model(str(tiny_model_dir))
    m.add_placeholder_tokens(["<c>", "<c>_1"])
    return m


@pytest.fixture
def photos():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
