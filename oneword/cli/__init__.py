"""The `oneword` command: a thin map from commands and options to library functions.

Each module of this package is named after the command it registers (`options` holds what
several share); `main` turns OnewordError into one line.
"""

from __future__ import annotations

import argparse
import logging
import sys

import oneword

from ..errors import OnewordError
from . import (
    arith,
    bench,
    card,
    demo,
    evolve,
    generate,
    inspect,
    learn,
    masks,
    mix,
    rate,
    runs,
    score,
    serve,
    show,
    sweep,
)
from .progress import close_bars

# In the order `oneword --help` lists them.
COMMAND_MODULES = [
    learn,
    masks,
    generate,
    card,
    demo,
    sweep,
    score,
    runs,
    show,
    rate,
    bench,
    mix,
    arith,
    inspect,
    evolve,
    serve,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oneword", description="Teach Stable Diffusion a new word from a few photos."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    parser.add_argument(
        "--version",
        action="version",
        version=f"oneword {oneword.__version__}",
        help="show the version",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except OnewordError as exc:
        close_bars()  # the error gets a line of its own, not the end of a progress bar's
        print(f"oneword: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
