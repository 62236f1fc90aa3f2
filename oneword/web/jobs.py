"""Background jobs of the gallery: one worker thread runs them in turn, and each keeps its
progress (done/total, a message, the run it made) for the page to poll."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable

from ..errors import OnewordError
from ..events import Event, Message, Progressed

log = logging.getLogger(__name__)


@dataclass
class Job:
    id: int
    what: str
    state: str = "queued"  # queued, running, done, failed
    done: int = 0
    total: int = 0
    message: str = ""
    run_id: int | None = None
    error: str = ""

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "what": self.what,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "message": self.message,
            "run_id": self.run_id,
            "error": self.error,
        }


@dataclass
class JobRunner:
    """Runs submitted work(on_event, job) -> run id one at a time in a daemon thread."""

    jobs: dict[int, Job] = field(default_factory=dict)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="oneword-jobs", daemon=True)
        self._thread.start()

    def submit(self, what: str, work: Callable) -> Job:
        with self._lock:
            job = Job(next(self._ids), what)
            self.jobs[job.id] = job
        self._queue.put((job, work))
        return job

    def get(self, job_id: int) -> dict | None:
        with self._lock:
            job = self.jobs.get(job_id)
            return job.as_dict() if job else None

    def _update(self, job: Job, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)

    def _work(self) -> None:
        while True:
            job, work = self._queue.get()
            self._update(job, state="running")

            def on_event(event: Event, job=job) -> None:
                if isinstance(event, Progressed):
                    self._update(job, done=event.done, total=event.total, message=event.what)
                elif isinstance(event, Message):
                    self._update(job, message=event.text)

            try:
                run_id = work(on_event, lambda run_id, job=job: self._update(job, run_id=run_id))
                self._update(job, state="done", run_id=run_id, message="done")
            except OnewordError as exc:
                self._update(job, state="failed", error=str(exc))
            except Exception as exc:  # a job must never kill the worker
                log.exception("job %d (%s) failed", job.id, job.what)
                self._update(job, state="failed", error=f"{type(exc).__name__}: {exc}")
