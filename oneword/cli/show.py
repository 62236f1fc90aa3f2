"""`oneword show`: everything the store holds about one run."""

from __future__ import annotations

import argparse

from ..experiments.store import Store
from .options import add_project_option


def register(sub) -> None:
    p = sub.add_parser(
        "show",
        help="show one run: settings, candidates, files, scores",
        description="Show everything the store holds about one run.",
    )
    p.add_argument("run", help="a run id (r7 or 7), 'last', or a run folder")
    add_project_option(p)
    p.set_defaults(func=_cmd_show)


def _cmd_show(a: argparse.Namespace) -> int:
    from ..experiments.report import describe_run

    with Store.open(a.project) as store:
        print(describe_run(store, store.find_run(a.run)))
    return 0
