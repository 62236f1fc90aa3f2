"""`oneword bench dreambench`: the DreamBench protocol of DreamBooth (Ruiz et al. 2023).

For each subject: learn its word from its photos (a sweep of K candidates, K=1 by default),
draw 4 images for each of its 25 prompts (live-subject prompts for cats and dogs, object
prompts otherwise), and measure DINO, CLIP-I (fidelity to the subject's photos) and CLIP-T
(fidelity to the prompt). The table averages over subjects, as the paper's Table 1 does, with
the 'real images' row: the subject's photos compared among themselves.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..adapters.loading import ModelChoice
from ..core.generate import Sampling
from ..core.train import TrainConfig
from ..errors import OnewordError
from ..events import EventSink, Message, ignore
from ..files import atomic_write_text
from . import dreambench
from .recording import RunRecorder, recording
from .scoring import ScoreSettings, score_run
from .sweep import CandidatePlan, sweep_in

log = logging.getLogger(__name__)

TABLE_METRICS = ("dino", "clip_i", "clip_t")
PAPER_ROWS = (  # DreamBooth, Table 1 (DINO ViT-S/16, CLIP ViT-B/32 there)
    ("Real images (paper)", 0.774, 0.885, None),
    ("DreamBooth, Stable Diffusion (paper)", 0.668, 0.803, 0.305),
    ("Textual Inversion, Stable Diffusion (paper)", 0.569, 0.780, 0.255),
)


@dataclass(frozen=True)
class DreamBenchSettings:
    data: Path
    subjects: tuple[str, ...] = ()  # empty: every subject folder
    prompt_limit: int | None = None  # empty: all 25 prompts
    images_per_prompt: int = dreambench.IMAGES_PER_PROMPT
    plan: CandidatePlan = field(default_factory=lambda: CandidatePlan(count=1))
    training: TrainConfig = field(
        default_factory=lambda: TrainConfig(token="<s>", init_word="thing")
    )
    score: ScoreSettings = field(default_factory=lambda: ScoreSettings(sampling=Sampling(steps=50)))
    max_batch: int | str | None = "auto"

    def __post_init__(self):
        if self.images_per_prompt < 1:
            raise OnewordError(f"--images-per-prompt {self.images_per_prompt}: must be 1 or more")


def subject_token(subject: str) -> str:
    return "<" + re.sub(r"[^A-Za-z0-9_-]+", "-", subject) + ">"


def run_dreambench(
    settings: DreamBenchSettings,
    choice: ModelChoice = ModelChoice(),
    project: str | Path | None = None,
    out: str | Path | None = None,
    on_event: EventSink = ignore,
) -> dict:
    """Learn and score every subject; returns (and writes) the results and the table."""
    folders = dreambench.subjects_in(settings.data)
    classes = dreambench.read_classes(settings.data)
    chosen = list(settings.subjects) or list(folders)
    missing = [s for s in chosen if s not in folders]
    if missing:
        raise OnewordError(f"--subjects {missing[0]}: no such subject folder in {settings.data}")
    record = {
        "data": str(Path(settings.data).absolute()),
        "subjects": chosen,
        "prompt_limit": settings.prompt_limit,
        "images_per_prompt": settings.images_per_prompt,
        "model": choice.model,
        "training": json.loads(settings.training.to_json()),
    }
    with recording(
        project,
        "bench",
        Path(out).absolute() if out else None,
        choice.model,
        "dreambench",
        record,
        [str(settings.data)],
    ) as rec:
        results = {}
        for i, subject in enumerate(chosen):
            on_event(Message(f"[{i + 1}/{len(chosen)}] {subject}"))
            results[subject] = bench_subject(
                subject, folders[subject], classes, settings, choice, rec, on_event
            )
        summary = summarize(results)
        write_results(rec.run.folder, summary, results)
        rec.files("table", [rec.run.folder / "results.json", rec.run.folder / "table.md"])
        return {
            "run": rec.run.name,
            "folder": rec.run.folder,
            "summary": summary,
            "subjects": results,
        }


def bench_subject(
    subject: str,
    photos: Path,
    classes: dict[str, str],
    settings: DreamBenchSettings,
    choice: ModelChoice,
    rec: RunRecorder,
    on_event: EventSink,
) -> dict:
    class_word = classes.get(subject) or subject.rstrip("0123456789_")
    token = subject_token(subject)
    config = replace(
        settings.training,
        token=token,
        init_word=class_word,
        seed=settings.plan.seed,
        candidates=settings.plan.candidates(),
    )
    result = sweep_in(
        rec.store,
        [str(photos)],
        config,
        choice,
        rec.run.folder / subject,
        resume=False,
        max_batch=settings.max_batch,
        on_event=on_event,
        parent_run=rec.run.id,
    )
    kind = dreambench.prompt_set_for_class(class_word)
    prompts = len(dreambench.prompts_for(kind)[: settings.prompt_limit])
    scoring = replace(
        settings.score,
        prompts=kind,
        class_word=class_word,
        prompt_limit=settings.prompt_limit,
        images=prompts * settings.images_per_prompt,
        device=choice.device,
        dtype=choice.dtype,
    )
    board = score_run(rec.store, f"r{result.run_id}", scoring, on_event)
    metrics = [r.metrics for r in board.rows]
    return {
        "class": class_word,
        "run": f"r{result.run_id}",
        "prompts": kind,
        "candidates": metrics,
        "best": board.rows[0].metrics,
        "real": board.reference,
        "report": str(board.report),
    }


def summarize(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per metric, the mean over subjects of: the mean candidate, the best candidate (by the
    combined score), the real photos among themselves."""
    out: dict[str, dict[str, float]] = {}
    for metric in TABLE_METRICS:
        mean_cand = [
            torch.tensor([c[metric] for c in r["candidates"]]).mean()
            for r in results.values()
            if metric in r["best"]
        ]
        best = [r["best"][metric] for r in results.values() if metric in r["best"]]
        real = [r["real"][metric] for r in results.values() if metric in r["real"]]
        out[metric] = {
            "mean": float(torch.stack(mean_cand).mean()) if mean_cand else None,
            "best": float(torch.tensor(best).mean()) if best else None,
            "real": float(torch.tensor(real).nanmean()) if real else None,
        }
    return out


def table_markdown(summary: dict, subjects: int, candidates: int) -> str:
    def cell(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        "| Method | DINO | CLIP-I | CLIP-T |",
        "|---|---|---|---|",
        "| Real images (these photos) | "
        + " | ".join(cell(summary[m]["real"]) if m != "clip_t" else "n/a" for m in TABLE_METRICS)
        + " |",
        f"| oneword TI (mean of {candidates} candidates) | "
        + " | ".join(cell(summary[m]["mean"]) for m in TABLE_METRICS)
        + " |",
    ]
    if candidates > 1:
        lines.append(
            f"| oneword TI (best of {candidates} by combined score) | "
            + " | ".join(cell(summary[m]["best"]) for m in TABLE_METRICS)
            + " |"
        )
    for name, *values in PAPER_ROWS:
        lines.append(f"| {name} | " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + f"\n\n{subjects} subjects.\n"


def write_results(folder: Path, summary: dict, results: dict) -> None:
    count = len(next(iter(results.values()))["candidates"]) if results else 0
    atomic_write_text(
        folder / "results.json", json.dumps({"summary": summary, "subjects": results}, indent=2)
    )
    atomic_write_text(folder / "table.md", table_markdown(summary, len(results), count))
