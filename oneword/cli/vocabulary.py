"""One vocabulary across commands, and what a command says when it is done.

`--steps` trains, `--sample-steps` draws, `--image-seed` seeds the drawn images (image i: seed
+ i), `--seed` seeds training or breeding; an old spelling keeps working for one release with a
note. Every command that makes a run prints its id and the next command worth running.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .. import api


class OldSpelling(argparse.Action):
    """An option's old spelling: it keeps working for one more release, with a note."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"oneword: note: {option_string} here is now {self.new}; the old spelling "
            "works until the next release",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_sample_steps_option(p, default: int, old: str | None = "--steps") -> None:
    """--sample-steps: denoising steps per drawn image (--steps is training steps)."""
    p.add_argument(
        "--sample-steps",
        type=int,
        default=default,
        metavar="N",
        help=f"denoising steps per drawn image (default {default})",
    )
    if old:
        p.add_argument(old, dest="sample_steps", type=int, action=OldSpelling, new="--sample-steps")


def add_image_seed_option(p, what: str = "image i uses seed + i", old: str | None = None) -> None:
    """--image-seed: the seed of the first drawn image (--seed seeds training or breeding)."""
    p.add_argument("--image-seed", type=int, default=0, metavar="SEED", help=f"{what} (default 0)")
    if old:
        p.add_argument(old, dest="image_seed", type=int, action=OldSpelling, new="--image-seed")


def next_commands(project: str | None, *commands: str) -> str:
    """The line that tells what to run next (each command with --project where it was given)."""
    flag = f" --project {shlex.quote(str(project))}" if project else ""
    return "next: " + "   or: ".join(c + flag for c in commands)


def model_flag(model: str | None) -> str:
    """' --model X' where X is not the default model."""
    return f" --model {shlex.quote(str(model))}" if model and model != api.DEFAULT_MODEL else ""


def draw_command(token: str, word: str, model: str | None) -> str:
    """`oneword generate` of a word, ready to paste into a shell."""
    prompt = shlex.quote(f"a photo of {token} in the snow")
    return f"oneword generate {prompt} --embedding {shlex.quote(word)}{model_flag(model)}"


def recorded_run(project: str | None, kind: str, folder: str | Path):
    """The newest run of `kind` recorded for `folder` (what a command just made), or None."""
    from ..experiments.store import Store

    with Store.open(project) as store:
        return store.latest_run_in(Path(folder).expanduser().absolute(), kind)
