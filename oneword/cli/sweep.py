"""`oneword sweep`: many candidate embeddings of one word in one batched run."""

from __future__ import annotations

import argparse
import time

from .. import api
from ..errors import OnewordError
from .options import (
    add_candidate_options,
    add_model_options,
    add_project_option,
    add_ray_options,
    add_scoring_options,
    add_training_options,
    auto_masking,
    candidate_plan,
    load_ray_cluster,
    score_settings,
    training_config,
)
from .progress import ProgressBar
from .vocabulary import add_image_seed_option, draw_command, next_commands


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="train many candidate embeddings in one batched run",
        description="Train K candidate embeddings of one word together (seeds "
        "seed..seed+K-1, and optionally other inits and learning "
        "rates); then rank them with `oneword score`.",
    )
    p.add_argument("photos", nargs="+", help="a folder of photos, or photo files")
    add_training_options(p)
    add_candidate_options(p, 8)
    p.add_argument("--out", help="run folder (default: a new folder in the project)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue --out, or the newest unfinished sweep of this token",
    )
    add_halving_options(p)
    add_ray_options(p)
    add_model_options(p)
    add_project_option(p)
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(a: argparse.Namespace) -> int:
    from ..experiments.sweep import sweep

    plan = candidate_plan(a)
    config = training_config(a, candidates=plan.candidates())
    choice = api.ModelChoice(a.model, a.device, a.dtype)
    started = time.time()
    if a.halving:
        return _halving(a, config, choice, started)
    if a.ray is not None:
        if a.mask is not None:
            raise OnewordError("--mask: not with --ray yet; leave --ray out")
        result = load_ray_cluster().ray_sweep(
            a.photos,
            config,
            choice,
            a.project,
            a.out,
            a.resume,
            a.max_batch,
            ProgressBar(),
            a.ray or None,
            a.ray_groups,
        )
    elif a.ray_groups is not None:
        raise OnewordError("--ray-groups: only with --ray")
    else:
        result = sweep(
            a.photos,
            config,
            choice,
            a.project,
            a.out,
            a.resume,
            a.max_batch,
            on_event=ProgressBar(),
            mask_dir=a.mask_dir,
            auto_mask=auto_masking(a),
        )
    print(
        f"run r{result.run_id}: {len(result.files)} candidates of {a.token} in "
        f"{time.time() - started:.0f}s, in {result.folder}"
    )
    for k, files in enumerate(result.files):
        print(f"  c{k:02d}  {next(iter(files.values()))}")
    print(next_commands(a.project, f"oneword score r{result.run_id}"))
    return 0


def add_halving_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "successive halving",
        "train every candidate briefly, keep the best share by the label-free score, train "
        "those further, until one is left (the survivor trains --steps)",
    )
    g.add_argument("--halving", action="store_true", help="cut the candidates rung by rung")
    g.add_argument("--keep", type=float, default=0.5, help="share kept at each cut (0.5)")
    g.add_argument(
        "--budget",
        type=int,
        help="training samples over all candidates; sets --steps to the longest schedule that fits",
    )
    g.add_argument("--score-images", type=int, default=8, help="images per candidate a rung")
    add_image_seed_option(g, "first seed of those images", old="--score-seed")
    g.add_argument("--subject", help="the world oracle's subject (default: from --init)")
    add_scoring_options(g, "--score-steps")


def _halving(a: argparse.Namespace, config, choice, started: float) -> int:
    from ..search.halving_sweep import HalvingPlan, halving_sweep

    if a.ray is not None:
        raise OnewordError("--halving: not with --ray yet; leave --ray out")
    settings = score_settings(a, images=a.score_images, seed=a.image_seed, subject=a.subject)
    plan = HalvingPlan(keep=a.keep, budget=a.budget, score=settings)
    result = halving_sweep(
        a.photos, config, plan, choice, a.project, a.out, a.resume, a.max_batch, ProgressBar(),
        a.mask_dir, auto_masking(a),
    )  # fmt: skip
    print(f"run r{result.run_id}: halving of {len(result.files)} candidates of {a.token} in "
          f"{time.time() - started:.0f}s, in {result.folder}")  # fmt: skip
    word = f"r{result.run_id}"  # the survivor is ranked first
    print(next_commands(a.project, draw_command(a.token, word, a.model), f"oneword show {word}"))
    return 0
