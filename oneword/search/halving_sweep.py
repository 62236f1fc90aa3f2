"""`oneword sweep --halving`: successive halving over a sweep's candidates.

Every candidate trains to the first rung's step; the label-free score (the one `score` ranks
by, without the world oracle's labels) decides which share goes on; the rest keep the files
of the step they reached. Each cut is recorded in the store with the scores that decided it,
so a stopped run resumes at the rung it was in (`halving` holds the schedule).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..adapters.loading import ModelChoice
from ..checks import at_least
from ..core.checkpoint import keep_candidates
from ..core.train import CHECKPOINT_NAME, TrainConfig
from ..errors import OnewordError
from ..events import EventSink, Finished, Message, ignore
from ..experiments.auto_masks import AutoMasking
from ..experiments.cuts import add_cut, run_cuts
from ..experiments.run_photos import early_masks, keep_masks, run_photos
from ..experiments.score_math import FIDELITY_METRICS, PROMPT_METRICS, label_free_score
from ..experiments.scoring import ScoreSettings, score_run
from ..experiments.store import CandidateRecord, Store
from ..experiments.sweep import (
    SweepResult,
    candidate_folders,
    first_file,
    record_run,
    recording_steps,
    run_folder,
    train_candidates,
    write_candidates,
)
from .halving import Rung, check_keep, halving_rungs, steps_for_budget, survivors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HalvingPlan:
    """keep: the share of candidates kept at each cut; budget: training samples over all
    candidates (None: the survivor trains --steps); score: how each rung is scored."""

    keep: float = 0.5
    budget: int | None = None
    score: ScoreSettings = field(default_factory=lambda: ScoreSettings(images=8))

    def __post_init__(self):
        check_keep(self.keep)
        if self.budget is not None:
            at_least(self.budget, "--budget", 1)

    def schedule(self, config: TrainConfig) -> tuple[int, list[Rung]]:
        """The survivor's steps and the rungs for `config`'s candidates."""
        count = len(config.candidate_list)
        steps = config.steps
        if self.budget is not None:
            per_step = config.batch_size * config.grad_accum
            steps = steps_for_budget(count, self.keep, self.budget // per_step)
        return steps, halving_rungs(count, self.keep, steps)


def halving_sweep(
    photos: list[str],
    config: TrainConfig,
    plan: HalvingPlan,
    choice: ModelChoice = ModelChoice(),
    project: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    max_batch: int | str | None = "auto",
    on_event: EventSink = ignore,
    mask_dir: str | None = None,
    auto_mask: AutoMasking | None = None,
) -> SweepResult:
    """Train, score and cut the candidates rung by rung; record every cut. With
    `config.mask_floor`, the photos' masks weight the loss (`mask_dir`: a folder of them;
    `auto_mask`: made by the model itself)."""
    check_supported(config)
    steps, rungs = plan.schedule(config)
    config = replace(config, steps=steps)
    with Store.open(project) as store:
        folder = run_folder(store, config.token, out, resume)
        if folder is not None and not resume and (folder / CHECKPOINT_NAME).exists():
            raise OnewordError(
                f"{folder}: this run folder already has a checkpoint; pass --resume "
                "to continue it or choose another --out"
            )
        kept = folder if resume else None
        images, masking = run_photos(photos, config, choice, on_event, mask_dir, auto_mask, kept)
        schedule = [{"step": r.step, "candidates": r.count} for r in rungs]
        halving = {"keep": plan.keep, "budget": plan.budget, "rungs": schedule}
        with record_run(
            store, "sweep", folder, photos, config, choice, resume, None,
            max_batch=max_batch, halving=halving, **masking,
        ) as rec:  # fmt: skip
            count = len(config.candidate_list)
            folders = candidate_folders(rec, count)
            records = rec.add_candidates(config.candidate_list, config.lr, folders)
            written = early_masks(rec, images)
            on_event(Message(f"run r{rec.run.id}: {count} candidates, rungs at steps "
                             + ", ".join(str(r.step) for r in rungs)))  # fmt: skip
            files = {}
            alive = alive_after_cuts(store, rec.run.id, records)
            for r, rung in enumerate(rungs):
                if r < len(rungs) - 1 and store_has_cut(store, rec.run.id, r):
                    continue
                sub = replace(config, candidates=tuple(config.candidate_list[k] for k in alive))
                ckpt = rec.run.folder / CHECKPOINT_NAME
                if ckpt.exists():
                    keep_candidates(ckpt, sub, sub.candidate_list)
                trained = train_candidates(
                    images, replace(sub, stop_at=rung.step), choice, rec.run.folder,
                    recording_steps(rec, on_event), ckpt.exists(), max_batch,
                )  # fmt: skip
                files.update(
                    write_candidates(rec, config, choice.model, trained, alive, folders, records)
                )
                if r == len(rungs) - 1:
                    break
                alive = cut(
                    store, rec.run.id, r, rung, rungs[r + 1].count, alive, records, plan, on_event
                )
            keep_masks(rec, images, written)
            on_event(Finished(steps, {"candidates": [first_file(files[k]) for k in alive]}))
            return SweepResult(rec.run.id, rec.run.folder, [files[k] for k in sorted(files)])


def check_supported(config: TrainConfig) -> None:
    if config.crop != "center":
        raise OnewordError("--halving: only with --crop center (the default) for now")
    if config.stop_when_flat is not None:
        raise OnewordError("--halving and --stop-when-flat: choose one")


def cut(
    store: Store,
    run_id: int,
    r: int,
    rung: Rung,
    next_count: int,
    alive: list[int],
    records: list[CandidateRecord],
    plan: HalvingPlan,
    on_event: EventSink,
) -> list[int]:
    """Score the candidates alive at a rung, record the cut, and return those kept."""
    ids = [records[k].id for k in alive]
    board = score_run(store, f"r{run_id}", plan.score, on_event, only=set(ids))
    by_id = {row.candidate.id: row.metrics for row in board.rows}
    names = [m for m in FIDELITY_METRICS + PROMPT_METRICS if m in by_id[ids[0]]]
    metrics = {m: torch.tensor([by_id[i][m] for i in ids], dtype=torch.float64) for m in names}
    scores = label_free_score(metrics, plan.score.fidelity_weight).tolist()
    kept = [alive[p] for p in survivors(scores, next_count)]
    decided = [(records[k].id, s, k in kept) for k, s in zip(alive, scores)]
    add_cut(store, run_id, r, rung.step, board.evaluation_id, decided)
    on_event(
        Message(
            f"step {rung.step}: kept {', '.join(records[k].name for k in kept)} of "
            f"{len(alive)} (evaluation e{board.evaluation_id})"
        )
    )
    return kept


def store_has_cut(store: Store, run_id: int, rung: int) -> bool:
    return any(c["rung"] == rung for c in run_cuts(store, run_id))


def alive_after_cuts(store: Store, run_id: int, records: list[CandidateRecord]) -> list[int]:
    """Positions of the candidates the recorded cuts kept (all, before the first cut), best
    of the last cut first."""
    cuts = run_cuts(store, run_id)
    if not cuts:
        return list(range(len(records)))
    last = max(c["rung"] for c in cuts)
    position = {rec.id: k for k, rec in enumerate(records)}
    return [position[c["candidate_id"]] for c in cuts if c["rung"] == last and c["kept"]]
