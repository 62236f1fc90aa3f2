"""`oneword learn`: learn a new token from a few photos."""

from __future__ import annotations

import argparse
import time

from .. import api
from .options import (
    add_model_options,
    add_project_option,
    add_training_options,
    auto_masking,
    training_config,
)
from .progress import ProgressBar
from .vocabulary import draw_command, next_commands, recorded_run


def register(sub) -> None:
    p = sub.add_parser(
        "learn",
        help="learn a new token from a few photos",
        description="Learn a new token from 3-10 photos by Textual Inversion.",
    )
    p.add_argument("photos", nargs="+", help="a folder of photos, or photo files")
    add_training_options(p)
    p.add_argument("--max-batch", type=int, help="samples per forward pass (saves memory)")
    p.add_argument(
        "--preview-every",
        type=int,
        metavar="STEPS",
        help="steps between preview sheets in previews/ (default: a fifth of --steps, so five "
        "previews; 0: none)",
    )
    p.add_argument(
        "--preview-prompt",
        action="append",
        default=[],
        help="prompt for previews (repeatable; default: two per mode)",
    )
    p.add_argument("--out", help="run folder (default: runs/<token>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_model_options(p)
    add_project_option(p)
    p.set_defaults(func=_cmd_learn)


def _cmd_learn(a: argparse.Namespace) -> int:
    steps = api.default_steps(a.model) if a.steps is None else a.steps
    config = training_config(
        a,
        max_batch=a.max_batch,
        preview_every=max(1, steps // 5) if a.preview_every is None else a.preview_every,
        preview_prompts=tuple(a.preview_prompt),
    )
    choice = api.ModelChoice(a.model, a.device, a.dtype)
    started = time.time()
    files = api.learn(
        a.photos,
        config,
        choice,
        a.out,
        a.resume,
        on_event=ProgressBar(),
        project=a.project,
        mask_dir=a.mask_dir,
        auto_mask=auto_masking(a),
    )
    run = recorded_run(a.project, "learn", next(iter(files.values())).parent)
    name = run.name if run else str(next(iter(files.values())).parent)
    print(f"run {name}: learned {a.token} in {time.time() - started:.0f}s:")
    for path in files.values():
        print(f"  {path}")
    print(next_commands(a.project, draw_command(a.token, name, a.model), "oneword serve"))
    return 0
