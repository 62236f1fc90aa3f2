"""Phase 1 of the world model's training: the VAE on rendered images, weighted towards the
object, then its scaling factor (1/std of its latents, as SD's 0.18215)."""

import math

import torch
import torch.nn.functional as F

from ..adapters.tiny import (
    Components,
)
from ..core import diffusion
from ..errors import OnewordError
from .render import Spec, render_with_coverage, sample_specs
from .training_config import WorldModelConfig
from .training_loop import (
    Generators,
    PhaseLog,
    Stream,
    amp_context,
    make_optimizer,
    run_phase,
    use_vae_amp,
)


def render_images(
    n: int, config: WorldModelConfig, gens: Generators, device: torch.device
) -> tuple[list[Spec], torch.Tensor]:
    """Specs and renders [n,4,64,64]: RGB in [0,1], then the pixels' loss weights."""
    specs = sample_specs(
        n,
        gens.specs,
        hidden_fraction=config.hidden_fraction,
        member_fraction=config.member_fraction,
    )
    images, coverage = render_with_coverage(specs, gens.render, device)
    return specs, torch.cat([images, pixel_weights(coverage, config)], 1)


def pixel_weights(coverage: torch.Tensor, config: WorldModelConfig) -> torch.Tensor:
    """Loss weights [B,1,h,w] from `render_with_coverage`'s coverage [B,3,h,w]: 1 on the
    scene, more on the object, its pattern and a hidden subject's mark."""
    extra = torch.tensor(
        [config.object_weight, config.pattern_weight, config.mark_weight], device=coverage.device
    ).view(1, 3, 1, 1)
    return 1 + (coverage * extra).sum(1, keepdim=True)


def vae_loss(
    vae,
    images: torch.Tensor,
    weights: torch.Tensor,
    config: WorldModelConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """MSE weighted by `weights` [B,1,64,64] (from `pixel_weights`) + l1_weight * L1 on pixels
    in [-1, 1], + kl_weight * KL (summed per sample)."""
    x = images * 2 - 1
    dist = vae.encode(x).latent_dist
    z = dist.mean + dist.std * torch.randn(
        dist.mean.shape, generator=generator, device=x.device, dtype=dist.mean.dtype
    )
    rec = vae.decode(z).sample.float()
    mean, logvar = dist.mean.float(), dist.logvar.float()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1).mean()
    mse = diffusion.weighted_per_sample_mse(rec, x, weights).mean()
    return mse + config.l1_weight * F.l1_loss(rec, x) + config.kl_weight * kl


def train_vae(
    parts: Components,
    config: WorldModelConfig,
    gens: Generators,
    device: torch.device,
    seconds: float,
) -> PhaseLog:
    vae = parts.vae.train().requires_grad_(True)
    params = list(vae.parameters())
    optimizer = make_optimizer(params, config.vae_lr, config.weight_decay, device)
    stream = Stream(
        lambda n: render_images(n, config, gens, device),
        config.vae_batch_size,
        config.fresh_share,
        config.pool_batches,
        gens.pool,
    )
    amp = use_vae_amp(config, device)

    def step(_: int) -> torch.Tensor:
        _, images = stream.next()
        with amp_context(device, amp):
            loss = vae_loss(vae, images[:, :3], images[:, 3:], config, gens.noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        return loss.detach().float()

    log = run_phase(
        PhaseLog("vae"),
        step,
        optimizer,
        config.vae_lr,
        config.vae_steps,
        seconds,
        config.vae_batch_size,
        config,
        device,
    )
    vae.eval().requires_grad_(False)
    return log


@torch.no_grad()
def encode_latent_params(vae, images: torch.Tensor, amp: bool) -> torch.Tensor:
    """Unscaled posterior mean and std, concatenated on channels [B, 2c, h, w] (fp32)."""
    with amp_context(images.device, amp):
        dist = vae.encode(images * 2 - 1).latent_dist
    return torch.cat([dist.mean.float(), dist.std.float()], 1)


def sample_latents(params: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    mean, std = params.chunk(2, dim=1)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device)
    return mean + std * noise


@torch.no_grad()
def measure_scaling_factor(
    vae, config: WorldModelConfig, gens: Generators, device: torch.device
) -> float:
    """1 / std of sampled latents of fresh renders, so scaled latents have unit std."""
    values = []
    batch = config.vae_batch_size
    for i in range(0, config.scale_images, batch):
        _, images = render_images(min(batch, config.scale_images - i), config, gens, device)
        params = encode_latent_params(vae, images[:, :3], use_vae_amp(config, device))
        values.append(sample_latents(params, gens.noise).flatten())
    std = float(torch.cat(values).std())
    if not (math.isfinite(std) and std > 0):
        raise OnewordError(f"world model VAE latents have std {std}; the VAE did not train")
    return float(f"{1 / std:.5g}")
