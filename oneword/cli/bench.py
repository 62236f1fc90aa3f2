"""`oneword bench dreambench`: benchmark protocols."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import api
from ..errors import OnewordError
from .options import (
    add_candidate_options,
    add_model_options,
    add_project_option,
    add_scoring_options,
    candidate_plan,
    score_settings,
    words,
)
from .progress import ProgressBar


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="run a benchmark protocol", description="Benchmarks with real weights."
    )
    bench = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    d = bench.add_parser(
        "dreambench",
        help="DreamBooth's DreamBench: 30 subjects x 25 prompts",
        description="Learn each DreamBench subject, draw 4 images of each of "
        "its 25 prompts and report DINO, CLIP-I and CLIP-T.",
    )
    d.add_argument(
        "--data",
        default=os.environ.get("ONEWORD_DREAMBENCH"),
        help="the DreamBench folder, one sub-folder per subject (default: $ONEWORD_DREAMBENCH)",
    )
    d.add_argument("--subjects", type=words, default=(), help="e.g. dog,cat2 (default: all)")
    d.add_argument("--prompt-limit", type=int, help="the first N prompts per subject only")
    d.add_argument("--images-per-prompt", type=int, default=4, help="images per prompt (default 4)")
    d.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    d.add_argument("--lr", type=float, default=5e-3, help="learning rate (default 5e-3)")
    d.add_argument("--vectors", type=int, default=1, help="vectors per word (default 1)")
    d.add_argument("--batch-size", type=int, default=1, help="samples per micro-batch")
    d.add_argument("--grad-accum", type=int, default=4, help="micro-batches per step")
    d.add_argument("--resolution", type=int, help="training size (default: the model's)")
    d.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    d.add_argument("--seed", type=int, default=0, help="seed of the training (default 0)")
    add_candidate_options(d, 1)
    add_scoring_options(d, old_steps=None)
    d.add_argument("--out", help="benchmark folder (default: a new folder in the project)")
    add_model_options(d)
    add_project_option(d)
    d.set_defaults(func=_cmd_dreambench)


def _cmd_dreambench(a: argparse.Namespace) -> int:
    from ..core.train import TrainConfig
    from ..experiments.dreambench_run import DreamBenchSettings, run_dreambench, table_markdown

    if not a.data:
        raise OnewordError(
            "--data is missing: give the DreamBench folder (one sub-folder of "
            "photos per subject), or set ONEWORD_DREAMBENCH"
        )
    training = TrainConfig(
        token="<s>",
        init_word="thing",
        vectors=a.vectors,
        steps=a.steps,
        lr=a.lr,
        batch_size=a.batch_size,
        grad_accum=a.grad_accum,
        resolution=a.resolution,
        checkpoint_every=a.checkpoint_every,
        seed=a.seed,
    )
    settings = DreamBenchSettings(
        data=Path(a.data),
        subjects=a.subjects,
        prompt_limit=a.prompt_limit,
        images_per_prompt=a.images_per_prompt,
        plan=candidate_plan(a),
        training=training,
        score=score_settings(a),
        max_batch=a.max_batch,
    )
    choice = api.ModelChoice(a.model, a.device, a.dtype)
    result = run_dreambench(settings, choice, a.project, a.out, on_event=ProgressBar())
    print(f"benchmark {result['run']} in {result['folder']}:")
    print(table_markdown(result["summary"], len(result["subjects"]), a.candidates))
    return 0
