"""Seed sweeps on the world model: how seed-sensitive is Textual Inversion, does the automatic
score pick a good seed, and what does batching K candidates save?

quality: for each hidden subject, learn its word from 5 rendered photos with K candidates
(seeds 0..K-1) in one sweep, score every candidate with the oracle twice, on a selection set of
images (seeds 0..) and on a held-out set (other seeds), and report across the K seeds the
held-out concept fidelity (min / median / max) and that of the candidate the selection set ranks
first, by the combined score and by a label-free score (concept similarity to the photos +
prompt fidelity, the analogue of CLIP-I/DINO + CLIP-T that a user without the oracle has).

halving: successive halving over K candidates (`sweep --halving`, cut by the label-free score)
against the best of N full runs at about the same compute (N chosen by the same score on the
same images) and against one run and the best of 16 full runs (from a `quality` result, the same
seeds and recipe); every pick's concept fidelity on held-out images.

timing: wall time of K candidates batched in one run against K runs one after another (the
same steps and samples per candidate; the results are checked to be the same).

    python bench/sweep_world.py quality --subjects cat,dog,robot --candidates 16 --steps 300
    python bench/sweep_world.py halving --subjects dog,cat --candidates 16 --equal-compute 5 \
        --full bench/results/sweep_world_longer.json
    python bench/sweep_world.py halving-report bench/results/halving_world.json \
        bench/results/sweep_world_longer.json
    python bench/sweep_world.py timing --model tiny --candidates 8 --steps 20
    python bench/sweep_world.py timing --model world-shape --candidates 8 --steps 10

--model world needs the world model's weights; world-shape is the world model's architecture
with random weights (timing does not depend on the weights).
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

from oneword.adapters.loading import load_model
from oneword.adapters.tiny import save_components
from oneword.api import ModelChoice
from oneword.core.generate import Sampling, save_png
from oneword.core.train import Candidate, TrainConfig, train
from oneword.experiments import score_math as ev
from oneword.experiments.scoring import ScoreSettings, score, score_run
from oneword.experiments.sweep import CandidatePlan, sweep
from oneword.search.picks import label_free_pick


# -- quality -------------------------------------------------------------------------------------
def subject_photo_folder(subject_id: str, folder: Path, seed: int) -> Path:
    from oneword.world.evaluate import subject_photos

    photos = subject_photos(subject_id, 5, torch.Generator().manual_seed(seed))
    for i, image in enumerate(photos):
        save_png(image, folder / f"{i}.png", {"subject": subject_id})
    return folder


def oracle_scores(run: str, a, seed: int, project: Path, subject_id: str):
    settings = ScoreSettings(
        prompts="world",
        images=a.prompts * a.images_per_prompt,
        seed=seed,
        sampling=Sampling(a.sample_steps, a.cfg, "ddim", 64),
        judge="oracle",
        subject=subject_id,
        device=a.device,
    )
    board = score(run, settings, project)
    by_index = sorted(board.rows, key=lambda r: r.candidate.index)
    return {
        m: torch.tensor([r.metrics[m] for r in by_index], dtype=torch.float64)
        for m in ("concept_fidelity", "concept_similarity", "prompt_fidelity", "combined")
    }


def quality_subject(subject_id: str, a, project: Path) -> dict:
    photos = subject_photo_folder(subject_id, project / "photos" / subject_id, a.photo_seed)
    config = subject_config(subject_id, a, a.candidates)
    start = time.time()
    result = sweep([str(photos)], config, ModelChoice(a.model, a.device), project)
    trained = time.time() - start
    select = oracle_scores(f"r{result.run_id}", a, 0, project, subject_id)
    held = oracle_scores(f"r{result.run_id}", a, 10_000, project, subject_id)
    label_free = ev.combined_score(select["concept_similarity"], select["prompt_fidelity"])
    fidelity = held["concept_fidelity"]
    pick = ev.ranking(select["combined"])[0]
    pick_free = ev.ranking(label_free)[0]
    return {
        "run": f"r{result.run_id}",
        "train_s": trained,
        "total_s": time.time() - start,
        "held_out_concept": fidelity.tolist(),
        "spread": ev.spread(fidelity),
        "best_combined": {"candidate": pick, "concept": float(fidelity[pick])},
        "best_label_free": {"candidate": pick_free, "concept": float(fidelity[pick_free])},
        "held_out_prompt": held["prompt_fidelity"].tolist(),
    }


def quality(a) -> dict:
    from oneword.world.render import SUBJECT_IDS

    subjects = a.subjects.split(",") if a.subjects else SUBJECT_IDS
    project = Path(a.project) if a.project else Path(tempfile.mkdtemp(prefix="sweep-world-"))
    out = {}
    print(
        f"{'subject':8s} {'min':>6s} {'median':>7s} {'max':>6s} {'best(comb)':>11s} "
        f"{'best(free)':>11s} {'train s':>8s}"
    )
    for subject_id in subjects:
        r = out[subject_id] = quality_subject(subject_id, a, project)
        s = r["spread"]
        print(
            f"{subject_id:8s} {s['min']:6.3f} {s['median']:7.3f} {s['max']:6.3f} "
            f"{r['best_combined']['concept']:11.3f} {r['best_label_free']['concept']:11.3f} "
            f"{r['train_s']:8.0f}",
            flush=True,
        )
    summary = {
        k: statistics.mean(f(r) for r in out.values())
        for k, f in (
            ("min", lambda r: r["spread"]["min"]),
            ("median", lambda r: r["spread"]["median"]),
            ("max", lambda r: r["spread"]["max"]),
            ("best_combined", lambda r: r["best_combined"]["concept"]),
            ("best_label_free", lambda r: r["best_label_free"]["concept"]),
        )
    }
    print("mean over subjects: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    return {"subjects": out, "summary": summary, "project": str(project)}


# -- halving -------------------------------------------------------------------------------------
def world_score_settings(a, images: int, seed: int, subject_id: str) -> ScoreSettings:
    return ScoreSettings(
        prompts="world",
        images=images,
        seed=seed,
        sampling=Sampling(a.sample_steps, a.cfg, "ddim", 64),
        judge="oracle",
        subject=subject_id,
        device=a.device,
    )


def subject_config(subject_id: str, a, candidates: int) -> TrainConfig:
    from oneword.world.render import SUBJECTS_BY_ID

    return TrainConfig(
        token=f"<s-{subject_id}>",
        init_word=SUBJECTS_BY_ID[subject_id].class_word,
        steps=a.steps,
        lr=a.lr,
        batch_size=a.batch_size,
        grad_accum=1,
        checkpoint_every=max(a.steps // 4, 1),
        candidates=CandidatePlan(count=candidates, seed=0).candidates(),
    )


def held_out(project: Path, run_id: int, candidate_id: int, a, subject_id: str) -> dict:
    """The oracle's verdict on one candidate's held-out images (seeds 10000..)."""
    from oneword.experiments.store import Store

    settings = world_score_settings(a, a.prompts * a.images_per_prompt, 10_000, subject_id)
    with Store.open(project) as store:
        board = score_run(store, f"r{run_id}", settings, only={candidate_id})
    row = board.rows[0]
    return {k: row.metrics[k] for k in ("concept_fidelity", "prompt_fidelity")} | {
        "images": a.prompts * a.images_per_prompt,
        "candidate": row.candidate.name,
    }


def halving_pick(subject_id: str, a, project: Path, photos: Path) -> dict:
    from oneword.experiments.cuts import run_cuts
    from oneword.experiments.store import Store
    from oneword.search.halving import halving_cost, halving_rungs
    from oneword.search.halving_sweep import HalvingPlan, halving_sweep

    config = subject_config(subject_id, a, a.candidates)
    plan = HalvingPlan(keep=a.keep, score=world_score_settings(a, a.score_images, 0, subject_id))
    start = time.time()
    result = halving_sweep([str(photos)], config, plan, ModelChoice(a.model, a.device), project)
    wall = time.time() - start
    with Store.open(project) as store:
        cuts = run_cuts(store, result.run_id)
    last = max(c["rung"] for c in cuts)
    survivor = next(c["candidate_id"] for c in cuts if c["rung"] == last and c["kept"])
    rungs = halving_rungs(a.candidates, a.keep, a.steps)
    scored = sum(r.count for r in rungs[:-1]) * a.score_images
    return {
        "wall_s": wall,
        "candidate_steps": halving_cost(rungs),
        "scored_images": scored,
        "rungs": [[r.step, r.count] for r in rungs],
        "cuts": cuts,
        "held_out": held_out(project, result.run_id, survivor, a, subject_id),
    }


def best_of_full_runs(subject_id: str, a, project: Path, photos: Path, count: int) -> dict:
    """`count` full runs in one sweep, the label-free pick on the rungs' score images."""
    config = subject_config(subject_id, a, count)
    start = time.time()
    result = sweep([str(photos)], config, ModelChoice(a.model, a.device), project)
    settings = world_score_settings(a, a.score_images, 0, subject_id)
    pick = label_free_pick(score(f"r{result.run_id}", settings, project))
    wall = time.time() - start
    return {
        "wall_s": wall,
        "candidate_steps": count * a.steps,
        "scored_images": count * a.score_images,
        "held_out": held_out(project, result.run_id, pick.id, a, subject_id),
    }


def halving_subject(subject_id: str, a, project: Path, full: dict | None) -> dict:
    photos = subject_photo_folder(subject_id, project / "photos" / subject_id, a.photo_seed)
    out = {"halving": halving_pick(subject_id, a, project, photos)}
    out["equal_compute"] = best_of_full_runs(subject_id, a, project, photos, a.equal_compute)
    if full and subject_id in full["subjects"]:
        seeds = full["subjects"][subject_id]
        out["full_16"] = {
            "one_run_mean": statistics.mean(seeds["held_out_concept"]),
            "one_run_median": seeds["spread"]["median"],
            "best_label_free": seeds["best_label_free"]["concept"],
            "train_s": seeds["train_s"],
            "candidate_steps": 16 * a.steps,
            "scored_images": 16 * 24,
        }
    return out


def halving(a) -> dict:
    subjects = a.subjects.split(",")
    project = Path(a.project) if a.project else Path(tempfile.mkdtemp(prefix="halving-world-"))
    full = json.loads(Path(a.full).read_text()) if a.full else None
    out = {"command": " ".join(sys.argv), "subjects": {}, "project": str(project)}
    for subject_id in subjects:
        r = out["subjects"][subject_id] = halving_subject(subject_id, a, project, full)
        h, e = r["halving"], r["equal_compute"]
        f = r.get("full_16", {})
        print(
            f"{subject_id}: halving {h['held_out']['concept_fidelity']:.3f} "
            f"({h['candidate_steps']} steps, {h['scored_images']} images, {h['wall_s']:.0f}s); "
            f"best of {a.equal_compute} {e['held_out']['concept_fidelity']:.3f} "
            f"({e['candidate_steps']} steps, {e['scored_images']} images, {e['wall_s']:.0f}s); "
            f"best of 16 {f.get('best_label_free', float('nan')):.3f}; "
            f"one run {f.get('one_run_mean', float('nan')):.3f}",
            flush=True,
        )
        if a.json:  # after each subject, so a stopped bench keeps what it measured
            Path(a.json).write_text(json.dumps(out, indent=2, default=str))
    return out


def ranks(x: list[float]) -> torch.Tensor:
    """Ranks from 0, ties sharing their mean rank."""
    t = torch.tensor(x, dtype=torch.float64)
    order = t.argsort()
    r = torch.empty_like(t)
    r[order] = torch.arange(len(x), dtype=torch.float64)
    for v in t.unique():
        r[t == v] = r[t == v].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float((ra.norm() * rb.norm()))
    return float((ra * rb).sum()) / denominator if denominator else float("nan")


def halving_report(a) -> dict:
    """From a `halving` result and the `quality` result of the same 16 seeds' full runs: at
    each rung, how well the label-free score ranks the candidates by their full-run held-out
    concept fidelity (Spearman), and the full-run figure of whom each cut kept."""
    result = json.loads(Path(a.result).read_text())
    full = json.loads(Path(a.full).read_text())["subjects"]
    out = {}
    for subject_id, r in result["subjects"].items():
        final = full[subject_id]["held_out_concept"]
        cuts = r["halving"]["cuts"]
        first = min(c["candidate_id"] for c in cuts)  # the run's candidates c00.. in order
        rows = out[subject_id] = []
        for rung in sorted({c["rung"] for c in cuts}):
            at = [c for c in cuts if c["rung"] == rung]
            scores = [c["score"] for c in at]
            truth = [final[c["candidate_id"] - first] for c in at]
            kept = [final[c["candidate_id"] - first] for c in at if c["kept"]]
            rows.append(
                {
                    "step": at[0]["step"],
                    "candidates": len(at),
                    "spearman": spearman(scores, truth),
                    "kept_mean": statistics.mean(kept),
                    "all_mean": statistics.mean(truth),
                }
            )
            print(
                f"{subject_id:6s} step {at[0]['step']:4d}: {len(at):2d} candidates, "
                f"Spearman {rows[-1]['spearman']:+.2f}; full-run fidelity of the kept "
                f"{rows[-1]['kept_mean']:.2f} vs all {rows[-1]['all_mean']:.2f}"
            )
    return out


# -- timing --------------------------------------------------------------------------------------
def timing_model(name: str, work: Path, device: str | None):
    if name == "world-shape":
        from oneword.world.model import build_world_components
        from oneword.world.training_config import WorldModelConfig

        folder = work / "world-shape"
        save_components(build_world_components(WorldModelConfig(minutes=1.0)), folder)
        return load_model(str(folder), device)
    return load_model(name, device)


def timing(a) -> dict:
    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = timing_model(a.model, work, a.device)
        model.add_placeholder_tokens(["<c>"])
        size = model.native_resolution
        photos = torch.rand(10, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
        base = dict(
            token="<c>",
            init_word="cat",
            steps=a.steps,
            batch_size=a.batch_size,
            grad_accum=a.grad_accum,
            checkpoint_every=a.steps,
        )
        seeds = list(range(a.candidates))
        rows = {"batched": [], "sequential": []}
        for rep in range(a.repeats):
            start = time.time()
            batched = train(
                model,
                photos,
                TrainConfig(**base, candidates=tuple(Candidate(s) for s in seeds)),
                work / f"b{rep}",
            )
            rows["batched"].append(time.time() - start)
            start = time.time()
            singles = [
                train(model, photos, TrainConfig(**base, seed=s), work / f"s{rep}-{s}")
                for s in seeds
            ]
            rows["sequential"].append(time.time() - start)
            print(
                f"repeat {rep}: batched {rows['batched'][-1]:.1f}s, "
                f"sequential {rows['sequential'][-1]:.1f}s",
                flush=True,
            )
        diff = max(
            float((batched.rows()[k] - singles[k].rows()[0]).abs().max()) for k in range(len(seeds))
        )
    # the fastest repeat: the one least disturbed by other work on a shared machine
    result = {k: min(v) for k, v in rows.items()}
    result.update(
        runs=rows,
        speedup=result["sequential"] / result["batched"],
        max_abs_difference=diff,
        model=a.model,
        device=str(model.device),
        threads=torch.get_num_threads(),
        machine=platform.processor() or platform.machine(),
        samples_per_step=a.batch_size * a.grad_accum,
        steps=a.steps,
        candidates=a.candidates,
    )
    print(
        f"K={a.candidates} on {a.model} ({result['device']}, {result['threads']} threads): "
        f"fastest of {a.repeats}: batched {result['batched']:.1f}s, sequential "
        f"{result['sequential']:.1f}s, "
        f"speed-up x{result['speedup']:.2f}; max |difference| {diff:.2e}"
    )
    return result


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--model", default="world")
    q.add_argument("--subjects", help="comma-separated subject ids (default: all)")
    q.add_argument("--candidates", type=int, default=16)
    q.add_argument("--steps", type=int, default=300)
    q.add_argument("--lr", type=float, default=5e-3)
    q.add_argument("--batch-size", type=int, default=4)
    q.add_argument("--photo-seed", type=int, default=0)
    q.add_argument("--prompts", type=int, default=12, help="novel-context prompts (<= 12)")
    q.add_argument("--images-per-prompt", type=int, default=2)
    q.add_argument("--sample-steps", type=int, default=20)
    q.add_argument("--cfg", type=float, default=5.0)
    q.add_argument("--project", help="experiment store (default: a temporary folder)")
    h = sub.add_parser("halving")
    h.add_argument("--model", default="world")
    h.add_argument("--subjects", default="dog,cat,robot,teddy,ball")
    h.add_argument("--candidates", type=int, default=16)
    h.add_argument("--keep", type=float, default=0.5)
    h.add_argument("--score-images", type=int, default=8, help="images per candidate a rung")
    h.add_argument("--equal-compute", type=int, default=5, help="N full runs to compare with")
    h.add_argument("--full", help="a `quality` result of 16 full runs (same seeds and recipe)")
    h.add_argument("--steps", type=int, default=300)
    h.add_argument("--lr", type=float, default=5e-3)
    h.add_argument("--batch-size", type=int, default=4)
    h.add_argument("--photo-seed", type=int, default=0)
    h.add_argument("--prompts", type=int, default=12, help="novel-context prompts (<= 12)")
    h.add_argument("--images-per-prompt", type=int, default=2, help="held-out images a prompt")
    h.add_argument("--sample-steps", type=int, default=20)
    h.add_argument("--cfg", type=float, default=5.0)
    h.add_argument("--project", help="experiment store (default: a temporary folder)")
    r = sub.add_parser("halving-report", help="rank quality of each rung's score (no compute)")
    r.add_argument("result", help="a `halving` --json result")
    r.add_argument("full", help="the `quality` --json result of the same seeds' full runs")
    r.add_argument("--json", help="write the results here too")
    t = sub.add_parser("timing")
    t.add_argument("--model", default="tiny", help="tiny, world-shape, world or a folder")
    t.add_argument("--candidates", type=int, default=8)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=1)
    t.add_argument("--grad-accum", type=int, default=4)
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    for s in (q, h, t):
        s.add_argument("--device")
        s.add_argument("--json", help="write the results here too")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    what = {"quality": quality, "halving": halving, "halving-report": halving_report}
    result = what.get(a.what, timing)(a)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
