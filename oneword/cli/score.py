"""`oneword score`: draw and score every candidate of a run, ranked."""

from __future__ import annotations

import argparse

from ..errors import OnewordError
from .options import (
    add_device_options,
    add_project_option,
    add_ray_options,
    add_scoring_options,
    load_ray_cluster,
    score_settings,
)
from .progress import ProgressBar
from .vocabulary import add_image_seed_option, draw_command, next_commands


def register(sub) -> None:
    p = sub.add_parser(
        "score",
        help="draw and score every candidate of a run, ranked",
        description="Draw M images per candidate over a prompt set, score "
        "their fidelity to the photos and to the prompts, and "
        "rank the candidates (table, report.html, scatter plot).",
    )
    p.add_argument("run", help="a run id (r7 or 7), 'last', or a run folder")
    p.add_argument(
        "--prompts",
        default="auto",
        help="object, live, world, or a file of prompts with {} for the word "
        "(default: DreamBench live prompts for cats/dogs, object prompts else)",
    )
    p.add_argument("--prompt-limit", type=int, help="use the first N prompts only")
    p.add_argument("--class-word", help="the subject's class word (default: the run's --init)")
    p.add_argument(
        "-n",
        "--images",
        type=int,
        help="images per candidate, cycling the prompts (default: one per prompt)",
    )
    add_image_seed_option(p, old="--seed")
    p.add_argument(
        "--subject", help="world model: the oracle's subject id (default: from the class word)"
    )
    add_scoring_options(p)
    add_device_options(p)
    add_ray_options(p)
    add_project_option(p)
    p.set_defaults(func=_cmd_score)


def _cmd_score(a: argparse.Namespace) -> int:
    from ..experiments.report import ranked_table
    from ..experiments.scoring import score

    settings = score_settings(
        a,
        prompts=a.prompts,
        prompt_limit=a.prompt_limit,
        class_word=a.class_word,
        images=a.images,
        seed=a.image_seed,
        subject=a.subject,
    )
    if a.ray is not None:
        board = load_ray_cluster().ray_score(
            a.run, settings, a.project, ProgressBar(), a.ray or None, a.ray_groups
        )
    elif a.ray_groups is not None:
        raise OnewordError("--ray-groups: only with --ray")
    else:
        board = score(a.run, settings, a.project, on_event=ProgressBar())
    print(
        f"run {board.run.name} ({board.run.token}), evaluation e{board.evaluation_id}, "
        f"judge {board.judge}, {len(board.prompts)} prompts:"
    )
    print(ranked_table(board))
    print(f"report: {board.report}")
    print(f"plot:   {board.plot}")
    run = board.run
    print(next_commands(a.project, draw_command(run.token, run.name, run.model), "oneword serve"))
    return 0
