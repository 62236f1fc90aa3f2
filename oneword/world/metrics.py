"""Oracle-based metrics on image tensors [B,3,H,W] in [0,1] (resized to 64x64 if needed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .captions import parse_prompt
from .oracle import HEADS, Oracle

CHUNK = 512


def _device(oracle: Oracle):
    return next(oracle.parameters()).device


def _chunks(images):
    for i in range(0, images.shape[0], CHUNK):
        yield images[i : i + CHUNK]


@torch.no_grad()
def predict_indices(oracle: Oracle, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Argmax class index per head, on CPU."""
    dev = _device(oracle)
    parts = [oracle(x.to(dev, torch.float32).clamp(0, 1)) for x in _chunks(images)]
    return {k: torch.cat([p[k].argmax(1).cpu() for p in parts]) for k in HEADS}


@torch.no_grad()
def features(oracle: Oracle, images: torch.Tensor) -> torch.Tensor:
    dev = _device(oracle)
    return torch.cat(
        [oracle.features(x.to(dev, torch.float32).clamp(0, 1)).cpu() for x in _chunks(images)]
    )


def subject_hits(oracle: Oracle, images: torch.Tensor, subject_id: str) -> torch.Tensor:
    """[B] bool: the oracle classifies image i as the hidden subject ``subject_id``."""
    return predict_indices(oracle, images)["subject"] == HEADS["subject"].index(subject_id)


def concept_fidelity(oracle: Oracle, images: torch.Tensor, subject_id: str) -> float:
    """Share of images the oracle classifies as the hidden subject ``subject_id``."""
    return subject_hits(oracle, images, subject_id).float().mean().item()


def bootstrap_interval(
    samples: list[torch.Tensor],
    generator: torch.Generator,
    statistic: str = "median",
    draws: int = 2000,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron 1979) of the median (or "mean") of the means of
    several samples, e.g. one [N_i] tensor of per-image hits per subject: every draw resamples
    the images of each sample with replacement. With one sample it is the interval of that
    sample's mean."""
    means = []
    for values in samples:
        values = values.double().flatten()
        idx = torch.randint(values.numel(), (draws, values.numel()), generator=generator)
        means.append(values[idx].mean(1))
    stacked = torch.stack(means, 1)  # [draws, samples]
    stats = stacked.quantile(0.5, dim=1) if statistic == "median" else stacked.mean(1)
    tail = (1 - level) / 2
    low, high = stats.quantile(torch.tensor([tail, 1 - tail], dtype=stats.dtype))
    return low.item(), high.item()


def concept_similarity(
    oracle: Oracle, images: torch.Tensor, reference_images: torch.Tensor
) -> float:
    """Mean cosine between each image's feature and the mean reference feature."""
    ref = F.normalize(features(oracle, reference_images).mean(0), dim=0)
    return (features(oracle, images) @ ref).mean().item()


def _checkable(requested) -> dict[str, str]:
    if isinstance(requested, str):
        requested = parse_prompt(requested)
    return {k: v for k, v in requested.items() if k in HEADS and v is not None}


def attribute_hits(oracle, images, requested) -> dict[str, torch.Tensor]:
    """Per requested attribute (oracle heads only), [B] bool: image i shows it."""
    req = _checkable(requested)
    pred = predict_indices(oracle, images) if req else {}
    return {k: pred[k] == HEADS[k].index(v) for k, v in req.items()}


def attribute_accuracy(oracle: Oracle, images: torch.Tensor, requested) -> dict[str, float]:
    """Per requested attribute (oracle heads only), the share of images that show it.
    ``requested`` is a dict as from parse_prompt (or a prompt string)."""
    return {
        k: h.float().mean().item() for k, h in attribute_hits(oracle, images, requested).items()
    }


def prompt_fidelity(oracle: Oracle, images: torch.Tensor, requested) -> float:
    """Share of images where every requested attribute is what the oracle predicts
    (1.0 when the prompt names no checkable attribute)."""
    hits = attribute_hits(oracle, images, requested)
    if not hits:
        return 1.0
    return torch.stack(list(hits.values())).all(0).float().mean().item()
