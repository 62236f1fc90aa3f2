"""The store's SQLite file: opening it, its schema (`MIGRATIONS[i]` takes a store from
version i to i + 1) and the one-line errors of writing it."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ..errors import OnewordError, WriteFailed

log = logging.getLogger(__name__)

DB_NAME = "oneword.db"

MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
        updated REAL NOT NULL, folder TEXT, model TEXT, token TEXT, step INTEGER DEFAULT 0,
        settings TEXT NOT NULL DEFAULT '{}', photos TEXT NOT NULL DEFAULT '[]',
        parent_run INTEGER REFERENCES runs(id), note TEXT DEFAULT '');
    CREATE TABLE candidates (
        id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), idx INTEGER NOT NULL,
        seed INTEGER NOT NULL, init TEXT NOT NULL, jitter REAL NOT NULL, lr REAL NOT NULL,
        folder TEXT, UNIQUE (run_id, idx));
    CREATE TABLE lineage (
        child INTEGER NOT NULL REFERENCES candidates(id),
        parent INTEGER NOT NULL REFERENCES candidates(id),
        relation TEXT NOT NULL DEFAULT '', PRIMARY KEY (child, parent));
    CREATE TABLE files (
        id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id),
        candidate_id INTEGER REFERENCES candidates(id), kind TEXT NOT NULL, path TEXT NOT NULL,
        created REAL NOT NULL, UNIQUE (run_id, path));
    CREATE TABLE evaluations (
        id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id),
        created REAL NOT NULL, settings TEXT NOT NULL DEFAULT '{}', folder TEXT);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY, evaluation_id INTEGER REFERENCES evaluations(id),
        candidate_id INTEGER NOT NULL REFERENCES candidates(id), prompt TEXT NOT NULL,
        seed INTEGER NOT NULL, path TEXT NOT NULL);
    CREATE TABLE scores (
        evaluation_id INTEGER NOT NULL REFERENCES evaluations(id),
        candidate_id INTEGER NOT NULL REFERENCES candidates(id), metric TEXT NOT NULL,
        value REAL NOT NULL, PRIMARY KEY (evaluation_id, candidate_id, metric));
    CREATE TABLE ratings (
        id INTEGER PRIMARY KEY, candidate_id INTEGER NOT NULL REFERENCES candidates(id),
        image_id INTEGER REFERENCES images(id), rating INTEGER NOT NULL, note TEXT DEFAULT '',
        created REAL NOT NULL);
    CREATE INDEX candidates_by_run ON candidates(run_id);
    CREATE INDEX images_by_candidate ON images(candidate_id);
    """,
    # 1 -> 2: which process runs a run (to tell a dead one), and the gallery's jobs
    """
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    ALTER TABLE runs ADD COLUMN host TEXT;
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY, what TEXT NOT NULL, state TEXT NOT NULL,
        done INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '', run_id INTEGER REFERENCES runs(id),
        error TEXT NOT NULL DEFAULT '', spec TEXT NOT NULL DEFAULT '{}', pid INTEGER, host TEXT,
        created REAL NOT NULL, updated REAL NOT NULL);
    """,
    # 2 -> 3: when that process started (a later process may reuse its id)
    """
    ALTER TABLE runs ADD COLUMN started REAL;
    ALTER TABLE jobs ADD COLUMN started REAL;
    """,
    # 3 -> 4: the cuts of successive halving, with the scores that decided them
    """
    CREATE TABLE cuts (
        run_id INTEGER NOT NULL REFERENCES runs(id), rung INTEGER NOT NULL,
        step INTEGER NOT NULL, candidate_id INTEGER NOT NULL REFERENCES candidates(id),
        evaluation_id INTEGER REFERENCES evaluations(id), score REAL NOT NULL,
        kept INTEGER NOT NULL, PRIMARY KEY (run_id, rung, candidate_id));
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, folder: Path, migrations: list[str] = MIGRATIONS) -> int:
    """Bring the store up to the newest schema; returns the version it was at."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)
        if found > len(migrations):
            raise OnewordError(
                f"{folder / DB_NAME}: made by a newer oneword (schema {found}, this one knows "
                f"{len(migrations)}); upgrade oneword or choose another --project"
            )
        for version in range(found, len(migrations)):
            for statement in _statements(migrations[version]):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
            log.info("store %s: migrated to schema %d", folder, version + 1)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found


def _statements(script: str) -> list[str]:
    """The statements of a migration (executescript would commit our transaction)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def connect(folder: Path) -> sqlite3.Connection:
    """The store of `folder` opened (WAL, foreign keys) and migrated; one line if it cannot be."""
    db = folder / DB_NAME
    try:
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, folder)
    except sqlite3.OperationalError as exc:
        if _is_write_failure(exc):
            raise store_write_failed(db, exc) from exc
        raise OnewordError(
            f"{db}: could not open the store ({exc}); check the folder can be written, "
            "or choose another --project"
        ) from exc
    except sqlite3.DatabaseError as exc:
        raise OnewordError(
            f"{db}: not a readable oneword store ({exc}); choose another --project"
        ) from exc
    return conn


def _is_write_failure(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("full", "locked", "readonly", "read-only", "disk i/o"))


def store_write_failed(db: Path, exc: sqlite3.OperationalError) -> WriteFailed:
    """The one line for a write SQLite refused, with what to do about it."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        advice = "another oneword command is writing to it; run this one when it is done"
    elif "full" in text:
        advice = "make room on that disk"
    else:
        advice = "check that the project folder can be written"
    return WriteFailed(f"{db}: could not write the store ({text}); {advice}")
