"""Search in embedding space (pure functions on tensors): mixing, word arithmetic, inspection,
and the operators of a genetic algorithm over learned embeddings.

A learned word is a tensor [N, d] (N vectors of the text encoder's width d). Every function
here takes and returns such tensors (or stacks of them [K, N, d]) and never touches a model,
a file or the global random state: randomness comes from an explicit torch.Generator.

Averaging vectors shrinks their norm (the mean of two unit vectors at angle θ has norm
cos(θ/2)), and a token row of unusual norm draws differently from the vocabulary's rows; so
`mix` offers the plain weighted mean, a norm-preserving mean (the mean direction rescaled to
the weighted mean of the inputs' norms, per vector) and spherical interpolation (Shoemake 1985);
given a `Sphere`, each blend is kept on it (`sphere_mix`: directional words stay at the
vocabulary's norm).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import OnewordError
from .sphere import Sphere, sphere_crossover, sphere_slerp, tangent_mutation, to_sphere

MIX_METHODS = ("mean", "norm-mean", "slerp")
SELECTIONS = ("top-k", "tournament")
CROSSOVERS = ("uniform", "blend", "slerp", "none")


# -- mixing ----------------------------------------------------------------------------------
def normalized_weights(count: int, weights: list[float] | None = None) -> torch.Tensor:
    """Weights [count] summing to one (equal when None); they must be >= 0 with a positive sum."""
    w = (
        torch.ones(count, dtype=torch.float64)
        if weights is None
        else torch.tensor([float(x) for x in weights], dtype=torch.float64)
    )
    if len(w) != count:
        raise ValueError(f"{len(w)} weights for {count} embeddings")
    if not bool(w.isfinite().all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError("weights must be finite, non-negative and with a positive sum")
    return w / w.sum()


def weighted_mean(vectors: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
    """Σ w_i · v_i of same-shape tensors [N, d] (weights normalized to sum to one)."""
    w = normalized_weights(len(vectors), weights)
    stack = torch.stack([v.double() for v in vectors])
    return torch.einsum("k,k...->...", w, stack).to(vectors[0].dtype)


def norm_preserving_mean(
    vectors: list[torch.Tensor], weights: list[float] | None = None
) -> torch.Tensor:
    """The weighted mean's direction, with each row rescaled to the weighted mean of the
    inputs' row norms (so averaging does not shrink the rows)."""
    w = normalized_weights(len(vectors), weights)
    mean = weighted_mean(vectors, weights).double()
    norms = torch.stack([v.double().norm(dim=-1) for v in vectors])  # [K, N]
    target = torch.einsum("k,k...->...", w, norms)
    return (F.normalize(mean, dim=-1) * target[..., None]).to(vectors[0].dtype)


def slerp(
    a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, eps: float = 1e-7
) -> torch.Tensor:
    """Spherical linear interpolation per row (Shoemake 1985, "Animating rotation with
    quaternion curves", SIGGRAPH), with the norm interpolated linearly.

    The direction moves along the great circle from a to b at constant angular speed;
    t = 0 gives a, t = 1 gives b. Nearly parallel rows fall back to a linear interpolation.
    t may be a tensor broadcasting against the rows' leading shape (e.g. [N, 1] or [N, d]
    is not allowed: one t per row at most)."""
    a64, b64 = a.double(), b.double()
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() and t.shape[-1] != 1:
        t = t[..., None]
    na, nb = a64.norm(dim=-1, keepdim=True), b64.norm(dim=-1, keepdim=True)
    ua, ub = a64 / na.clamp_min(eps), b64 / nb.clamp_min(eps)
    cos = (ua * ub).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * theta) / safe)
    wb = torch.where(parallel, t, torch.sin(t * theta) / safe)
    direction = wa * ua + wb * ub
    norm = (1 - t) * na + t * nb
    return (F.normalize(direction, dim=-1) * norm).to(a.dtype)


def slerp_mean(
    vectors: list[torch.Tensor], weights: list[float] | None = None, step=None
) -> torch.Tensor:
    """A weighted spherical mix of several embeddings by successive slerps: the running mix
    of the first i inputs moves towards input i+1 by w_{i+1} / (w_1 + … + w_{i+1}). For two
    inputs it is exactly slerp(a, b, w_b); for more it approximates the spherical mean.
    step(a, b, t): the slerp taken (default `slerp`; `sphere_mix` walks the sphere's)."""
    step = step or slerp
    w = normalized_weights(len(vectors), weights)
    out, seen = vectors[0], float(w[0])
    for v, wi in zip(vectors[1:], w[1:].tolist()):
        seen += wi
        out = step(out, v, wi / seen if seen > 0 else 0.0)
    return out


def sphere_mix(
    vectors: list[torch.Tensor], weights: list[float] | None, method: str, sphere: Sphere
) -> torch.Tensor:
    """A blend kept on the sphere, each part of each vector at its radius. slerp: successive
    steps along great circles (`slerp_mean` with `sphere.sphere_slerp`); mean and norm-mean:
    the weighted mean's direction, the extrinsic mean of points on a sphere put back on it
    (Buss & Fillmore 2001, "Spherical averages and applications to spherical splines and
    interpolation", ACM Transactions on Graphics)."""
    if method == "slerp":

        def step(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
            return sphere_slerp(a, b, t, sphere.radii, sphere.layout)

        blended = slerp_mean(vectors, weights, step)
    elif method in ("mean", "norm-mean"):
        blended = weighted_mean(vectors, weights)
    else:
        raise ValueError(f"mix method {method!r}: choose one of {', '.join(MIX_METHODS)}")
    return to_sphere(blended, sphere.radii, sphere.layout)


def mix(
    vectors: list[torch.Tensor],
    weights: list[float] | None = None,
    method: str = "norm-mean",
    sphere: Sphere | None = None,
) -> torch.Tensor:
    """Mix same-shape embeddings [N, d]: mean, norm-mean (norm-preserving) or slerp; on
    `sphere` when given (`sphere_mix`)."""
    if not vectors:
        raise ValueError("nothing to mix")
    shapes = {tuple(v.shape) for v in vectors}
    if len(shapes) != 1:
        raise ValueError(f"embeddings of different shapes {sorted(shapes)}")
    if sphere is not None:
        return sphere_mix(vectors, weights, method, sphere)
    if method == "mean":
        return weighted_mean(vectors, weights)
    if method == "norm-mean":
        return norm_preserving_mean(vectors, weights)
    if method == "slerp":
        return slerp_mean(vectors, weights)
    raise ValueError(f"mix method {method!r}: choose one of {', '.join(MIX_METHODS)}")


def mix_by_layout(
    vectors: list[torch.Tensor],
    layout: tuple[int, ...],
    weights: list[float] | None = None,
    method: str = "norm-mean",
    sphere: Sphere | None = None,
) -> torch.Tensor:
    """Mix embeddings whose rows hold several text encoders' vectors side by side (an SDXL
    word is [clip_l | clip_g]): each part on its own, with the same weights, so norm-mean and
    slerp keep each part's norm. One part: `mix`. On `sphere` (which knows the parts): each
    part at its radius."""
    if len(layout) == 1 or sphere is not None:
        return mix(vectors, weights, method, sphere)
    if sum(layout) != vectors[0].shape[-1]:
        raise ValueError(f"layout {layout} does not fit width {vectors[0].shape[-1]}")
    parts = zip(*(v.split(list(layout), dim=-1) for v in vectors))
    return torch.cat([mix(list(part), weights, method) for part in parts], dim=-1)


# -- arithmetic on words ---------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One term of a word expression: coefficient × word (a learned token or vocabulary)."""

    coefficient: float
    word: str


_TERM = re.compile(
    r"""\s*([+-])?\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*?\s*)?("[^"]*"|'[^']*'|[^\s+*"']+)"""
)


def parse_expression(text: str) -> list[Term]:
    """Terms of e.g. `"<my-cat>" - "cat" + 0.5 * dog` (quotes optional for one-word terms).

    The vector-offset analogy of word embeddings (Mikolov et al. 2013, "Linguistic
    regularities in continuous space word representations")."""
    terms, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot read the expression at {text[pos:]!r}")
        sign, number, word = m.groups()
        if terms and sign is None:
            raise ValueError(f"missing + or - before {word}")
        coefficient = float(number) if number else 1.0
        terms.append(Term(-coefficient if sign == "-" else coefficient, word.strip("\"'")))
        pos = m.end()
    if not terms:
        raise ValueError("empty expression")
    return terms


def combine(terms: list[tuple[float, torch.Tensor]], keep_norm: bool = True) -> torch.Tensor:
    """Σ coefficient · vectors; a term of one row [1, d] broadcasts over N rows. keep_norm
    rescales each result row to the norm of the first term's row (the learned word's scale)."""
    rows = max(v.shape[0] for _, v in terms)
    for _, v in terms:
        if v.shape[0] not in (1, rows):
            raise ValueError(f"terms of {v.shape[0]} and {rows} vectors cannot be combined")
    out = sum(c * v.double().expand(rows, -1) for c, v in terms)
    if keep_norm:
        first = terms[0][1].double().expand(rows, -1).norm(dim=-1, keepdim=True)
        out = F.normalize(out, dim=-1) * first
    return out.to(terms[0][1].dtype)


# -- inspection ------------------------------------------------------------------------------
def nearest_rows(
    vectors: torch.Tensor, table: torch.Tensor, k: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices [N, k], cosines [N, k]) of the k table rows [V, d] most cosine-similar to
    each vector [N, d], best first."""
    sims = F.normalize(vectors.float(), dim=-1) @ F.normalize(table.float(), dim=-1).T
    values, indices = sims.topk(min(k, table.shape[0]), dim=-1)
    return indices, values


def norm_percentile(norms: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """[N] percent of the vocabulary's row norms below each norm."""
    vocab = table.float().norm(dim=-1)
    return (vocab[None, :] < norms.float()[:, None]).double().mean(dim=1) * 100


def norm_summary(table: torch.Tensor) -> dict[str, float]:
    """Mean, std, 5th, 50th and 95th percentile of the vocabulary's row norms."""
    n = table.float().norm(dim=-1).double()
    q = torch.quantile(n, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    return {
        "mean": float(n.mean()),
        "std": float(n.std()),
        "p5": float(q[0]),
        "p50": float(q[1]),
        "p95": float(q[2]),
    }


def cosine_matrix(embeddings: list[torch.Tensor]) -> torch.Tensor:
    """[K, K] cosine between embeddings, each flattened over its N rows."""
    flat = F.normalize(torch.stack([e.double().reshape(-1) for e in embeddings]), dim=-1)
    return flat @ flat.T


# -- evolution -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Breeding:
    """How one generation makes children: parent selection, crossover, mutation, elitism.

    mutation: Gaussian noise of this many vocabulary standard deviations (per dimension)."""

    selection: str = "tournament"
    top_k: int = 4  # top-k selection: parents drawn from the k fittest
    tournament_size: int = 3
    crossover: str = "blend"
    blend_alpha: float = 0.3
    mutation: float = 0.1
    elites: int = 1

    def __post_init__(self):
        if self.selection not in SELECTIONS:
            raise OnewordError(
                f"--selection {self.selection}: choose one of {', '.join(SELECTIONS)}"
            )
        if self.crossover not in CROSSOVERS:
            raise OnewordError(
                f"--crossover {self.crossover}: choose one of {', '.join(CROSSOVERS)}"
            )
        if self.top_k < 1 or self.tournament_size < 1:
            raise OnewordError("--top-k and --tournament-size must be 1 or more")
        if self.mutation < 0 or self.blend_alpha < 0 or self.elites < 0:
            raise OnewordError("--mutation, --blend-alpha and --elites must be 0 or more")


def select_top_k(
    fitness: torch.Tensor, count: int, k: int, generator: torch.Generator
) -> torch.Tensor:
    """[count] parent indices drawn uniformly from the k fittest (truncation selection);
    candidates without a fitness (NaN) only when none has one."""
    order = _fitness_order(fitness)[: max(1, k)]
    rated = order[~torch.isnan(fitness.double()[order])]
    pool = rated if len(rated) else order
    return pool[torch.randint(len(pool), (count,), generator=generator)]


def select_tournament(
    fitness: torch.Tensor, count: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """[count] parent indices, each the fittest of `size` drawn at random with replacement
    among the candidates with a fitness (tournament selection, Goldberg & Deb 1991)."""
    f = torch.nan_to_num(fitness.double(), nan=float("-inf"))
    rated = torch.nonzero(~torch.isnan(fitness.double())).flatten()
    pool = rated if len(rated) else torch.arange(len(f))
    entrants = pool[torch.randint(len(pool), (count, size), generator=generator)]
    best = f[entrants].argmax(dim=1)
    return entrants[torch.arange(count), best]


def _fitness_order(fitness: torch.Tensor) -> torch.Tensor:
    """Indices best first (ties in index order, NaN last)."""
    f = torch.nan_to_num(fitness.double(), nan=float("-inf"))
    return torch.tensor(sorted(range(len(f)), key=lambda i: (-float(f[i]), i)), dtype=torch.long)


def crossover(
    a: torch.Tensor, b: torch.Tensor, kind: str, generator: torch.Generator, alpha: float = 0.3
) -> torch.Tensor:
    """A child of two parents [N, d].

    uniform: each dimension from either parent with probability ½ (Syswerda 1989);
    blend: BLX-α, each dimension uniform in the parents' interval widened by α on both sides
    (Eshelman & Schaffer 1993); slerp: a point on the great circle between them at a uniform
    random t (Shoemake 1985); none: a copy of a."""
    if kind == "uniform":
        mask = torch.rand(a.shape, generator=generator) < 0.5
        return torch.where(mask, a, b)
    if kind == "blend":
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        width = hi - lo
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype)
        return lo - alpha * width + u * (1 + 2 * alpha) * width
    if kind == "slerp":
        t = float(torch.rand((), generator=generator))
        return slerp(a, b, t)
    if kind == "none":
        return a.clone()
    raise ValueError(f"crossover {kind!r}: choose one of {', '.join(CROSSOVERS)}")


def mutate(
    x: torch.Tensor, strength: float, spread: float, generator: torch.Generator
) -> torch.Tensor:
    """x + N(0, (strength · spread)²) per dimension; spread is the vocabulary's per-dimension
    standard deviation, so strength is in units of the vocabulary's own spread."""
    if strength == 0:
        return x.clone()
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x + strength * spread * noise


@dataclass(frozen=True)
class Child:
    """A new embedding and where it came from (indices into the parents' population)."""

    vectors: torch.Tensor  # [N, d]
    parents: tuple[int, ...]
    relation: str  # "elite", "crossover-blend+mutation", ...


def next_generation(
    population: torch.Tensor,
    fitness: torch.Tensor,
    size: int,
    breeding: Breeding,
    spread: float,
    generator: torch.Generator,
    sphere: Sphere | None = None,
) -> list[Child]:
    """`size` children of a population [P, N, d] with fitness [P] (higher is better; NaN is
    never chosen over a number): the `elites` fittest unchanged, then children of two parents
    picked by the selection, crossed and mutated. sphere: cross and mutate on it (slerp
    blends, tangent-space noise: `sphere.sphere_crossover`, `sphere.tangent_mutation`), so
    that every child but the elites has each vector at the sphere's radius."""
    order = _fitness_order(fitness)
    children = [
        Child(population[i].clone(), (int(i),), "elite")
        for i in order[: min(breeding.elites, size, len(order))].tolist()
    ]
    count = size - len(children)
    if count <= 0:
        return children
    if breeding.selection == "top-k":
        picks = select_top_k(fitness, 2 * count, breeding.top_k, generator)
    else:
        picks = select_tournament(fitness, 2 * count, breeding.tournament_size, generator)
    relation = "sphere-" if sphere is not None else "crossover-"
    relation += breeding.crossover + ("+mutation" if breeding.mutation else "")
    for a, b in picks.view(count, 2).tolist():
        pa, pb, alpha = population[a], population[b], breeding.blend_alpha
        if sphere is None:
            child = crossover(pa, pb, breeding.crossover, generator, alpha)
            child = mutate(child, breeding.mutation, spread, generator)
        else:
            radii, layout = sphere.radii, sphere.layout
            child = sphere_crossover(pa, pb, breeding.crossover, radii, layout, generator, alpha)
            scale = breeding.mutation * spread
            child = tangent_mutation(child, scale, radii, layout, generator)
        parents = (a,) if a == b or breeding.crossover == "none" else (a, b)
        children.append(Child(child, parents, relation))
    return children
