"""Sweeps over a Ray cluster: groups of candidates trained on many GPUs and machines.

Imported only when a command is given `--ray`. The K candidates of a sweep are split into
groups; each group is one Ray task (one GPU, or one CPU when the cluster has none) that runs
the core trainer (`train.train`, batched and micro-batched as in `sweep`) for its candidates in
its own group folder `<run>/groups/gNN/` with its own checkpoint. Candidate k keeps its own
seed, init and learning rate, so it learns what `learn` (and a plain sweep) gives it.

Assumption: the run folder is on a filesystem that every Ray node shares (NFS, a cluster
volume...). The photos, the model folder (when it is a path) and the group checkpoints are read
and written there; a group whose worker dies is re-run by Ray (`max_retries`) on any node and
continues from its last checkpoint, to the same result.

Only the driver writes the experiment store and the candidates' embedding files, once per
candidate, keyed by (run, candidate index): a re-run group never adds rows.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import ray

from ..api import ModelChoice
from ..errors import OnewordError
from ..events import EventSink, Finished, Message, Progressed, Started, Stepped, ignore
from ..core.train import CHECKPOINT_NAME, TrainConfig

GROUPS_FOLDER = "groups"
MAX_RETRIES = 3  # re-runs of a group whose worker died
POLL_SECONDS = 0.5  # how often the driver reads the groups' progress


@dataclass(frozen=True)
class Group:
    """Candidates indices[i] of the sweep, trained together in folder."""
    number: int
    indices: tuple[int, ...]
    folder: Path

    @property
    def name(self) -> str:
        return f"g{self.number:02d}"


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at `address` ('auto': the running one), or start a local one
    (None); nothing happens when this process is already connected."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise OnewordError(f"--ray {address or ''}: cannot reach a Ray cluster "
                           f"({str(exc).splitlines()[0]})") from None


def default_group_count(count: int) -> int:
    """One group per GPU of the cluster, else per CPU; never more groups than candidates."""
    resources = ray.cluster_resources()
    slots = int(resources.get("GPU", 0)) or int(resources.get("CPU", 1))
    return max(1, min(count, slots))


def plan_groups(count: int, groups: int, run_dir: Path) -> list[Group]:
    """Candidates 0..count-1 in `groups` contiguous groups of near-equal size."""
    if groups < 1:
        raise OnewordError(f"--ray-groups {groups}: must be 1 or more")
    size = math.ceil(count / min(groups, count))
    return [Group(g, tuple(range(s, min(s + size, count))),
                  run_dir / GROUPS_FOLDER / f"g{g:02d}")
            for g, s in enumerate(range(0, count, size))]


def group_config(config: TrainConfig, group: Group) -> TrainConfig:
    """The sweep's settings for the group's candidates only (each keeps its seed)."""
    cands = config.candidate_list
    return replace(config, candidates=tuple(cands[k] for k in group.indices))


@ray.remote(num_cpus=0, max_restarts=-1)
class ProgressBoard:
    """Where the group tasks report their steps and losses; the driver reads it. It only
    informs the display: if it dies, Ray restarts it and the driver keeps what it saw."""

    def __init__(self):
        self.steps: dict[int, tuple[int, float, float]] = {}

    def report(self, group: int, step: int, loss: float, lr: float) -> None:
        self.steps[group] = (step, loss, lr)

    def read(self) -> dict[int, tuple[int, float, float]]:
        return dict(self.steps)


def train_group(images, config: TrainConfig, choice: ModelChoice, folder: Path,
                max_batch, board, group: int, on_step: Callable | None = None):
    """One group on one worker: train (resuming from the group's checkpoint when a previous
    try left one) and return (rows [k, N, d] float32 on CPU, step, layout)."""
    from ..core.prompts import placeholder_names
    from .sweep import candidate_photos, resolve_max_batch, train_fitting_memory
    from ..core.train import TextualInversionInvariant
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = choice.load()
    pixels = candidate_photos(images, config, config.resolution or model.native_resolution)
    model.add_placeholder_tokens(placeholder_names(config.token, config.vectors))
    invariant = TextualInversionInvariant(model)
    chunk = resolve_max_batch(model, config, max_batch)

    def sink(event) -> None:
        if isinstance(event, Stepped):
            board.report.remote(group, event.step, event.loss, event.lr)
            if on_step is not None:
                on_step(group, event.step, folder)

    resume = (folder / CHECKPOINT_NAME).exists()
    state = train_fitting_memory(model, pixels, replace(config, max_batch=chunk), folder,
                                 sink, resume)
    invariant.check()
    board.report.remote(group, state.step, float("nan"), 0.0)
    return state.rows().float().cpu(), state.step, tuple(model.embedding_layout)


def read_board(board) -> dict[int, tuple[int, float, float]]:
    try:
        return ray.get(board.read.remote(), timeout=30)
    except (ray.exceptions.RayError, TimeoutError):
        return {}  # the board is being restarted: no news this time


def task_options() -> dict:
    """One GPU per group when the cluster has GPUs, else one CPU."""
    gpus = ray.cluster_resources().get("GPU", 0)
    resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    return {**resources, "max_retries": MAX_RETRIES, "retry_exceptions": False}


# -- the driver ------------------------------------------------------------------------------
def ray_sweep(photos: list[str], config: TrainConfig, choice: ModelChoice = ModelChoice(),
              project: str | Path | None = None, out: str | Path | None = None,
              resume: bool = False, max_batch: int | str | None = "auto",
              on_event: EventSink = ignore, address: str | None = None,
              groups: int | None = None, on_step: Callable | None = None):
    """`sweep.sweep` with the candidates' groups spread over a Ray cluster; the same run,
    candidates and files in the store, and the same events for a progress display.

    groups: how many tasks (default: one per GPU of the cluster, else per CPU).
    on_step(group, step, folder): called in the worker after each step (for tests).
    """
    from ..core import data
    from .store import recording
    from .sweep import _sweep_folder
    images, skipped = data.load_photos(photos)
    for line in skipped:
        on_event(Message(line))
    folder = _sweep_folder(project, config.token, out, resume)
    if folder is not None and not resume and (folder / GROUPS_FOLDER).exists():
        raise OnewordError(f"{folder}: this run folder already has group checkpoints; pass "
                           "--resume to continue it or choose another --out")
    connect(address)
    count = len(config.candidate_list)
    groups = groups or _existing_groups(folder, resume) or default_group_count(count)
    settings = {"config": json.loads(config.to_json()), "model": choice.model,
                "max_batch": max_batch, "ray": {"groups": groups}}
    with recording(project, "sweep", folder, choice.model, config.token, settings,
                   [str(p) for p in photos], resume) as rec:
        plan = plan_groups(count, groups, rec.run.folder)
        return _drive(rec, images, config, choice, plan, max_batch, on_event, on_step)


def _existing_groups(folder: Path | None, resume: bool) -> int:
    """Resuming: the number of groups the run was started with (0: none yet)."""
    if not resume or folder is None or not (folder / GROUPS_FOLDER).is_dir():
        return 0
    return sum(1 for p in (folder / GROUPS_FOLDER).iterdir()
               if p.is_dir() and p.name[:1] == "g" and p.name[1:].isdigit())


def _drive(rec, images, config: TrainConfig, choice: ModelChoice, plan: list[Group],
           max_batch, on_event: EventSink, on_step):
    from .sweep import SweepResult
    run_dir = rec.run.folder
    count = len(config.candidate_list)
    folders = [run_dir / "candidates" / f"c{k:02d}" for k in range(count)]
    records = rec.add_candidates(config.candidate_list, config.lr, folders)
    on_event(Message(f"run r{rec.run.id}: {count} candidates in {len(plan)} Ray tasks, "
                     f"in {run_dir}"))
    for g in plan:
        g.folder.mkdir(parents=True, exist_ok=True)
    board = ProgressBoard.remote()
    remote = ray.remote(train_group).options(**task_options())
    images_ref = ray.put(images)
    pending = {remote.remote(images_ref, group_config(config, g), choice, g.folder, max_batch,
                             board, g.number, on_step): g for g in plan}
    on_event(Started(config.steps * len(plan), 0, count,
                     config.batch_size * config.grad_accum * count))
    files: dict[int, dict[str, Path]] = {}
    seen: dict[int, tuple[int, float, float]] = {}  # per group: the furthest step reported
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            finished = {}
            for ref in done:
                group = pending.pop(ref)
                rows, step, layout = _result(ref, group)
                files.update(_write_group(rec, config, choice, group, rows, step, layout,
                                          folders, records))
                finished[group.number] = (step, float("nan"), 0.0)
            _report(board, seen, finished, rec, (config.steps, len(plan)), on_event)
    finally:
        for ref in pending:  # a failed or interrupted driver leaves no task running
            ray.cancel(ref, force=True)
        ray.kill(board)
    ordered = [files[k] for k in range(count)]
    on_event(Finished(config.steps, {"candidates": [next(iter(f.values())) for f in ordered]}))
    return SweepResult(rec.run.id, run_dir, ordered)


def _result(ref, group: Group):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, OnewordError) else None
        raise cause or OnewordError(f"--ray: group {group.name} failed: "
                                    f"{str(exc).splitlines()[0]}") from None
    except ray.exceptions.RayError as exc:
        raise OnewordError(f"--ray: group {group.name} failed after {MAX_RETRIES} retries: "
                           f"{str(exc).splitlines()[0]}; run again with --resume") from None


def _write_group(rec, config: TrainConfig, choice: ModelChoice, group: Group, rows, step: int,
                 layout, folders, records) -> dict[int, dict[str, Path]]:
    """The embedding files and store rows of a finished group (idempotent per candidate)."""
    from ..api import token_name
    from ..core.embeddings import LearnedEmbedding, layout_metadata, write_embedding_files
    from .sweep import candidate_metadata
    rec.files("checkpoint", [group.folder / CHECKPOINT_NAME])
    out = {}
    for row, k in zip(rows, group.indices):
        cand = config.candidate_list[k]
        emb = LearnedEmbedding(config.token, row,
                               {**candidate_metadata(config, choice, cand, k, rec.run.id, step),
                                **layout_metadata(layout)})
        written = write_embedding_files(emb, folders[k], token_name(config.token))
        rec.files("embedding", written.values(), records[k])
        out[k] = written
    return out


def _report(board, seen: dict, finished: dict, rec, size: tuple[int, int],
            on_event: EventSink) -> None:
    """Merge the groups' reported progress (a re-run group never goes backwards here) and the
    finished groups' final steps; emit it as one Stepped over all groups' steps."""
    for group, (step, loss, lr) in {**read_board(board), **finished}.items():
        if group not in seen or step >= seen[group][0]:
            seen[group] = (step, loss if loss == loss else seen.get(group, (0, loss))[1], lr)
    if not seen:
        return
    steps, groups = size
    losses = [loss for _, loss, _ in seen.values() if loss == loss]
    loss = sum(losses) / len(losses) if losses else float("nan")
    lr = max(r for _, _, r in seen.values())
    on_event(Stepped(sum(s for s, _, _ in seen.values()), steps * groups, loss, loss, lr))
    rec.step(min(s for s, _, _ in seen.values()) if len(seen) == groups else 0)


# -- score -------------------------------------------------------------------------------------
class _ImageRows:
    """Stands in for the store in a scoring worker: keeps the image rows for the driver."""

    def __init__(self):
        self.rows: list[tuple] = []

    def add_images(self, evaluation, candidate_id, rows) -> None:
        self.rows.append((evaluation, candidate_id, list(rows)))


def score_group(model_name: str, candidates, embeddings, job, settings, class_word: str,
                photos: list[str], where, board, group: int):
    """Draw and judge a group of candidates on one worker (as `score` does); returns
    (raw metrics, contact sheets, image rows) for the driver to record."""
    from ..adapters.loading import load_model
    from .scoring import _draw_and_measure, make_judge, reference_images
    judge = make_judge(settings, model_name, class_word)
    judge.prepare(reference_images(photos), job.judged)
    model = load_model(model_name, settings.device, settings.dtype)
    images = _ImageRows()

    def sink(event) -> None:
        if getattr(event, "what", None) == "scoring":
            board.report.remote(group, event.done, float("nan"), 0.0)

    raw, sheets = _draw_and_measure(images, model, candidates, embeddings, job, settings, judge,
                                    where, sink)
    return raw, sheets, images.rows


def ray_score(run_ref: str, settings, project: str | Path | None = None,
              on_event: EventSink = ignore, address: str | None = None,
              groups: int | None = None):
    """`scoring.score` with groups of candidates drawn and judged on Ray workers; only the
    driver records images, scores and the report in the store, as `score` does."""
    from .scoring import open_evaluation, record_ranking, score_inputs
    from .store import Store
    connect(address)
    with Store.open(project) as store:
        run, cands, embeddings, class_word = score_inputs(store, run_ref, settings)
        job, evaluation, folder, judge = open_evaluation(store, run, settings, class_word,
                                                         embeddings[0].token)
        plan = plan_groups(len(cands), groups or default_group_count(len(cands)), folder)
        raw, sheets, image_rows = _score_groups(
            plan, (run, cands, embeddings, job, settings, class_word), (evaluation, folder),
            on_event)
        for evaluation_id, cand_id, rows in image_rows:
            store.add_images(evaluation_id, cand_id, rows)
        return record_ranking(store, (run, evaluation, folder), cands, (raw, sheets),
                              settings, judge, job)


def _score_groups(plan: list[Group], inputs, where, on_event: EventSink):
    """Run the scoring groups; (raw metrics, sheets) in candidate order, and image rows."""
    run, cands, embeddings, job, settings, class_word = inputs
    board = ProgressBoard.remote()
    remote = ray.remote(score_group).options(**task_options())
    pending = {remote.remote(run.model, [cands[k] for k in g.indices],
                             [embeddings[k] for k in g.indices], job, settings, class_word,
                             run.photos, where, board, g.number): g for g in plan}
    raw, sheets, image_rows = [None] * len(cands), [None] * len(cands), []
    on_event(Progressed(0, len(cands), "scoring"))
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                group = pending.pop(ref)
                group_raw, group_sheets, rows = _result(ref, group)
                for k, r, sh in zip(group.indices, group_raw, group_sheets):
                    raw[k], sheets[k] = r, sh
                image_rows.extend(rows)
            counts = read_board(board)
            drawn = sum(len(plan[g].indices) if g not in [p.number for p in pending.values()]
                        else counts.get(g, (0,))[0] for g in range(len(plan)))
            on_event(Progressed(min(drawn, len(cands) - 1) if pending else len(cands),
                                len(cands), "scoring"))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.kill(board)
    return raw, sheets, image_rows
