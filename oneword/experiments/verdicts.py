"""What a run's candidates were judged: a person's ratings and the newest automatic scores,
read from the store (the gallery, `evolve` and the naming of a run's best candidate read them
alike)."""

from __future__ import annotations

from .store import RunRecord, Store


def rating_of(ratings: list[dict]) -> float:
    """A candidate's rating: the mean over its images (and itself) of the latest rating given
    to each; 0 clears a rating; NaN when unrated."""
    latest: dict = {}
    for r in ratings:
        latest[r["image_id"]] = r["rating"]
    values = [v for v in latest.values() if v > 0]
    return sum(values) / len(values) if values else float("nan")


def latest_scores(store: Store, run: RunRecord) -> dict[int, dict[str, float]]:
    """The newest evaluation of a run that has scores (empty if none)."""
    for ev in reversed(store.evaluations(run.id)):
        found = store.scores(ev["id"])
        if found:
            return found
    return {}
