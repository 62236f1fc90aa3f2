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
import torch.nn.functional as F

from . import diffusion
from .interface import TextToImage


def photos_fingerprint(
    photos: torch.Tensor | list[torch.Tensor],
    masks: torch.Tensor | list[torch.Tensor] | None = None,
) -> str:
    """A short hash of the training photos (of each candidate's photos, if given per
    candidate) and of their masks, if any: a run resumed with other masks is another run."""
    if masks is not None:
        joined = f"{photos_fingerprint(photos)},masks:{photos_fingerprint(masks)}"
        return hashlib.sha256(joined.encode()).hexdigest()[:16]
    if isinstance(photos, (list, tuple)):
        joined = ",".join(photos_fingerprint(p) for p in photos)
        return hashlib.sha256(joined.encode()).hexdigest()[:16]
    return hashlib.sha256(photos.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]


def latent_weight(masks: torch.Tensor, size: tuple[int, int], floor: float) -> torch.Tensor:
    """The loss weight [M, 1, h, w] of pixel masks [M, 1, R, R] in [0, 1] on the latent grid:
    each latent cell gets the mean of the pixels it covers (area average), and the background
    keeps `floor` so that what lies outside the mask is not free to be anything."""
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must be [M, 1, R, R], not {tuple(masks.shape)}")
    area = F.adaptive_avg_pool2d(masks.float(), size)
    return floor + (1.0 - floor) * area


@dataclass(frozen=True)
class PhotoLatents:
    """The training photos encoded once (with their flips and crops): the VAE's posterior
    mean and std [M, c, h, w]; a fresh latent is drawn from it per sample, as re-encoding would.
    weight: the per-pixel loss weight [M, 1, h, w] of masked training (`latent_weight`), or
    None (every pixel counts the same)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor | None = None


def encode_photos(
    model: TextToImage,
    photos: torch.Tensor,
    chunk: int = 8,
    masks: torch.Tensor | None = None,
    mask_floor: float = 0.0,
) -> PhotoLatents:
    """Encode photos [M, 3, R, R] in [-1, 1] once; masks [M, 1, R, R] in [0, 1] (the same
    crops and flips) become the loss weight on the latent grid, with `mask_floor` outside."""
    parts = [model.encode_images(photos[i : i + chunk]) for i in range(0, len(photos), chunk)]
    mean, std = torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts])
    if masks is None:
        return PhotoLatents(mean, std)
    if len(masks) != len(photos):
        raise ValueError(f"{len(masks)} masks for {len(photos)} photos")
    weight = latent_weight(masks, tuple(mean.shape[-2:]), mask_floor).to(mean.device)
    return PhotoLatents(mean, std, weight)


def encode_candidate_photos(
    model: TextToImage,
    photos: torch.Tensor | list[torch.Tensor],
    count: int,
    masks: torch.Tensor | list[torch.Tensor] | None = None,
    mask_floor: float = 0.0,
    chunk: int = 8,
) -> list[PhotoLatents]:
    """One PhotoLatents per candidate: shared photos [M, 3, R, R], or a list of K such tensors
    (each candidate's own crops); a tensor given for several candidates is encoded once.
    masks: None, or laid out as the photos are (their crops and flips, [M, 1, R, R]).
    chunk: photos per VAE pass."""
    if not isinstance(photos, (list, tuple)):
        return [encode_photos(model, photos, chunk, masks, mask_floor)] * count
    if len(photos) != count:
        raise ValueError(f"{len(photos)} photo sets for {count} candidates")
    if masks is not None and len(masks) != count:
        raise ValueError(f"{len(masks)} mask sets for {count} candidates")
    cache: dict[int, PhotoLatents] = {}
    for k, p in enumerate(photos):
        if id(p) not in cache:
            mask = None if masks is None else masks[k]
            cache[id(p)] = encode_photos(model, p, chunk, mask, mask_floor)
    return [cache[id(p)] for p in photos]


@dataclass(frozen=True)
class Batch:
    """K×b samples: candidate k's b samples drawn from its own generator."""

    candidate: torch.Tensor  # [B]
    token_ids: torch.Tensor  # [B, L]
    latents: torch.Tensor  # [B, c, h, w]
    noise: torch.Tensor  # [B, c, h, w]
    timesteps: torch.Tensor  # [B]
    weight: torch.Tensor | None = None  # [B, 1, h, w] loss weight of masked training


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
    parts, weights = [], []
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
        if lat.weight is not None:  # no draw of its own: the weight is the drawn photo's
            weights.append(lat.weight[photo.to(lat.weight.device)])
    if weights and len(weights) != len(parts):
        raise ValueError("masks for some candidates' photos but not for others'")
    sample, caption, t, noise = (torch.cat(x) for x in zip(*parts))
    device = sample.device
    candidate = torch.arange(len(generators)).repeat_interleave(batch_size)
    return Batch(
        candidate.to(device),
        caption_ids[caption.to(caption_ids.device)],
        sample,
        noise.to(device),
        t.to(device),
        torch.cat(weights).to(device) if weights else None,
    )


def batch_loss(
    model: TextToImage,
    rows: torch.Tensor,
    batch: Batch,
    weight: float | None,
    max_batch: int | None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """Back-propagate weight × per-sample loss, in chunks of `max_batch` samples; returns the
    per-sample losses [B] (detached). weight None: only the losses (no backward pass). A
    batch of masked photos weights each sample's pixels by its `batch.weight`. scaler: the
    loss is multiplied by its scale before the backward pass (fp16 gradients)."""
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
        weight_map = None if batch.weight is None else batch.weight[sl]
        loss = diffusion.per_sample_mse(
            model.predict_noise(noisy, batch.timesteps[sl], text), target, weight_map
        )
        if weight is not None:
            total = loss.sum() * weight
            (total if scaler is None else scaler.scale(total)).backward()
        losses.append(loss.detach())
    return torch.cat(losses)
