"""CMA-ES over one learned word (`evolve --strategy cma`): the covariance matrix adaptation
evolution strategy (Hansen & Ostermeier 2001), in its diagonal variant (Ros & Hansen 2008,
"A simple modification in CMA-ES achieving linear time and space complexity") for the 768
dimensions and more of a Stable Diffusion word, from the `cma` library; automatic fitness
only."""

from __future__ import annotations

import torch

from ..events import EventSink, Message
from ..experiments.scoring import ScoreSettings, score_run
from ..experiments.store import RunRecord, Store
from .embedding_ops import Child
from .evolve import EvolveSettings, fitness_of, load_population, record_children


def evolve_cma(
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
