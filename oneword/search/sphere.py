"""Blends and mutations of words on a sphere (pure functions on tensors).

A learned word trained without a norm constraint ends up several times longer than any row of
the vocabulary, and averaging or crossing such words moves them further off the region where
the text encoder's rows live. A directional word keeps each vector at one norm, the
vocabulary's median row norm: only its direction is learned. Search among such words should
stay on that sphere, so here

- `sphere_slerp` moves along the great circle between two words (Shoemake 1985, "Animating
  rotation with quaternion curves", SIGGRAPH) and may reach past them (t < 0 or t > 1: the
  spherical analogue of the BLX-α blend of Eshelman & Schaffer 1993);
- `tangent_mutation` draws Gaussian noise, keeps its part in the tangent plane at the word and
  follows the geodesic it points along (the exponential map of the sphere; Absil, Mahony &
  Sepulchre 2008, "Optimization Algorithms on Matrix Manifolds", ch. 4 and 5, on tangent
  vectors and retractions);
- `to_sphere` retracts any vector to the sphere by rescaling (the projection retraction).

Every function keeps each vector (the last dimension) at the given radius. An SDXL word is
[clip_l | clip_g] side by side (`layout`, the parts' widths): each part lives on its own
sphere, with its own radius (`radii`, one per part). Randomness comes from an explicit
torch.Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.recipes import to_sphere as recipe_sphere
from ..core.recipes import vocabulary_radius

EPS = 1e-12


@dataclass(frozen=True)
class Sphere:
    """Where words live: each part (widths `layout`) at its radius (`radii`)."""

    radii: tuple[float, ...]
    layout: tuple[int, ...]

    def __post_init__(self):
        _check(self.layout, self.radii)


def _parts(x: torch.Tensor, layout: tuple[int, ...]) -> list[torch.Tensor]:
    if sum(layout) != x.shape[-1]:
        raise ValueError(f"layout {layout} does not fit width {x.shape[-1]}")
    return list(x.split(list(layout), dim=-1))


def _check(layout: tuple[int, ...], radii: tuple[float, ...]) -> None:
    if len(layout) != len(radii):
        raise ValueError(f"{len(radii)} radii for a layout of {len(layout)} parts")
    if any(not r > 0 for r in radii):
        raise ValueError(f"radii {radii}: must be positive")


def vocabulary_radii(table: torch.Tensor, layout: tuple[int, ...]) -> tuple[float, ...]:
    """The median row norm of each part of a token table [V, d] (the sphere a directional
    word of that model lives on: the recipe's own radius)."""
    return tuple(vocabulary_radius(table, layout))


def to_sphere(x: torch.Tensor, radii: tuple[float, ...], layout: tuple[int, ...]) -> torch.Tensor:
    """Each part of each vector rescaled to its radius (a zero vector stays zero): the
    directional recipe's retraction, in double precision."""
    _check(layout, radii)
    return recipe_sphere(x.double(), layout, list(radii)).to(x.dtype)


def _slerp_unit(ua: torch.Tensor, ub: torch.Tensor, t: float) -> torch.Tensor:
    """Unit vectors at fraction t of the great circle from ua to ub (unit rows)."""
    cos = (ua * ub).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    parallel = sin.abs() < 1e-6  # the circle is undefined: move along the chord instead
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, torch.full_like(sin, 1 - t), torch.sin((1 - t) * theta) / safe)
    wb = torch.where(parallel, torch.full_like(sin, t), torch.sin(t * theta) / safe)
    return F.normalize(wa * ua + wb * ub, dim=-1, eps=EPS)


def sphere_slerp(
    a: torch.Tensor,
    b: torch.Tensor,
    t: float,
    radii: tuple[float, ...],
    layout: tuple[int, ...],
) -> torch.Tensor:
    """The point at fraction t along the great circle from a's direction to b's, per vector
    and per part, at the parts' radii: t = 0 gives a's direction, t = 1 b's; t outside
    [0, 1] reaches past them along the same circle."""
    _check(layout, radii)
    out = []
    for pa, pb, r in zip(_parts(a, layout), _parts(b, layout), radii):
        ua = F.normalize(pa.double(), dim=-1, eps=EPS)
        ub = F.normalize(pb.double(), dim=-1, eps=EPS)
        out.append(_slerp_unit(ua, ub, float(t)) * r)
    return torch.cat(out, dim=-1).to(a.dtype)


def tangent_noise(x: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise N(0, scale²) per dimension with its component along each vector of x
    removed: a random vector of the tangent plane at x (one part: see `tangent_mutation`)."""
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float64) * scale
    u = F.normalize(x.double(), dim=-1, eps=EPS)
    return (noise - (noise * u).sum(dim=-1, keepdim=True) * u).to(x.dtype)


def exp_map(x: torch.Tensor, v: torch.Tensor, radius: float) -> torch.Tensor:
    """Follow the geodesic of the sphere of `radius` from x's direction along the tangent
    vector v for the length |v| (the exponential map): the result has norm `radius`."""
    u = F.normalize(x.double(), dim=-1, eps=EPS)
    v = v.double()
    length = v.norm(dim=-1, keepdim=True)
    angle = length / radius
    step = torch.where(length > 0, v / length.clamp_min(EPS), torch.zeros_like(v))
    return (radius * (torch.cos(angle) * u + torch.sin(angle) * step)).to(x.dtype)


def tangent_mutation(
    x: torch.Tensor,
    scale: float,
    radii: tuple[float, ...],
    layout: tuple[int, ...],
    generator: torch.Generator,
) -> torch.Tensor:
    """x moved by Gaussian noise of `scale` per dimension kept in the tangent plane at x and
    mapped onto the sphere along the geodesic, per part: the direction changes, the norm is
    each part's radius. scale 0 only retracts x to the sphere."""
    _check(layout, radii)
    out = []
    for part, r in zip(_parts(x, layout), radii):
        if scale == 0:
            out.append(to_sphere(part, (r,), (part.shape[-1],)))
            continue
        out.append(exp_map(part, tangent_noise(part, scale, generator), r))
    return torch.cat(out, dim=-1).to(x.dtype)


def sphere_crossover(
    a: torch.Tensor,
    b: torch.Tensor,
    kind: str,
    radii: tuple[float, ...],
    layout: tuple[int, ...],
    generator: torch.Generator,
    alpha: float = 0.3,
) -> torch.Tensor:
    """A child of two words on the sphere. slerp: a uniform point of the arc between them;
    blend: a uniform point of the arc widened by α of its length on both sides (t in
    [-α, 1 + α]); uniform: each dimension from either parent, then retracted to the sphere
    (Syswerda 1989); none: a's direction."""
    if kind in ("slerp", "blend"):
        reach = alpha if kind == "blend" else 0.0
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        return sphere_slerp(a, b, -reach + u * (1 + 2 * reach), radii, layout)
    if kind == "uniform":
        mask = torch.rand(a.shape, generator=generator) < 0.5
        return to_sphere(torch.where(mask, a, b), radii, layout)
    if kind == "none":
        return to_sphere(a.clone(), radii, layout)
    raise ValueError(f"crossover {kind!r}: choose one of slerp, blend, uniform, none")
