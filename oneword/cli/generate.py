"""`oneword generate`: draw images from a prompt with learned tokens."""

from __future__ import annotations

import argparse

from .. import api
from ..adapters.pipelines import SCHEDULERS
from ..core.generate import Sampling
from ..errors import OnewordError
from .options import add_model_options, add_project_option
from .progress import ProgressBar
from .vocabulary import add_image_seed_option, add_sample_steps_option, next_commands, recorded_run


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="draw images from a prompt with learned tokens",
        description="Draw images from a prompt that uses learned tokens.",
    )
    p.add_argument("prompt", help="e.g. 'a painting of <my-cat> by Claude Monet'")
    p.add_argument(
        "--embedding",
        action="append",
        default=[],
        metavar="WORD",
        help="a learned word: an embedding file (.safetensors/.pt/.bin/card .png), a run "
        "folder, a run id (r8: its best candidate), r8/c01, or last; repeatable",
    )
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("-n", "--num-images", type=int, default=4, help="images to draw (default 4)")
    add_image_seed_option(p, old="--seed")
    add_sample_steps_option(p, 30)
    p.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="ddim", help="sampler (default ddim)")
    p.add_argument("--size", type=int, help="image size (default: the model's)")
    p.add_argument("--out", default="images", help="output folder (default: images)")
    add_model_options(p)
    add_project_option(p)
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(a: argparse.Namespace) -> int:
    if a.num_images < 1:
        raise OnewordError(f"-n {a.num_images}: must be 1 or more")
    sampling = Sampling(a.sample_steps, a.cfg, a.scheduler, a.size)
    choice = api.ModelChoice(a.model, a.device, a.dtype)
    paths = api.generate(
        a.prompt,
        a.embedding,
        choice,
        a.num_images,
        a.image_seed,
        sampling,
        a.negative,
        a.out,
        on_event=ProgressBar(),
        project=a.project,
    )
    for path in paths:
        print(path)
    run = recorded_run(a.project, "generate", a.out)
    if run is not None:
        count = len(paths) - 1
        print(f"run {run.name}: {count} image{'s' * (count != 1)} and a contact sheet")
        print(next_commands(a.project, "oneword serve"))
    return 0
