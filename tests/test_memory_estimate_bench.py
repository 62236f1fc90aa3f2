"""bench/memory_estimate.py counts what a training pass saves, on the meta device."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch


def _load_bench():
    path = Path(__file__).resolve().parent.parent / "bench" / "memory_estimate.py"
    spec = importlib.util.spec_from_file_location("memory_estimate_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_sd15_weights_and_what_a_pass_saves():
    bench = _load_bench()
    flash = bench.measure("sd1", torch.bfloat16, flash=True)
    # SD 1.5: UNet 859.5 M, CLIP ViT-L text 123.1 M, VAE 83.7 M parameters (the published sizes)
    assert flash["parameters"] == 859_520_964 + 123_060_480 + 83_653_863
    assert flash["resolution"] == 512
    assert 0 < flash["low_memory_saved_gib"] < flash["saved_gib"] / 3  # checkpointing saves
    math_kernel = bench.measure("sd1", torch.bfloat16, flash=False)
    assert math_kernel["saved_gib"] > 2 * flash["saved_gib"]  # the attention matrices
