"""Stop when the loss on a fixed batch is flat: DVAR (Voronov et al. 2023, "Is This Loss
Informative? Faster Text-to-Image Customization by Tracking Objective Dynamics").

The training loss of Textual Inversion is too noisy to show when a word has been learned: each
step draws other photos, timesteps and noise. The same loss on one fixed batch of (photo,
caption, timestep, noise) draws, evaluated as the rows change, falls and then levels out when
the word stops improving. DVAR stops when the variance of its last `window` values is below
`threshold` times the variance of all of them. Here it is evaluated every `every` steps and the
window counts evaluations, so its cost is one no-gradient pass over `samples` draws per
evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import OnewordError
from .interface import TextToImage
from .latents import batch_loss, draw_batch

FIXED_BATCH_SEED = 20_230_210  # the fixed draws depend on the photos only, not on any seed


@dataclass(frozen=True)
class FlatStop:
    """When to stop: `window` evaluations, one every `every` steps, on `samples` fixed draws,
    whose variance has fallen below `threshold` of the variance of all evaluations."""

    every: int = 5
    window: int = 10
    threshold: float = 0.15
    samples: int = 8

    def __post_init__(self):
        for name in ("every", "window", "samples"):
            if getattr(self, name) < 1:
                raise OnewordError(f"--flat-{name} {getattr(self, name)}: must be 1 or more")
        if not 0 < self.threshold < 1:
            raise OnewordError(f"--flat-threshold {self.threshold}: give a number in (0, 1)")


def is_flat(losses: torch.Tensor, window: int, threshold: float) -> bool:
    """DVAR's criterion on a history of fixed-batch losses [T]: Var(last window) <
    threshold × Var(all), once there are more than 2 × window values (before, the window is
    most of the history and the ratio says nothing)."""
    if losses.numel() <= 2 * window:
        return False
    total = losses.double().var()
    if not total > 0:
        return False
    return bool(losses[-window:].double().var() < threshold * total)


def all_flat(history: list[list[float]], window: int, threshold: float) -> bool:
    """Whether every candidate's history (evaluations × K) is flat."""
    if not history:
        return False
    per_candidate = torch.tensor(history).T  # [K, T]
    return all(is_flat(h, window, threshold) for h in per_candidate)


def fixed_losses(model: TextToImage, rows: torch.Tensor, batch, max_batch: int | None) -> list:
    """Per-candidate mean loss [K] on the fixed `batch` (a core.latents Batch), no gradient."""
    with torch.no_grad():
        per_sample = batch_loss(model, rows, batch, None, max_batch)  # [K × samples]
    return per_sample.view(rows.shape[0], -1).mean(dim=1).tolist()


@dataclass
class FlatWatch:
    """Evaluates the fixed batch every `settings.every` steps (at steps 0, every, 2 × every,
    …) into `state.fixed_losses` and says when to stop. An evaluation missing after a resume
    is made from the same rows, so a resumed run stops where the whole run would."""

    settings: FlatStop
    model: TextToImage
    batch: object  # core.latents.Batch of settings.samples draws per candidate
    max_batch: int | None = None

    def should_stop(self, state) -> bool:
        due = state.step // self.settings.every + 1
        if state.step % self.settings.every == 0 and len(state.fixed_losses) < due:
            rows = state.rows()
            state.fixed_losses.append(fixed_losses(self.model, rows, self.batch, self.max_batch))
        return all_flat(state.fixed_losses, self.settings.window, self.settings.threshold)


def flat_watch(
    model: TextToImage, settings: FlatStop | None, latents, caption_ids, count: int, max_batch=None
) -> FlatWatch | None:
    """The watch of --stop-when-flat over `count` candidates (the same fixed draws for each);
    None without it."""
    if settings is None:
        return None
    gens = [torch.Generator().manual_seed(FIXED_BATCH_SEED) for _ in range(count)]
    fixed = draw_batch(latents, caption_ids, len(model.alphas_cumprod), gens, settings.samples)
    return FlatWatch(settings, model, fixed, max_batch)
