"""What limits the simulated person: how well do eight starred images rank candidates?

Reads the projects that bench/search_compute.py left (their JSON names the project) and, per
subject, looks at the seeds the person's loop started from. Each of those candidates has

- the person's mean stars from the first round (8 images, one star in six wrong),
- the same stars without the wrong ones (the oracle's stars on the same 8 images),
- the label-free score the automatic pick uses (concept similarity, 24 selection images),
- the oracle's concept fidelity on those 24 selection images, the truth ranked against; with
  `--held-out`, the concept fidelity on the 48 held-out images instead (drawn here, a few
  minutes a subject), which none of the rankings saw.

It prints each ranking's Spearman correlation with the truth proxy (per subject, and their mean
with a 95% bootstrap interval that resamples candidates within each subject), how far the
top-ranked candidate of each ranking falls below the best (ties at the top share it), how many
candidates each ranking cannot tell apart, and, for the winner's curse, the
share of images with the subject that the person's word's stars promised (stars = 3 + 2 per
image with the subject, when the prompt is followed) against its held-out concept fidelity.

    python bench/person_limits.py bench/results/search_compute_*.json [--held-out]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from simulated_person import Rater, candidate_vectors, held_out_judge  # noqa: E402
from sweep_world import ranks  # noqa: E402, F401  (re-exported for the tests)
from sweep_world import spearman as world_spearman  # noqa: E402

from oneword.experiments.store import Store  # noqa: E402
from oneword.experiments.verdicts import rating_of  # noqa: E402

RANKINGS = ("stars", "stars without errors", "label-free score")


def spearman(a: list[float], b: list[float]) -> float:
    """sweep_world's Spearman, 0 where a ranking ties every candidate (it tells nothing)."""
    r = world_spearman(a, b)
    return 0.0 if math.isnan(r) else r


def correlation(cands: list[dict], ranking: str) -> float:
    return spearman([c[ranking] for c in cands], [c["truth"] for c in cands])


def start_candidates(store: Store, subject: str, token: str) -> list[dict]:
    """The person's first-round candidates with their four measures."""
    runs = [r for r in store.runs() if any(store.ratings(c.id) for c in store.candidates(r.id))]
    start = min(runs, key=lambda r: r.id)
    oracle = (ev for ev in store.evaluations(start.id) if ev["settings"].get("judge") == "oracle")
    scores = next(found for found in map(lambda ev: store.scores(ev["id"]), oracle) if found)
    rater = Rater(subject, token, 0.0, 0)
    out = []
    for cand in store.candidates(start.id):
        given = store.ratings(cand.id)
        true = [rater.true_stars(*image_of(store, g["image_id"])) for g in given]
        out.append({
            "id": cand.id,
            "stars": rating_of(given),
            "stars without errors": statistics.mean(true),
            "label-free score": scores[cand.id]["concept_similarity"],
            "truth": scores[cand.id]["concept_fidelity"],
        })  # fmt: skip
    return out


def image_of(store: Store, image_id: int) -> tuple[Path, str]:
    image = store.image(image_id)
    return store.resolve(image["path"]), image["prompt"]


def promised_against_held_out(store: Store, person_rows: list[dict]) -> list[tuple[float, float]]:
    """Per round: the share of subject images the word's stars promised, its held-out share."""
    out = []
    for row in person_rows:
        stars = rating_of(store.ratings(row["candidate"]))
        out.append((min(max((stars - 3) / 2, 0.0), 1.0), row["held_out"]["concept_fidelity"]))
    return out


def bootstrap_mean_correlation(subjects: dict, ranking: str, draws: int = 2000) -> tuple:
    g = torch.Generator().manual_seed(0)
    means = []
    for _ in range(draws):
        values = []
        for cands in subjects.values():
            pick = torch.randint(len(cands), (len(cands),), generator=g).tolist()
            values.append(correlation([cands[i] for i in pick], ranking))
        means.append(statistics.mean(values))
    means.sort()
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def shortfall(cands: list[dict], ranking: str) -> float:
    """Truth of the best candidate minus truth of the one the ranking puts first (the mean
    over candidates tied first: a tie is a coin toss)."""
    first = max(c[ranking] for c in cands)
    tied = [c["truth"] for c in cands if c[ranking] == first]
    return max(c["truth"] for c in cands) - statistics.mean(tied)


def tied_first(cands: list[dict], ranking: str) -> int:
    first = max(c[ranking] for c in cands)
    return sum(c[ranking] == first for c in cands)


def judge_held_out(cands: list[dict], subject: str, result: dict) -> None:
    """Replace each candidate's truth by its concept fidelity on the held-out images."""
    a, project = argparse.Namespace(**result["args"]), Path(result["project"])
    held = held_out_judge(a, subject, project / "photos" / subject, f"<s-{subject}>", 1)
    for c in cands:
        c["selection truth"] = c["truth"]
        c["truth"] = held(candidate_vectors(project, c["id"]))["concept_fidelity"]


def report(files: list[str], held_out: bool = False) -> dict:
    subjects, promised = {}, []
    for f in files:
        result = json.loads(Path(f).read_text())
        for subject, r in result["subjects"].items():
            with Store.open(Path(result["project"])) as store:
                subjects[subject] = start_candidates(store, subject, f"<s-{subject}>")
                promised += promised_against_held_out(store, r.get("person", []))
            if held_out:
                judge_held_out(subjects[subject], subject, result)
    table = {}
    for ranking in RANKINGS:
        per = {s: correlation(cs, ranking) for s, cs in subjects.items()}
        table[ranking] = {
            "spearman": per,
            "mean": statistics.mean(per.values()),
            "interval": bootstrap_mean_correlation(subjects, ranking),
            "shortfall": statistics.mean(shortfall(cs, ranking) for cs in subjects.values()),
            "tied_first": statistics.mean(tied_first(cs, ranking) for cs in subjects.values()),
        }
    truth = "held-out" if held_out else "selection"
    return {"subjects": subjects, "rankings": table, "promised_vs_held_out": promised,
            "truth": truth}  # fmt: skip


def print_report(found: dict) -> None:
    n = sum(len(c) for c in found["subjects"].values())
    images = "48 held-out" if found["truth"] == "held-out" else "24 selection"
    print(f"{len(found['subjects'])} subjects, {n} candidates; truth: the oracle's concept "
          f"fidelity on {images} images")  # fmt: skip
    for ranking, r in found["rankings"].items():
        per = ", ".join(f"{s} {v:+.2f}" for s, v in r["spearman"].items())
        lo, hi = r["interval"]
        first = f"its first choice ({r['tied_first']:.1f} tied) is {r['shortfall']:.3f} below"
        print(f"{ranking:>22}: Spearman {r['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({per}); "
              f"{first} the best")  # fmt: skip
    pairs = found["promised_vs_held_out"]
    if pairs:
        promised = statistics.mean(p for p, _ in pairs)
        held = statistics.mean(h for _, h in pairs)
        print(f"the person's word, {len(pairs)} subject-rounds: its stars promised {promised:.2f} "
              f"of images with the subject; held out it drew {held:.2f}")  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="bench/search_compute.py JSON files")
    p.add_argument("--held-out", action="store_true", help="rank against held-out images")
    p.add_argument("--out", help="write the figures as JSON here")
    a = p.parse_args(argv)
    found = report(a.results, a.held_out)
    print_report(found)
    if a.out:
        Path(a.out).write_text(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
