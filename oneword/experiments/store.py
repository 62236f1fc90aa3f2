"""The experiment store: one SQLite file in a project folder that every command goes through.

It records runs (learn, sweep, bench), their settings and photos, candidates and their files,
generated images, scores, ratings and lineage (a candidate's parents). The schema is versioned:
`schema.MIGRATIONS[i]` takes a store from version i to i + 1, and opening a store applies
the missing ones in one transaction. Paths inside the project folder are stored relative to it,
so a project folder can be moved or copied whole.

The project folder is `--project`, else $ONEWORD_PROJECT, else ./oneword-project.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..checks import parse_id, rating, store_id
from ..errors import OnewordError
from .processes import HOST, THIS_STARTED, process_alive
from .schema import DB_NAME, connect, store_write_failed

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "oneword-project"
RUN_KINDS = ("learn", "sweep", "bench", "evolve", "mix", "generate")
RUN_STATES = ("running", "done", "failed", "interrupted")
INTERRUPTED_NOTE = "its process ended while it ran; rerun its command with --resume"
FILE_KINDS = (
    "embedding",
    "checkpoint",
    "image",
    "report",
    "plot",
    "table",
    "mask",  # a copy of a training photo's mask
    "mask_view",  # a training photo with its mask over it, for the gallery
    "compute_plot",  # the best word found against compute (compute_picture)
)


def project_folder(project: str | Path | None = None) -> Path:
    """The project folder: the one given, else $ONEWORD_PROJECT, else ./oneword-project."""
    chosen = project or os.environ.get("ONEWORD_PROJECT") or DEFAULT_PROJECT
    return Path(chosen).expanduser().absolute()


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: str
    status: str
    created: float
    updated: float
    folder: Path | None
    model: str
    token: str
    step: int
    settings: dict
    photos: list
    parent_run: int | None
    note: str

    @property
    def name(self) -> str:
        return f"r{self.id}"


@dataclass(frozen=True)
class CandidateRecord:
    id: int
    run_id: int
    index: int
    seed: int
    init: str
    jitter: float
    lr: float
    folder: Path | None

    @property
    def name(self) -> str:
        return f"c{self.index:02d}"


class Store:
    """A project's SQLite store. Use `Store.open(project)`; every write is one transaction."""

    def __init__(self, folder: Path, conn: sqlite3.Connection):
        self.folder = folder
        self.conn = conn

    @classmethod
    def open(cls, project: str | Path | None = None) -> "Store":
        folder = project_folder(project)
        if folder.exists() and not folder.is_dir():
            raise OnewordError(f"--project {folder}: exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        conn = connect(folder)
        store = cls(folder, conn)
        store.mark_interrupted()
        return store

    def mark_interrupted(self) -> list[int]:
        """Mark `interrupted` the running runs whose process (on this machine) is gone: a run
        killed while training would otherwise stay `running` forever. Returns their ids."""
        rows = self.conn.execute(
            "SELECT id, pid, started FROM runs WHERE status = 'running' AND host = ?", (HOST,)
        ).fetchall()
        gone = [r["id"] for r in rows if r["pid"] and not process_alive(r["pid"], r["started"])]
        for run_id in gone:
            self.update_run(run_id, status="interrupted", note=INTERRUPTED_NOTE)
        return gone

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def runs_folder(self) -> Path:
        return self.folder / "runs"

    @contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception. A write SQLite refuses
        (a full disk, a store another command holds) is one WriteFailed line; the store keeps
        what it held before the transaction."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise store_write_failed(self.folder / DB_NAME, exc) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise store_write_failed(self.folder / DB_NAME, exc) from exc
            raise

    # -- paths ---------------------------------------------------------------------------
    def relative(self, path: str | Path | None) -> str | None:
        """A path as stored: relative to the project folder when inside it."""
        if path is None:
            return None
        path = Path(path).absolute()
        try:
            return str(path.relative_to(self.folder))
        except ValueError:
            return str(path)

    def resolve(self, stored: str | None) -> Path | None:
        return None if stored is None else self.folder / stored

    # -- runs ----------------------------------------------------------------------------
    def create_run(
        self,
        kind: str,
        folder: str | Path | None = None,
        model: str = "",
        token: str = "",
        settings: dict | None = None,
        photos: list | None = None,
        parent_run: int | None = None,
    ) -> RunRecord:
        if kind not in RUN_KINDS:
            raise ValueError(f"run kind {kind!r}")
        now = time.time()
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO runs (kind, status, created, updated, folder, model, token, "
                "settings, photos, parent_run, pid, host, started) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    now,
                    now,
                    self.relative(folder),
                    model,
                    token,
                    json.dumps(settings or {}, sort_keys=True),
                    json.dumps([str(Path(p).expanduser().absolute()) for p in photos or []]),
                    parent_run,
                    os.getpid(),
                    HOST,
                    THIS_STARTED,
                ),
            )
        return self.run(cur.lastrowid)

    def update_run(self, run_id: int, **changes) -> None:
        """Set status, step, folder, note or settings of a run."""
        allowed = {"status", "step", "folder", "note", "settings"}
        if not set(changes) <= allowed:
            raise ValueError(f"cannot update {sorted(set(changes) - allowed)}")
        if changes.get("status", "running") not in RUN_STATES:
            raise ValueError(f"run status {changes['status']!r}")
        if "folder" in changes:
            changes["folder"] = self.relative(changes["folder"])
        if "settings" in changes:
            changes["settings"] = json.dumps(changes["settings"], sort_keys=True)
        if changes.get("status") == "running":  # this process runs it now (a resumed run)
            changes.update(pid=os.getpid(), host=HOST, started=THIS_STARTED)
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self.transaction() as c:
            c.execute(
                f"UPDATE runs SET {sets}, updated = ? WHERE id = ?",
                (*changes.values(), time.time(), run_id),
            )

    def run(self, run_id: int) -> RunRecord:
        store_id(run_id, "run")
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise OnewordError(f"run r{run_id}: no such run in {self.folder}; see `oneword runs`")
        return self._run_record(row)

    def runs(self, kind: str | None = None, token: str | None = None) -> list[RunRecord]:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if kind:
            sql, args = sql + " AND kind = ?", args + [kind]
        if token:
            sql, args = sql + " AND token = ?", args + [token]
        return [self._run_record(r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def find_run(self, ref: str | int | Path) -> RunRecord:
        """A run by id ('7', 'r7'), 'last', or its folder."""
        text = str(ref).strip()
        if text == "last":
            rows = self.runs()
            if not rows:
                raise OnewordError(f"no runs yet in {self.folder}")
            return rows[-1]
        run_id = parse_id(text, "run", prefix="r")
        if run_id is not None:
            return self.run(run_id)
        stored = self.relative(Path(text).expanduser())
        row = self.conn.execute(
            "SELECT * FROM runs WHERE folder = ? ORDER BY id DESC", (stored,)
        ).fetchone()
        if row is None:
            raise OnewordError(
                f"run {text}: no run with this id or folder in {self.folder}; "
                "see `oneword runs` (or pass --project)"
            )
        return self._run_record(row)

    def latest_run_in(self, folder: Path, kind: str) -> RunRecord | None:
        """The newest run of `kind` recorded for `folder`, if any."""
        row = self.conn.execute(
            "SELECT * FROM runs WHERE folder = ? AND kind = ? ORDER BY id DESC",
            (self.relative(folder), kind),
        ).fetchone()
        return self._run_record(row) if row else None

    def _run_record(self, row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            id=row["id"],
            kind=row["kind"],
            status=row["status"],
            created=row["created"],
            updated=row["updated"],
            folder=self.resolve(row["folder"]),
            model=row["model"] or "",
            token=row["token"] or "",
            step=row["step"] or 0,
            settings=json.loads(row["settings"]),
            photos=json.loads(row["photos"]),
            parent_run=row["parent_run"],
            note=row["note"] or "",
        )

    # -- candidates ----------------------------------------------------------------------
    def add_candidate(
        self,
        run_id: int,
        index: int,
        seed: int,
        init: str,
        jitter: float,
        lr: float,
        folder: str | Path | None = None,
        parents: tuple[int, ...] = (),
    ) -> CandidateRecord:
        """Add candidate `index` of a run; a resumed run keeps it, with the lr it resumes at."""
        with self.transaction() as c:
            c.execute(
                "INSERT INTO candidates (run_id, idx, seed, init, jitter, lr, folder) VALUES "
                "(?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, idx) DO UPDATE SET lr = excluded.lr",
                (run_id, index, seed, init, jitter, lr, self.relative(folder)),
            )
            row = c.execute(
                "SELECT id FROM candidates WHERE run_id = ? AND idx = ?", (run_id, index)
            ).fetchone()
            for parent in parents:
                c.execute(
                    "INSERT OR IGNORE INTO lineage (child, parent) VALUES (?, ?)",
                    (row["id"], parent),
                )
        return self.candidate(row["id"])

    def candidate(self, candidate_id: int) -> CandidateRecord:
        store_id(candidate_id, "candidate")
        row = self.conn.execute("SELECT * FROM candidates WHERE id = ?", (candidate_id,)).fetchone()
        if row is None:
            raise OnewordError(f"candidate {candidate_id}: not in this project")
        return self._candidate_record(row)

    def candidates(self, run_id: int) -> list[CandidateRecord]:
        rows = self.conn.execute(
            "SELECT * FROM candidates WHERE run_id = ? ORDER BY idx", (run_id,)
        )
        return [self._candidate_record(r) for r in rows]

    def find_candidate(self, run_id: int, ref: str) -> CandidateRecord:
        """A candidate of a run by its index ('5', 'c05')."""
        digits = ref[1:] if ref[:1] in "cC" else ref
        wanted = digits.isascii() and digits.isdigit()
        for cand in self.candidates(run_id) if wanted else []:
            if cand.index == int(digits):
                return cand
        raise OnewordError(
            f"candidate {ref}: run r{run_id} has no such candidate; see `oneword show r{run_id}`"
        )

    def _candidate_record(self, row: sqlite3.Row) -> CandidateRecord:
        return CandidateRecord(
            id=row["id"],
            run_id=row["run_id"],
            index=row["idx"],
            seed=row["seed"],
            init=row["init"],
            jitter=row["jitter"],
            lr=row["lr"],
            folder=self.resolve(row["folder"]),
        )

    def add_parents(self, child: int, parents: list[int], relation: str = "") -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO lineage (child, parent, relation) VALUES (?, ?, ?)",
                [(child, p, relation) for p in parents],
            )

    def parents(self, candidate_id: int) -> list[CandidateRecord]:
        rows = self.conn.execute(
            "SELECT parent FROM lineage WHERE child = ? ORDER BY parent", (candidate_id,)
        )
        return [self.candidate(r["parent"]) for r in rows]

    # -- files, images, scores, ratings ----------------------------------------------------
    def add_files(
        self, run_id: int, kind: str, paths: list[str | Path], candidate_id: int | None = None
    ) -> None:
        if kind not in FILE_KINDS:
            raise ValueError(f"file kind {kind!r}")
        now = time.time()
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO files (run_id, candidate_id, kind, path, "
                "created) VALUES (?, ?, ?, ?, ?)",
                [(run_id, candidate_id, kind, self.relative(p), now) for p in paths],
            )

    def files(
        self, run_id: int, kind: str | None = None, candidate_id: int | None = None
    ) -> list[Path]:
        sql, args = "SELECT path FROM files WHERE run_id = ?", [run_id]
        if kind:
            sql, args = sql + " AND kind = ?", args + [kind]
        if candidate_id is not None:
            sql, args = sql + " AND candidate_id = ?", args + [candidate_id]
        return [self.resolve(r["path"]) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def add_evaluation(self, run_id: int, settings: dict) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO evaluations (run_id, created, settings) VALUES (?, ?, ?)",
                (run_id, time.time(), json.dumps(settings, sort_keys=True)),
            )
        return int(cur.lastrowid)

    def set_evaluation_folder(self, evaluation_id: int, folder: Path) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE evaluations SET folder = ? WHERE id = ?",
                (self.relative(folder), evaluation_id),
            )

    def evaluations(self, run_id: int) -> list[dict]:
        rows = self.conn.execute(
            "SELECT * FROM evaluations WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [
            {
                "id": r["id"],
                "created": r["created"],
                "settings": json.loads(r["settings"]),
                "folder": self.resolve(r["folder"]),
            }
            for r in rows
        ]

    def add_images(
        self, evaluation_id: int | None, candidate_id: int, images: list[tuple[str, int, Path]]
    ) -> None:
        """(prompt, seed, path) of each image drawn for a candidate."""
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO images (evaluation_id, candidate_id, prompt, seed, path) "
                "VALUES (?, ?, ?, ?, ?)",
                [(evaluation_id, candidate_id, p, s, self.relative(f)) for p, s, f in images],
            )

    def images(self, candidate_id: int, evaluation_id: int | None = None) -> list[dict]:
        sql, args = "SELECT * FROM images WHERE candidate_id = ?", [candidate_id]
        if evaluation_id is not None:
            sql, args = sql + " AND evaluation_id = ?", args + [evaluation_id]
        return [
            {
                "id": r["id"],
                "prompt": r["prompt"],
                "seed": r["seed"],
                "evaluation_id": r["evaluation_id"],
                "path": self.resolve(r["path"]),
            }
            for r in self.conn.execute(sql + " ORDER BY id", args)
        ]

    def image(self, image_id: int) -> dict | None:
        """One image by id: candidate, evaluation, prompt, seed and resolved path; None if
        there is none (an id outside the store's range included)."""
        try:
            store_id(image_id, "image")
        except OnewordError:
            return None
        r = self.conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if r is None:
            return None
        return {
            "id": r["id"],
            "candidate_id": r["candidate_id"],
            "evaluation_id": r["evaluation_id"],
            "prompt": r["prompt"],
            "seed": r["seed"],
            "path": self.resolve(r["path"]),
        }

    def relations(self, child: int) -> list[tuple[int, str]]:
        """(parent id, relation) of a candidate's parents."""
        rows = self.conn.execute(
            "SELECT parent, relation FROM lineage WHERE child = ? ORDER BY parent", (child,)
        )
        return [(r["parent"], r["relation"]) for r in rows]

    def add_scores(self, evaluation_id: int, candidate_id: int, metrics: dict[str, float]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)",
                [(evaluation_id, candidate_id, k, float(v)) for k, v in metrics.items()],
            )

    def scores(self, evaluation_id: int) -> dict[int, dict[str, float]]:
        """{candidate id: {metric: value}} of one evaluation."""
        out: dict[int, dict[str, float]] = {}
        rows = self.conn.execute("SELECT * FROM scores WHERE evaluation_id = ?", (evaluation_id,))
        for r in rows:
            out.setdefault(r["candidate_id"], {})[r["metric"]] = r["value"]
        return out

    def rate(
        self, candidate_id: int, value: int, note: str = "", image_id: int | None = None
    ) -> None:
        """Record a rating (see checks.RATINGS: 1-5, 0 clears) of a candidate or one image."""
        rating(value)
        with self.transaction() as c:
            c.execute(
                "INSERT INTO ratings (candidate_id, image_id, rating, note, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (candidate_id, image_id, int(value), note, time.time()),
            )

    def ratings(self, candidate_id: int) -> list[dict]:
        rows = self.conn.execute(
            "SELECT * FROM ratings WHERE candidate_id = ? ORDER BY id", (candidate_id,)
        )
        return [{"rating": r["rating"], "note": r["note"], "image_id": r["image_id"]} for r in rows]
