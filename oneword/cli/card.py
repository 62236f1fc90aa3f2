"""`oneword card`: a PNG of a learned word that carries the word (AUTOMATIC1111's format)."""

from __future__ import annotations

import argparse

from ..core.generate import Sampling
from ..experiments.cards import CardSettings, make_card
from .options import add_project_option
from .progress import ProgressBar
from .vocabulary import add_image_seed_option, add_sample_steps_option


def register(sub) -> None:
    p = sub.add_parser(
        "card",
        help="a preview PNG that carries the embedding (A1111 reads it)",
        description="Draw a learned word once and write a PNG that carries the embedding "
        "inside it, in the chunk AUTOMATIC1111 reads; every --embedding option reads it too.",
    )
    p.add_argument(
        "source",
        metavar="WORD",
        help="the word: an embedding file, a run folder, a run id (r7: its best candidate), "
        "r7/c01, or last",
    )
    p.add_argument("--out", help="the card to write (default: <name>-card.png beside it)")
    p.add_argument("--prompt", help="what to draw (default: 'a photo of a <token>')")
    add_image_seed_option(p, "the drawn image's seed", old="--seed")
    add_sample_steps_option(p, 20)
    p.add_argument("--model", help="model to draw with (default: the run's or file's model)")
    p.add_argument("--device", help="cuda, mps, cpu (default: the best available)")
    add_project_option(p)
    p.set_defaults(func=_cmd_card)


def _cmd_card(a: argparse.Namespace) -> int:
    settings = CardSettings(a.image_seed, Sampling(steps=a.sample_steps), a.prompt)
    print(make_card(a.source, a.out, a.model, settings, a.project, a.device, ProgressBar()))
    return 0
