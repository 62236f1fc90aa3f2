"""`oneword runs`: the runs of the project."""

from __future__ import annotations

import argparse
import time

from ..experiments.store import RUN_KINDS, Store
from .options import add_project_option, short_path


def register(sub) -> None:
    p = sub.add_parser(
        "runs",
        help="list the runs of the project",
        description="List the runs recorded in the experiment store.",
    )
    p.add_argument("--kind", choices=RUN_KINDS, help="only runs of this kind")
    add_project_option(p)
    p.set_defaults(func=_cmd_runs)


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _cmd_runs(a: argparse.Namespace) -> int:
    with Store.open(a.project) as store:
        runs = store.runs(a.kind)
        if not runs:
            print(f"no runs yet in {store.folder}")
            return 0
        lines = [["run", "kind", "status", "started", "token", "model", "cands", "step", "folder"]]
        for r in runs:
            lines.append(
                [
                    r.name,
                    r.kind,
                    r.status,
                    _when(r.created),
                    r.token,
                    r.model,
                    str(len(store.candidates(r.id))),
                    str(r.step),
                    short_path(r.folder),
                ]
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return 0
