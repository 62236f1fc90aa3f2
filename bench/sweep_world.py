"""Seed sweeps on the world model: how seed-sensitive is Textual Inversion, does the automatic
score pick a good seed, and what does batching K candidates save?

quality: for each hidden subject, learn its word from 5 rendered photos with K candidates
(seeds 0..K-1) in one sweep, score every candidate with the oracle twice, on a selection set of
images (seeds 0..) and on a held-out set (other seeds), and report across the K seeds the
held-out concept fidelity (min / median / max) and that of the candidate the selection set ranks
first, by the combined score and by a label-free score (concept similarity to the photos +
prompt fidelity, the analogue of CLIP-I/DINO + CLIP-T that a user without the oracle has).

timing: wall time of K candidates batched in one run against K runs one after another (the
same steps and samples per candidate; the results are checked to be the same).

    python bench/sweep_world.py quality --subjects cat,dog,robot --candidates 16 --steps 300
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
from oneword.experiments.scoring import ScoreSettings, score
from oneword.experiments.sweep import CandidatePlan, sweep


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
    from oneword.world.render import SUBJECTS_BY_ID

    photos = subject_photo_folder(subject_id, project / "photos" / subject_id, a.photo_seed)
    plan = CandidatePlan(count=a.candidates, seed=0)
    config = TrainConfig(
        token=f"<s-{subject_id}>",
        init_word=SUBJECTS_BY_ID[subject_id].class_word,
        steps=a.steps,
        lr=a.lr,
        batch_size=a.batch_size,
        grad_accum=1,
        checkpoint_every=max(a.steps // 4, 1),
        candidates=plan.candidates(),
    )
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
    t = sub.add_parser("timing")
    t.add_argument("--model", default="tiny", help="tiny, world-shape, world or a folder")
    t.add_argument("--candidates", type=int, default=8)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=1)
    t.add_argument("--grad-accum", type=int, default=4)
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    for s in (q, t):
        s.add_argument("--device")
        s.add_argument("--json", help="write the results here too")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    result = quality(a) if a.what == "quality" else timing(a)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
