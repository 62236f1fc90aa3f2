"""The library's entry points: what `oneword learn` and `oneword generate` do, without argv."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .core import data
from .core.embeddings import (LearnedEmbedding, check_width, layout_metadata, load_embeddings,
                              write_embedding_files)
from .events import EventSink, Finished, Message, Previewed, ignore
from .files import atomic_write_text
from .core.generate import Sampling, Words, contact_sheet, draw, register_words, save_png
from .adapters.loading import load_model, model_settings
from .core.prompts import PREVIEW_PROMPTS, placeholder_names
from .experiments.store import recording
from .core.train import TextualInversionInvariant, TrainConfig, train
from .core.interface import TextToImage

log = logging.getLogger(__name__)

DEFAULT_MODEL = "world"
DEFAULT_STEPS = 3000  # SD at 512 px; a model folder may say otherwise (its oneword.json)


def default_steps(model: str) -> int:
    """Learning steps for `model` (a --model value) when the user gives none."""
    return model_settings(model).get("learn_steps", DEFAULT_STEPS)


def token_name(token: str) -> str:
    """A file-name stem for a token: '<my-cat>' → 'my-cat'."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", token).strip("-.")
    return stem or "embedding"


@dataclass(frozen=True)
class ModelChoice:
    """Which checkpoint to load, and where and how to run it."""
    model: str = DEFAULT_MODEL
    device: str | None = None
    dtype: str | None = None

    def load(self):
        return load_model(self.model, self.device, self.dtype)


@dataclass(frozen=True)
class PreviewSettings:
    prompts: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (1000, 1001)
    sampling: Sampling = field(default_factory=lambda: Sampling(steps=20))


def learn(photos: list[str], config: TrainConfig, choice: ModelChoice = ModelChoice(),
          out: str | Path | None = None, resume: bool = False,
          preview: PreviewSettings = PreviewSettings(),
          on_event: EventSink = ignore, project: str | Path | None = None) -> dict[str, Path]:
    """Learn `config.token` from the photos; returns the embedding files written.

    The run is recorded in the experiment store of `project` (see oneword.experiments.store)."""
    images, skipped = data.load_photos(photos)
    for line in skipped:
        on_event(Message(line))
    run_dir = Path(out) if out else Path("runs") / token_name(config.token)
    model = choice.load()
    resolution = config.resolution or model.native_resolution
    crops = torch.Generator().manual_seed(config.candidate_list[0].seed)
    pixels = data.photo_batch(images, resolution, config.crop, config.crops_per_photo,
                              config.flip, crops)
    model.add_placeholder_tokens(placeholder_names(config.token, config.vectors))
    invariant = TextualInversionInvariant(model)
    _write_run_info(run_dir, config, choice, photos)
    previewer = _previewer(model, config, preview, run_dir, on_event)
    settings = {"config": json.loads(config.to_json()), "model": choice.model}
    with recording(project, "learn", run_dir.absolute(), choice.model, config.token, settings,
                   [str(p) for p in photos], resume) as rec:
        state = train(model, pixels, config, run_dir, on_event, resume, previewer)
        invariant.check()
        embedding = LearnedEmbedding(token=config.token, vectors=state.rows()[0].float().cpu(),
                                     metadata={**_metadata(config, choice, state.step),
                                               **layout_metadata(model.embedding_layout)})
        files = write_embedding_files(embedding, run_dir, token_name(config.token))
        (candidate,) = rec.add_candidates(config.candidate_list[:1], config.lr, [run_dir])
        rec.files("embedding", files.values(), candidate)
        rec.step(state.step)
    on_event(Finished(state.step, files))
    return files


def _metadata(config: TrainConfig, choice: ModelChoice, step: int) -> dict[str, str]:
    return {"token": config.token, "init_word": config.init_word or "", "model": choice.model,
            "steps": str(step), "seed": str(config.seed), "vectors": str(config.vectors),
            "mode": config.mode, "trainer": "oneword"}


def _write_run_info(run_dir: Path, config: TrainConfig, choice: ModelChoice,
                    photos: list[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"config": json.loads(config.to_json()), "model": choice.model,
            "photos": [str(p) for p in photos]}
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2))


def _previewer(model: TextToImage, config: TrainConfig, preview: PreviewSettings, run_dir: Path,
               on_event: EventSink):
    """A callback that draws the preview prompts with fixed seeds for every candidate."""
    if not config.preview_every:
        return None
    prompts = list(config.preview_prompts or preview.prompts or
                   [p.format(config.token) for p in PREVIEW_PROMPTS[config.mode]])

    def render(step: int, rows: torch.Tensor) -> None:
        paths = []
        for k in range(rows.shape[0]):
            words = Words({config.token: config.vectors}, rows[k:k + 1])
            grid_prompts = [p for p in prompts for _ in preview.seeds]
            seeds = [s for _ in prompts for s in preview.seeds]
            images = draw(model, grid_prompts, seeds, words, preview.sampling)
            name = f"step-{step:06d}.png" if rows.shape[0] == 1 else f"step-{step:06d}-c{k:02d}.png"
            sheet = contact_sheet(images, columns=len(preview.seeds))
            paths.append(save_png(sheet, run_dir / "previews" / name,
                                  {"prompts": prompts, "seeds": list(preview.seeds), "step": step}))
        on_event(Previewed(step, paths))
    return render


def generate(prompt: str, embeddings: list[str], choice: ModelChoice = ModelChoice(),
             n: int = 4, seed: int = 0, sampling: Sampling = Sampling(), negative: str = "",
             out: str | Path = "images", on_event: EventSink = ignore) -> list[Path]:
    """Draw n images of a prompt with learned words; writes PNGs and a contact sheet."""
    model = choice.load()
    learned = _load_words(model, embeddings)
    words = register_words(model, learned)
    for token in words.tokens:
        if token not in prompt:
            on_event(Message(f"note: the prompt does not use the learned token {token}"))
    seeds = [seed + i for i in range(n)]
    images = draw(model, [prompt] * n, seeds, words, sampling, negative)
    out = Path(out)
    stem = _slug(prompt)
    size = images.shape[-1]
    paths = []
    for image, s in zip(images, seeds):
        meta = {"prompt": prompt, "negative": negative, "seed": s, "steps": sampling.steps,
                "cfg": sampling.cfg, "scheduler": sampling.scheduler, "size": size,
                "model": choice.model, "embeddings": [str(e) for e in embeddings]}
        paths.append(save_png(image, out / f"{stem}-{s}.png", meta))
    sheet = contact_sheet(images)
    paths.append(save_png(sheet, out / f"{stem}-grid.png", {"prompt": prompt, "seeds": seeds}))
    return paths


def _load_words(model: TextToImage, paths: list[str]) -> list[LearnedEmbedding]:
    learned = []
    for path in paths:
        for emb in load_embeddings(path):
            check_width(emb, model.embedding_layout, model.name, path)
            learned.append(emb)
    return learned


def _slug(prompt: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:60] or "image"
