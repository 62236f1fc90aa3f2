"""Recording a command's run in the store while it runs: created (or resumed) at the start,
marked done at the end, failed with its one-line reason if it raises, interrupted on Ctrl-C."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from ..core.train import CHECKPOINT_NAME
from ..errors import Interrupted, OnewordError, WriteFailed
from ..files import file_stem
from .store import CandidateRecord, RunRecord, Store

log = logging.getLogger(__name__)
INPUT_FILES = ("mask", "mask_view")  # what a run records of its inputs before it trains
STOPPED_NOTE = "stopped by Ctrl-C; rerun its command with --resume to continue"


class RunRecorder:
    """What a command writes about the run it is doing (see `recording`)."""

    def __init__(self, store: Store, run: RunRecord):
        self.store = store
        self.run = run

    def add_candidates(
        self, candidates, base_lr: float, folders: list[Path]
    ) -> list[CandidateRecord]:
        """Record candidates (objects with seed, init, jitter, lr) and their folders."""
        return [
            self.store.add_candidate(
                self.run.id,
                k,
                c.seed,
                _init_name(c),
                float(c.jitter),
                float(c.lr or base_lr),
                folder,
            )
            for k, (c, folder) in enumerate(zip(candidates, folders))
        ]

    def step(self, step: int) -> None:
        self.store.update_run(self.run.id, step=int(step))

    def files(self, kind: str, paths, candidate: CandidateRecord | None = None) -> None:
        self.store.add_files(self.run.id, kind, list(paths), candidate.id if candidate else None)

    def images(
        self,
        seed: int,
        embeddings: list[str],
        drawn: list[tuple[str, int, Path]],
        others: list[Path] = (),
    ) -> CandidateRecord:
        """Record what a drawing command made: one candidate (the words it drew with, their
        embedding files) and its images with their prompts and seeds."""
        cand = self.store.add_candidate(self.run.id, 0, int(seed), "generate", 0.0, 0.0)
        if embeddings:
            self.files("embedding", embeddings, cand)
        self.files("image", [path for _, _, path in drawn] + list(others), cand)
        self.store.add_images(None, cand.id, drawn)
        return cand


def forget_refused_run(store: Store, run_id: int) -> bool:
    """Delete a run that did nothing (step 0, no file recorded, no evaluation, no checkpoint
    in its folder) with its candidate rows: a command refused before it began leaves no
    trace. Returns whether it did."""
    folder = store.run(run_id).folder
    if folder is not None and folder.is_dir() and any(folder.rglob(CHECKPOINT_NAME)):
        return False  # training began (a Ray group's checkpoint, a first step's)
    with store.transaction() as c:
        run = c.execute("SELECT step FROM runs WHERE id = ?", (run_id,)).fetchone()
        made = c.execute(  # copies of the photos' masks are inputs, not work done
            "SELECT (SELECT COUNT(*) FROM files WHERE run_id = ? AND kind NOT IN "
            f"({', '.join('?' * len(INPUT_FILES))})) + "
            "(SELECT COUNT(*) FROM evaluations WHERE run_id = ?)",
            (run_id, *INPUT_FILES, run_id),
        ).fetchone()[0]
        if run is None or (run["step"] or 0) > 0 or made:
            return False
        c.execute("DELETE FROM files WHERE run_id = ?", (run_id,))
        cands = "SELECT id FROM candidates WHERE run_id = ?"
        c.execute(f"DELETE FROM lineage WHERE child IN ({cands})", (run_id,))
        c.execute("DELETE FROM cuts WHERE run_id = ?", (run_id,))
        c.execute("DELETE FROM candidates WHERE run_id = ?", (run_id,))
        c.execute("DELETE FROM runs WHERE id = ?", (run_id,))
    return True


def _unchanged(store: Store, before: RunRecord) -> bool:
    """Whether a resumed run is where it was (its resume was refused before a step)."""
    return store.run(before.id).step == before.step


def _init_name(candidate) -> str:
    if candidate.init == "word" and candidate.jitter:
        return "jitter"
    return candidate.init


@contextmanager
def recording(
    project: str | Path | None,
    kind: str,
    folder: Path | None,
    model: str,
    token: str,
    settings: dict,
    photos: list = (),
    resume: bool = False,
    parent_run: int | None = None,
):
    """Open the project's store and record a run in it for the duration of a command (see
    `recording_in`)."""
    with Store.open(project) as store:
        with recording_in(
            store, kind, folder, model, token, settings, photos, resume, parent_run
        ) as recorder:
            yield recorder


@contextmanager
def recording_in(
    store: Store,
    kind: str,
    folder: Path | None,
    model: str,
    token: str,
    settings: dict,
    photos: list,
    resume: bool = False,
    parent_run: int | None = None,
):
    """Record a run in an open store for the duration of a command.

    folder None: a new folder `runs/r<id>-<token>` in the project. Resuming continues the
    newest run recorded for the same folder. The run is marked done when the block ends,
    failed (with the one-line reason as its note) if it raises; a new run refused (a one-line
    error before it trained a step or wrote a file) is not kept at all.
    """
    run = store.latest_run_in(folder, kind) if resume and folder else None
    new = run is None
    before = run  # a resumed run as it was, to restore when the resume is refused
    if run is None:
        run = store.create_run(kind, folder, model, token, settings, photos, parent_run)
    else:
        store.update_run(run.id, status="running", note="", settings=settings)
    if run.folder is None:
        stem = file_stem(token, "run")
        store.update_run(run.id, folder=store.runs_folder / f"r{run.id}-{stem}")
    recorder = RunRecorder(store, store.run(run.id))
    try:
        yield recorder
    except BaseException as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        stopped = isinstance(exc, (KeyboardInterrupt, Interrupted))  # Ctrl-C: resumable
        status, note = ("interrupted", STOPPED_NOTE) if stopped else ("failed", reason[:500])
        refused = new and type(exc) is OnewordError  # not a full disk, not Ctrl-C
        try:  # the store may be what failed (a full disk): the first error is the one to tell
            if refused and forget_refused_run(store, run.id):
                pass
            elif before is not None and type(exc) is OnewordError and _unchanged(store, before):
                store.update_run(before.id, status=before.status, note=before.note)
            else:
                store.update_run(run.id, status=status, note=note)
        except WriteFailed:
            log.info("could not mark run r%d failed in the store", run.id)
        raise
    store.update_run(run.id, status="done")
