"""Automatic masks from a model's attention: heat maps to a mask of the subject (pure math).

From the class word's cross-attention at every UNet resolution (DAAM, Tang et al. 2022) a map
on the latent grid is made, sharpened by the UNet's own self-attention (each cell takes the
mean heat of the cells it attends to, as in DiffSegmenter, Wang et al. 2023), normalised to
[0, 1] and cut at a level (a fixed one, or Otsu's, Otsu 1979, as ViCo does, Hao et al. 2023).
The largest connected part is kept, grown by a cell and feathered, so the loss weight falls off
smoothly at the subject's edge rather than on a hard latent-cell boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

THRESHOLDS = ("otsu", "fixed")


@dataclass(frozen=True)
class MaskRecipe:
    """The choices of an automatic mask (recorded with the run).

    timestep: the noise level of the photo's latent (of 1000); draws: noise draws averaged;
    refine: passes of self-attention refinement (0: none); threshold: "otsu" or "fixed"
    (at `level` of the normalised map); grow: latent cells added around the part kept;
    feather: latent cells over which the edge falls from 1 to 0; min_contrast: the peak of
    the heat over its mean below which the map is taken to have found nothing (a photo
    without the subject gives a flat map); min_area / max_area: the shares of the photo below
    / above which the mask is taken to have found nothing / everything (the photo then trains
    unmasked).
    """

    timestep: int = 150
    draws: int = 4
    refine: int = 1
    threshold: str = "fixed"
    level: float = 0.7
    grow: int = 0
    feather: float = 1.0
    min_contrast: float = 1.4
    min_area: float = 0.02
    max_area: float = 0.85

    def __post_init__(self):
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"threshold {self.threshold!r}: choose one of {THRESHOLDS}")
        if not 0 < self.timestep < 1000 or self.draws < 1 or self.refine < 0 or self.grow < 0:
            raise ValueError(f"invalid mask recipe {self}")
        if not 0 < self.level < 1 or not 0 <= self.min_area < self.max_area <= 1:
            raise ValueError(f"invalid mask recipe {self}")


def combine_layers(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Per-layer heat maps [B, h_l, w_l] brought to the latent grid `size` (bilinear) and
    averaged after each is scaled to its own mean, so coarse layers, whose cells hold more of
    the token's attention each, do not outweigh fine ones: [B, H, W]."""
    if not maps:
        raise ValueError("no cross-attention maps to combine")
    scaled = []
    for m in maps:
        m = m.float() / m.float().mean((-2, -1), keepdim=True).clamp_min(1e-12)
        scaled.append(F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False))
    return torch.cat(scaled, 1).mean(1)


def refine(heat: torch.Tensor, attention: torch.Tensor, size: tuple[int, int], passes: int = 1):
    """Heat [B, H, W] propagated along self-attention [B, n, n] at grid `size` (h·w = n):
    each cell becomes the attention-weighted mean of the heat of the cells it attends to, so
    the map follows the object's own extent rather than the coarse cross-attention blobs."""
    if passes == 0:
        return heat
    h, w = size
    grid = F.interpolate(heat[:, None], size=size, mode="area")[:, 0].reshape(len(heat), h * w)
    for _ in range(passes):
        grid = torch.bmm(attention.float(), grid[..., None])[..., 0]
    fine = F.interpolate(grid.view(-1, 1, h, w), size=heat.shape[-2:], mode="bilinear")
    return fine[:, 0]


def normalise(heat: torch.Tensor) -> torch.Tensor:
    """Each map [B, H, W] scaled to [0, 1] (min to max); a flat map becomes all zeros."""
    low = heat.amin((-2, -1), keepdim=True)
    span = heat.amax((-2, -1), keepdim=True) - low
    return torch.where(span > 1e-12, (heat - low) / span.clamp_min(1e-12), torch.zeros_like(heat))


def otsu_level(values: torch.Tensor, bins: int = 64) -> float:
    """Otsu's threshold of values in [0, 1]: the cut that maximises the between-class variance
    of the two sides (Otsu 1979)."""
    hist = torch.histc(values.float().flatten(), bins=bins, min=0.0, max=1.0).double()
    p = hist / hist.sum().clamp_min(1)
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    weight = p.cumsum(0)
    mean = (p * centres).cumsum(0)
    total = mean[-1]
    between = (total * weight - mean) ** 2 / (weight * (1 - weight)).clamp_min(1e-12)
    return float((torch.argmax(between[:-1]) + 1) / bins)


def largest_component(binary: torch.Tensor) -> torch.Tensor:
    """The largest 8-connected part of each boolean map [B, H, W] (the others cleared)."""
    out = torch.zeros_like(binary)
    for b, one in enumerate(binary):
        labels = _labels(one)
        if labels.max() > 0:
            counts = torch.bincount(labels.flatten())
            counts[0] = 0
            out[b] = labels == int(counts.argmax())
    return out


def _labels(binary: torch.Tensor) -> torch.Tensor:
    """Connected-part labels [H, W] (0: background): each part takes the largest cell number
    in it, spread by repeated 3×3 max-pooling until nothing changes."""
    h, w = binary.shape
    on = binary.bool()
    ids = torch.arange(1, h * w + 1, dtype=torch.float32).view(h, w) * on
    while True:
        spread = F.max_pool2d(ids[None, None], 3, stride=1, padding=1)[0, 0] * on
        if torch.equal(spread, ids):
            return ids.long()
        ids = spread


def grow(binary: torch.Tensor, cells: int) -> torch.Tensor:
    """Boolean maps [B, H, W] dilated by `cells` cells (a square neighbourhood)."""
    if cells == 0:
        return binary
    k = 2 * cells + 1
    return F.max_pool2d(binary[:, None].float(), k, stride=1, padding=cells)[:, 0] > 0


def feather(binary: torch.Tensor, cells: float) -> torch.Tensor:
    """Boolean maps [B, H, W] as weights in [0, 1] whose edge falls off over about `cells`
    cells (a Gaussian blur of that sigma), the inside kept at 1."""
    mask = binary.float()
    if cells <= 0:
        return mask
    radius = max(1, int(round(2 * cells)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / cells) ** 2)
    kernel = kernel / kernel.sum()
    blurred = F.conv2d(
        F.pad(mask[:, None], (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1)
    )
    blurred = F.conv2d(
        F.pad(blurred, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1)
    )
    return torch.maximum(blurred[:, 0], mask)


def heat_to_mask(heat: torch.Tensor, recipe: MaskRecipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised heat [B, H, W] to masks [B, H, W] in [0, 1] on the same grid, and the share
    of each map the cut kept (before growing) [B]."""
    masks, shares = [], []
    for one in heat:
        level = otsu_level(one) if recipe.threshold == "otsu" else recipe.level
        kept = largest_component((one >= level)[None])
        shares.append(kept.float().mean())
        masks.append(feather(grow(kept, recipe.grow), recipe.feather)[0])
    return torch.stack(masks), torch.stack(shares)


def contrast(heat: torch.Tensor) -> torch.Tensor:
    """Peak over mean of each heat map [B, H, W] before normalising: about 1 where the
    attention is spread evenly, higher where it gathers on something [B]."""
    return heat.amax((-2, -1)) / heat.mean((-2, -1)).clamp_min(1e-12)


def found_subject(share: float, peak: float, recipe: MaskRecipe) -> str | None:
    """None if a mask covering `share` of its photo, cut from a heat map of contrast `peak`,
    is usable; else why not ("nothing" or "everything"): the class word is likely not in the
    photo."""
    if peak < recipe.min_contrast or share < recipe.min_area:
        return "nothing"
    if share > recipe.max_area:
        return "everything"
    return None
