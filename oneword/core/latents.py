"""The training photos as latents, the random draws of a training step, and their loss.

The photos are encoded once; each step draws, per candidate from its own generator, which
photo, caption, timestep and noise each sample gets, so that a candidate sees the same data
whether it trains alone or beside others. The loss of a batch of draws serves both the training
step and the fixed-batch evaluations of --stop-when-flat.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from . import diffusion
from .interface import TextToImage


def photos_fingerprint(photos: torch.Tensor | list[torch.Tensor]) -> str:
    """A short hash of the training photos (of each candidate's photos, if given per candidate)."""
    if isinstance(photos, (list, tuple)):
        joined = ",".join(photos_fingerprint(p) for p in photos)
        return hashlib.sha256(joined.encode()).hexdigest()[:16]
    return hashlib.sha256(photos.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class PhotoLatents:
    """The training photos encoded once (with their flips and crops): the VAE's posterior
    mean and std [M, c, h, w]; a fresh latent is drawn from it per sample, as re-encoding would."""

    mean: torch.Tensor
    std: torch.Tensor


def encode_photos(model: TextToImage, photos: torch.Tensor, chunk: int = 8) -> PhotoLatents:
    """Encode photos [M, 3, R, R] in [-1, 1] once."""
    parts = [model.encode_images(photos[i : i + chunk]) for i in range(0, len(photos), chunk)]
    return PhotoLatents(torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts]))


def encode_candidate_photos(
    model: TextToImage, photos: torch.Tensor | list[torch.Tensor], count: int
) -> list[PhotoLatents]:
    """One PhotoLatents per candidate: shared photos [M, 3, R, R], or a list of K such tensors
    (each candidate's own crops); a tensor given for several candidates is encoded once."""
    if not isinstance(photos, (list, tuple)):
        return [encode_photos(model, photos)] * count
    if len(photos) != count:
        raise ValueError(f"{len(photos)} photo sets for {count} candidates")
    cache: dict[int, PhotoLatents] = {}
    for p in photos:
        if id(p) not in cache:
            cache[id(p)] = encode_photos(model, p)
    return [cache[id(p)] for p in photos]


@dataclass(frozen=True)
class Batch:
    """K×b samples: candidate k's b samples drawn from its own generator."""

    candidate: torch.Tensor  # [B]
    token_ids: torch.Tensor  # [B, L]
    latents: torch.Tensor  # [B, c, h, w]
    noise: torch.Tensor  # [B, c, h, w]
    timesteps: torch.Tensor  # [B]


def draw_batch(
    latents: PhotoLatents | list[PhotoLatents],
    caption_ids: torch.Tensor,
    num_timesteps: int,
    generators: list[torch.Generator],
    batch_size: int,
) -> Batch:
    """Sample photos, captions, timesteps and noise for every candidate.

    The draws of candidate k use only generator k (and its own photos, if `latents` is a list
    of one PhotoLatents per candidate), in a fixed order, so a candidate sees the same data
    whether it trains alone or beside others.
    """
    if isinstance(latents, PhotoLatents):
        latents = [latents] * len(generators)
    parts = []
    for gen, lat in zip(generators, latents):
        shape = lat.mean.shape[1:]
        photo = torch.randint(len(lat.mean), (batch_size,), generator=gen)
        caption = torch.randint(len(caption_ids), (batch_size,), generator=gen)
        t = torch.randint(num_timesteps, (batch_size,), generator=gen)
        posterior = torch.randn((batch_size, *shape), generator=gen)
        noise = torch.randn((batch_size, *shape), generator=gen)
        device = lat.mean.device
        sample = lat.mean[photo.to(device)] + lat.std[photo.to(device)] * posterior.to(device)
        parts.append((sample, caption, t, noise))
    sample, caption, t, noise = (torch.cat(x) for x in zip(*parts))
    device = sample.device
    candidate = torch.arange(len(generators)).repeat_interleave(batch_size)
    return Batch(
        candidate.to(device),
        caption_ids[caption.to(caption_ids.device)],
        sample,
        noise.to(device),
        t.to(device),
    )


def batch_loss(
    model: TextToImage,
    rows: torch.Tensor,
    batch: Batch,
    weight: float | None,
    max_batch: int | None,
) -> torch.Tensor:
    """Back-propagate weight × per-sample loss, in chunks of `max_batch` samples; returns the
    per-sample losses [B] (detached). weight None: only the losses (no backward pass)."""
    size = len(batch.timesteps)
    chunk = max_batch or size
    alpha_bar = model.alphas_cumprod.to(batch.latents.device)[batch.timesteps.long()].float()
    losses = []
    for s in range(0, size, chunk):
        sl = slice(s, s + chunk)
        noisy = diffusion.add_noise(batch.latents[sl], batch.noise[sl], alpha_bar[sl])
        target = diffusion.prediction_target(
            model.prediction_type, batch.latents[sl], batch.noise[sl], alpha_bar[sl]
        )
        text = model.encode_text(batch.token_ids[sl], rows, batch.candidate[sl])
        loss = diffusion.per_sample_mse(
            model.predict_noise(noisy, batch.timesteps[sl], text), target
        )
        if weight is not None:
            (loss.sum() * weight).backward()
        losses.append(loss.detach())
    return torch.cat(losses)
