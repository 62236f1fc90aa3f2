"""The library's entry points: what `oneword learn` and `oneword generate` do, without argv."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .adapters.loading import DEFAULT_MODEL, ModelChoice, model_settings
from .checks import at_least, seed_range
from .core.embeddings import LearnedEmbedding, check_width, load_embeddings
from .core.generate import (
    Sampling,
    Words,
    draw,
    labelled_sheet,
    register_words,
    sampling_record,
    save_png,
)
from .core.interface import TextToImage
from .core.prompts import PREVIEW_PROMPTS
from .core.train import CHECKPOINT_NAME, TrainConfig
from .errors import OnewordError
from .events import EventSink, Finished, Message, Previewed, ignore
from .experiments.auto_masks import AutoMasking
from .experiments.naming import resolve_word, unloaded_tokens
from .experiments.recording import recording
from .experiments.run_photos import run_photos
from .experiments.store import Store
from .experiments.sweep import record_run, train_and_write
from .files import atomic_write_text, file_stem, output_folder

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_STEPS",
    "ModelChoice",
    "PreviewSettings",
    "default_steps",
    "generate",
    "learn",
]

log = logging.getLogger(__name__)

DEFAULT_STEPS = 3000  # SD at 512 px; a model folder may say otherwise (its oneword.json)


def default_steps(model: str) -> int:
    """Learning steps for `model` (a --model value) when the user gives none."""
    return model_settings(model).get("learn_steps", DEFAULT_STEPS)


@dataclass(frozen=True)
class PreviewSettings:
    prompts: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (1000, 1001)
    sampling: Sampling = field(default_factory=lambda: Sampling(steps=20))


def learn(
    photos: list[str],
    config: TrainConfig,
    choice: ModelChoice = ModelChoice(),
    out: str | Path | None = None,
    resume: bool = False,
    preview: PreviewSettings = PreviewSettings(),
    on_event: EventSink = ignore,
    project: str | Path | None = None,
    mask_dir: str | Path | None = None,
    auto_mask: AutoMasking | None = None,
) -> dict[str, Path]:
    """Learn `config.token` from the photos; returns the embedding files written.

    A sweep of one candidate whose files go to the run folder itself; the run is recorded in
    the experiment store of `project` (see oneword.experiments.store). With
    `config.mask_floor`, each photo's mask weights the loss (see oneword.core.data; `mask_dir`:
    a folder of masks; `auto_mask`: masks made by the model itself, oneword.core.masking)."""
    if len(config.candidate_list) > 1:
        raise OnewordError("learn trains one candidate; sweep trains several")
    run_dir = Path(out) if out else Path("runs") / file_stem(config.token, "embedding")
    output_folder(run_dir, "--out")
    if not resume and (run_dir / CHECKPOINT_NAME).exists():  # before run.json is rewritten
        raise OnewordError(
            f"{run_dir}: this run folder already has a checkpoint; pass --resume "
            "to continue it or choose another --out"
        )
    kept = run_dir if resume else None
    images, masking = run_photos(photos, config, choice, on_event, mask_dir, auto_mask, kept)
    _write_run_info(run_dir, config, choice, photos, masking)

    def previewer(model: TextToImage):
        return _previewer(model, config, preview, run_dir, on_event)

    with (
        Store.open(project) as store,
        record_run(
            store, "learn", run_dir.absolute(), photos, config, choice, resume, **masking
        ) as rec,
    ):
        written = train_and_write(
            rec, images, config, choice, [run_dir], on_event, resume, config.max_batch, previewer
        )
        on_event(Finished(written.step, written.files[0]))
    return written.files[0]


def _write_run_info(
    run_dir: Path, config: TrainConfig, choice: ModelChoice, photos: list[str], masking: dict
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "config": json.loads(config.to_json()),
        "model": choice.model,
        "photos": [str(p) for p in photos],
        **masking,
    }
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2))


def _previewer(
    model: TextToImage,
    config: TrainConfig,
    preview: PreviewSettings,
    run_dir: Path,
    on_event: EventSink,
):
    """A callback that draws the preview prompts with fixed seeds for every candidate."""
    if not config.preview_every:
        return None
    prompts = list(
        config.preview_prompts
        or preview.prompts
        or [p.format(config.token) for p in PREVIEW_PROMPTS[config.mode]]
    )

    def render(step: int, rows: torch.Tensor) -> None:
        paths = []
        for k in range(rows.shape[0]):
            words = Words({config.token: config.vectors}, rows[k : k + 1])
            grid_prompts = [p for p in prompts for _ in preview.seeds]
            seeds = [s for _ in prompts for s in preview.seeds]
            images = draw(model, grid_prompts, seeds, words, preview.sampling)
            name = f"step-{step:06d}.png" if rows.shape[0] == 1 else f"step-{step:06d}-c{k:02d}.png"
            title = f"{config.token}, step {step}" + (
                f", candidate c{k:02d}" if rows.shape[0] > 1 else ""
            )
            captions = [f"{p} · seed {s}" for p, s in zip(grid_prompts, seeds)]
            sheet = labelled_sheet(images, captions, title, columns=len(preview.seeds))
            paths.append(
                save_png(
                    sheet,
                    run_dir / "previews" / name,
                    {
                        "prompts": prompts,
                        "seeds": list(preview.seeds),
                        "step": step,
                        "size": int(images.shape[-1]),
                        **sampling_record(preview.sampling, model.name),
                    },
                )
            )
        on_event(Previewed(step, paths))

    return render


def generate(
    prompt: str,
    embeddings: list[str],
    choice: ModelChoice = ModelChoice(),
    n: int = 4,
    seed: int = 0,
    sampling: Sampling = Sampling(),
    negative: str = "",
    out: str | Path = "images",
    on_event: EventSink = ignore,
    project: str | Path | None = None,
) -> list[Path]:
    """Draw n images of a prompt with learned words; writes PNGs and a contact sheet, and
    records them in the experiment store of `project` as a run of kind `generate`."""
    at_least(n, "-n", 1)
    seed_range(seed, "--seed", count=n)
    output_folder(out, "--out")
    named = [resolve_word(e, project, "--embedding") for e in embeddings]
    for word in named:
        if word.note:
            on_event(Message(f"--embedding {word.note}"))
    model = choice.load()
    learned = _load_words(model, [w.path for w in named])
    words = register_words(model, learned)
    for token in words.tokens:
        if token not in prompt:
            on_event(Message(f"note: the prompt does not use the learned token {token}"))
    for token in unloaded_tokens(prompt + " " + negative, list(words.tokens)):
        on_event(Message(f"warning: no --embedding defines {token}; it is drawn as plain text"))
    seeds = [seed + i for i in range(n)]
    out = Path(out)
    settings = {
        "prompt": prompt,
        "negative": negative,
        "seeds": seeds,
        **sampling_record(sampling, choice.model),
        "embeddings": [str(w.path.absolute()) for w in named],
        "words": [w.label for w in named],
    }
    with recording(
        project, "generate", out.absolute(), choice.model, " ".join(words.tokens), settings
    ) as rec:
        images = draw(model, [prompt] * n, seeds, words, sampling, negative)
        stem = _slug(prompt)
        meta = {
            **settings,
            "size": int(images.shape[-1]),
            "embeddings": [str(w.path) for w in named],
        }
        drawn = [
            (prompt, s, save_png(image, out / f"{stem}-{s}.png", _one_image(meta, s)))
            for image, s in zip(images, seeds)
        ]
        sheet = labelled_sheet(images, [f"seed {s}" for s in seeds], prompt)
        grid = save_png(sheet, out / f"{stem}-grid.png", meta)
        rec.images(seeds[0], settings["embeddings"], drawn, [grid])
    return [path for _, _, path in drawn] + [grid]


def _one_image(meta: dict, seed: int) -> dict:
    """The metadata of one image of a batch: its own seed instead of the batch's."""
    return {**{k: v for k, v in meta.items() if k != "seeds"}, "seed": seed}


def _load_words(model: TextToImage, paths: list[Path]) -> list[LearnedEmbedding]:
    """Every embedding of the files, each token once (a word given twice is named as such)."""
    learned, source = [], {}
    for path in paths:
        for emb in load_embeddings(path):
            if emb.token in source:
                same = Path(source[emb.token]).resolve() == Path(path).resolve()
                raise OnewordError(
                    f"{path}: {emb.token} is already loaded from "
                    f"{'this very file' if same else source[emb.token]}; the word is given "
                    "twice: give each --embedding once (one word, one file)"
                )
            check_width(emb, model.embedding_layout, model.name, path)
            source[emb.token] = path
            learned.append(emb)
    return learned


def _slug(prompt: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:60] or "image"
