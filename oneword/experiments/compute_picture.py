"""Quality against compute of a person's own search for a word: how good the best word found
so far is, against what finding it cost.

x is the compute spent: the candidate-steps trained plus the images drawn to score the
candidates (the units of the search bench, bench/search_compute.py). y is the combined score
`oneword score` ranks by, of the best word found so far: label-free (the photos' similarity and
prompt-following; never the world oracle's truth), on one scale across runs scored alike, with
its 95% interval over the images. The curves, for the sweep (or learn run) a word comes from:

- best of k, k = 1..K: the sweep's candidates in seed order, as a sweep of k seeds would have
  trained and scored them;
- successive halving (a sweep that cut candidates): one point, what its rungs cost;
- each chain of evolve generations bred from it: a generation adds its children's cost (their
  training steps, `evolve --train-steps`, where recorded, and their images), and its best
  joins the running best; a chain starts where the whole sweep ends.

The math (`candidate_compute`, `best_so_far`, `running_best`) is pure; `lineage_series` reads
the store; `write_compute_picture` draws with matplotlib beside `oneword score`'s scatter plot.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..files import atomic_write
from .cuts import run_cuts
from .store import RunRecord, Store

log = logging.getLogger(__name__)

COMPUTE_PICTURE = "compute.png"  # in an evaluation's folder, beside scatter.png
BRED_KINDS = ("evolve", "mix")  # runs whose words come from another run's
MAX_CHAINS = 8  # evolve chains drawn (the newest): a legend a person can read


@dataclass(frozen=True)
class Scored:
    """A scored word and what it cost: the steps it trained and the images drawn to score it."""

    word: str  # r3/c01
    score: float  # combined
    half: float  # its 95% interval's half width (NaN: none)
    steps: int
    images: int


@dataclass(frozen=True)
class Point:
    """The best word found for `compute` spent so far."""

    compute: int
    score: float
    half: float
    word: str


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[Point, ...]


# -- the math --------------------------------------------------------------------------------
def candidate_compute(steps: int, images: int) -> int:
    """What one candidate costs: the steps it trained plus the images drawn to score it."""
    if steps < 0 or images < 0:
        raise ValueError(f"steps {steps} and images {images}: must not be negative")
    return int(steps) + int(images)


def best_so_far(scores: Sequence[float]) -> list[int | None]:
    """For k = 1..K: the position of the highest of the first k scores (the first of equal
    ones; a NaN never counts, None while all are NaN)."""
    out: list[int | None] = []
    best = None
    for k, score in enumerate(scores):
        if not math.isnan(score) and (best is None or score > scores[best]):
            best = k
        out.append(best)
    return out


def running_best(groups: Sequence[Sequence[Scored]], start: Point | None = None) -> list[Point]:
    """One point per group of words tried in turn (one seed; one generation): the compute
    spent up to and including the group (from `start`'s), and the best word so far (`start`
    or any group's). A group before any finite score adds no point."""
    compute = start.compute if start is not None else 0
    best = start
    points = []
    for group in groups:
        compute += sum(candidate_compute(s.steps, s.images) for s in group)
        top = best_so_far([s.score for s in group])[-1] if group else None
        if top is not None and (best is None or group[top].score > best.score):
            found = group[top]
            best = Point(compute, found.score, found.half, found.word)
        if best is not None:
            points.append(replace(best, compute=compute))
    return points


# -- the store -------------------------------------------------------------------------------
def lineage_root(store: Store, run: RunRecord) -> RunRecord:
    """The run a run's words come from: itself, or for a bred or mixed run the sweep or learn
    run up its parent runs."""
    seen: set[int] = set()
    while run.kind in BRED_KINDS and run.parent_run and run.id not in seen:
        seen.add(run.id)
        run = store.run(run.parent_run)
    return run


def scored_words(store: Store, run: RunRecord, steps: int) -> list[Scored]:
    """A run's candidates in seed order with their newest combined scores, each having
    trained `steps` steps, with the images drawn to score it; [] while unscored."""
    for ev in reversed(store.evaluations(run.id)):
        scores = store.scores(ev["id"])
        if scores:
            break
    else:
        return []
    cands = sorted(store.candidates(run.id), key=lambda c: (c.seed, c.index))
    return [
        Scored(
            f"{run.name}/{c.name}",
            scores[c.id]["combined"],
            scores[c.id].get("combined_pm", math.nan),
            steps,
            len(store.images(c.id, ev["id"])),
        )
        for c in cands
        if "combined" in scores.get(c.id, {})
    ]


def halving_series(store: Store, run: RunRecord) -> Series | None:
    """A halving sweep as one point: every candidate's steps up to its cut, every image drawn
    at the cuts and after, and the best of the words it kept."""
    cuts = run_cuts(store, run.id)
    scored = {s.word: s for s in scored_words(store, run, 0)}
    if not cuts or not scored:
        return None
    cut_at = {c["candidate_id"]: c["step"] for c in cuts if not c["kept"]}
    cands = store.candidates(run.id)
    steps = sum(cut_at.get(c.id, run.step) for c in cands)
    images = sum(len(store.images(c.id)) for c in cands)
    kept = [scored[w] for w in (f"{run.name}/{c.name}" for c in cands if c.id not in cut_at)]
    (point,) = running_best([kept or list(scored.values())])
    return Series(f"successive halving ({run.name})", (replace(point, compute=steps + images),))


def evolve_chains(store: Store, root: RunRecord) -> list[list[RunRecord]]:
    """Every line of generations bred from `root`, first generation first (a generation bred
    from twice starts two lines)."""
    children: dict[int, list[RunRecord]] = {}
    for r in store.runs("evolve"):
        children.setdefault(r.parent_run, []).append(r)
    chains, stack = [], [(root, [])]
    while stack:
        run, path = stack.pop()
        kids = [k for k in children.get(run.id, []) if k.id not in {p.id for p in path}]
        if not kids and path:
            chains.append(path)
        stack += [(kid, path + [kid]) for kid in reversed(kids)]
    return sorted(chains, key=lambda chain: [r.id for r in chain])


def chain_series(store: Store, chain: list[RunRecord], start: Point) -> Series | None:
    """A line of generations from the end of the sweep (its first point, `start`), up to its
    first unscored generation."""
    groups = []
    for run in chain:
        steps = int(run.settings.get("evolve", {}).get("train_steps") or 0)
        words = scored_words(store, run, steps)
        if not words:
            break
        groups.append(words)
    if not groups:
        return None
    steps = int(chain[0].settings.get("evolve", {}).get("train_steps") or 0)
    how = f"children trained {steps} steps" if steps else "children as bred"
    names = chain[0].name if len(groups) == 1 else f"{chain[0].name}…{chain[len(groups) - 1].name}"
    return Series(f"evolution {names} ({how})", (start, *running_best(groups, start)))


def lineage_series(store: Store, run: RunRecord) -> list[Series]:
    """The curves of the lineage `run` belongs to (see the module's description)."""
    root = lineage_root(store, run)
    if root.settings.get("halving"):
        halving = halving_series(store, root)
        return [halving] if halving is not None else []
    seeds = scored_words(store, root, root.step)
    if not seeds:
        return []
    best_of = tuple(running_best([[word] for word in seeds]))
    series = [Series(f"best of k seeds ({root.name}, k = 1…{len(seeds)})", best_of)]
    for chain in evolve_chains(store, root)[-MAX_CHAINS:]:
        found = chain_series(store, chain, best_of[-1])
        if found is not None:
            series.append(found)
    return series


# -- the picture -----------------------------------------------------------------------------
def draw_series(series: list[Series], path: Path, title: str) -> Path:
    """The curves as a PNG (written atomically): each a step line of the best score so far,
    with its interval where there is one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for line in series:
        x = [p.compute for p in line.points]
        y = [p.score for p in line.points]
        err = [0.0 if math.isnan(p.half) else p.half for p in line.points]
        marker = "o" if len(x) > 1 else "s"
        ax.errorbar(
            x, y, yerr=err, label=line.label, drawstyle="steps-post", marker=marker,
            markersize=4, capsize=2,
        )  # fmt: skip
    ax.set_xlabel("compute: candidate-steps trained + images drawn to score")
    ax.set_ylabel("combined score of the best word so far")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def write_compute_picture(store: Store, run: RunRecord, path: Path) -> Path | None:
    """The quality-against-compute picture of `run`'s lineage at `path`; None when there is
    nothing scored to draw, or no matplotlib to draw with."""
    series = lineage_series(store, run)
    if not series:
        return None
    root = lineage_root(store, run)
    title = f"{root.name} {root.token}: the best word found against compute (label-free score)"
    try:
        return draw_series(series, path, title)
    except ImportError as exc:
        log.warning("no quality-against-compute picture: %s (pip install matplotlib)", exc)
        return None
