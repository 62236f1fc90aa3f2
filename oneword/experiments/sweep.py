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
from dataclasses import dataclass, replace
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
from ..files import atomic_write, file_stem, output_folder
from .auto_masks import AutoMasking, mask_photos
from .micro_batch import as_checkpointed, fit_to_memory, train_fitting_memory
from .recording import RunRecorder, recording_in
from .store import CandidateRecord, Store

log = logging.getLogger(__name__)

INIT_KINDS = ("word", "random", "jitter")
CANDIDATES_FOLDER = "candidates"
MASKS_FOLDER = "masks"
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
    images, masking = run_photos(photos, config, choice, on_event, mask_dir, auto_mask)
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
        keep_masks(rec, images)  # after training: a resume refused keeps the run's own
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
) -> TrainedRows:
    """Load the model, cut the training crops, add the placeholder tokens, train in `folder`
    (micro-batched to fit memory) and check that only the placeholder rows changed."""
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


def run_photos(
    photos: list[str],
    config: TrainConfig,
    choice: ModelChoice,
    on_event: EventSink,
    mask_dir: str | None = None,
    auto_mask: AutoMasking | None = None,
) -> tuple[data.TrainingPhotos, dict]:
    """The photos of a run with their masks (read from files, or made by the model with
    `auto_mask`), and what the run's settings say of the masks."""
    if auto_mask is None:
        images = read_photos(photos, on_event, config.mask_floor is not None, mask_dir)
        return images, mask_settings(images, config, mask_dir)
    if mask_dir is not None:
        raise OnewordError(f"--mask-dir {mask_dir}: not with --mask auto; leave one out")
    if config.mask_floor is None:
        raise ValueError("automatic masks need config.mask_floor")
    images = read_photos(photos, on_event)
    images, record = mask_photos(images, choice, config.resolution, auto_mask, on_event)
    return images, mask_settings(images, config, None, record)


def read_photos(
    photos: list[str], on_event: EventSink, masked: bool = False, mask_dir: str | None = None
) -> data.TrainingPhotos:
    """The photos of a run (with their masks, if `masked`), each skipped file reported as a
    message."""
    if mask_dir is not None and not masked:
        raise OnewordError(f"--mask-dir {mask_dir}: only with --mask; add --mask")
    files, images, skipped = data.load_photo_files(photos)
    for line in skipped:
        on_event(Message(line))
    if not masked:
        found = data.find_mask_files(photos)
        if found:
            note = f"note: {len(found)} mask file(s) ({data.MASK_SUFFIX}) are not training photos"
            on_event(Message(f"{note}; give --mask to weight the loss with them"))
        return data.TrainingPhotos(images, files)
    masks = data.load_masks(files, photos, mask_dir)
    for mask in masks:
        log.info("mask of %s: %s", mask.source, mask.describe())
    return data.TrainingPhotos(images, files, masks)


def mask_settings(
    photos: data.TrainingPhotos, config: TrainConfig, mask_dir=None, auto_record=None
) -> dict:
    """What a run's settings say of its masks: where each photo's came from (with how
    automatic masks were made, `auto_record`), and the floor."""
    if photos.masks is None:
        return {}
    folder = str(Path(mask_dir).expanduser().absolute()) if mask_dir is not None else None
    files = [
        {"photo": str(f.absolute()), "mask": _mask_origin(m)}
        for f, m in zip(photos.files, photos.masks)
    ]
    made = {"auto": auto_record} if auto_record is not None else {}
    return {"mask": {"dir": folder, **made, "files": files}, "mask_floor": config.mask_floor}


def _mask_origin(mask: data.PhotoMask) -> str:
    if mask.alpha or mask.made_by is not None:
        return mask.describe()
    return str(mask.source.absolute())


def keep_masks(rec: RunRecorder, photos: data.TrainingPhotos) -> None:
    """A copy of the masks in the run folder (`masks/<photo stem>.png`, which --mask-dir
    reads back) and, for the gallery, each photo with its mask over it (`masks/shown/`)."""
    if photos.masks is None:
        return
    folder = rec.run.folder / MASKS_FOLDER
    copies, shown = [], []
    for k, (file, image, mask) in enumerate(zip(photos.files, photos.images, photos.masks)):
        stem = f"{k:02d}-{file.stem}" if _repeated_stem(photos.files, file) else file.stem
        copies.append(save_image(data.mask_image(mask.weight), folder / f"{stem}.png"))
        shown.append(save_image(masked_view(image, mask.weight), folder / "shown" / f"{stem}.png"))
    rec.files("mask", copies)
    rec.files("mask_view", shown)


def save_image(image, path: Path) -> Path:
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _repeated_stem(files: list[Path], file: Path) -> bool:
    return sum(f.stem == file.stem for f in files) > 1


def masked_view(image, weight: torch.Tensor, size: int = 256):
    """The photo, small, darkened where its mask gives it little weight (what the gallery
    shows)."""
    from PIL import Image

    shade = data.mask_image(0.25 + 0.75 * weight)
    view = Image.composite(image, Image.new("RGB", image.size), shade)
    view.thumbnail((size, size))
    return view


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
