"""The training pipeline: learn, seed sweeps and Ray groups all train and write through here.

A Textual Inversion result depends on its seed (noise, timesteps, photo picks, random crops)
and on its starting point. A sweep trains K candidates side by side with the core trainer
(`core.train.train`, one more batch dimension): candidate k is exactly what `learn` gives with
candidate k's seed, init and learning rate, and `learn` is a sweep of one candidate whose files
go to the run folder itself. `train_candidates` is what a process (or a Ray worker) runs;
`write_candidates` writes the embedding files and store rows of trained candidates.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from itertools import product
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..adapters.loading import ModelChoice
from ..adapters.prediction import settle_prediction
from ..checks import seed_range
from ..core import data
from ..core.embeddings import LearnedEmbedding, layout_metadata, write_embedding_files
from ..core.interface import TextToImage
from ..core.invariant import TextualInversionInvariant
from ..core.prompts import placeholder_names
from ..core.train import CHECKPOINT_NAME, Candidate, TrainConfig
from ..errors import OnewordError, WriteFailed
from ..events import Checkpointed, EventSink, Finished, Message, ignore
from ..files import file_stem, output_folder
from .auto_masks import AutoMasking
from .micro_batch import as_checkpointed, fit_to_memory, train_fitting_memory
from .recording import RunRecorder, recording_in
from .run_photos import early_masks, keep_masks, run_photos
from .store import CandidateRecord, Store

log = logging.getLogger(__name__)

INIT_KINDS = ("word", "random", "jitter")
CANDIDATES_FOLDER = "candidates"
# Given the model, a callback that draws previews: on_preview(step, rows [K, N, d]).
PreviewerFactory = Callable[[TextToImage], Callable[[int, torch.Tensor], None] | None]


@dataclass(frozen=True)
class CandidatePlan:
    """How K candidates differ: seeds seed..seed+K-1, and a grid of inits x learning rates
    assigned in turn (candidate k gets combination k mod the grid size)."""

    count: int = 8
    seed: int = 0
    inits: tuple[str, ...] = ("word",)
    jitter: float = 0.1  # for init "jitter": noise in vocabulary standard deviations
    lrs: tuple[float, ...] = ()  # empty: the run's --lr

    def __post_init__(self):
        if self.count < 1:
            raise OnewordError(f"--candidates {self.count}: must be 1 or more")
        bad = [i for i in self.inits if i not in INIT_KINDS]
        if bad or not self.inits:
            raise OnewordError(
                f"--inits {','.join(self.inits)}: choose among {', '.join(INIT_KINDS)}"
            )
        if not self.jitter > 0:
            raise OnewordError(f"--jitter {self.jitter}: must be positive")
        if any(not lr > 0 or not math.isfinite(lr) for lr in self.lrs):
            raise OnewordError(f"--lrs {','.join(map(str, self.lrs))}: must all be positive")
        seed_range(self.seed, "--seed", count=self.count)

    def candidates(self) -> tuple[Candidate, ...]:
        grid = list(product(self.inits, self.lrs or (None,)))
        out = []
        for k in range(self.count):
            init, lr = grid[k % len(grid)]
            kind = "random" if init == "random" else "word"
            out.append(
                Candidate(
                    seed=self.seed + k,
                    init=kind,
                    jitter=self.jitter if init == "jitter" else 0.0,
                    lr=lr,
                )
            )
        return tuple(out)


@dataclass(frozen=True)
class SweepResult:
    run_id: int
    folder: Path
    files: list[dict[str, Path]]  # per candidate: format -> embedding file


@dataclass(frozen=True)
class TrainedRows:
    """What training a group of candidates gives: their rows, the step reached and the
    model's embedding layout."""

    rows: torch.Tensor  # [k, N, d] float32 on CPU
    step: int
    layout: tuple[int, ...]


@dataclass(frozen=True)
class WrittenRun:
    step: int
    files: list[dict[str, Path]]  # per candidate: format -> embedding file


def sweep(
    photos: list[str],
    config: TrainConfig,
    choice: ModelChoice = ModelChoice(),
    project: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    max_batch: int | str | None = "auto",
    on_event: EventSink = ignore,
    parent_run: int | None = None,
    mask_dir: str | None = None,
    auto_mask: AutoMasking | None = None,
) -> SweepResult:
    """Train every candidate of `config.candidates` in one batched run and record it.

    max_batch: samples per forward pass; "auto" fits them to the free memory, None: all.
    parent_run: the store's run this sweep is part of (a benchmark). With
    `config.mask_floor`, the photos' masks weight the loss (`mask_dir`: a folder of them;
    `auto_mask`: made by the model itself).
    """
    with Store.open(project) as store:
        return sweep_in(
            store, photos, config, choice, out, resume, max_batch, on_event, parent_run,
            mask_dir, auto_mask,
        )  # fmt: skip


def sweep_in(
    store: Store,
    photos: list[str],
    config: TrainConfig,
    choice: ModelChoice,
    out: str | Path | None,
    resume: bool,
    max_batch: int | str | None,
    on_event: EventSink,
    parent_run: int | None = None,
    mask_dir: str | None = None,
    auto_mask: AutoMasking | None = None,
) -> SweepResult:
    """`sweep` in an open store."""
    folder = run_folder(store, config.token, out, resume)
    if folder is not None and not resume and (folder / CHECKPOINT_NAME).exists():
        raise OnewordError(
            f"{folder}: this run folder already has a checkpoint; pass --resume "
            "to continue it or choose another --out"
        )
    kept = folder if resume else None
    images, masking = run_photos(photos, config, choice, on_event, mask_dir, auto_mask, kept)
    with record_run(
        store, "sweep", folder, photos, config, choice, resume, parent_run,
        max_batch=max_batch, **masking,
    ) as rec:  # fmt: skip
        count = len(config.candidate_list)
        on_event(Message(f"run r{rec.run.id}: {count} candidates in {rec.run.folder}"))
        written = train_and_write(
            rec, images, config, choice, candidate_folders(rec, count), on_event, resume, max_batch
        )
        on_event(Finished(written.step, {"candidates": [first_file(f) for f in written.files]}))
        return SweepResult(rec.run.id, rec.run.folder, written.files)


def train_and_write(
    rec: RunRecorder,
    images,
    config: TrainConfig,
    choice: ModelChoice,
    folders: list[Path],
    on_event: EventSink,
    resume: bool,
    max_batch: int | str | None,
    preview: PreviewerFactory | None = None,
) -> WrittenRun:
    """Record the candidates, train them in the run folder and write their files. A write
    that fails (a full disk) after the first checkpoint says how to go on from it."""
    try:
        records = rec.add_candidates(config.candidate_list, config.lr, folders)
        written = early_masks(rec, images)
        trained = train_candidates(
            images,
            config,
            choice,
            rec.run.folder,
            recording_steps(rec, on_event),
            resume,
            max_batch,
            preview,
        )
        rec.files("checkpoint", [rec.run.folder / CHECKPOINT_NAME])
        keep_masks(rec, images, written)
        files = write_candidates(
            rec, config, choice.model, trained, range(len(config.candidate_list)), folders, records
        )
    except WriteFailed as exc:
        ckpt = rec.run.folder / CHECKPOINT_NAME
        if "--resume" in str(exc) or not ckpt.exists():
            raise
        raise WriteFailed(
            f"{exc}; the checkpoint {ckpt} is kept: run the same command with --resume"
        ) from None
    return WrittenRun(trained.step, [files[k] for k in sorted(files)])


def train_candidates(
    images,
    config: TrainConfig,
    choice: ModelChoice,
    folder: Path,
    on_event: EventSink,
    resume: bool,
    max_batch: int | str | None,
    preview: PreviewerFactory | None = None,
    start_rows: torch.Tensor | None = None,
) -> TrainedRows:
    """Load the model, cut the training crops, add the placeholder tokens, train in `folder`
    (micro-batched to fit memory) and check that only the placeholder rows changed.
    start_rows [K, ...]: rows to start the candidates from instead of their inits."""
    model = choice.load()
    if getattr(model, "prediction_guessed", False):
        _settle_prediction(model, images, config, on_event)
    pixels, masks = candidate_photos(images, config, config.resolution or model.native_resolution)
    model.add_placeholder_tokens(placeholder_names(config.token, config.vectors))
    invariant = TextualInversionInvariant(model)
    if resume:
        config, max_batch = as_checkpointed(config, max_batch, folder / CHECKPOINT_NAME)
    config = fit_to_memory(model, config, max_batch, on_event)
    if config.max_batch:
        on_event(Message(f"{config.max_batch} samples per forward pass"))
    state = train_fitting_memory(
        model,
        pixels,
        config,
        folder,
        on_event,
        resume,
        preview(model) if preview else None,
        masks,
        start_rows,
    )
    invariant.check()
    return TrainedRows(state.rows().float().cpu(), state.step, tuple(model.embedding_layout))


def _settle_prediction(model, images, config: TrainConfig, on_event: EventSink) -> None:
    """An SD 2.x file loaded without knowing whether it predicts noise or v: the photos tell
    (adapters.prediction), before the training size is chosen (512 or 768 px by the answer)."""
    size = min(512, model.native_resolution)
    pixels, _ = candidate_photos(images, replace(config, crop="center", candidates=()), size)
    on_event(Message(settle_prediction(model, pixels[:4])))


def write_candidates(
    rec: RunRecorder,
    config: TrainConfig,
    model_name: str,
    trained: TrainedRows,
    indices: Iterable[int],
    folders: list[Path],
    records: list[CandidateRecord],
) -> dict[int, dict[str, Path]]:
    """The embedding files and store rows of trained candidates `indices` (rows in that
    order); writing a candidate again replaces its files and adds no rows."""
    out = {}
    for row, k in zip(trained.rows, indices):
        cand = config.candidate_list[k]
        metadata = {
            **embedding_metadata(config, model_name, cand, k, rec.run.id, trained.step),
            **layout_metadata(trained.layout),
        }
        written = write_embedding_files(
            LearnedEmbedding(config.token, row, metadata),
            folders[k],
            file_stem(config.token, "embedding"),
        )
        rec.files("embedding", written.values(), records[k])
        out[k] = written
    return out


def embedding_metadata(
    config: TrainConfig, model_name: str, cand: Candidate, index: int, run_id: int, step: int
) -> dict[str, str]:
    """What an embedding file says about how it was learned."""
    init = "random" if cand.init == "random" else ("jitter" if cand.jitter else "word")
    return {
        "token": config.token,
        "init_word": config.init_word or "",
        "model": model_name,
        "steps": str(step),
        "seed": str(cand.seed),
        "vectors": str(config.vectors),
        "mode": config.mode,
        "trainer": "oneword",
        "candidate": str(index),
        "init": init,
        "jitter": str(cand.jitter),
        "lr": str(cand.lr or config.lr),
        "run": f"r{run_id}",
        "recipe": config.recipe.name,
        "recipe_settings": json.dumps(asdict(config.recipe), sort_keys=True),
    }


def record_run(
    store: Store,
    kind: str,
    folder: Path | None,
    photos: list,
    config: TrainConfig,
    choice: ModelChoice,
    resume: bool,
    parent_run: int | None = None,
    **settings,
):
    """`recording_in` of a training run: its settings are the config, the model and
    `settings`."""
    recorded = {"config": json.loads(config.to_json()), "model": choice.model, **settings}
    return recording_in(
        store,
        kind,
        folder,
        choice.model,
        config.token,
        recorded,
        [str(p) for p in photos],
        resume,
        parent_run,
    )


def candidate_folders(rec: RunRecorder, count: int) -> list[Path]:
    return [rec.run.folder / CANDIDATES_FOLDER / f"c{k:02d}" for k in range(count)]


def first_file(files: dict[str, Path]) -> Path:
    return next(iter(files.values()))


def run_folder(store: Store, token: str, out: str | Path | None, resume: bool) -> Path | None:
    """The run folder: --out, else (resuming) the newest unfinished sweep of this token,
    else None (a new folder in the project)."""
    if out is not None:
        return output_folder(out, "--out").absolute()
    if not resume:
        return None
    unfinished = [r for r in store.runs("sweep", token) if r.status != "done"]
    if not unfinished:
        raise OnewordError(
            f"--resume: no unfinished sweep of {token} in "
            f"{store.folder}; start without --resume or pass --out"
        )
    return unfinished[-1].folder


def recording_steps(rec: RunRecorder, on_event: EventSink) -> EventSink:
    def sink(event) -> None:
        if isinstance(event, (Checkpointed, Finished)):
            rec.step(event.step)
        on_event(event)

    return sink


def candidate_photos(photos, config: TrainConfig, resolution: int) -> tuple:
    """The training crops and (masked training) the same crops of the masks, else None: one
    shared tensor for center crops or a single candidate; for random crops, each candidate's
    own crops drawn from its seed (as `learn` with that seed draws them).

    photos: data.TrainingPhotos, or a list of images (no masks)."""
    if not isinstance(photos, data.TrainingPhotos):
        photos = data.TrainingPhotos(list(photos), [])
    if (photos.masks is None) != (config.mask_floor is None):
        raise OnewordError("--mask-floor: only with --mask; add --mask or leave it out")

    def crops(seed: int) -> tuple:
        options = (config.crop, config.crops_per_photo, config.flip)
        gen = torch.Generator().manual_seed(seed)
        if photos.masks is None:
            return data.photo_batch(photos.images, resolution, *options, gen), None
        weights = [m.weight for m in photos.masks]
        return data.masked_photo_batch(photos.images, weights, resolution, *options, gen)

    if config.crop == "center":
        return crops(config.seed)
    if len(config.candidate_list) == 1:
        return crops(config.candidate_list[0].seed)
    by_seed: dict[int, tuple] = {}
    for cand in config.candidate_list:
        if cand.seed not in by_seed:
            by_seed[cand.seed] = crops(cand.seed)
    pixels = [by_seed[c.seed][0] for c in config.candidate_list]
    masks = [by_seed[c.seed][1] for c in config.candidate_list]
    return pixels, (None if photos.masks is None else masks)
