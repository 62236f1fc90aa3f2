"""oneword's cache folder and the built-in tiny models, built into it on first use.

Both the loader (`loading`) and the single-file reader (`single_file`) need these; they live
here so that neither imports the other."""

from __future__ import annotations

import os
from pathlib import Path

TINY_MODELS = ("tiny", "tiny-sdxl")


def cache_folder() -> Path:
    """Where oneword keeps what it builds: $ONEWORD_CACHE, else ~/.cache/oneword."""
    return Path(os.environ.get("ONEWORD_CACHE", Path.home() / ".cache" / "oneword"))


def builtin_model_folder(name: str) -> Path:
    return cache_folder() / "models" / name


def tiny_model_folder(name: str) -> Path:
    """The diffusers folder of built-in model `name` (one of TINY_MODELS), built if missing."""
    from .tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline

    folder = builtin_model_folder(name)
    if not (folder / "model_index.json").exists():
        builder = build_tiny_sdxl_pipeline if name == "tiny-sdxl" else build_tiny_pipeline
        builder(folder, seed=0)
    return folder
