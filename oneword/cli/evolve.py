"""`oneword evolve`: breed new candidates from a run's best ones."""

from __future__ import annotations

import argparse

from ..errors import OnewordError
from ..search.embedding_ops import CROSSOVERS, SELECTIONS
from .options import (
    add_device_options,
    add_project_option,
    add_ray_options,
    add_scoring_options,
    add_sphere_options,
    load_ray_cluster,
    score_settings,
)
from .progress import ProgressBar
from .vocabulary import add_image_seed_option, draw_command, next_commands


def register(sub) -> None:
    p = sub.add_parser(
        "evolve",
        help="breed new candidates from a run's best ones",
        description="Genetic search over a run's candidates: selection, "
        "crossover, Gaussian mutation scaled to the vocabulary's "
        "spread, elitism (or CMA-ES). Each generation is a new run "
        "whose candidates are recorded with their parents. Fitness: "
        "your ratings (one generation at a time: rate, then evolve "
        "again) or an automatic score.",
    )
    p.add_argument("run", help="the run to breed from (r7, 7, 'last' or its folder)")
    p.add_argument("--generations", type=int, default=1, help="generations to breed (default 1)")
    p.add_argument("--population", type=int, default=8, help="children per generation")
    p.add_argument(
        "--strategy",
        choices=("ga", "cma"),
        default="ga",
        help="ga: genetic algorithm (default); cma: CMA-ES (automatic fitness only)",
    )
    p.add_argument(
        "--fitness",
        default="auto",
        help="rating, or a score metric: combined, concept_fidelity, clip_i..., "
        "or a sum such as concept_fidelity+prompt_fidelity (default auto: "
        "ratings if any, else combined)",
    )
    p.add_argument(
        "--selection", choices=SELECTIONS, default="tournament", help="how parents are picked"
    )
    p.add_argument("--top-k", type=int, default=4, help="top-k selection: parents (default 4)")
    p.add_argument(
        "--tournament-size", type=int, default=3, help="tournament selection: entrants (3)"
    )
    p.add_argument(
        "--crossover", choices=CROSSOVERS, default="blend", help="how two parents combine"
    )
    p.add_argument(
        "--blend-alpha", type=float, default=0.3, help="blend crossover: reach past the parents"
    )
    p.add_argument(
        "--mutation",
        type=float,
        default=0.1,
        help="Gaussian mutation in vocabulary standard deviations (default 0.1)",
    )
    p.add_argument("--elites", type=int, default=1, help="best parents kept as they are (1)")
    p.add_argument(
        "--train-steps",
        type=int,
        help="train each generation's children this many more steps from their bred rows, "
        "batched as one sweep, before they are drawn and judged (population-based training)",
    )
    add_sphere_options(
        p,
        "blend (slerp) and mutate (tangent-space noise)",
        "when the run's words are directional",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the generations already bred from these runs and go on with a stopped one",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the breeding (default 0)")
    p.add_argument(
        "--no-render", action="store_true", help="rating fitness: do not draw the children"
    )
    p.add_argument("--prompts", default="auto", help="as for `oneword score`")
    p.add_argument("--prompt-limit", type=int, help="use the first N prompts only")
    p.add_argument("--class-word", help="the subject's class word (default: the run's --init)")
    p.add_argument("-n", "--images", type=int, help="images per candidate")
    add_image_seed_option(p)
    p.add_argument(
        "--subject", help="world model: the oracle's subject id (default: from the class word)"
    )
    add_scoring_options(p)
    add_device_options(p)
    add_project_option(p)
    add_ray_options(p)
    p.set_defaults(func=_cmd_evolve)


def _scorer(a: argparse.Namespace):
    """Plain scoring, or scoring on Ray workers with --ray."""
    from ..experiments.scoring import score_run

    if a.ray is None:
        if a.ray_groups is not None:
            raise OnewordError("--ray-groups: only with --ray")
        return score_run
    ray_score_run = load_ray_cluster().ray_score_run
    return lambda store, run, settings, on_event: ray_score_run(
        store, run, settings, on_event, a.ray or None, a.ray_groups
    )


def _cmd_evolve(a: argparse.Namespace) -> int:
    from ..search.embedding_ops import Breeding
    from ..search.evolve import EvolveSettings, evolve
    from ..search.trained import ChildTraining

    breeding = Breeding(
        selection=a.selection,
        top_k=a.top_k,
        tournament_size=a.tournament_size,
        crossover=a.crossover,
        blend_alpha=a.blend_alpha,
        mutation=a.mutation,
        elites=a.elites,
    )
    settings = EvolveSettings(
        generations=a.generations,
        population=a.population,
        breeding=breeding,
        strategy=a.strategy,
        fitness=a.fitness,
        seed=a.seed,
        on_sphere=a.on_sphere,
    )
    training = None
    if a.train_steps is not None:
        training = ChildTraining(a.train_steps, a.device, a.dtype)
    scoring = (
        None
        if a.no_render
        else score_settings(
            a,
            prompts=a.prompts,
            prompt_limit=a.prompt_limit,
            class_word=a.class_word,
            images=a.images,
            seed=a.image_seed,
            subject=a.subject,
        )
    )
    runs = evolve(
        a.run, settings, scoring, a.project, ProgressBar(), _scorer(a), training, a.resume
    )
    for run in runs:
        print(
            f"generation {run.settings['evolve']['generation']}: {run.name} "
            f"({a.population} candidates, fitness "
            f"{run.settings['evolve']['fitness']}{trained_note(run)}) "
            f"in {run.folder}"
        )
    last = runs[-1]
    print(
        next_commands(
            a.project,
            "oneword serve",
            draw_command(last.token, last.name, last.model),
            f"oneword evolve {last.name}",
        )
    )
    return 0


def trained_note(run) -> str:
    steps = run.settings["evolve"].get("train_steps")
    return f", trained {steps} more steps" if steps else ""
