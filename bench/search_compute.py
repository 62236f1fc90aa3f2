"""Quality against compute for every way of searching for a word, on the world model.

Per hidden subject (5 rendered photos), from one sweep of K seeds (0..K-1, `--candidates`):

- one run: seed 0;
- best of k, k = 2..K: the label-free pick among the first k seeds (a sweep of k trains
  exactly those), on the selection images;
- halving: successive halving over K candidates (`sweep --halving`), the survivor;
- evolution: `--generations` x `--population` children bred from a sweep of `--evolve-seeds`
  seeds, judged as bred; and the same with `--train-steps` (the children trained on first);
  the pick: the best fitness over the seeds and every generation;
- the simulated person (bench/simulated_person.py): `--rounds` rounds of the gallery's
  rate -> breed -> draw from the same seeds; their word after each round.

Every choice is made on selection images (image seeds 0..) with a label-free fitness
(`--fitness`, default concept similarity + prompt fidelity: no subject labels); every number is
the concept fidelity (and prompt fidelity) of the chosen word on held-out images (seeds 10000..)
with a 95% bootstrap interval over images, per subject and pooled (the mean over subjects,
resampling each subject's images). Compute is candidate-steps trained plus images drawn to
choose (x of the picture).

    python bench/search_compute.py --subjects cat,dog,ball,robot,teddy --candidates 16 \
        --steps 300 --evolve-seeds 8 --generations 2 --population 8 --train-steps 120 \
        --rounds 10 --out search_compute.json --picture search_compute.png

At these settings best of 16 costs 16 · 300 steps + 16 · 24 selection images = 5184, evolution
with training 8 · 300 + 2 · 8 · 120 steps + (8 + 16) · 24 images = 4896 (no more), evolution
as bred 2976 and the person 8 · 300 steps + 8 · 8 images a round (3040 after 10 rounds).
    python bench/search_compute.py --from-json a.json b.json --picture search_compute.png
    python bench/search_compute.py --quick      # one subject, a few steps: does it run
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from search_world import image_settings  # noqa: E402
from simulated_person import (  # noqa: E402
    QUICK,
    Rater,
    breeding_of,
    candidate_vectors,
    drawing_settings,
    held_out_judge,
    parse,
    person_loop,
    subject_config,
)
from sweep_world import subject_photo_folder  # noqa: E402

from oneword.adapters.loading import ModelChoice  # noqa: E402
from oneword.experiments.scoring import score  # noqa: E402
from oneword.experiments.store import Store  # noqa: E402
from oneword.experiments.sweep import sweep  # noqa: E402
from oneword.experiments.verdicts import latest_scores  # noqa: E402
from oneword.search.evolve import EvolveSettings, evolve, metric_sum  # noqa: E402
from oneword.search.halving import halving_cost, halving_rungs  # noqa: E402
from oneword.search.picks import best_of_first  # noqa: E402
from oneword.search.trained import ChildTraining  # noqa: E402
from oneword.world.metrics import bootstrap_interval  # noqa: E402

METHODS = ("one", "best-of-k", "halving", "evolve", "evolve-trained", "person")
LABEL_FREE = "concept_similarity+prompt_fidelity"


def extra_options(p) -> None:
    p.add_argument("--methods", default=",".join(METHODS), help=", ".join(METHODS))
    p.add_argument("--keep", type=float, default=0.5, help="halving: share kept at a cut")
    p.add_argument("--evolve-seeds", type=int, default=8, help="seeds evolution starts from")
    p.add_argument("--generations", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=120, help="evolve-trained's steps")
    p.add_argument("--selection", default="top-k")
    p.add_argument("--parents", type=int, default=4, help="top-k selection's k")
    p.add_argument("--on-sphere", action="store_true", help="evolution on the sphere")
    p.add_argument("--fitness", default=LABEL_FREE, help="evolution's fitness (label-free)")
    p.add_argument("--from-json", nargs="+", help="only tabulate and draw these results")
    p.add_argument("--picture", help="write the picture (PNG) here")


QUICK_COMPUTE = {**QUICK, "evolve_seeds": 2, "generations": 1, "train_steps": 2}


# -- running -------------------------------------------------------------------------------------
class Subject:
    """One subject's photos, sweep, selection scores and held-out judge."""

    def __init__(self, subject: str, a, project: Path):
        self.name, self.a, self.project = subject, a, project
        self.photos = subject_photo_folder(subject, project / "photos" / subject, a.photo_seed)
        self.config = subject_config(a, subject, a.candidates)
        self.choice = ModelChoice(a.model, a.device)
        self.selection = image_settings(a, 0, subject)
        self.per_candidate = self.selection.images
        self.sweep = self.train(a.candidates)
        self.held = held_out_judge(a, subject, self.photos, self.config.token, 1)
        self.measured: dict[int, dict] = {}

    def train(self, count: int) -> int:
        """A scored sweep of seeds 0..count-1; its run id."""
        config = subject_config(self.a, self.name, count)
        result = sweep([str(self.photos)], config, self.choice, self.project)
        score(f"r{result.run_id}", self.selection, self.project)
        return result.run_id

    def verdict(self, candidate_id: int) -> dict:
        if candidate_id not in self.measured:
            self.measured[candidate_id] = self.held(candidate_vectors(self.project, candidate_id))
        return self.measured[candidate_id]

    def row(self, candidate_id: int, steps: int, images: int, **more) -> dict:
        return {"candidate_steps": steps, "images": images, "held_out": self.verdict(candidate_id),
                "candidate": candidate_id, **more}  # fmt: skip


def sweep_rows(s: Subject) -> dict:
    """One run and the best of k for k = 2..K, read off the sweep's selection scores."""
    with Store.open(s.project) as store:
        cands = store.candidates(s.sweep)
        scores = latest_scores(store, store.run(s.sweep))
    metrics = [scores[c.id] for c in cands]
    a, m = s.a, s.per_candidate
    rows = {"one": s.row(cands[0].id, a.steps, 0)}
    for k in range(2, len(cands) + 1):
        rows[f"best of {k}"] = s.row(cands[best_of_first(metrics, k)].id, k * a.steps, k * m, k=k)
    return rows


def halving_row(s: Subject) -> dict:
    from oneword.experiments.cuts import run_cuts
    from oneword.search.halving_sweep import HalvingPlan, halving_sweep

    plan = HalvingPlan(keep=s.a.keep, score=s.selection)
    result = halving_sweep([str(s.photos)], s.config, plan, s.choice, s.project)
    with Store.open(s.project) as store:
        cuts = run_cuts(store, result.run_id)
    last = max(c["rung"] for c in cuts)
    survivor = next(c["candidate_id"] for c in cuts if c["rung"] == last and c["kept"])
    rungs = halving_rungs(s.a.candidates, s.a.keep, s.a.steps)
    images = sum(r.count for r in rungs[:-1]) * s.per_candidate
    return s.row(survivor, halving_cost(rungs), images)


def start_run(s: Subject) -> int:
    """The sweep evolution and the person start from: the first --evolve-seeds seeds."""
    if s.a.evolve_seeds == s.a.candidates:
        return s.sweep
    if not hasattr(s, "start"):
        s.start = s.train(s.a.evolve_seeds)
    return s.start


def evolve_row(s: Subject, train_steps: int) -> dict:
    a, start = s.a, start_run(s)
    settings = EvolveSettings(
        a.generations, a.population, breeding_of(a, a.selection, a.parents), "ga", a.fitness,
        a.seed, on_sphere=True if a.on_sphere else None,
    )  # fmt: skip
    training = ChildTraining(train_steps, a.device) if train_steps else None
    runs = evolve(f"r{start}", settings, s.selection, s.project, training=training)
    with Store.open(s.project) as store:
        fitness = {}
        for run in [store.run(start)] + runs:
            for cid, metrics in latest_scores(store, run).items():
                fitness[cid] = metric_sum(metrics, a.fitness)
    best = max(fitness, key=lambda c: (fitness[c], -c))
    bred = a.generations * a.population
    steps = a.evolve_seeds * a.steps + bred * train_steps
    return s.row(best, steps, (a.evolve_seeds + bred) * s.per_candidate, runs=[r.id for r in runs])


def person_rows(s: Subject, automatic: dict) -> list[dict]:
    a, start = s.a, start_run(s)
    rater = Rater(s.name, s.config.token, a.error_rate, a.seed, a.device)
    drawing = drawing_settings(a, s.name)
    run = person_loop(s.project, start, rater, s.held, a, drawing, breeding_of(a), automatic)
    steps = a.evolve_seeds * a.steps
    return [
        {"candidate_steps": steps, "images": r["images_shown"], "round": r["round"],
         "held_out": s.verdict(r["candidate"]), "candidate": r["candidate"]}
        for r in run.rounds
    ]  # fmt: skip


def subject_compute(subject: str, a, project: Path) -> dict:
    methods = set(a.methods.split(","))
    s = Subject(subject, a, project)
    rows = sweep_rows(s)
    out = {"rows": {k: v for k, v in rows.items() if k == "one" or "best-of-k" in methods}}
    automatic = rows[f"best of {a.candidates}"]["held_out"]
    if "halving" in methods:
        out["rows"]["halving"] = halving_row(s)
    if "evolve" in methods:
        out["rows"]["evolution"] = evolve_row(s, 0)
    if "evolve-trained" in methods:
        out["rows"][f"evolution, trained {a.train_steps}"] = evolve_row(s, a.train_steps)
    if "person" in methods:
        out["person"] = person_rows(s, automatic)
    return out


# -- tabulating ----------------------------------------------------------------------------------
def hits(verdict: dict, metric: str = "concept_fidelity") -> torch.Tensor:
    """0/1 per held-out image (the verdicts are shares of 0/1, so share and count give them)."""
    n = int(verdict["images"])
    out = torch.zeros(n)
    out[: round(verdict[metric] * n)] = 1
    return out


def pooled(verdicts: list[dict], metric: str = "concept_fidelity") -> tuple[float, float, float]:
    """(mean over subjects, 95% interval) resampling every subject's images."""
    samples = [hits(v, metric) for v in verdicts]
    mean = statistics.mean(float(x.mean()) for x in samples)
    lo, hi = bootstrap_interval(samples, torch.Generator().manual_seed(0), statistic="mean")
    return mean, lo, hi


def difference(a: list[dict], b: list[dict], draws: int = 2000) -> tuple[float, float, float]:
    """Pooled concept fidelity of a minus b, with a 95% bootstrap interval."""
    gen = torch.Generator().manual_seed(1)
    diffs = torch.zeros(draws, dtype=torch.float64)
    for va, vb in zip(a, b):
        for v, sign in ((va, 1), (vb, -1)):
            x = hits(v).double()
            idx = torch.randint(len(x), (draws, len(x)), generator=gen)
            diffs += sign * x[idx].mean(1) / len(a)
    mean = statistics.mean(float(hits(x).mean()) for x in a) - statistics.mean(
        float(hits(x).mean()) for x in b
    )
    lo, hi = diffs.quantile(torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return mean, lo, hi


def table(subjects: dict) -> dict[str, dict]:
    """Per row (a search, or the person after a round): compute, pooled concept and prompt
    fidelity with intervals, and the difference from the largest best of k."""
    names = list(next(iter(subjects.values()))["rows"])
    largest = max((n for n in names if n.startswith("best of")), key=lambda n: int(n.split()[-1]))
    reference = [r["rows"][largest]["held_out"] for r in subjects.values()]
    out = {}
    for name in names:
        out[name] = summary_row({s: r["rows"][name] for s, r in subjects.items()}, reference)
    for k, name in person_names(subjects):
        out[name] = summary_row({s: r["person"][k] for s, r in subjects.items()}, reference)
    for row in out.values():
        row[f"minus {largest}"] = row.pop("minus reference")
    return out


def summary_row(rows: dict[str, dict], reference: list[dict]) -> dict:
    verdicts = [r["held_out"] for r in rows.values()]
    return {
        "compute": statistics.mean(r["candidate_steps"] + r["images"] for r in rows.values()),
        "concept": pooled(verdicts),
        "prompt": pooled(verdicts, "prompt_fidelity"),
        "minus reference": difference(verdicts, reference),
        "per subject": {s: pooled([r["held_out"]]) for s, r in rows.items()},
    }


def person_beats(subjects: dict) -> dict[str, int | None]:
    """Per subject, the first round whose word beats the largest best of k on held-out
    concept fidelity (None: none did)."""
    out = {}
    for name, r in subjects.items():
        largest = max(
            (n for n in r["rows"] if n.startswith("best of")), key=lambda n: int(n.split()[-1])
        )
        bar = r["rows"][largest]["held_out"]["concept_fidelity"]
        rounds = [
            k + 1
            for k, p in enumerate(r.get("person", []))
            if p["held_out"]["concept_fidelity"] > bar
        ]
        out[name] = rounds[0] if rounds else None
    return out


def person_names(subjects: dict) -> list[tuple[int, str]]:
    rounds = min(len(r.get("person", [])) for r in subjects.values())
    return [(k, f"person, round {k + 1}") for k in range(rounds)]


def print_table(rows: dict) -> None:
    diff = next(k for k in next(iter(rows.values())) if k.startswith("minus"))
    print(f"\n| search | compute | concept [95% CI] | prompt [95% CI] | {diff} | per subject |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        c, p, d = r["concept"], r["prompt"], r[diff]
        print(f"| {name} | {r['compute']:.0f} | {c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}] | "
              f"{p[0]:.3f} [{p[1]:.3f}, {p[2]:.3f}] | {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] | "
              + ", ".join(f"{s} {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"
                          for s, v in r["per subject"].items()) + " |")  # fmt: skip
    sys.stdout.flush()


def picture(rows: dict, path: Path, title: str) -> Path:
    """x: candidate-steps + images drawn; y: pooled held-out concept fidelity with its 95%
    interval. Best of k and the person's rounds are lines, the other searches points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    lines = (("best of", "best of k", "o-"), ("person", "simulated person", "s--"))
    for prefix, label, style in lines:
        series = [r for n, r in rows.items() if n.startswith(prefix)]
        if series:
            draw_series(ax, series, label, style)
    for name, r in rows.items():
        if not name.startswith(("best of", "person")):
            draw_series(ax, [r], name, "D")
    ax.set_xscale("log")
    ax.set_xlabel("compute: candidate-steps + images drawn")
    ax.set_ylabel("held-out concept fidelity (pooled, 95% CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def draw_series(ax, series: list[dict], label: str, style: str) -> None:
    x = [r["compute"] for r in series]
    y = [r["concept"][0] for r in series]
    low = [r["concept"][0] - r["concept"][1] for r in series]
    high = [r["concept"][2] - r["concept"][0] for r in series]
    ax.errorbar(x, y, yerr=[low, high], fmt=style, capsize=3, label=label, markersize=4)


# -- main ----------------------------------------------------------------------------------------
def run_all(a) -> dict:
    if a.threads:
        torch.set_num_threads(a.threads)
    project = Path(a.project) if a.project else Path(tempfile.mkdtemp(prefix="search-compute-"))
    started, results = time.time(), {}
    for subject in a.subjects.split(","):
        results[subject] = subject_compute(subject, a, project)
        report = {
            "command": " ".join(sys.argv),
            "args": vars(a),
            "machine": platform.platform(),
            "threads": torch.get_num_threads(),
            "seconds": round(time.time() - started, 1),
            "subjects": results,
            "project": str(project),
        }
        if a.out:  # after every subject, so a long run's finished subjects are kept
            Path(a.out).write_text(json.dumps(report, indent=2, default=str))
    return report


def merged(files: list[str]) -> dict:
    """The subjects of several result files (e.g. one per subject) in one report."""
    reports = [json.loads(Path(f).read_text()) for f in files]
    subjects = {s: r for report in reports for s, r in report["subjects"].items()}
    return {**reports[0], "subjects": subjects, "merged_from": files}


def main(argv=None) -> int:
    a = parse(argv, extra_options, QUICK_COMPUTE, __doc__)
    report = merged(a.from_json) if a.from_json else run_all(a)
    rows = table(report["subjects"])
    print_table(rows)
    if any(r.get("person") for r in report["subjects"].values()):
        print(f"first round the person's word beats the automatic pick: "
              f"{json.dumps(person_beats(report['subjects']))}")  # fmt: skip
    if a.picture:
        subjects = ", ".join(report["subjects"])
        print(f"picture: {picture(rows, Path(a.picture), f'search against compute ({subjects})')}")
    if not a.from_json:
        print(f"total {report['seconds']}s, {report['threads']} threads, "
              f"project {report['project']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
