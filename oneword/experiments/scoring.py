"""`oneword score`: draw every candidate of a run over a prompt set and score the images.

Every candidate draws the same prompts with the same seeds (image i: prompt i mod P, seed
seed + i), so candidates are compared on paired images. Judges turn images into numbers:
CLIP and DINO feature models (CLIP-I, DINO, CLIP-T), or, on the procedural world model, its
oracle classifier (concept fidelity and similarity, prompt fidelity). Images, scores and the
ranked report go to `<run>/scores/e<N>/` and to the experiment store.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..adapters.device import pick_device
from ..adapters.feature_models import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL
from ..adapters.loading import load_model
from ..core import data
from ..core.embeddings import LearnedEmbedding, check_width, load_embeddings
from ..core.generate import (
    Sampling,
    Words,
    draw,
    labelled_sheet,
    register_words,
    sampling_record,
    save_png,
)
from ..core.interface import TextToImage
from ..errors import OnewordError
from ..events import EventSink, Progressed, ignore
from . import dreambench, report, score_math
from .naming import candidate_file
from .store import CandidateRecord, RunRecord, Store

log = logging.getLogger(__name__)

JUDGES = ("auto", "features", "oracle")
REFERENCE_SIZE = 256  # center crops of the training photos that the judges compare with


@dataclass(frozen=True)
class ScoreSettings:
    """What `oneword score` draws and how it judges the images."""

    prompts: str = "auto"  # auto, object, live, world, or a file of prompt templates
    prompt_limit: int | None = None  # use only the first N prompts of the set
    class_word: str | None = None  # None: the run's init word
    images: int | None = None  # per candidate; None: one per prompt
    seed: int = 0
    sampling: Sampling = field(default_factory=lambda: Sampling(steps=30))
    judge: str = "auto"  # auto: the oracle on the world model, else CLIP + DINO
    clip_model: str | None = DEFAULT_CLIP_MODEL  # None: no CLIP scores
    dino_model: str | None = DEFAULT_DINO_MODEL  # None: no DINO score
    subject: str | None = None  # the world oracle's subject id; None: from the class word
    fidelity_weight: float = 0.5
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self):
        if self.prompt_limit is not None and self.prompt_limit < 1:
            raise OnewordError(f"--prompt-limit {self.prompt_limit}: must be 1 or more")
        if self.images is not None and self.images < 1:
            raise OnewordError(f"--images {self.images}: must be 1 or more")
        if not 0.0 <= self.fidelity_weight <= 1.0:
            raise OnewordError(f"--fidelity-weight {self.fidelity_weight}: must be in [0, 1]")
        if self.judge not in JUDGES:
            raise OnewordError(f"--judge {self.judge}: choose one of {', '.join(JUDGES)}")
        if self.sampling.steps < 1:
            raise OnewordError(f"--sample-steps {self.sampling.steps}: must be 1 or more")
        if self.judge == "features" and not (self.clip_model or self.dino_model):
            raise OnewordError("--clip-model none --dino-model none: keep at least one judge")


@dataclass(frozen=True)
class ScoreRow:
    candidate: CandidateRecord
    metrics: dict[str, float]  # raw metrics, then fidelity, prompt, combined
    pareto: bool
    rank: int  # 1 = best combined score
    sheet: Path  # contact sheet of the candidate's images


@dataclass(frozen=True)
class Scoreboard:
    run: RunRecord
    evaluation_id: int
    folder: Path
    rows: list[ScoreRow]  # best first
    reference: dict[str, float]  # the metrics real photos get among themselves
    prompts: list[str]
    judge: str
    report: Path | None = None
    plot: Path | None = None


@dataclass(frozen=True)
class PromptJob:
    """Image i of each candidate: the prompt drawn, its template and seed; and the text
    judged for each template (the prompt without the learned word)."""

    drawn: list[str]
    judged: list[str]  # per template
    prompt_index: torch.Tensor  # [M] into `templates`
    seeds: list[int]
    templates: tuple[str, ...]


@dataclass(frozen=True)
class ScoreInputs:
    """A run to score: its candidates, their embeddings and the class word to compare with."""

    run: RunRecord
    candidates: list[CandidateRecord]
    embeddings: list[LearnedEmbedding]
    class_word: str


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a run in the store: what is drawn, where, and the prepared judge."""

    run: RunRecord
    id: int
    folder: Path
    job: PromptJob
    judge: object  # FeatureJudge or OracleJudge


@dataclass(frozen=True)
class CandidateImages:
    """Image rows (prompt, seed, file) drawn for one candidate, for the store."""

    candidate_id: int
    rows: list[tuple[str, int, Path]]


@dataclass(frozen=True)
class Measured:
    """Per candidate, in order: its raw metrics, its contact sheet and its images."""

    raw: list[dict[str, float]]
    sheets: list[Path]
    images: list[CandidateImages]
    per_image: list[list[dict[str, float]]] = field(default_factory=list)  # [K][M] metrics


def score_inputs(
    store: Store, run_ref: str, settings: ScoreSettings, only: set[int] | None = None
) -> ScoreInputs:
    """The run, its candidates (those with ids in `only`, if given) and their embeddings, and
    the class word to compare with."""
    run = store.find_run(run_ref)
    candidates = [c for c in store.candidates(run.id) if only is None or c.id in only]
    if not candidates:
        raise OnewordError(
            f"run {run.name}: has no candidates yet; finish it first "
            "(rerun its command with --resume)"
        )
    embeddings = [candidate_embedding(store, run, c) for c in candidates]
    class_word = settings.class_word or run_class_word(run)
    if not class_word:
        raise OnewordError(f"run {run.name}: no init word recorded; pass --class-word")
    return ScoreInputs(run, candidates, embeddings, class_word)


def run_class_word(run: RunRecord) -> str | None:
    """The class word a run's prompts use: its --init words ("face,logo,outfit" joined by
    spaces), or None where it has none."""
    init_word = run.settings.get("config", {}).get("init_word")
    return (init_word or "").replace(",", " ").strip() or None


def score(
    run_ref: str,
    settings: ScoreSettings = ScoreSettings(),
    project: str | Path | None = None,
    on_event: EventSink = ignore,
) -> Scoreboard:
    """Draw and score every candidate of a run; record images and scores in the store."""
    with Store.open(project) as store:
        return score_run(store, run_ref, settings, on_event)


def score_run(
    store: Store,
    run_ref: str,
    settings: ScoreSettings,
    on_event: EventSink = ignore,
    only: set[int] | None = None,
) -> Scoreboard:
    """`score` in an open store; only: the ids of the candidates to score (default all)."""
    inputs = score_inputs(store, run_ref, settings, only)
    evaluation = open_evaluation(store, inputs, settings)
    model = load_model(inputs.run.model, settings.device, settings.dtype)
    measured = draw_and_measure(
        model,
        inputs.candidates,
        inputs.embeddings,
        evaluation.job,
        settings,
        evaluation.judge,
        evaluation.folder,
        on_event,
    )
    return record_ranking(store, evaluation, inputs.candidates, measured, settings)


def open_evaluation(store: Store, inputs: ScoreInputs, settings: ScoreSettings) -> Evaluation:
    """A new evaluation of the run: its prompts, its id and folder, and the prepared judge."""
    run = inputs.run
    job = prompt_job(settings, run.model, inputs.embeddings[0].token, inputs.class_word)
    evaluation = store.add_evaluation(run.id, _settings_record(settings, inputs.class_word))
    folder = (run.folder or store.runs_folder / run.name) / "scores" / f"e{evaluation}"
    store.set_evaluation_folder(evaluation, folder)
    judge = make_judge(settings, run.model, inputs.class_word)
    judge.prepare(reference_images(run.photos), job.judged)
    return Evaluation(run, evaluation, folder, job, judge)


def record_ranking(
    store: Store,
    evaluation: Evaluation,
    candidates: list[CandidateRecord],
    measured: Measured,
    settings: ScoreSettings,
) -> Scoreboard:
    """Record the measured candidates' images, rank them, record their scores and write the
    report."""
    for drawn in measured.images:
        store.add_images(evaluation.id, drawn.candidate_id, drawn.rows)
    rows = rank_candidates(
        candidates, measured.raw, settings.fidelity_weight, measured.sheets, measured.per_image
    )
    for row in rows:
        store.add_scores(
            evaluation.id,
            row.candidate.id,
            {**row.metrics, "pareto": float(row.pareto), "rank": row.rank},
        )
    board = Scoreboard(
        run=evaluation.run,
        evaluation_id=evaluation.id,
        folder=evaluation.folder,
        rows=rows,
        reference=evaluation.judge.reference_scores(),
        prompts=list(dict.fromkeys(evaluation.job.drawn)),
        judge=evaluation.judge.name,
    )
    return report.write_outputs(store, board)


def draw_and_measure(
    model: TextToImage,
    candidates: list[CandidateRecord],
    embeddings: list[LearnedEmbedding],
    job: PromptJob,
    settings: ScoreSettings,
    judge,
    folder: Path,
    on_event: EventSink = ignore,
) -> Measured:
    """Draw every candidate's images into `folder` and judge them (the store is not touched:
    a Ray worker runs this too)."""
    for emb in embeddings:
        check_width(emb, model.embedding_layout, model.name, emb.metadata.get("path", ""))
    words = register_words(model, [embeddings[0]])
    raw, sheets, drawn, each = [], [], [], []
    on_event(Progressed(0, len(candidates), "scoring"))
    for k, (cand, emb) in enumerate(zip(candidates, embeddings)):
        rows = emb.vectors.float()[None].to(model.device)
        images = draw(model, job.drawn, job.seeds, Words(words.tokens, rows), settings.sampling)
        paths = save_candidate_images(images, job, folder / cand.name, settings, model.name)
        drawn.append(CandidateImages(cand.id, list(zip(job.drawn, job.seeds, paths))))
        captions = [f"{p} · seed {s}" for p, s in zip(job.drawn, job.seeds)]
        sheet = labelled_sheet(images, captions, f"{cand.name}", columns=min(len(images), 8))
        sheets.append(
            save_png(
                sheet,
                folder / f"{cand.name}.png",
                {
                    "candidate": cand.name,
                    "prompts": job.drawn,
                    "seeds": job.seeds,
                    "size": int(images.shape[-1]),
                    **sampling_record(settings.sampling, model.name),
                },
            )
        )
        raw.append(judge.measure(images, job.prompt_index))
        each.append(
            [
                judge.measure(images[i : i + 1], job.prompt_index[i : i + 1])
                for i in range(len(images))
            ]
        )
        on_event(Progressed(k + 1, len(candidates), "scoring"))
    return Measured(raw, sheets, drawn, each)


def rank_candidates(
    candidates: list[CandidateRecord],
    raw: list[dict[str, float]],
    fidelity_weight: float,
    sheets: list[Path],
    per_image: list[list[dict[str, float]]] = (),
) -> list[ScoreRow]:
    """Weighted score (`combined`, one scale across runs; `combined_pm`: its 95% interval's
    half width from the per-image values), Pareto front and rank of each candidate, all of the
    label-free metrics (score_math.without_labels); best first."""
    names = list(raw[0])
    metrics = {m: torch.tensor([r[m] for r in raw], dtype=torch.float64) for m in names}
    # ranked without the world oracle's labels, which a user does not have
    fidelity, prompt = score_math.axis_scores(score_math.without_labels(metrics))
    combined = score_math.weighted_score(fidelity, prompt, fidelity_weight)
    front = score_math.pareto_front(fidelity, prompt)
    order = score_math.ranking(combined)
    rows = []
    for rank, k in enumerate(order, start=1):
        values = {
            **raw[k],
            "fidelity": float(fidelity[k]),
            "prompt": float(prompt[k]),
            "combined": float(combined[k]),
        }
        each = per_image[k] if k < len(per_image) else []
        half = score_math.images_interval(each, fidelity_weight)
        if half == half:  # NaN (one image): no interval
            values["combined_pm"] = half
        rows.append(ScoreRow(candidates[k], values, bool(front[k]), rank, sheets[k]))
    return rows


def candidate_embedding(store: Store, run: RunRecord, cand: CandidateRecord) -> LearnedEmbedding:
    path = candidate_file(store, run, cand)
    (emb,) = load_embeddings(path)[:1]
    emb.metadata["path"] = str(path)
    return emb


def prompt_job(settings: ScoreSettings, model_name: str, token: str, class_word: str) -> PromptJob:
    templates = prompt_templates(settings.prompts, model_name, class_word)
    templates = templates[: settings.prompt_limit or len(templates)]
    count = settings.images or len(templates)
    index = torch.arange(count) % len(templates)
    drawn = [dreambench.fill(templates[i], token, class_word) for i in index.tolist()]
    judged = [dreambench.fill(t, "", class_word) for t in templates]
    seeds = [settings.seed + i for i in range(count)]
    return PromptJob(drawn, judged, index, seeds, templates)


def prompt_templates(choice: str, model_name: str, class_word: str) -> tuple[str, ...]:
    """auto: the world's novel-context prompts on the world model, else DreamBench's
    live-subject prompts for cats and dogs and its object prompts for anything else."""
    if choice == "world" or (choice == "auto" and model_name == "world"):
        from ..world.evaluate import NOVEL_PROMPTS

        return NOVEL_PROMPTS
    if choice == "auto":
        return dreambench.prompts_for(dreambench.prompt_set_for_class(class_word))
    if choice in dreambench.PROMPT_SETS:
        return dreambench.prompts_for(choice)
    return dreambench.read_prompt_file(choice)


def reference_images(photos: list[str], size: int = REFERENCE_SIZE) -> torch.Tensor:
    """The run's training photos as center crops [R, 3, size, size] in [0, 1]."""
    images, _ = data.load_photos(photos)
    crops = torch.cat([data.photo_crops(image, size, "center") for image in images])
    return (crops + 1) / 2


def save_candidate_images(
    images: torch.Tensor, job: PromptJob, folder: Path, settings: ScoreSettings, model_name: str
) -> list[Path]:
    paths = []
    for i, (image, prompt, seed) in enumerate(zip(images, job.drawn, job.seeds)):
        meta = {"prompt": prompt, "seed": seed, **sampling_record(settings.sampling, model_name)}
        paths.append(save_png(image, folder / f"{i:03d}-s{seed}.png", meta))
    return paths


def _settings_record(settings: ScoreSettings, class_word: str) -> dict:
    record = asdict(settings)
    record["class_word"] = class_word
    return record


# -- judges ----------------------------------------------------------------------------------
class FeatureJudge:
    """CLIP-I, CLIP-T and DINO with feature models (either may be left out)."""

    name = "features"

    def __init__(self, clip=None, dino=None):
        self.clip, self.dino = clip, dino
        self.refs: dict[str, torch.Tensor] = {}
        self.texts: torch.Tensor | None = None

    def prepare(self, references: torch.Tensor, texts: list[str]) -> None:
        """references: real photos [R, 3, H, W] in [0, 1]; texts: the judged prompt of each
        template (the learned word left out)."""
        if self.clip is not None:
            self.refs["clip_i"] = self.clip.image_features(references)
            self.texts = self.clip.text_features(texts)
        if self.dino is not None:
            self.refs["dino"] = self.dino.image_features(references)

    def measure(self, images: torch.Tensor, prompt_index: torch.Tensor) -> dict[str, float]:
        out = {}
        if self.clip is not None:
            feats = self.clip.image_features(images)
            out["clip_i"] = float(
                score_math.cosine_to_references(feats, self.refs["clip_i"]).mean()
            )
            out["clip_t"] = float(score_math.paired_cosine(feats, self.texts[prompt_index]).mean())
        if self.dino is not None:
            feats = self.dino.image_features(images)
            out["dino"] = float(score_math.cosine_to_references(feats, self.refs["dino"]).mean())
        return out

    def reference_scores(self) -> dict[str, float]:
        return {m: score_math.self_similarity(f) for m, f in self.refs.items()}


class OracleJudge:
    """The world oracle: concept fidelity and similarity, prompt fidelity."""

    name = "oracle"

    def __init__(self, oracle, subject: str):
        self.oracle, self.subject = oracle, subject
        self.refs: torch.Tensor | None = None
        self.requested: list[dict] = []

    def prepare(self, references: torch.Tensor, texts: list[str]) -> None:
        from ..world.captions import parse_prompt

        self.refs = references
        self.requested = [
            {k: v for k, v in parse_prompt(t).items() if k != "subject"} for t in texts
        ]

    def measure(self, images: torch.Tensor, prompt_index: torch.Tensor) -> dict[str, float]:
        from ..world import metrics

        follow = []
        for p in prompt_index.unique().tolist():
            chosen = images[prompt_index == p]
            follow.append(
                (metrics.prompt_fidelity(self.oracle, chosen, self.requested[p]), len(chosen))
            )
        return {
            "concept_fidelity": metrics.concept_fidelity(self.oracle, images, self.subject),
            "concept_similarity": metrics.concept_similarity(self.oracle, images, self.refs),
            "prompt_fidelity": sum(v * n for v, n in follow) / len(images),
        }

    def reference_scores(self) -> dict[str, float]:
        from ..world import metrics

        return {"concept_fidelity": metrics.concept_fidelity(self.oracle, self.refs, self.subject)}


def make_judge(settings: ScoreSettings, model_name: str, class_word: str):
    kind = settings.judge
    if kind == "auto":
        kind = "oracle" if model_name == "world" else "features"
    if kind == "oracle":
        from ..world.captions import CLASS_WORDS
        from ..world.oracle import load_oracle

        subject = settings.subject or CLASS_WORDS.get(class_word.strip())
        if subject is None:
            raise OnewordError(
                f"--subject is missing: the oracle judges a world subject; "
                f"give one of {', '.join(sorted(CLASS_WORDS.values()))}"
            )
        return OracleJudge(load_oracle(str(pick_device(settings.device))), subject)
    from ..adapters.feature_models import load_clip_model, load_dino_model

    clip = load_clip_model(settings.clip_model, settings.device) if settings.clip_model else None
    dino = load_dino_model(settings.dino_model, settings.device) if settings.dino_model else None
    return FeatureJudge(clip, dino)
