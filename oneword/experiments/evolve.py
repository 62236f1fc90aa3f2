"""Evolution of learned embeddings, recorded in the experiment store.

A generation is a run of kind "evolve": its candidates are children made by the operators of
`embedding_ops` from the candidates of the run before (no training), each recorded with its
parents in the store's lineage table. Fitness is a person's ratings or an automatic score
(`oneword score`); the children are then drawn (and scored, for automatic fitness) so that
the next generation can be bred. `strategy="cma"` replaces selection, crossover and mutation
by CMA-ES (Hansen & Ostermeier 2001; the diagonal variant of Ros & Hansen 2008 for the 768
dimensions of SD) from the `cma` library, for automatic fitness.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..adapters.loading import load_model
from ..core.embeddings import LearnedEmbedding, write_embedding_files
from ..core.generate import Sampling, draw, register_words
from ..errors import OnewordError
from ..events import EventSink, Message, Progressed, ignore
from ..files import file_stem
from .embedding_ops import Breeding, Child, mix_by_layout, next_generation
from .naming import word_run
from .recording import recording_in
from .scoring import (
    ScoreSettings,
    candidate_embedding,
    prompt_job,
    run_class_word,
    save_candidate_images,
    score_run,
)
from .store import CandidateRecord, RunRecord, Store

log = logging.getLogger(__name__)

STRATEGIES = ("ga", "cma")
RATING_FITNESS = "rating"


@dataclass(frozen=True)
class EvolveSettings:
    """`oneword evolve`: G generations of P children each."""

    generations: int = 1
    population: int = 8
    breeding: Breeding = field(default_factory=Breeding)
    strategy: str = "ga"
    fitness: str = "auto"  # auto, rating, or a score metric (combined, concept_fidelity...)
    seed: int = 0

    def __post_init__(self):
        if self.generations < 1:
            raise OnewordError(f"--generations {self.generations}: must be 1 or more")
        if self.population < 1:
            raise OnewordError(f"--population {self.population}: must be 1 or more")
        if self.strategy not in STRATEGIES:
            raise OnewordError(f"--strategy {self.strategy}: choose one of {', '.join(STRATEGIES)}")
        if self.strategy == "cma" and self.fitness == RATING_FITNESS:
            raise OnewordError("--strategy cma: needs an automatic --fitness, not rating")
        if self.fitness == RATING_FITNESS and self.generations > 1:
            raise OnewordError(
                f"--generations {self.generations}: with --fitness rating a "
                "person rates each generation; breed one at a time"
            )


@dataclass(frozen=True)
class Population:
    run: RunRecord
    candidates: list[CandidateRecord]
    embeddings: list[LearnedEmbedding]

    @property
    def stack(self) -> torch.Tensor:
        return torch.stack([e.vectors.float() for e in self.embeddings])


def load_population(store: Store, run: RunRecord) -> Population:
    cands = store.candidates(run.id)
    if not cands:
        raise OnewordError(f"run {run.name}: has no candidates to breed from")
    return Population(run, cands, [candidate_embedding(store, run, c) for c in cands])


# -- fitness ---------------------------------------------------------------------------------
def rating_of(ratings: list[dict]) -> float:
    """A candidate's rating: the mean over its images (and itself) of the latest rating given
    to each; 0 clears a rating; NaN when unrated."""
    latest: dict = {}
    for r in ratings:
        latest[r["image_id"]] = r["rating"]
    values = [v for v in latest.values() if v > 0]
    return sum(values) / len(values) if values else float("nan")


def latest_scores(store: Store, run: RunRecord) -> dict[int, dict[str, float]]:
    """The newest evaluation of a run that has scores (empty if none)."""
    for ev in reversed(store.evaluations(run.id)):
        found = store.scores(ev["id"])
        if found:
            return found
    return {}


def fitness_of(
    store: Store, run: RunRecord, cands: list[CandidateRecord], fitness: str
) -> tuple[torch.Tensor, str]:
    """(fitness [P], what it is): ratings or a score metric; NaN where missing."""
    ratings = [rating_of(store.ratings(c.id)) for c in cands]
    if fitness == "auto":
        fitness = RATING_FITNESS if any(not math.isnan(r) for r in ratings) else "combined"
    if fitness == RATING_FITNESS:
        if not any(not math.isnan(r) for r in ratings):
            raise OnewordError(
                f"run {run.name}: no candidate is rated yet; rate some "
                "(`oneword rate` or the gallery) or use an automatic --fitness"
            )
        return torch.tensor(ratings, dtype=torch.float64), RATING_FITNESS
    scores = latest_scores(store, run)
    values = [metric_sum(scores.get(c.id, {}), fitness) for c in cands]
    if all(math.isnan(v) for v in values):
        raise OnewordError(
            f"--fitness {fitness}: run {run.name} has no such score; run "
            f"`oneword score {run.name}` first or choose another --fitness"
        )
    return torch.tensor(values, dtype=torch.float64), fitness


def metric_sum(metrics: dict[str, float], names: str) -> float:
    """The sum of the metrics named in 'a+b' (NaN if one is missing)."""
    return sum(metrics.get(n.strip(), float("nan")) for n in names.split("+"))


# -- recording children ----------------------------------------------------------------------
def record_children(
    store: Store,
    parent: Population,
    children: list[Child],
    kind: str,
    info: dict,
    seed: int,
    mutation: float,
) -> RunRecord:
    """A new run holding the children as candidates, with embedding files and lineage."""
    run = parent.run
    settings = {"config": run.settings.get("config", {}), "model": run.model, kind: info}
    with recording_in(
        store, kind, None, run.model, run.token, settings, run.photos, parent_run=run.id
    ) as rec:
        folder = rec.run.folder
        for k, child in enumerate(children):
            parents = [parent.candidates[i] for i in child.parents]
            cand = rec.store.add_candidate(
                rec.run.id,
                k,
                seed + k,
                child.relation,
                mutation if "mutation" in child.relation else 0.0,
                0.0,
                folder / "candidates" / f"c{k:02d}",
            )
            rec.store.add_parents(cand.id, [p.id for p in parents], child.relation)
            meta = {
                **parent.embeddings[child.parents[0]].metadata,
                "run": rec.run.name,
                "candidate": str(k),
                "relation": child.relation,
                "parents": ",".join(f"r{p.run_id}/{p.name}" for p in parents),
            }
            meta.pop("path", None)
            emb = LearnedEmbedding(run.token, child.vectors.float().cpu(), meta)
            written = write_embedding_files(emb, cand.folder, file_stem(run.token, "embedding"))
            rec.files("embedding", written.values(), cand)
    return store.run(rec.run.id)


def vocabulary_spread_of(model_name: str) -> float:
    """The per-dimension standard deviation of a model's token table."""
    from ..core.vectors import vocabulary_spread

    return vocabulary_spread(load_model(model_name, "cpu").vocabulary_table)[1]


def breed(
    run_ref: str,
    settings: EvolveSettings = EvolveSettings(),
    generation: int = 0,
    project: str | Path | None = None,
    spread: float | None = None,
) -> RunRecord:
    """One generation of a genetic algorithm bred from `run_ref`'s fitness; a new run."""
    with Store.open(project) as store:
        return breed_in(store, word_run(store, run_ref), settings, generation, spread)


def breed_in(
    store: Store, run: RunRecord, settings: EvolveSettings, generation: int, spread: float | None
) -> RunRecord:
    """`breed` in an open store."""
    population = load_population(store, run)
    fitness, source = fitness_of(store, population.run, population.candidates, settings.fitness)
    spread = vocabulary_spread_of(population.run.model) if spread is None else spread
    seed = settings.seed * 1_000_003 + generation * 1009
    gen = torch.Generator().manual_seed(seed)
    children = next_generation(
        population.stack, fitness, settings.population, settings.breeding, spread, gen
    )
    info = {
        "generation": generation,
        "source": population.run.name,
        "fitness": source,
        "strategy": "ga",
        "breeding": asdict(settings.breeding),
        "seed": seed,
    }
    return record_children(
        store, population, children, "evolve", info, seed, settings.breeding.mutation
    )


def mix_candidates(
    candidate_ids: list[int],
    weights: list[float] | None = None,
    method: str = "norm-mean",
    project: str | Path | None = None,
) -> RunRecord:
    """A new run (kind mix) with one candidate: the mix of the given candidates."""
    with Store.open(project) as store:
        return _mix_in(store, candidate_ids, weights, method)


def _mix_in(
    store: Store, candidate_ids: list[int], weights: list[float] | None, method: str
) -> RunRecord:
    cands = [store.candidate(i) for i in candidate_ids]
    runs = {c.run_id: store.run(c.run_id) for c in cands}
    embeddings = [candidate_embedding(store, runs[c.run_id], c) for c in cands]
    if len({(tuple(e.vectors.shape), e.layout) for e in embeddings}) != 1:
        raise OnewordError("mix: the candidates have different numbers of vectors or widths")
    vectors = mix_by_layout([e.vectors for e in embeddings], embeddings[0].layout, weights, method)
    parent = Population(runs[cands[0].run_id], cands, embeddings)
    child = Child(vectors, tuple(range(len(cands))), f"mix-{method}")
    info = {
        "method": method,
        "weights": weights,
        "parents": [f"r{c.run_id}/{c.name}" for c in cands],
    }
    return record_children(store, parent, [child], "mix", info, 0, 0.0)


# -- drawing and the loop --------------------------------------------------------------------
def render(
    run_ref: str,
    settings: ScoreSettings,
    project: str | Path | None = None,
    on_event: EventSink = ignore,
    model=None,
) -> int:
    """Draw every candidate of a run (the same prompts and seeds as `score`) without judging;
    the images go to a new evaluation of the run (returned) for a person to rate."""
    with Store.open(project) as store:
        return render_in(store, word_run(store, run_ref), settings, on_event, model)


def render_in(
    store: Store, run: RunRecord, settings: ScoreSettings, on_event: EventSink = ignore, model=None
) -> int:
    """`render` in an open store."""
    population = load_population(store, run)
    class_word = settings.class_word or run_class_word(run) or "thing"
    job = prompt_job(settings, run.model, run.token, class_word)
    evaluation = store.add_evaluation(
        run.id,
        {
            "render": True,
            "prompts": settings.prompts,
            "prompt_limit": settings.prompt_limit,
            "class_word": class_word,
            "images": len(job.drawn),
            "seed": settings.seed,
            "sampling": asdict(settings.sampling),
        },
    )
    folder = (run.folder or store.runs_folder / run.name) / "renders" / f"e{evaluation}"
    store.set_evaluation_folder(evaluation, folder)
    model = model or load_model(run.model, settings.device, settings.dtype)
    words = register_words(model, population.embeddings[:1])
    on_event(Progressed(0, len(population.candidates), "drawing"))
    for k, (cand, emb) in enumerate(zip(population.candidates, population.embeddings)):
        rows = emb.vectors.float()[None].to(model.device)
        images = draw(model, job.drawn, job.seeds, replace(words, rows=rows), settings.sampling)
        paths = save_candidate_images(images, job, folder / cand.name, settings, run.model)
        store.add_images(evaluation, cand.id, list(zip(job.drawn, job.seeds, paths)))
        on_event(Progressed(k + 1, len(population.candidates), "drawing"))
    return evaluation


def drawing_of(store: Store, run: RunRecord, fallback: ScoreSettings) -> tuple[ScoreSettings, bool]:
    """How a run's newest drawing was made (prompts, images, seeds, sampling; the judge where
    it was scored), so that its children are drawn alike and compare; and whether it was
    scored. A run never drawn: `fallback`, not scored."""
    for ev in reversed(store.evaluations(run.id)):
        recorded = ev["settings"]
        if "prompts" not in recorded or "images" not in recorded:
            continue
        same = {k: recorded[k] for k in _DRAWING_FIELDS if k in recorded}
        if isinstance(recorded.get("sampling"), dict):
            same["sampling"] = Sampling(**recorded["sampling"])
        scored = not recorded.get("render") and bool(store.scores(ev["id"]))
        if scored:
            same.update({k: recorded[k] for k in _JUDGE_FIELDS if k in recorded})
        return replace(fallback, **same), scored
    return fallback, False


_DRAWING_FIELDS = ("prompts", "prompt_limit", "class_word", "images", "seed")
_JUDGE_FIELDS = ("judge", "clip_model", "dino_model", "subject", "fidelity_weight")


def draw_like_parents(
    run_ref: str,
    fallback: ScoreSettings,
    project: str | Path | None = None,
    on_event: EventSink = ignore,
    scorer=score_run,
) -> None:
    """Draw a bred or mixed run with its parent run's prompts and seeds; and score it when the
    parents were scored, so that children and parents stand on one scale."""
    with Store.open(project) as store:
        run = word_run(store, run_ref)
        parent = store.run(run.parent_run) if run.parent_run else None
        settings, scored = drawing_of(store, parent, fallback) if parent else (fallback, False)
        if scored:
            scorer(store, run.name, settings, on_event)
        else:
            render_in(store, run, settings, on_event)


def ensure_scored(
    store: Store, run: RunRecord, scoring: ScoreSettings, on_event: EventSink, scorer=score_run
) -> None:
    if not latest_scores(store, run):
        on_event(Message(f"scoring {run.name}"))
        scorer(store, run.name, scoring, on_event)


def evolve(
    run_ref: str,
    settings: EvolveSettings,
    scoring: ScoreSettings | None = None,
    project: str | Path | None = None,
    on_event: EventSink = ignore,
    scorer=score_run,
) -> list[RunRecord]:
    """G generations from `run_ref`; returns the new runs (one per generation).

    scorer(store, run, settings, on_event) scores a generation: `scoring.score_run`, or
    `ray_cluster.ray_score_run` to draw and judge on Ray workers.

    Automatic fitness: each generation is scored with `scoring` (the start run too, if it has
    no scores yet). Rating fitness: one generation, drawn with `scoring`'s prompts for a person
    to rate (or not drawn when scoring is None)."""
    with Store.open(project) as store:
        start = word_run(store, run_ref)
        automatic = settings.fitness != RATING_FITNESS
        if automatic and settings.fitness == "auto":
            ratings = [rating_of(store.ratings(c.id)) for c in store.candidates(start.id)]
            automatic = all(math.isnan(r) for r in ratings)
        if automatic and scoring is None:
            raise OnewordError("automatic fitness needs scoring settings")
        if automatic:
            ensure_scored(store, start, scoring, on_event, scorer)
        spread = vocabulary_spread_of(start.model)
        if settings.strategy == "cma":
            return _evolve_cma(store, start, settings, scoring, on_event, spread, scorer)
        runs, current = [], start
        for g in range(1, settings.generations + 1):
            current = breed_in(store, current, settings, g, spread)
            on_event(Message(f"generation {g}: {current.name}"))
            if automatic:
                scorer(store, current.name, scoring, on_event)
            elif scoring is not None:
                render_in(store, current, scoring, on_event)
            runs.append(current)
        return runs


def _evolve_cma(
    store: Store,
    start: RunRecord,
    settings: EvolveSettings,
    scoring: ScoreSettings,
    on_event: EventSink,
    spread: float,
    scorer=score_run,
) -> list[RunRecord]:
    """CMA-ES from the fittest candidate of `start`, step size mutation × vocabulary spread."""
    import warnings

    with warnings.catch_warnings():  # cma warns when matplotlib (its plots) is missing
        warnings.simplefilter("ignore")
        import cma
    population = load_population(store, start)
    fitness, source = fitness_of(store, start, population.candidates, settings.fitness)
    best = int(torch.nan_to_num(fitness, nan=float("-inf")).argmax())
    shape = population.embeddings[best].vectors.shape
    sigma = max(settings.breeding.mutation, 1e-3) * spread
    es = cma.CMAEvolutionStrategy(
        population.embeddings[best].vectors.double().reshape(-1).numpy(),
        sigma,
        {
            "popsize": settings.population,
            "seed": settings.seed + 1,
            "verbose": -9,
            "CMA_diagonal": True,
        },
    )
    runs, current = [], population
    for g in range(1, settings.generations + 1):
        solutions = es.ask()
        children = [
            Child(
                torch.tensor(x, dtype=torch.float32).view(shape),
                tuple(range(len(current.candidates))),
                "cma",
            )
            for x in solutions
        ]
        info = {
            "generation": g,
            "source": current.run.name,
            "fitness": source,
            "strategy": "cma",
            "sigma": float(es.sigma),
            "seed": settings.seed,
        }
        run = record_children(store, current, children, "evolve", info, settings.seed, 0.0)
        on_event(Message(f"generation {g}: {run.name} (CMA-ES, sigma {es.sigma:.4g})"))
        scorer(store, run.name, scoring, on_event)
        current = load_population(store, run)
        values, _ = fitness_of(store, run, current.candidates, settings.fitness)
        es.tell(solutions, (-torch.nan_to_num(values, nan=-1e9)).tolist())
        runs.append(run)
    return runs
