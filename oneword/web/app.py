"""The gallery web app (`oneword serve`): a person looks at each candidate's images, rates
them, and breeds the next generation from the ratings.

`create_app(project, options)` builds a FastAPI app over a project folder. Every request opens
its own connection to the store (SQLite in WAL mode), so concurrent requests are safe and
ratings live in the store across restarts. Files are served only by their place in the store
(see oneword.web.views), a masked run's mask views as well. Breeding and
drawing run as background jobs in one worker thread; their progress streams to the page as
server-sent events, and they are kept in the store, so a restarted server shows an interrupted
job, resumable. Bred children can train on before they are drawn (`serve --train-steps`, or the
breeding request's own number), through the training `evolve --train-steps` uses. A bred or
mixed run is drawn with its parents' prompts and seeds (and scored when they were), so that it
compares with them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ..checks import MAX_ID, RATINGS
from ..errors import OnewordError
from ..experiments.scoring import ScoreSettings, score
from ..experiments.store import Store
from ..experiments.verdicts import rating_of
from ..search.embedding_ops import MIX_METHODS, Breeding, normalized_weights
from ..search.evolve import (
    breed_from_ratings,
    draw_like_parents,
    mix_candidates,
)
from ..search.trained import ChildTraining
from .guard import add_request_checks
from .jobs import JobRunner
from .views import (
    FAVOURITE,
    compute_picture,
    embedding_file,
    image_file,
    preview_sheets,
    rating_state,
    run_summary,
    run_view,
    training_photos,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_TRAIN_STEPS = 100_000


@dataclass(frozen=True)
class GalleryOptions:
    """How the gallery breeds and draws new generations."""

    population: int = 8
    breeding: Breeding = field(default_factory=Breeding)
    drawing: ScoreSettings = field(default_factory=lambda: ScoreSettings(images=4))
    seed: int = 0
    train_steps: int = 0  # steps bred children train before they are drawn (0: none)

    def __post_init__(self):
        if self.population < 1:
            raise OnewordError(f"--population {self.population}: must be 1 or more")
        if not 0 <= self.train_steps <= MAX_TRAIN_STEPS:
            raise OnewordError(
                f"--train-steps {self.train_steps}: give 0 (children drawn as bred) to "
                f"{MAX_TRAIN_STEPS}"
            )

    def training(self, steps: int | None) -> ChildTraining | None:
        """How children train on before they are drawn: `steps` (None: the gallery's)."""
        steps = self.train_steps if steps is None else steps
        if not steps:
            return None
        return ChildTraining(steps, self.drawing.device, self.drawing.dtype)


# An id of the store, in a path or a body: 1 to SQLite's largest integer.
StoreId = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
PathIndex = Annotated[int, PathParam(ge=0, le=MAX_ID)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class RatingIn(BaseModel):
    rating: int = Field(ge=RATINGS[0], le=RATINGS[1])
    image_id: StoreId | None = None
    favourite: bool = False


class NextIn(BaseModel):
    # steps the children train before they are drawn; None: the gallery's --train-steps
    train_steps: int | None = Field(None, ge=0, le=MAX_TRAIN_STEPS)


class MixIn(BaseModel):
    candidates: list[StoreId] = Field(min_length=2, max_length=8)
    weights: list[Weight] | None = None
    method: str = "slerp"


def create_app(
    project: str | Path | None = None,
    options: GalleryOptions = GalleryOptions(),
    hosts: frozenset[str] | None = None,
) -> FastAPI:
    """hosts: the Host header values to answer (see guard.served_hosts); None: loopback
    names (127.0.0.1, localhost, [::1]) at any port."""
    app = FastAPI(title="oneword gallery", docs_url=None, redoc_url=None)
    add_request_checks(app, hosts)
    with Store.open(project) as s:  # creates and migrates the store once
        folder = s.folder
    jobs = JobRunner(folder)
    app.state.jobs, app.state.folder = jobs, folder
    _add_viewing(app, folder)
    _add_rating(app, folder)
    _add_breeding(app, folder, jobs, options)
    _add_jobs(app, folder, jobs, options)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_viewing(app: FastAPI, folder: Path) -> None:
    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/runs")
    def runs() -> list[dict]:
        with Store.open(folder) as s:
            return [run_summary(s, r) for r in s.runs()]

    @app.get("/api/runs/{run_id}")
    def run(run_id: PathId) -> dict:
        with Store.open(folder) as s:
            return run_view(s, _found(lambda: s.run(run_id)), folder)

    @app.get("/api/runs/{run_id}/photos/{index}")
    def photo(run_id: PathId, index: PathIndex) -> FileResponse:
        """The `index`th training photo of a run."""
        with Store.open(folder) as s:
            return _nth_image(training_photos(_found(lambda: s.run(run_id))), index, "photo")

    @app.get("/api/runs/{run_id}/previews/{index}")
    def preview(run_id: PathId, index: PathIndex) -> FileResponse:
        """The `index`th preview sheet of a learn run (oldest first)."""
        with Store.open(folder) as s:
            return _nth_image(preview_sheets(_found(lambda: s.run(run_id))), index, "preview")

    @app.get("/api/candidates/{candidate_id}/files/{index}")
    def download(candidate_id: PathId, index: PathIndex) -> FileResponse:
        """The `index`th embedding file of a candidate, as a download."""
        with Store.open(folder) as s:
            cand = _found(lambda: s.candidate(candidate_id))
            files = s.files(cand.run_id, "embedding", cand.id)
        path = embedding_file(files[index]) if index < len(files) else None
        if path is None:
            raise HTTPException(404, "no such file")
        return FileResponse(path, filename=path.name, media_type="application/octet-stream")

    @app.get("/api/runs/{run_id}/masks/{index}")
    def mask(run_id: PathId, index: PathIndex) -> FileResponse:
        """A training photo of a masked run with its mask over it (its `index`th), wherever
        the run's folder is (a demo's outside the project too)."""
        with Store.open(folder) as s:
            _found(lambda: s.run(run_id))
            shown = s.files(run_id, "mask_view")
        path = image_file(shown[index]) if index < len(shown) else None
        if path is None:
            raise HTTPException(404, "no such mask")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/runs/{run_id}/compute")
    def compute(run_id: PathId) -> FileResponse:
        """The newest picture of quality against compute of the run's lineage."""
        with Store.open(folder) as s:
            path = compute_picture(s, _found(lambda: s.run(run_id)))
        if path is None:
            raise HTTPException(404, "no picture of quality against compute yet")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/images/{image_id}")
    def image(image_id: PathId) -> FileResponse:
        """An image the store records (wherever its command wrote it: ./images, ./demo)."""
        with Store.open(folder) as s:
            found = s.image(image_id)
        path = image_file(found["path"]) if found else None
        if path is None:
            raise HTTPException(404, "no such image")
        return FileResponse(path)

    @app.get("/api/candidates/{candidate_id}/lineage")
    def lineage(candidate_id: PathId) -> dict:
        with Store.open(folder) as s:
            _found(lambda: s.candidate(candidate_id))
            return _lineage(s, candidate_id, depth=12, seen=set())


def _add_rating(app: FastAPI, folder: Path) -> None:
    @app.post("/api/candidates/{candidate_id}/rating")
    def rate(candidate_id: PathId, body: RatingIn) -> dict:
        with Store.open(folder) as s:
            _found(lambda: s.candidate(candidate_id))
            if body.image_id is not None:
                found = s.image(body.image_id)
                if found is None or found["candidate_id"] != candidate_id:
                    raise HTTPException(400, "this image is not one of the candidate's")
            s.rate(candidate_id, body.rating, FAVOURITE if body.favourite else "", body.image_id)
            return rating_state(s.ratings(candidate_id))


def _add_breeding(app: FastAPI, folder: Path, jobs: JobRunner, options: GalleryOptions) -> None:
    @app.post("/api/runs/{run_id}/next")
    def next_generation(run_id: PathId, body: NextIn | None = None) -> dict:
        with Store.open(folder) as s:
            record = _found(lambda: s.run(run_id))
            if not any(
                rating_of(s.ratings(c.id)) == rating_of(s.ratings(c.id))
                for c in s.candidates(record.id)
            ):
                raise HTTPException(400, "rate some candidates first")
        steps = (
            options.train_steps if body is None or body.train_steps is None else body.train_steps
        )
        spec = {"kind": "next", "run": record.id, "train_steps": steps}
        generation = int(record.settings.get("evolve", {}).get("generation", 0)) + 1
        trained = f", trained {steps} steps" if steps else ""
        what = f"generation {generation} from {record.name}{trained}"
        return jobs.submit(what, spec, job_work(spec, folder, options))

    @app.post("/api/runs/{run_id}/score")
    def score_now(run_id: PathId) -> dict:
        """Draw and score a run's candidates with the gallery's drawing settings (the
        unscored run's button)."""
        with Store.open(folder) as s:
            record = _found(lambda: s.run(run_id))
            if not s.candidates(record.id):
                raise HTTPException(400, f"run {record.name} has no candidates to score")
        spec = {"kind": "score", "run": record.id}
        return jobs.submit(f"scoring {record.name}", spec, job_work(spec, folder, options))

    @app.post("/api/mix")
    def mix(body: MixIn) -> dict:
        if body.method not in MIX_METHODS:
            raise HTTPException(400, f"method: choose one of {', '.join(MIX_METHODS)}")
        try:
            normalized_weights(len(body.candidates), body.weights)
        except ValueError as exc:
            raise HTTPException(400, f"weights: {exc}") from None
        with Store.open(folder) as s:
            for cid in body.candidates:
                _found(lambda cid=cid: s.candidate(cid))
        spec = {"kind": "mix", **body.model_dump()}
        return jobs.submit("mix", spec, job_work(spec, folder, options))


def _add_jobs(app: FastAPI, folder: Path, jobs: JobRunner, options: GalleryOptions) -> None:
    @app.get("/api/jobs")
    def recent_jobs() -> list[dict]:
        return jobs.recent()

    @app.get("/api/jobs/{job_id}")
    def job(job_id: PathId) -> dict:
        found = jobs.get(job_id)
        if found is None:
            raise HTTPException(404, "no such job")
        return found

    @app.get("/api/jobs/{job_id}/events")
    def job_events(job_id: PathId) -> StreamingResponse:
        if jobs.get(job_id) is None:
            raise HTTPException(404, "no such job")
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            jobs.stream(job_id), media_type="text/event-stream", headers=headers
        )

    @app.post("/api/jobs/{job_id}/resume")
    def resume(job_id: PathId) -> dict:
        found = jobs.get(job_id)
        if found is None:
            raise HTTPException(404, "no such job")
        if found["state"] != "interrupted":
            raise HTTPException(400, f"job {job_id} is {found['state']}, not interrupted")
        work = job_work(found["spec"], folder, options, found["run_id"], resume=True)
        return jobs.submit(found["what"], found["spec"], work, job_id=job_id)


def job_work(
    spec: dict, folder: Path, options: GalleryOptions, made: int | None = None, resume=False
):
    """The work of a job from its stored description. made: the run an interrupted job had
    already made (bred or mixed): resuming draws its images again; resume, without one: a
    generation whose children stopped training goes on from its checkpoint."""

    def work(on_event, started):
        if spec["kind"] == "score":
            started(spec["run"])
            score(f"r{spec['run']}", options.drawing, folder, on_event)
            return spec["run"]
        if made is not None:
            child = made
        elif spec["kind"] == "next":
            training = options.training(spec.get("train_steps", 0))
            child = breed_from_ratings(
                spec["run"], folder, options.population, options.breeding, options.seed,
                training, on_event, resume,
            ).id  # fmt: skip
        else:
            child = mix_candidates(spec["candidates"], spec["weights"], spec["method"], folder).id
        started(child)
        # drawn with the parents' prompts and seeds (and scored, if they were) to compare
        draw_like_parents(f"r{child}", options.drawing, folder, on_event)
        return child

    return work


def _found(get):
    try:
        return get()
    except OnewordError as exc:
        raise HTTPException(404, str(exc)) from None


def _lineage(s: Store, candidate_id: int, depth: int, seen: set[int]) -> dict:
    c = s.candidate(candidate_id)
    node = {"id": c.id, "name": f"r{c.run_id}/{c.name}", "relation": c.init, "parents": []}
    if depth <= 0 or c.id in seen:
        return node
    seen.add(c.id)
    for parent, relation in s.relations(c.id):
        sub = _lineage(s, parent, depth - 1, seen)
        node["parents"].append({**sub, "via": relation})
    return node


def _nth_image(paths: list, index: int, what: str) -> FileResponse:
    """The `index`th of a run's recorded images, if it still opens as one, else a 404."""
    path = image_file(paths[index]) if index < len(paths) else None
    if path is None:
        raise HTTPException(404, f"no such {what}")
    return FileResponse(path)
