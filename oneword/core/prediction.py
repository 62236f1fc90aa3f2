"""What a model's UNet predicts, told from its outputs: the noise (epsilon, Ho et al. 2020) or
v (Salimans & Ho 2022). SD 2.x's 512 px base predicts noise and its 768 px models predict v,
and a single-file checkpoint's keys do not say which; the photos noised at a spread of
timesteps do: the right target's error is far below the other's."""

from __future__ import annotations

import torch

from .diffusion import add_noise, per_sample_mse, prediction_target
from .interface import TextToImage

PREDICTIONS = ("epsilon", "v_prediction")
CHECK_TIMESTEPS = (200, 350, 500, 650, 800)  # where the two targets differ most
MARGIN = 0.7  # the chosen target's error is under this share of the other's, else unclear


@torch.no_grad()
def prediction_errors(
    model: TextToImage, pixels: torch.Tensor, generator: torch.Generator
) -> dict[str, float]:
    """Relative squared error of the model's output against each target (mean squared error
    over the target's mean square: 1 for an output of zeros, whatever the target's size), on
    photos [M, 3, R, R] in [-1, 1] noised once at each of CHECK_TIMESTEPS (the empty prompt
    as condition)."""
    mean, std = model.encode_images(pixels)
    device = mean.device
    latents = mean + std * torch.randn(mean.shape, generator=generator).to(device)
    text = model.encode_text(model.token_ids([""] * len(latents)))
    errors, sizes = dict.fromkeys(PREDICTIONS, 0.0), dict.fromkeys(PREDICTIONS, 0.0)
    for t in CHECK_TIMESTEPS:
        noise = torch.randn(latents.shape, generator=generator).to(device)
        alpha_bar = model.alphas_cumprod[t].float().to(device).expand(len(latents))
        timesteps = torch.full((len(latents),), t, dtype=torch.long, device=device)
        out = model.predict_noise(add_noise(latents, noise, alpha_bar), timesteps, text)
        for kind in PREDICTIONS:
            target = prediction_target(kind, latents, noise, alpha_bar)
            errors[kind] += float(per_sample_mse(out, target).mean())
            sizes[kind] += float(target.float().pow(2).mean())
    return {kind: errors[kind] / sizes[kind] for kind in PREDICTIONS}


def pick_prediction(errors: dict[str, float]) -> str | None:
    """The target whose error is clearly the lower (see MARGIN); None where neither is."""
    best, other = sorted(PREDICTIONS, key=lambda kind: errors[kind])
    return best if errors[best] < MARGIN * errors[other] else None
