"""Search in embedding space on the world model, with the oracle as fitness.

Per hidden subject: learn its word from 5 rendered photos with K candidates (seeds 0..K-1,
one batched sweep: K trainings), then

seeds: the spread of held-out concept fidelity over the K seeds (min / median / max), and
    the seed that a label-free score picks (`oneword score`'s combined similarity to the
    photos and prompt fidelity: no subject labels) and the one the oracle's score picks;
(a) mixing: the mean of the top-k seeds (by the selection score) with each mix method
    (mean, norm-mean, slerp) against the best single seed and the median seed;
(b) evolution: G generations of P children bred from the K candidates (no training: the
    K trainings are its only trainings) against the best of the same K random seeds.

Protocol: every choice (best seed, top-k, parents, the evolution's final pick) is made on a
selection set of images (image seeds 0.., M images over the novel-context prompts); every
number reported is measured on a held-out set (image seeds 10000.., the same prompts), so a
method that overfits the selection images gains nothing. The selection score and the fitness
are the oracle's concept fidelity + prompt fidelity; the tables report their mean ("oracle")
and the held-out concept fidelity with a 95% bootstrap interval over images. Evolution costs
no training but draws G·P·M extra selection images.

    python bench/search_world.py --subjects cat,dog,ball,robot,teddy --candidates 16 \
        --steps 300 --generations 3 --population 8 --out search.json
    python bench/search_world.py --model world-shape ...   # the pipeline on random weights
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from sweep_world import subject_photo_folder, timing_model  # noqa: E402

from oneword.api import ModelChoice  # noqa: E402
from oneword.core.embeddings import LearnedEmbedding  # noqa: E402
from oneword.core.generate import Sampling, Words, draw, register_words  # noqa: E402
from oneword.core.train import TrainConfig  # noqa: E402
from oneword.experiments.score_math import combined_score  # noqa: E402
from oneword.experiments.scoring import (
    ScoreSettings,
    candidate_embedding,
    make_judge,
    prompt_job,  # noqa: E402
    reference_images,
    score,
)
from oneword.experiments.store import Store  # noqa: E402
from oneword.experiments.sweep import CandidatePlan, sweep  # noqa: E402
from oneword.experiments.verdicts import latest_scores  # noqa: E402
from oneword.search.embedding_ops import MIX_METHODS, Breeding  # noqa: E402
from oneword.search.evolve import (
    EvolveSettings,
    evolve,
    metric_sum,  # noqa: E402
    mix_candidates,
)
from oneword.world.metrics import bootstrap_interval  # noqa: E402

FITNESS = "concept_fidelity+prompt_fidelity"
HELD_OUT_SEED = 10_000


def image_settings(a, seed: int, subject: str) -> ScoreSettings:
    per_prompt = a.held_out_per_prompt if seed == HELD_OUT_SEED else a.images_per_prompt
    return ScoreSettings(
        prompts="world",
        images=a.prompts * per_prompt,
        seed=seed,
        sampling=Sampling(a.sample_steps, a.cfg, "ddim", None),
        judge="oracle",
        subject=subject,
        device=a.device,
    )


class HeldOut:
    """Draws an embedding on the held-out images and asks the oracle."""

    def __init__(
        self, model, a, subject: str, class_word: str, photos: Path, token: str, vectors: int
    ):
        self.settings = image_settings(a, HELD_OUT_SEED, subject)
        self.job = prompt_job(self.settings, "world", token, class_word)
        self.judge = make_judge(self.settings, "world", class_word)
        self.judge.prepare(reference_images([str(photos)]), self.job.judged)
        self.model, self.token = model, token
        if token not in (model.placeholder_tokens or []):
            blank = torch.zeros(vectors, model.embedding_width)
            register_words(model, [LearnedEmbedding(token, blank)])

    def __call__(self, vectors: torch.Tensor) -> dict[str, float]:
        words = Words({self.token: vectors.shape[0]}, vectors.float()[None].to(self.model.device))
        images = draw(self.model, self.job.drawn, self.job.seeds, words, self.settings.sampling)
        out = self.judge.measure(images, self.job.prompt_index)
        out["oracle"] = (out["concept_fidelity"] + out["prompt_fidelity"]) / 2
        out["images"] = len(self.job.seeds)
        return out


def selection_fitness(store: Store, run) -> dict[int, float]:
    scores = latest_scores(store, run)
    return {cid: metric_sum(m, FITNESS) / 2 for cid, m in scores.items()}


def subject_bench(subject: str, a, project: Path, model_name: str) -> dict:
    from oneword.world.render import SUBJECTS_BY_ID

    class_word = SUBJECTS_BY_ID[subject].class_word
    photos = subject_photo_folder(subject, project / "photos" / subject, a.photo_seed)
    config = TrainConfig(
        token=f"<s-{subject}>",
        init_word=class_word,
        steps=a.steps,
        lr=a.lr,
        batch_size=a.batch_size,
        grad_accum=1,
        checkpoint_every=max(a.steps // 2, 1),
        candidates=CandidatePlan(count=a.candidates, seed=0).candidates(),
    )
    t0 = time.time()
    result = sweep([str(photos)], config, ModelChoice(model_name, a.device), project)
    seeds_run = f"r{result.run_id}"
    timings = {"train_s": time.time() - t0}
    t0 = time.time()
    score(seeds_run, image_settings(a, 0, subject), project)
    timings["select_s"] = time.time() - t0
    from oneword.adapters.loading import load_model

    model = load_model(model_name, a.device)
    held = HeldOut(model, a, subject, class_word, photos, config.token, config.vectors)
    with Store.open(project) as store:
        run = store.find_run(seeds_run)
        cands = store.candidates(run.id)
        sel = selection_fitness(store, run)
        embs = {c.id: candidate_embedding(store, run, c).vectors for c in cands}
    t0 = time.time()
    seed_held = {c.id: held(embs[c.id]) for c in cands}
    print(
        f"\n## {subject} ({seeds_run}; {a.candidates} seeds x {a.steps} steps; trained in "
        f"{timings['train_s']:.0f}s)",
        flush=True,
    )
    out = {
        "run": seeds_run,
        "seeds": seeds_table(cands, sel, seed_held, free_fitness(project, run)),
    }
    print_table("seeds", out["seeds"])
    out["mixing"] = mixing_table(a, cands, sel, seed_held, held, project, embs)
    print_table("mixing", out["mixing"])
    out["evolution"] = evolution_table(a, seeds_run, cands, sel, seed_held, held, project, subject)
    print_table("evolution", out["evolution"])
    timings["rest_s"] = time.time() - t0
    out["timings"] = timings
    return out


def free_fitness(project: Path, run) -> dict[int, float]:
    """The label-free selection score (`oneword score`'s combined score of the similarity to
    the photos and prompt fidelity, standardised over the candidates): no subject labels."""
    with Store.open(project) as store:
        scores = latest_scores(store, run)
    ids = sorted(scores)
    combined = combined_score(
        torch.tensor([scores[i]["concept_similarity"] for i in ids], dtype=torch.float64),
        torch.tensor([scores[i]["prompt_fidelity"] for i in ids], dtype=torch.float64),
    )
    return dict(zip(ids, combined.tolist()))


def seeds_table(cands, sel, seed_held, free) -> dict:
    """Held-out concept fidelity over the K seeds, and of the seed each selection rule picks."""
    fidelity = sorted(seed_held[c.id]["concept_fidelity"] for c in cands)
    by_free = seed_held[max(cands, key=lambda c: free[c.id]).id]
    by_oracle = seed_held[max(cands, key=lambda c: sel[c.id]).id]
    return {
        "seeds": len(cands),
        "held-out images per seed": by_free["images"],
        "concept min / median / max over seeds": [
            round(fidelity[0], 4),
            round(statistics.median(fidelity), 4),
            round(fidelity[-1], 4),
        ],
        "pick by label-free score: concept [95% CI]": with_interval(by_free),
        "pick by oracle selection score: concept [95% CI]": with_interval(by_oracle),
        "pick by label-free score minus median seed": round(
            by_free["concept_fidelity"] - statistics.median(fidelity), 4
        ),
    }


def with_interval(out: dict) -> str:
    """'share [lo, hi]': the held-out concept fidelity with its 95% bootstrap interval (the
    verdicts are 0/1, so the share and the count determine them)."""
    n = out["images"]
    hits = torch.zeros(n)
    hits[: round(out["concept_fidelity"] * n)] = 1
    lo, hi = bootstrap_interval([hits], torch.Generator().manual_seed(0))
    return f"{out['concept_fidelity']:.3f} [{lo:.3f}, {hi:.3f}]"


def mixing_table(a, cands, sel, seed_held, held, project, seed_embs) -> dict:
    ranked = sorted(cands, key=lambda c: -sel[c.id])
    values = [seed_held[c.id]["oracle"] for c in cands]
    rows = {
        "median seed": statistics.median(values),
        "best single seed (by selection)": seed_held[ranked[0].id]["oracle"],
        "best single seed (by selection): concept [95% CI]": with_interval(seed_held[ranked[0].id]),
        "best seed in hindsight (held-out max)": max(values),
    }
    for k in a.top_k:
        norms = {}
        for method in MIX_METHODS:
            mixed = mix_candidates([c.id for c in ranked[:k]], None, method, project)
            with Store.open(project) as store:
                (cand,) = store.candidates(mixed.id)
                vectors = candidate_embedding(store, mixed, cand).vectors
            measured = held(vectors)
            rows[f"mean of top-{k} ({method})"] = measured["oracle"]
            rows[f"mean of top-{k} ({method}): concept [95% CI]"] = with_interval(measured)
            inputs = torch.stack([seed_embs[c.id].norm(dim=-1) for c in ranked[:k]]).mean()
            norms[method] = f"{float(vectors.norm(dim=-1).mean() / inputs):.3f}"
        rows[f"top-{k} mix norm / inputs' mean norm"] = ", ".join(
            f"{m} {v}" for m, v in norms.items()
        )
    return rows


def evolution_table(a, seeds_run, cands, sel, seed_held, held, project, subject) -> dict:
    breeding = Breeding(
        selection=a.selection,
        crossover=a.crossover,
        mutation=a.mutation,
        elites=a.elites,
        top_k=a.parents,
    )
    best = seed_held[max(cands, key=lambda c: sel[c.id]).id]
    rows = {
        "best of K seeds (by selection)": best["oracle"],
        "best of K seeds (by selection): concept [95% CI]": with_interval(best),
    }
    for strategy in a.strategies:
        settings = EvolveSettings(a.generations, a.population, breeding, strategy, FITNESS, a.seed)
        t0 = time.time()
        runs = evolve(seeds_run, settings, image_settings(a, 0, subject), project)
        best_id, best_sel, per_gen = None, max(sel.values()), []
        with Store.open(project) as store:
            for run in runs:
                fit = selection_fitness(store, run)
                per_gen.append(round(max(fit.values()), 4))
                cid, value = max(fit.items(), key=lambda kv: kv[1])
                if value > best_sel:
                    best_id, best_sel = cid, value
            vectors = None
            if best_id is not None:
                cand = store.candidate(best_id)
                vectors = candidate_embedding(store, store.run(cand.run_id), cand).vectors
        measured = held(vectors) if vectors is not None else best
        label = f"evolution {strategy}: {a.generations} generations x {a.population}"
        rows[label] = measured["oracle"]
        rows[f"{label}: concept [95% CI]"] = with_interval(measured)
        rows[f"evolution {strategy}: improved on the seeds' best selection score"] = (
            vectors is not None
        )
        rows[f"evolution {strategy}: best selection score per generation"] = per_gen
        rows[f"evolution {strategy}: seconds"] = round(time.time() - t0, 1)
    return rows


SUMMARY_COLUMNS = {
    "median seed": ("seeds", "concept min / median / max over seeds", 1),
    "pick (label-free)": ("seeds", "pick by label-free score: concept [95% CI]", None),
    "pick (oracle)": ("seeds", "pick by oracle selection score: concept [95% CI]", None),
}


def print_summary(results: dict) -> None:
    """Held-out concept fidelity per subject: the median seed, each pick, every mix and
    evolution row (their intervals are in the tables above)."""
    columns = dict(SUMMARY_COLUMNS)
    first = next(iter(results.values()))
    for table in ("mixing", "evolution"):
        for row in first[table]:
            if row.endswith("concept [95% CI]") and not row.startswith("best"):
                columns[row.removesuffix(": concept [95% CI]")] = (table, row, None)
    print("\n| subject | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for subject, r in results.items():
        cells = []
        for table, row, index in columns.values():
            value = r[table][row]
            cells.append(f"{value[index]:.3f}" if index is not None else value.split(" [")[0])
        print(f"| {subject} | " + " | ".join(cells) + " |")
    sys.stdout.flush()


def print_table(name: str, rows: dict) -> None:
    print(f"\n| {name} | held-out oracle score |\n|---|---|")
    for row, value in rows.items():
        shown = f"{value:.4f}" if isinstance(value, float) and "seconds" not in row else value
        print(f"| {row} | {shown} |")
    sys.stdout.flush()


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="world", help="world, world-shape or a folder")
    p.add_argument("--subjects", default="cat")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--photo-seed", type=int, default=0)
    p.add_argument("--prompts", type=int, default=12, help="novel-context prompts (<= 12)")
    p.add_argument("--images-per-prompt", type=int, default=2, help="selection images")
    p.add_argument("--held-out-per-prompt", type=int, default=4, help="held-out images")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--top-k", type=lambda s: [int(x) for x in s.split(",")], default=[2, 4])
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--strategies", type=lambda s: s.split(","), default=["ga"])
    p.add_argument("--selection", default="top-k")
    p.add_argument("--parents", type=int, default=4, help="top-k selection's k")
    p.add_argument("--crossover", default="blend")
    p.add_argument("--mutation", type=float, default=0.1)
    p.add_argument("--elites", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int)
    p.add_argument("--project")
    p.add_argument("--out", help="write the results as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    project = Path(a.project) if a.project else Path(tempfile.mkdtemp(prefix="search-world-"))
    model_name = a.model
    if a.model == "world-shape":
        timing_model("world-shape", project, a.device)  # saves the folder it loads
        model_name = str(project / "world-shape")
    started = time.time()
    results = {}
    for subject in a.subjects.split(","):
        results[subject] = subject_bench(subject, a, project, model_name)
        report = {
            "args": vars(a),
            "machine": platform.platform(),
            "threads": torch.get_num_threads(),
            "seconds": round(time.time() - started, 1),
            "subjects": results,
            "project": str(project),
        }
        if a.out:  # after every subject, so a long run's finished subjects are kept
            Path(a.out).write_text(json.dumps(report, indent=2, default=str))
    print_summary(results)
    for subject, r in results.items():
        print(f"{subject} timings: {json.dumps({k: round(v, 1) for k, v in r['timings'].items()})}")
    print(f"\ntotal {report['seconds']}s, {report['threads']} threads, project {project}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
