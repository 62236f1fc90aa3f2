"""Evolution of learned embeddings, recorded in the experiment store.

A generation is a run of kind "evolve": its candidates are children made by the operators of
`embedding_ops` from the candidates of the run before, each recorded with its parents in the
store's lineage table; on the sphere of the vocabulary's median norm (`sphere`) when asked or
when the words are directional. As bred, the children are not trained; with a `ChildTraining`
they train on first (`trained`, population-based training). Fitness is a person's ratings or
an automatic score (`oneword score`); the children are then drawn (and scored, for automatic
fitness) so that the next generation can be bred. `strategy="cma"` replaces selection,
crossover and mutation by CMA-ES (`cma_search`), for automatic fitness.
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
from ..experiments.naming import word_run
from ..experiments.recording import recording_in
from ..experiments.scoring import (
    ScoreSettings,
    candidate_embedding,
    prompt_job,
    run_class_word,
    save_candidate_images,
    score_run,
)
from ..experiments.store import CandidateRecord, RunRecord, Store
from ..experiments.verdicts import latest_scores, rating_of
from ..files import file_stem
from .embedding_ops import Breeding, Child, mix_by_layout, next_generation
from .geometry import Geometry, geometry_of, use_sphere
from .trained import ChildTraining, generation_run, train_children

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
    # Blend and mutate on the sphere of the vocabulary's median row norm (`sphere`); None:
    # when the parent run's words are directional (their norm is fixed there)
    on_sphere: bool | None = None

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


def breed(
    run_ref: str,
    settings: EvolveSettings = EvolveSettings(),
    generation: int = 0,
    project: str | Path | None = None,
    geometry: Geometry | None = None,
    training: ChildTraining | None = None,
    on_event: EventSink = ignore,
) -> RunRecord:
    """One generation of a genetic algorithm bred from `run_ref`'s fitness; a new run (its
    children trained on first with `training`)."""
    with Store.open(project) as store:
        run = word_run(store, run_ref)
        return breed_in(store, run, settings, generation, geometry, training, on_event)


def breed_in(
    store: Store,
    run: RunRecord,
    settings: EvolveSettings,
    generation: int,
    geometry: Geometry | None,
    training: ChildTraining | None = None,
    on_event: EventSink = ignore,
    resumed: RunRecord | None = None,
) -> RunRecord:
    """`breed` in an open store; `resumed`: a stopped trained generation to go on with."""
    population = load_population(store, run)
    fitness, source = fitness_of(store, population.run, population.candidates, settings.fitness)
    geometry = geometry_of(population.run.model) if geometry is None else geometry
    on_sphere = use_sphere(settings.on_sphere, [population.run.settings.get("config", {})])
    seed = settings.seed * 1_000_003 + generation * 1009
    gen = torch.Generator().manual_seed(seed)
    children = next_generation(
        population.stack, fitness, settings.population, settings.breeding, geometry.spread, gen,
        geometry.sphere() if on_sphere else None,
    )  # fmt: skip
    info = {
        "generation": generation,
        "source": population.run.name,
        "fitness": source,
        "strategy": "ga",
        "breeding": asdict(settings.breeding),
        "on_sphere": bool(on_sphere),
        "seed": seed,
    }
    if on_sphere:
        info["radii"] = list(geometry.radii)
    if training is not None:
        return train_children(
            store, run, population.candidates, children, info, training, on_event, resumed
        )
    return record_children(
        store, population, children, "evolve", info, seed, settings.breeding.mutation
    )


def breed_from_ratings(
    run_id: int,
    project: str | Path | None,
    population: int,
    breeding: Breeding,
    seed: int = 0,
    training: ChildTraining | None = None,
    on_event: EventSink = ignore,
    resume: bool = False,
) -> RunRecord:
    """The gallery's next generation: bred from a person's ratings of run `run_id`, its
    children trained on first with `training` (as `evolve --train-steps`). Breeding from the
    same run again (after more ratings) draws other random numbers; `resume`: the trained
    generation a stopped job began goes on from its checkpoint."""
    with Store.open(project) as store:
        record = word_run(store, f"r{run_id}")
        bred = [r for r in store.runs("evolve") if r.parent_run == record.id]
        stopped = bred[-1] if resume and training and bred and stopped_training(bred[-1]) else None
        generation = int(record.settings.get("evolve", {}).get("generation", 0)) + 1
        settings = EvolveSettings(
            generations=1,
            population=population,
            breeding=breeding,
            strategy="ga",
            fitness=RATING_FITNESS,
            seed=seed + 7919 * (len(bred) - (stopped is not None)),
        )
        return breed_in(store, record, settings, generation, None, training, on_event, stopped)


def stopped_training(run: RunRecord) -> bool:
    """Whether a generation is a trained one that stopped before it was done."""
    return run.status != "done" and "train_steps" in run.settings.get("evolve", {})


def mix_candidates(
    candidate_ids: list[int],
    weights: list[float] | None = None,
    method: str = "norm-mean",
    project: str | Path | None = None,
    on_sphere: bool | None = None,
) -> RunRecord:
    """A new run (kind mix) with one candidate: the mix of the given candidates; on the
    sphere of the vocabulary's norm as asked, else (None) when every one is directional."""
    with Store.open(project) as store:
        return _mix_in(store, candidate_ids, weights, method, on_sphere)


def _mix_in(
    store: Store,
    candidate_ids: list[int],
    weights: list[float] | None,
    method: str,
    on_sphere: bool | None,
) -> RunRecord:
    cands = [store.candidate(i) for i in candidate_ids]
    runs = {c.run_id: store.run(c.run_id) for c in cands}
    embeddings = [candidate_embedding(store, runs[c.run_id], c) for c in cands]
    if len({(tuple(e.vectors.shape), e.layout) for e in embeddings}) != 1:
        raise OnewordError("mix: the candidates have different numbers of vectors or widths")
    parent = Population(runs[cands[0].run_id], cands, embeddings)
    configs = [runs[c.run_id].settings.get("config", {}) for c in cands]
    sphere = geometry_of(parent.run.model).sphere() if use_sphere(on_sphere, configs) else None
    vectors = mix_by_layout(
        [e.vectors for e in embeddings], embeddings[0].layout, weights, method, sphere
    )
    child = Child(vectors, tuple(range(len(cands))), f"mix-{method}")
    info = {
        "method": method,
        "weights": weights,
        "parents": [f"r{c.run_id}/{c.name}" for c in cands],
        "on_sphere": sphere is not None,
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
    training: ChildTraining | None = None,
    resume: bool = False,
) -> list[RunRecord]:
    """G generations from `run_ref`; returns the new runs (one per generation).

    scorer(store, run, settings, on_event) scores a generation: `scoring.score_run`, or
    `ray_cluster.ray_score_run` to draw and judge on Ray workers.

    Automatic fitness: each generation is scored with `scoring` (the start run too, if it has
    no scores yet). Rating fitness: one generation, drawn with `scoring`'s prompts for a person
    to rate (or not drawn when scoring is None). training: each generation's children train
    on before they are drawn (`trained`). resume: the generations already bred from the same
    runs are taken as they are, and a stopped trained one goes on from its checkpoint."""
    with Store.open(project) as store:
        start = word_run(store, run_ref)
        automatic = settings.fitness != RATING_FITNESS
        if automatic and settings.fitness == "auto":
            ratings = [rating_of(store.ratings(c.id)) for c in store.candidates(start.id)]
            automatic = all(math.isnan(r) for r in ratings)
        if automatic and scoring is None:
            raise OnewordError("automatic fitness needs scoring settings")
        if settings.strategy == "cma" and training is not None:
            raise OnewordError("--train-steps: only with --strategy ga")
        if automatic:
            ensure_scored(store, start, scoring, on_event, scorer)
        geometry = geometry_of(start.model)
        if settings.strategy == "cma":
            from .cma_search import evolve_cma

            return evolve_cma(store, start, settings, scoring, on_event, geometry.spread, scorer)
        runs, current = [], start
        for g in range(1, settings.generations + 1):
            current = next_run(store, current, settings, g, geometry, training, on_event, resume)
            on_event(Message(f"generation {g}: {current.name}"))
            if automatic:
                ensure_scored(store, current, scoring, on_event, scorer)
            elif scoring is not None and not store.evaluations(current.id):
                render_in(store, current, scoring, on_event)
            runs.append(current)
        return runs


def next_run(
    store: Store,
    current: RunRecord,
    settings: EvolveSettings,
    generation: int,
    geometry: Geometry,
    training: ChildTraining | None,
    on_event: EventSink,
    resume: bool,
) -> RunRecord:
    """Generation `generation` bred from `current`. Resuming: the one bred before, if it
    finished; a stopped trained one, continued; else a new one."""
    found = generation_run(store, current, generation) if resume else None
    if found is not None and found.status == "done":
        on_event(Message(f"generation {generation}: {found.name}, bred before"))
        return found
    trained = found is not None and "train_steps" in found.settings.get("evolve", {})
    resumed = found if trained and training is not None else None
    return breed_in(store, current, settings, generation, geometry, training, on_event, resumed)
