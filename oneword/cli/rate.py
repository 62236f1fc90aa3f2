"""`oneword rate`: your rating of a candidate."""

from __future__ import annotations

import argparse

from ..checks import rating
from ..experiments.store import Store
from .options import add_project_option


def register(sub) -> None:
    p = sub.add_parser(
        "rate",
        help="record your rating of a candidate",
        description="Record a rating (e.g. 1-5) of a candidate of a run.",
    )
    p.add_argument("run", help="a run id (r7 or 7), 'last', or a run folder")
    p.add_argument("candidate", help="the candidate, e.g. c03 or 3")
    p.add_argument("rating", type=int, help="your rating: 1 (worst) to 5 (best), 0 clears it")
    p.add_argument("--note", default="", help="a few words on why")
    add_project_option(p)
    p.set_defaults(func=_cmd_rate)


def _cmd_rate(a: argparse.Namespace) -> int:
    rating(a.rating)
    with Store.open(a.project) as store:
        run = store.find_run(a.run)
        cand = store.find_candidate(run.id, a.candidate)
        store.rate(cand.id, a.rating, a.note)
    print(f"rated {run.name} {cand.name}: {a.rating}")
    return 0
