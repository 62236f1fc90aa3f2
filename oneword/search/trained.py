"""Bred children trained on before they are judged: the exploit-and-explore step of
population-based training (Jaderberg et al. 2017, "Population Based Training of Neural
Networks") over the seeds of a sweep.

A generation bred by `evolve` (crossovers, blends and mutations of the fittest) is not judged
as bred: its children start from their bred rows and train N more steps, all of them batched
as one run through the training pipeline every sweep goes through (`experiments.sweep`), each
with its first parent's learning rate, on the parents' photos with the masks they learned with
(read back from the masked run's folder). The run is a run of kind "evolve" with its children's
lineage, the bred rows kept in its folder (`bred.pt`, named in its settings and `run.json`), so
a stopped generation resumes from its checkpoint on the same rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..adapters.loading import ModelChoice
from ..checks import at_least
from ..core.train import CHECKPOINT_NAME, Candidate, TrainConfig
from ..errors import OnewordError
from ..events import EventSink, Message, ignore
from ..experiments.recording import RunRecorder
from ..experiments.run_photos import inherited_masks, keep_masks, run_photos
from ..experiments.store import CandidateRecord, RunRecord, Store
from ..experiments.sweep import (
    candidate_folders,
    record_run,
    recording_steps,
    train_candidates,
    write_candidates,
)
from ..files import atomic_write, atomic_write_text
from .embedding_ops import Child

log = logging.getLogger(__name__)

BRED_ROWS = "bred.pt"  # the children's rows as bred, [P, ...], in the run folder


@dataclass(frozen=True)
class ChildTraining:
    """`evolve --train-steps`: how far bred children train on, and on what."""

    steps: int
    device: str | None = None
    dtype: str | None = None
    max_batch: int | str | None = "auto"

    def __post_init__(self):
        at_least(self.steps, "--train-steps", 1)
        ModelChoice("tiny", self.device, self.dtype)  # a misspelt device is refused now


def parent_config(run: RunRecord) -> TrainConfig:
    """The training settings a run's words were learned with (a bred run carries its
    parents')."""
    recorded = run.settings.get("config")
    if not recorded:
        raise OnewordError(
            f"--train-steps: run {run.name} records no training settings to train its "
            "children with; breed from a sweep or learn run (or a generation bred from one)"
        )
    return TrainConfig.from_json(json.dumps(recorded))


def child_config(
    run: RunRecord, firsts: list[CandidateRecord], steps: int, seed: int
) -> TrainConfig:
    """The parent run's recipe for `steps` more steps, one candidate per child with seed
    seed + k and its first parent's learning rate (a bred parent, which records none: the
    run's). No warmup, no early stop, no previews: the children go on training."""
    base = parent_config(run)
    init = "word" if base.init_word else "random"
    candidates = tuple(
        Candidate(seed=seed + k, init=init, lr=p.lr if p.lr > 0 else None)
        for k, p in enumerate(firsts)
    )
    return replace(
        base,
        steps=steps,
        stop_at=None,
        stop_when_flat=None,
        warmup_steps=0,
        preview_every=0,
        checkpoint_every=min(base.checkpoint_every, steps),
        candidates=candidates,
        max_batch=None,
    )


def keep_bred_rows(folder: Path, children: list[Child], resume: bool) -> torch.Tensor:
    """The children's bred rows [P, ...]: written to the run folder, or read back from it
    when a stopped generation resumes (so it trains on from the very rows it began with)."""
    path = folder / BRED_ROWS
    if resume and path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    rows = torch.stack([c.vectors.detach().float().cpu() for c in children])
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(rows, tmp))
    return rows


def add_children(
    rec: RunRecorder,
    parent_candidates: list[CandidateRecord],
    children: list[Child],
    config: TrainConfig,
    folders: list[Path],
    mutation: float,
) -> list[CandidateRecord]:
    """Record each child as a candidate (its relation, "+trained") with its parents."""
    records = []
    for k, (child, cand) in enumerate(zip(children, config.candidate_list)):
        relation = f"{child.relation}+trained"
        record = rec.store.add_candidate(
            rec.run.id,
            k,
            cand.seed,
            relation,
            mutation if "mutation" in child.relation else 0.0,
            float(cand.lr or config.lr),
            folders[k],
        )
        parents = [parent_candidates[i].id for i in child.parents]
        rec.store.add_parents(record.id, parents, child.relation)
        records.append(record)
    return records


def train_children(
    store: Store,
    run: RunRecord,
    parent_candidates: list[CandidateRecord],
    children: list[Child],
    info: dict,
    training: ChildTraining,
    on_event: EventSink = ignore,
    resumed: RunRecord | None = None,
) -> RunRecord:
    """A run of kind "evolve" whose candidates are `children` trained `training.steps` steps
    from their bred rows, in one batch; `resumed`: the stopped run of this generation, whose
    bred rows and checkpoint it goes on from."""
    firsts = [parent_candidates[c.parents[0]] for c in children]
    config = child_config(run, firsts, training.steps, int(info["seed"]) % 2**62)
    choice = ModelChoice(run.model, training.device, training.dtype)
    resume = resumed is not None and resumed.folder is not None
    folder = resumed.folder if resume else None
    images, masking = children_photos(store, run, config, choice, on_event)
    config = replace(config, mask_floor=masking.get("mask_floor"))
    mutation = float(info.get("breeding", {}).get("mutation", 0.0))
    evolve = {**info, "train_steps": training.steps}
    with record_run(
        store, "evolve", folder, run.photos, config, choice, resume, run.id,
        max_batch=training.max_batch, evolve=evolve, start_rows=BRED_ROWS, **masking,
    ) as rec:  # fmt: skip
        bred = keep_bred_rows(rec.run.folder, children, resume)
        folders = candidate_folders(rec, len(children))
        records = add_children(rec, parent_candidates, children, config, folders, mutation)
        write_run_info(rec, config, evolve, records, store)
        ckpt = rec.run.folder / CHECKPOINT_NAME
        on_event(Message(f"{rec.run.name}: {len(children)} children train {config.steps} steps"))
        trained = train_candidates(
            images, config, choice, rec.run.folder, recording_steps(rec, on_event),
            resume and ckpt.exists(), training.max_batch, None, bred,
        )  # fmt: skip
        rec.files("checkpoint", [ckpt])
        keep_masks(rec, images)
        write_candidates(rec, config, choice.model, trained, range(len(children)), folders, records)
    return store.run(rec.run.id)


def masked_ancestor(store: Store, run: RunRecord) -> RunRecord | None:
    """The run whose masks `run`'s words learned with: itself, or the run it was bred or
    mixed from (an untrained generation keeps its parents' recipe, not their masks); None
    for words learned on whole photos."""
    seen: set[int] = set()
    while run is not None and run.id not in seen:
        if (run.settings.get("config") or {}).get("mask_floor") is None:
            return None
        if run.settings.get("mask"):
            return run
        seen.add(run.id)
        run = store.run(run.parent_run) if run.parent_run else None
    return None


def children_photos(
    store: Store, run: RunRecord, config: TrainConfig, choice: ModelChoice, on_event: EventSink
):
    """The photos the children of `run`'s words train on, with the masks their parents
    learned with (read back from the masked run's folder), and what the run records of them;
    config.mask_floor is the parents'."""
    source = masked_ancestor(store, run)
    if source is None:
        return run_photos(run.photos, replace(config, mask_floor=None), choice, on_event)
    on_event(Message(f"the children train with the masks of {source.name}"))
    return inherited_masks(run.photos, config, source, on_event)


def write_run_info(
    rec: RunRecorder, config: TrainConfig, evolve: dict, records: list, store: Store
) -> None:
    """`run.json` in the run folder: the recipe, the breeding, where the bred rows are and
    every child's parents."""
    parents = {r.name: [f"r{p.run_id}/{p.name}" for p in store.parents(r.id)] for r in records}
    info = {
        "config": json.loads(config.to_json()),
        "model": rec.run.model,
        "photos": rec.run.photos,
        "evolve": evolve,
        "start_rows": BRED_ROWS,
        "parents": parents,
    }
    atomic_write_text(rec.run.folder / "run.json", json.dumps(info, indent=2, default=str))


def generation_run(store: Store, parent: RunRecord, generation: int) -> RunRecord | None:
    """The newest run of `generation` bred from `parent` (None if none)."""
    bred = [
        r
        for r in store.runs("evolve")
        if r.parent_run == parent.id
        and int(r.settings.get("evolve", {}).get("generation", -1)) == generation
    ]
    return bred[-1] if bred else None
