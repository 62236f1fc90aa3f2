"""Shared fixtures: one tiny SD-architecture pipeline built in code for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One CPU thread per test process: on a small machine shared with other work, torch's OpenMP
# threads wait on each other and a test can take 10-30 times longer; one thread stays steady.
torch.set_num_threads(int(os.environ.get("ONEWORD_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Stable Diffusion pipeline folder (random weights), saved like a real one."""
    from oneword.adapters.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Built-in models are cached per test session, never in the user's home."""
    monkeypatch.setenv("ONEWORD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _isolated_project(tmp_path, monkeypatch):
    """Every test records its runs in its own experiment store, never in the working folder."""
    monkeypatch.setenv("ONEWORD_PROJECT", str(tmp_path / "project"))


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """Four small photo files of a made-up subject."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        pixels = (torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"photo{i}.png")
    return folder


@pytest.fixture(scope="session")
def tiny_evaluators(tmp_path_factory) -> dict[str, Path]:
    """Tiny CLIP and DINO evaluator folders (random weights), saved like real ones."""
    from oneword.adapters.tiny import build_tiny_clip_model, build_tiny_dino_model

    root = tmp_path_factory.mktemp("evaluators")
    return {
        "clip": build_tiny_clip_model(root / "clip", seed=0),
        "dino": build_tiny_dino_model(root / "dino", seed=0),
    }


@pytest.fixture
def children_stopped_at_step_one():
    """A context in which the trained children's batched run stops after its first step with
    `message`, as an interrupt would (their checkpoint written)."""
    from contextlib import contextmanager
    from dataclasses import replace

    from oneword.errors import Interrupted
    from oneword.search import trained

    def stop_after_one_step(real, message):
        def train_candidates(images, config, *a, **k):
            real(images, replace(config, stop_at=1), *a, **k)
            raise Interrupted(message)

        return train_candidates

    @contextmanager
    def stopped(message: str):
        with pytest.MonkeyPatch.context() as patch:
            stop = stop_after_one_step(trained.train_candidates, message)
            patch.setattr(trained, "train_candidates", stop)
            yield

    return stopped
