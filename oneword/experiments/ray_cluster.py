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

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple

import ray

from ..adapters.loading import ModelChoice, load_model
from ..core.train import CHECKPOINT_NAME, TrainConfig
from ..errors import OnewordError
from ..events import EventSink, Finished, Message, Progressed, Started, Stepped, ignore
from .run_photos import read_photos
from .scoring import (
    Evaluation,
    Measured,
    PromptJob,
    Scoreboard,
    ScoreInputs,
    ScoreSettings,
    draw_and_measure,
    make_judge,
    open_evaluation,
    record_ranking,
    reference_images,
    score_inputs,
)
from .store import Store
from .sweep import (
    SweepResult,
    TrainedRows,
    candidate_folders,
    first_file,
    record_run,
    run_folder,
    train_candidates,
    write_candidates,
)

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
        raise OnewordError(
            f"--ray {address or ''}: cannot reach a Ray cluster ({str(exc).splitlines()[0]})"
        ) from None


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
    return [
        Group(g, tuple(range(s, min(s + size, count))), run_dir / GROUPS_FOLDER / f"g{g:02d}")
        for g, s in enumerate(range(0, count, size))
    ]


def group_config(config: TrainConfig, group: Group) -> TrainConfig:
    """The sweep's settings for the group's candidates only (each keeps its seed)."""
    cands = config.candidate_list
    return replace(config, candidates=tuple(cands[k] for k in group.indices))


class GroupProgress(NamedTuple):
    """What a group last reported: its step, its loss (NaN: none) and learning rate; for a
    scoring group, step counts the candidates drawn."""

    step: int
    loss: float
    lr: float


@ray.remote(num_cpus=0, max_restarts=-1)
class ProgressBoard:
    """Where the group tasks report their steps and losses; the driver reads it. It only
    informs the display: if it dies, Ray restarts it and the driver keeps what it saw."""

    def __init__(self):
        self.steps: dict[int, GroupProgress] = {}

    def report(self, group: int, step: int, loss: float, lr: float) -> None:
        self.steps[group] = GroupProgress(step, loss, lr)

    def read(self) -> dict[int, GroupProgress]:
        return dict(self.steps)


def train_group(
    images,
    config: TrainConfig,
    choice: ModelChoice,
    folder: Path,
    max_batch,
    board,
    group: int,
    on_step: Callable | None = None,
) -> TrainedRows:
    """One group on one worker: the pipeline's `train_candidates` in the group's folder,
    resuming from its checkpoint when a previous try left one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def sink(event) -> None:
        if isinstance(event, Stepped):
            board.report.remote(group, event.step, event.loss, event.lr)
            if on_step is not None:
                on_step(group, event.step, folder)

    resume = (folder / CHECKPOINT_NAME).exists()
    trained = train_candidates(images, config, choice, folder, sink, resume, max_batch)
    board.report.remote(group, trained.step, float("nan"), 0.0)
    return trained


def read_board(board) -> dict[int, GroupProgress]:
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
def ray_sweep(
    photos: list[str],
    config: TrainConfig,
    choice: ModelChoice = ModelChoice(),
    project: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    max_batch: int | str | None = "auto",
    on_event: EventSink = ignore,
    address: str | None = None,
    groups: int | None = None,
    on_step: Callable | None = None,
) -> SweepResult:
    """`sweep.sweep` with the candidates' groups spread over a Ray cluster; the same run,
    candidates and files in the store, and the same events for a progress display.

    groups: how many tasks (default: one per GPU of the cluster, else per CPU).
    on_step(group, step, folder): called in the worker after each step (for tests).
    """
    images = read_photos(photos, on_event)
    with Store.open(project) as store:
        folder = run_folder(store, config.token, out, resume)
        if folder is not None and not resume and (folder / GROUPS_FOLDER).exists():
            raise OnewordError(
                f"{folder}: this run folder already has group checkpoints; pass "
                "--resume to continue it or choose another --out"
            )
        connect(address)
        count = len(config.candidate_list)
        groups = groups or _existing_groups(folder, resume) or default_group_count(count)
        settings = {"max_batch": max_batch, "ray": {"groups": groups}}
        with record_run(store, "sweep", folder, photos, config, choice, resume, **settings) as rec:
            plan = plan_groups(count, groups, rec.run.folder)
            return _drive(rec, images, config, choice, plan, max_batch, on_event, on_step)


def _existing_groups(folder: Path | None, resume: bool) -> int:
    """Resuming: the number of groups the run was started with (0: none yet)."""
    if not resume or folder is None or not (folder / GROUPS_FOLDER).is_dir():
        return 0
    return sum(
        1
        for p in (folder / GROUPS_FOLDER).iterdir()
        if p.is_dir() and p.name[:1] == "g" and p.name[1:].isdigit()
    )


def _drive(
    rec,
    images,
    config: TrainConfig,
    choice: ModelChoice,
    plan: list[Group],
    max_batch,
    on_event: EventSink,
    on_step,
) -> SweepResult:
    run_dir = rec.run.folder
    count = len(config.candidate_list)
    folders = candidate_folders(rec, count)
    records = rec.add_candidates(config.candidate_list, config.lr, folders)
    on_event(
        Message(f"run r{rec.run.id}: {count} candidates in {len(plan)} Ray tasks, in {run_dir}")
    )
    board = ProgressBoard.remote()
    pending = _launch_groups(plan, images, config, choice, max_batch, board, on_step)
    on_event(
        Started(config.steps * len(plan), 0, count, config.batch_size * config.grad_accum * count)
    )
    files: dict[int, dict[str, Path]] = {}
    seen: dict[int, GroupProgress] = {}  # per group: the furthest step reported
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            finished = {}
            for ref in done:
                group = pending.pop(ref)
                trained = _result(ref, group)
                rec.files("checkpoint", [group.folder / CHECKPOINT_NAME])
                files.update(
                    write_candidates(
                        rec, config, choice.model, trained, group.indices, folders, records
                    )
                )
                finished[group.number] = GroupProgress(trained.step, float("nan"), 0.0)
            _report(board, seen, finished, rec, config.steps, len(plan), on_event)
    finally:
        for ref in pending:  # a failed or interrupted driver leaves no task running
            ray.cancel(ref, force=True)
        ray.kill(board)
    ordered = [files[k] for k in range(count)]
    on_event(Finished(config.steps, {"candidates": [first_file(f) for f in ordered]}))
    return SweepResult(rec.run.id, run_dir, ordered)


def _launch_groups(
    plan: list[Group], images, config: TrainConfig, choice: ModelChoice, max_batch, board, on_step
) -> dict:
    """One Ray task per group (the photos sent once); {task ref: group}."""
    for g in plan:
        g.folder.mkdir(parents=True, exist_ok=True)
    remote = ray.remote(train_group).options(**task_options())
    images_ref = ray.put(images)
    return {
        remote.remote(
            images_ref,
            group_config(config, g),
            choice,
            g.folder,
            max_batch,
            board,
            g.number,
            on_step,
        ): g
        for g in plan
    }


def _result(ref, group: Group):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, OnewordError) else None
        raise cause or OnewordError(
            f"--ray: group {group.name} failed: {str(exc).splitlines()[0]}"
        ) from None
    except ray.exceptions.RayError as exc:
        raise OnewordError(
            f"--ray: group {group.name} failed after {MAX_RETRIES} retries: "
            f"{str(exc).splitlines()[0]}; run again with --resume"
        ) from None


def _report(
    board,
    seen: dict[int, GroupProgress],
    finished: dict[int, GroupProgress],
    rec,
    steps: int,
    groups: int,
    on_event: EventSink,
) -> None:
    """Merge the groups' reported progress (a re-run group never goes backwards here) and the
    finished groups' final steps; emit it as one Stepped over all groups' steps."""
    for group, news in {**read_board(board), **finished}.items():
        if group not in seen or news.step >= seen[group].step:
            kept_loss = seen[group].loss if group in seen else news.loss
            seen[group] = news if not math.isnan(news.loss) else news._replace(loss=kept_loss)
    if not seen:
        return
    losses = [p.loss for p in seen.values() if not math.isnan(p.loss)]
    loss = sum(losses) / len(losses) if losses else float("nan")
    lr = max(p.lr for p in seen.values())
    on_event(Stepped(sum(p.step for p in seen.values()), steps * groups, loss, loss, lr))
    rec.step(min(p.step for p in seen.values()) if len(seen) == groups else 0)


# -- score -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreTask:
    """What a scoring worker draws and judges: a group of a run's candidates."""

    model_name: str
    candidates: list
    embeddings: list
    job: PromptJob
    settings: ScoreSettings
    class_word: str
    photos: list[str]
    folder: Path  # the evaluation's folder


def score_group(task: ScoreTask, board, group: int) -> Measured:
    """Draw and judge a group of candidates on one worker, as `score` does; the driver records
    what it returns."""
    judge = make_judge(task.settings, task.model_name, task.class_word)
    judge.prepare(reference_images(task.photos), task.job.judged)
    model = load_model(task.model_name, task.settings.device, task.settings.dtype)

    def sink(event) -> None:
        if getattr(event, "what", None) == "scoring":
            board.report.remote(group, event.done, float("nan"), 0.0)

    return draw_and_measure(
        model, task.candidates, task.embeddings, task.job, task.settings, judge, task.folder, sink
    )


def ray_score(
    run_ref: str,
    settings: ScoreSettings,
    project: str | Path | None = None,
    on_event: EventSink = ignore,
    address: str | None = None,
    groups: int | None = None,
) -> Scoreboard:
    """`scoring.score` with groups of candidates drawn and judged on Ray workers; only the
    driver records images, scores and the report in the store, as `score` does."""
    with Store.open(project) as store:
        return ray_score_run(store, run_ref, settings, on_event, address, groups)


def ray_score_run(
    store: Store,
    run_ref: str,
    settings: ScoreSettings,
    on_event: EventSink = ignore,
    address: str | None = None,
    groups: int | None = None,
) -> Scoreboard:
    """`ray_score` in an open store."""
    connect(address)
    inputs = score_inputs(store, run_ref, settings)
    evaluation = open_evaluation(store, inputs, settings)
    count = len(inputs.candidates)
    plan = plan_groups(count, groups or default_group_count(count), evaluation.folder)
    measured = _score_groups(plan, inputs, evaluation, settings, on_event)
    return record_ranking(store, evaluation, inputs.candidates, measured, settings)


def _score_groups(
    plan: list[Group],
    inputs: ScoreInputs,
    evaluation: Evaluation,
    settings: ScoreSettings,
    on_event: EventSink,
) -> Measured:
    """Run the scoring groups; what they measured, in candidate order."""
    board = ProgressBoard.remote()
    remote = ray.remote(score_group).options(**task_options())

    def task(g: Group) -> ScoreTask:
        return ScoreTask(
            model_name=inputs.run.model,
            candidates=[inputs.candidates[k] for k in g.indices],
            embeddings=[inputs.embeddings[k] for k in g.indices],
            job=evaluation.job,
            settings=settings,
            class_word=inputs.class_word,
            photos=inputs.run.photos,
            folder=evaluation.folder,
        )

    pending = {remote.remote(task(g), board, g.number): g for g in plan}
    count = len(inputs.candidates)
    by_group: dict[int, Measured] = {}
    on_event(Progressed(0, count, "scoring"))
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                group = pending.pop(ref)
                by_group[group.number] = _result(ref, group)
            counts = read_board(board)
            drawn = sum(
                len(g.indices)
                if g.number in by_group
                else counts.get(g.number, GroupProgress(0, 0.0, 0.0)).step
                for g in plan
            )
            on_event(Progressed(min(drawn, count - 1) if pending else count, count, "scoring"))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.kill(board)
    parts = [by_group[g.number] for g in plan]  # groups are contiguous and in order
    return Measured(
        [r for m in parts for r in m.raw],
        [s for m in parts for s in m.sheets],
        [i for m in parts for i in m.images],
        [e for m in parts for e in m.per_image],
    )
