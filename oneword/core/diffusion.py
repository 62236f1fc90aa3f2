"""Noise-prediction training math for latent diffusion (pure functions on tensors)."""

from __future__ import annotations

import math

import torch


def add_noise(latents: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Forward process q(x_t | x_0) of Ho et al. 2020 (DDPM), eq. 4.

    latents, noise: [B, C, H, W]; alpha_bar: [B] cumulative product of alphas at each t.
    """
    a = alpha_bar.to(latents.dtype).view(-1, 1, 1, 1)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def velocity(latents: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The v target of Salimans & Ho 2022 ("Progressive Distillation"), used by SD 2.x v-models."""
    a = alpha_bar.to(latents.dtype).view(-1, 1, 1, 1)
    return a.sqrt() * noise - (1 - a).sqrt() * latents


def prediction_target(
    prediction_type: str, latents: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor
) -> torch.Tensor:
    """What the UNet is trained to output: epsilon (Ho et al. 2020) or v (Salimans & Ho 2022)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return velocity(latents, noise, alpha_bar)
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


def per_sample_mse(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error per sample [B] (the simple loss of Ho et al. 2020, eq. 14); with a
    per-pixel `weight` [B, 1, h, w] (masked training), mean(w · error²) / mean(w), so that the
    loss keeps its scale whatever share of the photo the mask covers."""
    if weight is not None:
        return weighted_per_sample_mse(prediction, target, weight)
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def weighted_per_sample_mse(
    prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Squared error per sample [B], averaged with per-pixel `weights` [B,1,h,w] (>= 0,
    broadcast over channels) normalised per sample, so uniform weights give `per_sample_mse`."""
    error = (prediction.float() - target.float()).pow(2).mean(dim=1, keepdim=True)
    weights = weights.float().expand_as(error)
    return (error * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1e-12)


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int = 0) -> float:
    """Learning-rate multiplier at optimizer step `step` (0-based): linear warm-up, then constant,
    linear decay or cosine decay (Loshchilov & Hutter 2017, SGDR, without restarts)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


LR_SCHEDULES = ("constant", "linear", "cosine")
