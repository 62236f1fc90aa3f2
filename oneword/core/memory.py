"""Running short of device memory during training: where it is saved (photos encoded a few
at a time), what a run does when it runs out (previews stop; training stops with a checkpoint
and advice), and the advice itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import OnewordError
from ..events import EventSink, Message
from .generate import DrawingOutOfMemory
from .interface import TextToImage
from .latents import encode_candidate_photos

if TYPE_CHECKING:
    from .train import TrainConfig


class OutOfMemory(OnewordError):
    """The device ran out of memory; the last checkpoint holds a state to resume from.
    samples: how many samples the failing pass held (a pass of photo encoding: 0)."""

    def __init__(self, message: str, samples: int = 0):
        super().__init__(message)
        self.samples = samples


def memory_advice(config: TrainConfig, samples: int, started: bool = True) -> str:
    """What frees memory from here on, and how to go on: fewer samples per pass while there
    are several, then --low-memory (both resume a `started` run, one with a checkpoint),
    then a smaller --resolution."""
    again = "run again with --resume" if started else "run again"
    if samples > 1:
        return (
            f"give --max-batch {max(1, samples // 2)} (fewer samples per pass; the same "
            f"result) and {again}"
        )
    if not config.low_memory:
        return f"add --low-memory (gradient checkpointing: slower, the same result) and {again}"
    restart = "start again with a smaller --resolution (e.g. 768 for SDXL, 512 for SD)"
    if started:
        restart += " and another --out"
    return f"{restart}, or free the GPU's memory (other programs) and {again}"


def photos_per_pass(resolution: int, low_memory: bool) -> int:
    """Photos the VAE encodes at once: at 768 px and more its activations take GBs each."""
    if low_memory:
        return 1
    return 2 if resolution >= 768 else 8


def encode_training_photos(model: TextToImage, photos, config: TrainConfig, count: int, masks):
    """The photos' latents, a few photos per pass (`photos_per_pass`)."""
    first = photos[0] if isinstance(photos, (list, tuple)) else photos
    resolution = int(first.shape[-1])
    chunk = photos_per_pass(resolution, config.low_memory)
    try:
        return encode_candidate_photos(model, photos, count, masks, config.mask_floor or 0.0, chunk)
    except torch.cuda.OutOfMemoryError:
        raise OutOfMemory(
            f"out of GPU memory encoding the photos at {resolution} px, {chunk} at a time; "
            + memory_advice(config, 1)
        ) from None


def draw_previews(on_preview, step: int, rows: torch.Tensor, on_event: EventSink) -> bool:
    """Draw the previews of `step`; False when the device has no memory left for them, so
    that training goes on without previews (its batch left as it is)."""
    try:
        on_preview(step, rows)
        return True
    except (torch.cuda.OutOfMemoryError, DrawingOutOfMemory):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        on_event(
            Message(
                f"previews off from step {step}: out of GPU memory drawing them (training "
                "goes on); give --preview-every 0, or draw later with oneword generate"
            )
        )
        return False
