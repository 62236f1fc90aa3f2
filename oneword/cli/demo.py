"""`oneword demo`: learn a hidden subject of the world model and compare it with its class word."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from ..demo import DemoConfig, demo
from .options import add_project_option
from .progress import ProgressBar
from .vocabulary import next_commands, recorded_run


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo on the built-in world model (CPU, minutes)",
        description="Learn a hidden subject of the built-in world model from 5 "
        "photos and draw it in new scenes, scored by the oracle.",
    )
    p.add_argument(
        "--subject",
        default=DemoConfig.subject,
        help=f"hidden subject to learn (default: {DemoConfig.subject})",
    )
    p.add_argument(
        "--token",
        help="the word to learn, in any script (default: <my-SUBJECT>, e.g. <my-cat>)",
    )
    p.add_argument(
        "--no-mask",
        dest="auto_mask",
        action="store_false",
        help="learn from the whole photos, without the masks the model makes itself",
    )
    p.add_argument("--out", default="demo", help="output folder (default: demo)")
    p.add_argument(
        "--steps",
        type=int,
        default=DemoConfig.steps,
        help="training steps (default: the model's, 300 on the world model)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the photos, training and images (default 0)"
    )
    p.add_argument("--model", default="world", help="model (default: the built-in world model)")
    add_project_option(p)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(a: argparse.Namespace) -> int:
    started = time.time()
    config = DemoConfig(
        subject=a.subject,
        token=a.token,
        auto_mask=a.auto_mask,
        out=Path(a.out),
        steps=a.steps,
        seed=a.seed,
        model=a.model,
        project=a.project,
    )
    result = demo(config, on_event=ProgressBar())
    print(f"{'':14s}{'concept fidelity':>18s}{'prompt fidelity':>17s}")
    for how, (concept, prompt) in result.summary.items():
        print(f"{how + ' word':14s}{concept:18.2f}{prompt:17.2f}")
    for path in result.files.values():
        print(path)
    print(f"done in {time.time() - started:.0f}s")
    _print_next(a)
    return 0


def _print_next(a: argparse.Namespace) -> None:
    """The demo's runs, and how to learn its word yourself from its photos."""
    from ..world.render import SUBJECTS_BY_ID

    learned = recorded_run(a.project, "learn", Path(a.out) / "run")
    drawn = recorded_run(a.project, "generate", Path(a.out) / "images")
    if learned and drawn:
        print(f"runs {learned.name} (learned {learned.token}) and {drawn.name} (its images)")
    subject = SUBJECTS_BY_ID[a.subject]
    photos = shlex.quote(str(Path(a.out) / "photos"))
    learn = (
        f"oneword learn {photos} --token '<my-{subject.id}>' --init {subject.class_word} "
        f"--model {shlex.quote(a.model)} --out runs/my-{subject.id}"
    )
    print(next_commands(a.project, "oneword serve", learn))
