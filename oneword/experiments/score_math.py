"""Score math for comparing candidate embeddings (pure functions on tensors).

Image fidelity follows DreamBooth (Ruiz et al. 2023, sec. 4.1): the mean cosine similarity
between features of generated and real images, with CLIP image features (CLIP-I) or
self-supervised DINO features (DINO); prompt fidelity is the mean cosine between CLIP features
of a generated image and of its prompt (CLIP-T). On the procedural world the oracle classifier
gives the same two kinds of number (oneword.world.metrics).

Candidates are then compared on two axes, fidelity and prompt-following: the Pareto front is
every candidate no other beats on both. `oneword score` ranks by the weighted score, the
weighted mean of the two axes on their own scale, so that it compares across runs, with a 95%
interval from the spread of the per-image values; the label-free pick of successive halving
and the benches weigh the two after standardizing each across the candidates scored together
(`combined_score`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FIDELITY_METRICS = ("clip_i", "dino", "concept_fidelity", "concept_similarity")
PROMPT_METRICS = ("clip_t", "prompt_fidelity")
METRIC_LABELS = {
    "clip_i": "CLIP-I",
    "dino": "DINO",
    "clip_t": "CLIP-T",
    "concept_fidelity": "concept",
    "concept_similarity": "concept-sim",
    "prompt_fidelity": "prompt",
    "fidelity": "fidelity",
    "prompt": "prompt-follow",
    "combined": "combined",
}


def cosine_to_references(features: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """[G] mean cosine of each feature [G, d] to every reference feature [R, d]."""
    a, b = F.normalize(features.float(), dim=-1), F.normalize(references.float(), dim=-1)
    return (a @ b.T).mean(dim=1)


def paired_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[G] cosine of a[i] and b[i] (image and its prompt, for CLIP-T)."""
    return (F.normalize(a.float(), dim=-1) * F.normalize(b.float(), dim=-1)).sum(dim=-1)


def self_similarity(references: torch.Tensor) -> float:
    """Mean cosine over distinct pairs of real images: the 'real images' row of DreamBooth's
    table, the fidelity one more photo of the subject would get."""
    r = F.normalize(references.float(), dim=-1)
    n = r.shape[0]
    if n < 2:
        return float("nan")
    sims = r @ r.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def standardize(values: torch.Tensor) -> torch.Tensor:
    """z-scores across candidates [K]; all zeros when the values do not vary."""
    values = values.double()
    std = values.std(unbiased=False) if values.numel() > 1 else values.new_tensor(0.0)
    if not float(std) > 1e-12:
        return torch.zeros_like(values)
    return (values - values.mean()) / std


def axis_scores(metrics: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(fidelity [K], prompt-following [K]): the mean of the fidelity metrics present and of
    the prompt metrics present (NaN if none)."""

    def mean_of(names):
        present = [metrics[m].double() for m in names if m in metrics]
        if not present:
            size = len(next(iter(metrics.values()))) if metrics else 0
            return torch.full((size,), float("nan"), dtype=torch.float64)
        return torch.stack(present).mean(dim=0)

    return mean_of(FIDELITY_METRICS), mean_of(PROMPT_METRICS)


# What the world's oracle knows and a user does not: left out of every automatic choice.
LABELLED_METRICS = ("concept_fidelity",)


def without_labels(metrics: dict) -> dict:
    """The metrics a user without labels has (CLIP-I/DINO or the world's concept similarity,
    and prompt-following): what every automatic choice is made on."""
    return {m: v for m, v in metrics.items() if m not in LABELLED_METRICS}


def label_free_score(metrics: dict[str, torch.Tensor], fidelity_weight: float = 0.5):
    """[K] standardized combined score of the label-free metrics (see `without_labels`)."""
    return combined_score(*axis_scores(without_labels(metrics)), fidelity_weight)


def combined_score(
    fidelity: torch.Tensor, prompt: torch.Tensor, fidelity_weight: float = 0.5
) -> torch.Tensor:
    """w · z(fidelity) + (1 − w) · z(prompt-following); an axis that is missing (NaN) or
    constant counts zero. Comparable only among candidates scored together."""
    if not 0.0 <= fidelity_weight <= 1.0:
        raise ValueError(f"fidelity weight {fidelity_weight} outside [0, 1]")

    def z(x):
        return torch.zeros_like(x, dtype=torch.float64) if torch.isnan(x).any() else standardize(x)

    return fidelity_weight * z(fidelity) + (1 - fidelity_weight) * z(prompt)


def weighted_score(
    fidelity: torch.Tensor, prompt: torch.Tensor, fidelity_weight: float = 0.5
) -> torch.Tensor:
    """w · fidelity + (1 − w) · prompt-following, each on its own scale (0 to 1 for the
    oracle's shares, a cosine for CLIP and DINO): comparable across runs scored alike. An axis
    that is missing (NaN) leaves the other alone."""
    if not 0.0 <= fidelity_weight <= 1.0:
        raise ValueError(f"fidelity weight {fidelity_weight} outside [0, 1]")
    f, p = fidelity.double(), prompt.double()
    mixed = fidelity_weight * f + (1 - fidelity_weight) * p
    return torch.where(f.isnan(), p, torch.where(p.isnan(), f, mixed))


def interval_half_width(values: torch.Tensor, level_z: float = 1.96) -> float:
    """Half the width of the normal 95% interval of the mean of per-image values [M]; NaN
    for fewer than two."""
    v = values.double()
    if v.numel() < 2:
        return float("nan")
    return float(level_z * v.std(unbiased=True) / v.numel() ** 0.5)


def images_interval(each: list[dict[str, float]], fidelity_weight: float = 0.5) -> float:
    """The half width of the 95% interval of a candidate's weighted score over its images,
    from each image's metrics; NaN for fewer than two images."""
    if not each:
        return float("nan")
    metrics = {m: torch.tensor([e[m] for e in each], dtype=torch.float64) for m in each[0]}
    return interval_half_width(
        weighted_score(*axis_scores(without_labels(metrics)), fidelity_weight)
    )


def within_noise(a: float, a_half: float, b: float, b_half: float) -> bool:
    """Whether two scores differ by less than their intervals' combined half widths (a
    difference that new seeds could reverse)."""
    if any(x != x for x in (a_half, b_half)):  # NaN: no interval, nothing to say
        return False
    return abs(a - b) < (a_half**2 + b_half**2) ** 0.5


def pareto_front(fidelity: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """[K] bool: candidates that no other candidate matches or beats on both axes while
    beating on one (higher is better on both)."""
    f, p = fidelity.double(), prompt.double()
    f = torch.nan_to_num(f, nan=0.0)
    p = torch.nan_to_num(p, nan=0.0)
    ge = (f[None, :] >= f[:, None]) & (p[None, :] >= p[:, None])  # [i, j]: j at least as good
    gt = (f[None, :] > f[:, None]) | (p[None, :] > p[:, None])
    dominated = (ge & gt).any(dim=1)
    return ~dominated


def ranking(scores: torch.Tensor) -> list[int]:
    """Candidate indices, best score first (ties keep index order; NaN last)."""
    values = torch.nan_to_num(scores.double(), nan=float("-inf"))
    return sorted(range(len(values)), key=lambda k: (-float(values[k]), k))


def spread(values: torch.Tensor) -> dict[str, float]:
    """min, median, max and mean of [K] values (an even K's median: the mean of the middle
    two)."""
    v = values.double()
    return {
        "min": float(v.min()),
        "median": float(v.quantile(0.5)),
        "max": float(v.max()),
        "mean": float(v.mean()),
    }
