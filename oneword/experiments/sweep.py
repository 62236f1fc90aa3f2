"""Seed sweeps: K candidate embeddings of one word trained together in one batched run.

A Textual Inversion result depends on its seed (noise, timesteps, photo picks, random crops)
and on its starting point. `sweep` trains K candidates side by side with the core trainer
(`train.train`, one more batch dimension): candidate k is exactly what `learn` gives with
candidate k's seed, init and learning rate. Each candidate's embedding files go to
`<run>/candidates/cNN/`, and the run, its settings and candidates go to the experiment store.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

import torch

from ..core import data
from ..api import ModelChoice, token_name
from ..core.embeddings import LearnedEmbedding, layout_metadata, write_embedding_files
from ..errors import OnewordError
from ..events import EventSink, Checkpointed, Finished, Message, ignore
from ..core.prompts import placeholder_names, templates
from .store import RunRecorder, Store, recording
from ..core.train import (Batch, Candidate, OutOfMemory, TextualInversionInvariant, TrainConfig,
                          batch_loss, train)
from ..core.interface import TextToImage

log = logging.getLogger(__name__)

INIT_KINDS = ("word", "random", "jitter")
CPU_MAX_BATCH = 8  # samples per forward pass on CPU/MPS when --max-batch is auto
MEMORY_SHARE = 0.8  # of the free GPU memory that auto micro-batching may plan to use


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
            raise OnewordError(f"--inits {','.join(self.inits)}: choose among "
                               f"{', '.join(INIT_KINDS)}")
        if not self.jitter > 0:
            raise OnewordError(f"--jitter {self.jitter}: must be positive")
        if any(not lr > 0 for lr in self.lrs):
            raise OnewordError(f"--lrs {','.join(map(str, self.lrs))}: must all be positive")

    def candidates(self) -> tuple[Candidate, ...]:
        grid = list(product(self.inits, self.lrs or (None,)))
        out = []
        for k in range(self.count):
            init, lr = grid[k % len(grid)]
            kind = "random" if init == "random" else "word"
            out.append(Candidate(seed=self.seed + k, init=kind,
                                 jitter=self.jitter if init == "jitter" else 0.0, lr=lr))
        return tuple(out)


@dataclass(frozen=True)
class SweepResult:
    run_id: int
    folder: Path
    files: list[dict[str, Path]]  # per candidate: format -> embedding file


def sweep(photos: list[str], config: TrainConfig, choice: ModelChoice = ModelChoice(),
          project: str | Path | None = None, out: str | Path | None = None,
          resume: bool = False, max_batch: int | str | None = "auto",
          on_event: EventSink = ignore, parent_run: int | None = None) -> SweepResult:
    """Train every candidate of `config.candidates` in one batched run and record it.

    max_batch: samples per forward pass; "auto" fits them to the free memory, None: all.
    parent_run: the store's run this sweep is part of (a benchmark).
    """
    images, skipped = data.load_photos(photos)
    for line in skipped:
        on_event(Message(line))
    folder = _sweep_folder(project, config.token, out, resume)
    if folder is not None and not resume and (folder / "checkpoint.pt").exists():
        raise OnewordError(f"{folder}: this run folder already has a checkpoint; pass --resume "
                           "to continue it or choose another --out")
    settings = {"config": json.loads(config.to_json()), "model": choice.model,
                "max_batch": max_batch}
    with recording(project, "sweep", folder, choice.model, config.token, settings,
                   [str(p) for p in photos], resume, parent_run) as rec:
        return _run_sweep(rec, images, config, choice, resume, max_batch, on_event)


def _run_sweep(rec: RunRecorder, images, config: TrainConfig, choice: ModelChoice,
               resume: bool, max_batch, on_event: EventSink) -> SweepResult:
    run_dir = rec.run.folder
    model = choice.load()
    pixels = candidate_photos(images, config, config.resolution or model.native_resolution)
    model.add_placeholder_tokens(placeholder_names(config.token, config.vectors))
    invariant = TextualInversionInvariant(model)
    chunk = resolve_max_batch(model, config, max_batch)
    on_event(Message(f"run r{rec.run.id}: {len(config.candidate_list)} candidates in "
                     f"{run_dir}; {chunk or 'all'} samples per forward pass"))
    folders = [run_dir / "candidates" / f"c{k:02d}" for k in range(len(config.candidate_list))]
    records = rec.add_candidates(config.candidate_list, config.lr, folders)
    state = train_fitting_memory(model, pixels, replace(config, max_batch=chunk), run_dir,
                                 _recording_steps(rec, on_event), resume)
    invariant.check()
    rec.files("checkpoint", [run_dir / "checkpoint.pt"])
    files = []
    for k, cand in enumerate(config.candidate_list):
        emb = LearnedEmbedding(config.token, state.rows()[k].float().cpu(),
                               {**candidate_metadata(config, choice, cand, k, rec.run.id,
                                                     state.step),
                                **layout_metadata(model.embedding_layout)})
        written = write_embedding_files(emb, folders[k], token_name(config.token))
        rec.files("embedding", written.values(), records[k])
        files.append(written)
    on_event(Finished(state.step, {"candidates": [next(iter(f.values())) for f in files]}))
    return SweepResult(rec.run.id, run_dir, files)


def _sweep_folder(project, token: str, out, resume: bool) -> Path | None:
    """The run folder: --out, else (resuming) the newest unfinished sweep of this token,
    else None (a new folder in the project)."""
    if out is not None:
        return Path(out).absolute()
    if not resume:
        return None
    with Store.open(project) as store:
        unfinished = [r for r in store.runs("sweep", token) if r.status != "done"]
    if not unfinished:
        raise OnewordError(f"--resume: no unfinished sweep of {token} in "
                           f"{store.folder}; start without --resume or pass --out")
    return unfinished[-1].folder


def _recording_steps(rec: RunRecorder, on_event: EventSink) -> EventSink:
    def sink(event) -> None:
        if isinstance(event, (Checkpointed, Finished)):
            rec.step(event.step)
        on_event(event)
    return sink


def candidate_photos(images, config: TrainConfig,
                     resolution: int) -> torch.Tensor | list[torch.Tensor]:
    """The training crops: one shared tensor for center crops; for random crops, each
    candidate's own crops drawn from its seed (as `learn` with that seed draws them)."""
    def crops(seed: int) -> torch.Tensor:
        return data.photo_batch(images, resolution, config.crop, config.crops_per_photo,
                                config.flip, torch.Generator().manual_seed(seed))
    if config.crop == "center":
        return crops(config.seed)
    by_seed: dict[int, torch.Tensor] = {}
    for cand in config.candidate_list:
        if cand.seed not in by_seed:
            by_seed[cand.seed] = crops(cand.seed)
    return [by_seed[c.seed] for c in config.candidate_list]


def candidate_metadata(config: TrainConfig, choice: ModelChoice, cand: Candidate, index: int,
                       run_id: int, step: int) -> dict[str, str]:
    init = "random" if cand.init == "random" else ("jitter" if cand.jitter else "word")
    return {"token": config.token, "init_word": config.init_word or "", "model": choice.model,
            "steps": str(step), "seed": str(cand.seed), "vectors": str(config.vectors),
            "mode": config.mode, "trainer": "oneword", "candidate": str(index),
            "init": init, "jitter": str(cand.jitter), "lr": str(cand.lr or config.lr),
            "run": f"r{run_id}"}


# -- memory-aware micro-batching ---------------------------------------------------------
def resolve_max_batch(model: TextToImage, config: TrainConfig, max_batch: int | str | None) -> int | None:
    """Samples per forward pass: a number, None (all at once) or 'auto'."""
    total = config.batch_size * len(config.candidate_list)
    if max_batch is None or max_batch == "all":
        return None
    if max_batch != "auto":
        value = int(max_batch)
        if value < 1:
            raise OnewordError(f"--max-batch {max_batch}: must be 1 or more, or auto")
        return None if value >= total else value
    if model.device.type != "cuda":
        return None if total <= CPU_MAX_BATCH else CPU_MAX_BATCH
    fit = cuda_samples_that_fit(model, config)
    return None if fit >= total else max(1, fit)


def cuda_samples_that_fit(model: TextToImage, config: TrainConfig) -> int:
    """How many samples a forward+backward pass can hold in the free GPU memory, from the
    peak memory of probe passes with 1 and 2 samples."""
    peaks = []
    for size in (1, 2):
        torch.cuda.synchronize(model.device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(model.device)
        torch.cuda.reset_peak_memory_stats(model.device)
        _probe_pass(model, config, size)
        peaks.append(torch.cuda.max_memory_allocated(model.device) - base)
    per_sample = max(peaks[1] - peaks[0], 1)
    fixed = max(peaks[0] - per_sample, 0)
    free, _ = torch.cuda.mem_get_info(model.device)
    fit = int((MEMORY_SHARE * free - fixed) // per_sample)
    log.info("micro-batching: %.0f MiB per sample, %.0f MiB free -> %d samples per pass",
             per_sample / 2**20, free / 2**20, fit)
    return fit


def _probe_pass(model: TextToImage, config: TrainConfig, size: int) -> None:
    """One forward+backward pass of `size` samples on made-up data (nothing is kept)."""
    resolution = config.resolution or model.native_resolution
    side = resolution // model.vae_factor
    channels = model.latent_channels
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(size, channels, side, side, generator=gen).to(model.device)
    caption = templates(config.mode)[0].format(config.token_text)
    batch = Batch(torch.zeros(size, dtype=torch.long, device=model.device),
                  model.token_ids([caption] * size), latents, torch.randn_like(latents),
                  torch.full((size,), 500, dtype=torch.long, device=model.device))
    rows = torch.zeros(1, config.vectors, model.embedding_width, device=model.device,
                       requires_grad=True)
    batch_loss(model, rows, batch, 1.0, None)


def train_fitting_memory(model: TextToImage, pixels, config: TrainConfig, run_dir: Path,
                         on_event: EventSink, resume: bool):
    """`train`, halving the samples per pass after running out of memory and going on from
    the last checkpoint (micro-batching does not change what is learned)."""
    total = config.batch_size * len(config.candidate_list)
    while True:
        try:
            return train(model, pixels, config, run_dir, on_event, resume)
        except OutOfMemory:
            current = config.max_batch or total
            if current <= 1:
                raise
            config = replace(config, max_batch=current // 2)
            on_event(Message(f"out of memory: going on from the last checkpoint with "
                             f"{config.max_batch} samples per pass"))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            resume = True
