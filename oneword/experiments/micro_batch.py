"""Memory-aware micro-batching: how many samples one forward pass may hold, and training that
halves it after running out of memory (micro-batching never changes what is learned)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..core.checkpoint import read_checkpoint
from ..core.interface import TextToImage
from ..core.memory import OutOfMemory, memory_advice
from ..core.prompts import templates
from ..core.train import Batch, TrainConfig, TrainingState, batch_loss, train
from ..errors import OnewordError
from ..events import EventSink, Message

log = logging.getLogger(__name__)

CPU_MAX_BATCH = 8  # samples per forward pass on CPU/MPS when --max-batch is auto
MEMORY_SHARE = 0.8  # of the free GPU memory that auto micro-batching may plan to use


def resolve_max_batch(
    model: TextToImage, config: TrainConfig, max_batch: int | str | None
) -> int | None:
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


def fit_to_memory(
    model: TextToImage, config: TrainConfig, max_batch: int | str | None, on_event: EventSink
) -> TrainConfig:
    """`config` with the samples per pass that fit (`resolve_max_batch`), and low memory on
    (`TrainConfig.low_memory`) where one sample does not fit without it."""
    if config.low_memory:
        model.speed_up(low_memory=True)  # the probes measure what training will use
    try:
        chunk = resolve_max_batch(model, config, max_batch)
    except OutOfMemory:
        if config.low_memory:
            raise
        on_event(Message(LOW_MEMORY_NOTE))
        config = replace(config, low_memory=True)
        model.speed_up(low_memory=True)
        chunk = resolve_max_batch(model, config, max_batch)
    return replace(config, max_batch=chunk)


def as_checkpointed(
    config: TrainConfig, max_batch: int | str | None, checkpoint: Path
) -> tuple[TrainConfig, int | str | None]:
    """A resumed run's execution settings as its checkpoint has them: with --max-batch auto
    the samples per pass it ran with (not those the free memory allows now), and low memory
    if it had come on. On a GPU, kernels are chosen by batch shape, so the same micro-batch
    is what keeps a resumed run on the uninterrupted one's last bits."""
    if not checkpoint.is_file():
        return config, max_batch
    saved = type(config).from_json(read_checkpoint(checkpoint, config, check=False)["config"])
    if max_batch == "auto":
        max_batch = saved.max_batch or "all"
    return replace(config, low_memory=config.low_memory or saved.low_memory), max_batch


LOW_MEMORY_NOTE = (
    "out of memory at one sample per pass: going on with --low-memory (gradient "
    "checkpointing and photos encoded one at a time: slower, the same result)"
)


def cuda_samples_that_fit(model: TextToImage, config: TrainConfig) -> int:
    """How many samples a forward+backward pass can hold in the free GPU memory, from the
    peak memory of probe passes with 1 and 2 samples; OutOfMemory where 1 does not fit."""
    peaks = []
    for size in (1, 2):
        try:
            peaks.append(probe_peak(model, config, size))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if size == 1:
                raise OutOfMemory(
                    f"out of GPU memory with 1 sample per pass at "
                    f"{config.resolution or model.native_resolution} px; "
                    + memory_advice(config, 1, started=False),
                    1,
                ) from None
            log.info("micro-batching: 2 samples do not fit; 1 per pass")
            return 1
    return samples_that_fit(peaks, torch.cuda.mem_get_info(model.device)[0])


def probe_peak(model: TextToImage, config: TrainConfig, size: int) -> int:
    """Peak bytes of GPU memory a probe pass of `size` samples adds."""
    torch.cuda.synchronize(model.device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(model.device)
    torch.cuda.reset_peak_memory_stats(model.device)
    _probe_pass(model, config, size)
    return torch.cuda.max_memory_allocated(model.device) - base


def samples_that_fit(peaks: list[int], free: int) -> int:
    """Samples per pass that fit MEMORY_SHARE of `free` bytes, given the peaks of passes with
    1 and 2 samples."""
    per_sample = max(peaks[1] - peaks[0], 1)
    fixed = max(peaks[0] - per_sample, 0)
    fit = int((MEMORY_SHARE * free - fixed) // per_sample)
    log.info(
        "micro-batching: %.0f MiB per sample, %.0f MiB free -> %d samples per pass",
        per_sample / 2**20,
        free / 2**20,
        fit,
    )
    return fit


def _probe_pass(model: TextToImage, config: TrainConfig, size: int) -> None:
    """One forward+backward pass of `size` samples on made-up data (nothing is kept)."""
    resolution = config.resolution or model.native_resolution
    side = resolution // model.vae_factor
    channels = model.latent_channels
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(size, channels, side, side, generator=gen).to(model.device)
    caption = templates(config.mode)[0].format(config.token_text)
    batch = Batch(
        torch.zeros(size, dtype=torch.long, device=model.device),
        model.token_ids([caption] * size),
        latents,
        torch.randn_like(latents),
        torch.full((size,), 500, dtype=torch.long, device=model.device),
    )
    layers = (model.cross_attention_layers,) if config.per_layer else ()
    rows = torch.zeros(
        1, *layers, config.vectors, model.embedding_width, device=model.device, requires_grad=True
    )
    batch_loss(model, rows, batch, 1.0, None)


def train_fitting_memory(
    model: TextToImage,
    pixels,
    config: TrainConfig,
    run_dir: Path,
    on_event: EventSink,
    resume: bool,
    on_preview=None,
    masks=None,
    start_rows: torch.Tensor | None = None,
) -> TrainingState:
    """`train`, halving the samples per pass after running out of memory and going on from
    the last checkpoint (micro-batching does not change what is learned). masks and
    start_rows: as `train` takes them."""
    total = config.batch_size * len(config.candidate_list)
    while True:
        try:
            return train(
                model, pixels, config, run_dir, on_event, resume, on_preview, masks, start_rows
            )
        except OutOfMemory as exc:
            current = config.max_batch or total
            if exc.samples > 1 and current > 1:  # a training pass of several samples
                config = replace(config, max_batch=current // 2)
                note = f"going on from the last checkpoint with {config.max_batch} samples per pass"
            elif not config.low_memory:  # one sample, or encoding the photos
                config = replace(config, low_memory=True)
                note = "going on from the last checkpoint with --low-memory"
            else:
                raise
            on_event(Message(f"out of memory: {note}"))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            resume = True
