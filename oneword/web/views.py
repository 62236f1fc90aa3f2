"""What the gallery shows of a run: its training photos, its candidates best first with a short
labelled score line, each candidate's images with their prompts and its files to download.

Files are served only by their place in the store (an image id, a run's photo index, a
candidate's file index), never by a path from the request; and only files of the kind the
store says they are: images that open as images, embedding files by their suffix.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from PIL import Image

from ..core import data
from ..core.embeddings import DIFFUSERS_FILE
from ..core.per_layer import PER_LAYER_SUFFIX
from ..errors import OnewordError
from ..experiments.compute_picture import lineage_root
from ..experiments.cuts import run_cuts
from ..experiments.naming import EMBEDDING_SUFFIXES, WORD_RUN_KINDS
from ..experiments.score_math import within_noise
from ..experiments.store import Store
from ..experiments.verdicts import latest_scores, rating_of

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FAVOURITE = "favourite"  # the note of a rating given by the favourite button


def image_file(path: Path | None) -> Path | None:
    """The real path of a recorded image if it is a file that opens as an image, else None."""
    if path is None:
        return None
    real = Path(path).resolve()
    if not real.is_file() or real.suffix.lower() not in IMAGE_SUFFIXES:
        log.warning("refused to serve %s: not an image file", path)
        return None
    try:
        with Image.open(real) as image:
            image.verify()
    except Exception:  # noqa: BLE001 - whatever Pillow says, it is not an image to show
        log.warning("refused to serve %s: it does not open as an image", path)
        return None
    return real


def embedding_file(path: Path | None) -> Path | None:
    if path is None or path.suffix.lower() not in EMBEDDING_SUFFIXES or not path.is_file():
        return None
    return path.resolve()


def training_photos(run) -> list[Path]:
    """The photo files a run learned from (none when its photos are gone)."""
    try:
        return data.find_photos(run.photos)
    except (OnewordError, OSError):
        return []


def preview_sheets(run) -> list[Path]:
    """The preview sheets a learn run drew while it trained (its folder's previews/)."""
    folder = run.folder / "previews" if run.folder is not None else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.png") if p.is_file())


def compute_picture(s: Store, run) -> Path | None:
    """The newest picture of quality against compute drawn for the run's lineage (the sweep
    it comes from and the generations bred from it: `oneword score` draws one each time one
    of them is scored), as a file that opens as an image; None if none."""
    root = lineage_root(s, run).id
    for other in reversed(s.runs()):
        drawn = s.files(other.id, "compute_plot")
        if drawn and lineage_root(s, other).id == root:
            return image_file(drawn[-1])
    return None


def file_format(path: Path) -> str:
    """What a word's file is for, in a few words."""
    name = path.name
    if name.endswith(PER_LAYER_SUFFIX):
        return "oneword per-layer"
    if name == DIFFUSERS_FILE:
        return "diffusers"
    if path.suffix == ".pt":
        return "AUTOMATIC1111 .pt"
    return "AUTOMATIC1111 / ComfyUI"


def run_summary(s: Store, r) -> dict:
    evolve_info = r.settings.get("evolve") or r.settings.get("mix") or {}
    scores = latest_scores(s, r)
    best = max((m["combined"] for m in scores.values() if "combined" in m), default=None)
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "status": r.status,
        "note": r.note,
        "token": r.token,
        "model": r.model,
        "parent_run": r.parent_run,
        "generation": evolve_info.get("generation"),
        "candidates": len(s.candidates(r.id)),
        "best": None if best is None else round(best, 3),
    }


def run_view(s: Store, run, project: Path) -> dict:
    """A run as the page shows it."""
    candidates = candidate_views(s, run)
    return {
        **run_summary(s, run),
        "photos": [{"index": k, "name": p.name} for k, p in enumerate(training_photos(run))],
        "previews": [{"index": k, "name": p.stem} for k, p in enumerate(preview_sheets(run))],
        "masks": [{"index": k, "name": p.stem} for k, p in enumerate(s.files(run.id, "mask_view"))],
        "compute": compute_picture(s, run) is not None,
        "candidates": candidates,
        "hint": _hint(run, candidates, project),
        "can_score": _hint(run, candidates, project).startswith("not scored yet"),
    }


def _hint(run, candidates: list[dict], project: Path) -> str:
    """What to run next, where the page has nothing to rank the candidates by."""
    if run.status == "failed":
        return f"this run failed: {run.note or 'no reason recorded'}"
    if run.status in ("interrupted", "running"):
        return f"this run is {run.status}" + (f": {run.note}" if run.note else "")
    scored = any(c["score"] for c in candidates)
    if run.kind in WORD_RUN_KINDS and len(candidates) > 1 and not scored:
        return (
            f"not scored yet: run `oneword score {run.name} --project {project}` (or press "
            "Score) to rank the candidates, or rate them here"
        )
    return ""


def candidate_views(s: Store, run) -> list[dict]:
    """The candidates, best first where scored (else in their order), each with its images
    (files that exist), files to download and a score line."""
    scores = latest_scores(s, run)
    lines = _score_lines(scores)
    cuts = {c["candidate_id"]: c for c in run_cuts(s, run.id)}  # each candidate's last cut
    out = []
    for c in s.candidates(run.id):
        out.append(
            {
                "id": c.id,
                "name": c.name,
                "seed": c.seed,
                "relation": c.init,
                "parents": [{"id": p.id, "name": f"r{p.run_id}/{p.name}"} for p in s.parents(c.id)],
                "rank": lines.get(c.id, {}).get("rank"),
                "best": lines.get(c.id, {}).get("rank") == 1,
                "score": lines.get(c.id),
                "cut": _cut_state(cuts.get(c.id)),
                "images": _shown_images(s, c.id),
                "files": [
                    {"index": k, "name": p.name, "format": file_format(p)}
                    for k, p in enumerate(s.files(run.id, "embedding", c.id))
                    if embedding_file(p) is not None
                ],
                **rating_state(s.ratings(c.id)),
            }
        )
    out.sort(key=lambda v: (v["rank"] is None, v["rank"] or 0, v["name"]))
    return out


def _shown_images(s: Store, candidate_id: int) -> list[dict]:
    """The images of the newest drawing of a candidate whose files are still there."""
    images = s.images(candidate_id)
    newest = max((i["evaluation_id"] or 0 for i in images), default=0)
    return [
        {"id": i["id"], "prompt": i["prompt"], "seed": i["seed"]}
        for i in images
        if (i["evaluation_id"] or 0) == newest and i["path"] is not None and i["path"].is_file()
    ]


def _score_lines(scores: dict[int, dict[str, float]]) -> dict[int, dict]:
    """Per candidate: rank, concept (fidelity), prompt, combined, its interval's half width,
    and whether it is within noise of the best."""
    ranked = {cid: m for cid, m in scores.items() if "rank" in m and "combined" in m}
    if not ranked:
        return {}
    best = min(ranked.values(), key=lambda m: m["rank"])
    lines = {}
    for cid, m in ranked.items():
        pm = m.get("combined_pm")
        best_pm = best.get("combined_pm")
        lines[cid] = {
            "rank": int(m["rank"]),
            "concept": _rounded(m.get("fidelity")),
            "prompt": _rounded(m.get("prompt")),
            "combined": _rounded(m["combined"]),
            "interval": _rounded(pm),
            "one_scale": pm is not None,  # older evaluations were standardized per run
            "within_noise": m is not best
            and pm is not None
            and best_pm is not None
            and within_noise(m["combined"], pm, best["combined"], best_pm),
        }
    return lines


def _rounded(value) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), 3)


def rating_state(ratings: list[dict]) -> dict:
    """A candidate's rating, whether it is a favourite, and its images' ratings."""
    value = rating_of(ratings)
    own = [r for r in ratings if r["image_id"] is None]
    favourite = bool(own) and own[-1]["note"] == FAVOURITE and own[-1]["rating"] > 0
    by_image = {r["image_id"]: r["rating"] for r in ratings if r["image_id"] is not None}
    return {
        "rating": None if math.isnan(value) else round(value, 3),
        "favourite": favourite,
        "image_ratings": by_image,
    }


def _cut_state(cut: dict | None) -> dict | None:
    """Successive halving: the step a candidate was last scored at, its score, and whether it
    went on."""
    if cut is None:
        return None
    return {"step": cut["step"], "score": round(cut["score"], 3), "kept": cut["kept"]}
