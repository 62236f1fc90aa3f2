"""Background jobs of the gallery: one worker thread runs them in turn. Each job lives in the
store's `jobs` table (what it does, its progress, the run it made, the server process that runs
it), so a restarted server still knows it: a job whose server is gone is `interrupted`, and can
be resumed. Progress is streamed to the page as server-sent events."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import OnewordError
from ..events import Event, Message, Progressed
from ..experiments.processes import HOST, THIS_STARTED, process_alive
from ..experiments.store import Store

log = logging.getLogger(__name__)

FINAL_STATES = ("done", "failed", "interrupted")
KEEP_ALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
FIELDS = ("id", "what", "state", "done", "total", "message", "run_id", "error")


class JobRunner:
    """Runs submitted work(on_event, started) -> run id one at a time in a daemon thread."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._changed = threading.Condition()
        self._queue: queue.Queue = queue.Queue()
        self.interrupted = self._mark_interrupted()
        self._thread = threading.Thread(target=self._work, name="oneword-jobs", daemon=True)
        self._thread.start()

    def _mark_interrupted(self) -> list[int]:
        """Jobs left queued or running by a server process that is gone."""
        with Store.open(self.folder) as s:
            rows = s.conn.execute(
                "SELECT id, pid, host, started FROM jobs WHERE state IN ('queued', 'running')"
            ).fetchall()
            gone = [
                r["id"]
                for r in rows
                if r["host"] == HOST and not process_alive(r["pid"], r["started"])
            ]
            with s.transaction() as c:
                c.executemany(
                    "UPDATE jobs SET state = 'interrupted', updated = ?, message = ? WHERE id = ?",
                    [(time.time(), "the server stopped while it ran", i) for i in gone],
                )
        return gone

    def submit(self, what: str, spec: dict, work: Callable, job_id: int | None = None) -> dict:
        """Queue work; job_id: resume that job (same id) instead of making a new one."""
        now = time.time()
        with Store.open(self.folder) as s, s.transaction() as c:
            if job_id is None:
                cur = c.execute(
                    "INSERT INTO jobs (what, state, spec, pid, host, started, created, updated) "
                    "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (what, json.dumps(spec), os.getpid(), HOST, THIS_STARTED, now, now),
                )
                job_id = int(cur.lastrowid)
            else:
                c.execute(
                    "UPDATE jobs SET state = 'queued', error = '', message = 'resumed', pid = ?, "
                    "host = ?, started = ?, updated = ? WHERE id = ?",
                    (os.getpid(), HOST, THIS_STARTED, now, job_id),
                )
        self._queue.put((job_id, work))
        return self.get(job_id)

    def get(self, job_id: int) -> dict | None:
        with Store.open(self.folder) as s:
            row = s.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return {**{k: row[k] for k in FIELDS}, "spec": json.loads(row["spec"])}

    def recent(self, limit: int = 20) -> list[dict]:
        with Store.open(self.folder) as s:
            ids = s.conn.execute("SELECT id FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
            ids = [r["id"] for r in ids]
        return [self.get(i) for i in ids]

    def stream(self, job_id: int):
        """Server-sent events: the job as JSON each time it changes, until it is over."""
        last = None
        while True:
            job = self.get(job_id)
            text = json.dumps({k: job[k] for k in FIELDS})
            if text != last:
                yield f"data: {text}\n\n"
                last = text
            if job["state"] in FINAL_STATES:
                return
            with self._changed:
                if not self._changed.wait(timeout=KEEP_ALIVE_S):
                    yield ": still working\n\n"

    def _update(self, job_id: int, **changes) -> None:
        sets = ", ".join(f"{k} = ?" for k in changes)
        with Store.open(self.folder) as s, s.transaction() as c:
            c.execute(
                f"UPDATE jobs SET {sets}, updated = ? WHERE id = ?",
                (*changes.values(), time.time(), job_id),
            )
        with self._changed:
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            job_id, work = self._queue.get()
            self._update(job_id, state="running")

            def on_event(event: Event, job_id=job_id) -> None:
                if isinstance(event, Progressed):
                    self._update(job_id, done=event.done, total=event.total, message=event.what)
                elif isinstance(event, Message):
                    self._update(job_id, message=event.text)

            def started(run_id: int, job_id=job_id) -> None:
                self._update(job_id, run_id=run_id)

            try:
                run_id = work(on_event, started)
                self._update(job_id, state="done", run_id=run_id, message="done")
            except OnewordError as exc:
                self._update(job_id, state="failed", error=str(exc))
            except Exception as exc:  # a job must never kill the worker
                log.exception("job %d failed", job_id)
                self._update(job_id, state="failed", error=f"{type(exc).__name__}: {exc}")
