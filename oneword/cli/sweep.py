"""`oneword sweep`, `score`, `runs`, `show`, `rate` and `bench dreambench`."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .. import api
from ..errors import OnewordError
from ..core.generate import Sampling
from ..adapters.feature_models import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL
from ..adapters.pipelines import SCHEDULERS
from ..experiments.store import Store
from .core import add_model_options, add_project_option, add_training_options, training_config
from .progress import ProgressBar


def register(sub) -> None:
    add_sweep_parser(sub)
    add_score_parser(sub)
    add_runs_parser(sub)
    add_show_parser(sub)
    add_rate_parser(sub)
    add_bench_parser(sub)


# -- sweep -------------------------------------------------------------------------------------
def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas") from None


def _words(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _max_batch(text: str) -> int | str:
    if text in ("auto", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number, auto or all") from None


def add_candidate_options(p: argparse.ArgumentParser, default_count: int) -> None:
    p.add_argument("--candidates", type=int, default=default_count,
                   help=f"candidate embeddings trained together (default {default_count})")
    p.add_argument("--inits", type=_words, default=("word",),
                   help="starting points, cycled over the candidates: word, random, jitter "
                        "(default word)")
    p.add_argument("--jitter", type=float, default=0.1,
                   help="noise of the jitter init, in vocabulary std (default 0.1)")
    p.add_argument("--lrs", type=_floats, default=(),
                   help="learning rates crossed with --inits, e.g. 2e-3,5e-3 (default: --lr)")
    p.add_argument("--max-batch", type=_max_batch, default="auto",
                   help="samples per forward pass: a number, all, or auto (fit the free "
                        "memory; default)")


def candidate_plan(a: argparse.Namespace):
    from ..experiments.sweep import CandidatePlan
    return CandidatePlan(count=a.candidates, seed=a.seed, inits=a.inits, jitter=a.jitter,
                         lrs=a.lrs)


def add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="train many candidate embeddings in one batched run",
                       description="Train K candidate embeddings of one word together (seeds "
                                   "seed..seed+K-1, and optionally other inits and learning "
                                   "rates); then rank them with `oneword score`.")
    p.add_argument("photos", nargs="+", help="a folder of photos, or photo files")
    add_training_options(p)
    add_candidate_options(p, 8)
    p.add_argument("--out", help="run folder (default: a new folder in the project)")
    p.add_argument("--resume", action="store_true",
                   help="continue --out, or the newest unfinished sweep of this token")
    add_ray_options(p)
    add_model_options(p)
    add_project_option(p)
    p.set_defaults(func=_cmd_sweep)


def load_distributed():
    """oneword.experiments.ray_cluster (and Ray), imported only for --ray."""
    try:
        from ..experiments import ray_cluster as distributed
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise OnewordError("--ray: Ray is not installed; pip install 'oneword[ray]'") from None
    return distributed


def add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="spread groups of candidates over a Ray cluster (ADDRESS, e.g. auto or "
                        "ray://host:10001; none: $RAY_ADDRESS or a local one); needs "
                        "pip install oneword[ray] and a run folder on shared storage")
    p.add_argument("--ray-groups", type=int,
                   help="Ray tasks to split the candidates into (default: one per GPU of the "
                        "cluster, else per CPU)")


def _cmd_sweep(a: argparse.Namespace) -> int:
    from ..experiments.sweep import sweep
    plan = candidate_plan(a)
    config = training_config(a, candidates=plan.candidates())
    choice = api.ModelChoice(a.model, a.device, a.dtype)
    started = time.time()
    if a.ray is not None:
        result = load_distributed().ray_sweep(a.photos, config, choice, a.project, a.out,
                                              a.resume, a.max_batch, ProgressBar(),
                                              a.ray or None, a.ray_groups)
    elif a.ray_groups is not None:
        raise OnewordError("--ray-groups: only with --ray")
    else:
        result = sweep(a.photos, config, choice, a.project, a.out, a.resume, a.max_batch,
                       on_event=ProgressBar())
    print(f"run r{result.run_id}: {len(result.files)} candidates of {a.token} in "
          f"{time.time() - started:.0f}s, in {result.folder}")
    for k, files in enumerate(result.files):
        print(f"  c{k:02d}  {next(iter(files.values()))}")
    print(f"next: oneword score r{result.run_id}" +
          (f" --project {a.project}" if a.project else ""))
    return 0


# -- score -------------------------------------------------------------------------------------
def _model_or_none(text: str) -> str | None:
    return None if text.lower() == "none" else text


def add_scoring_options(p: argparse.ArgumentParser, sample_steps: str = "--steps") -> None:
    p.add_argument(sample_steps, dest="sample_steps", type=int, default=30,
                   help="denoising steps per image (default 30)")
    p.add_argument("--cfg", type=float, default=7.5, help="guidance scale (default 7.5)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="ddim")
    p.add_argument("--size", type=int, help="image size (default: the model's)")
    p.add_argument("--judge", choices=("auto", "features", "oracle"), default="auto",
                   help="features: CLIP + DINO; oracle: the world model's oracle; auto: the "
                        "oracle on the world model, else features")
    p.add_argument("--clip-model", type=_model_or_none, default=DEFAULT_CLIP_MODEL,
                   help=f"CLIP hub id or folder, or none (default {DEFAULT_CLIP_MODEL})")
    p.add_argument("--dino-model", type=_model_or_none, default=DEFAULT_DINO_MODEL,
                   help=f"DINO hub id or folder, or none (default {DEFAULT_DINO_MODEL})")
    p.add_argument("--fidelity-weight", type=float, default=0.5,
                   help="weight of fidelity against prompt-following in the combined score")


def score_settings(a: argparse.Namespace, **extra):
    from ..experiments.scoring import ScoreSettings
    if a.size is not None and (a.size < 8 or a.size % 8):
        raise OnewordError(f"--size {a.size}: must be a multiple of 8")
    sampling = Sampling(a.sample_steps, a.cfg, a.scheduler, a.size)
    return ScoreSettings(sampling=sampling, judge=a.judge, clip_model=a.clip_model,
                         dino_model=a.dino_model, fidelity_weight=a.fidelity_weight,
                         device=a.device, dtype=a.dtype, **extra)


def add_score_parser(sub) -> None:
    p = sub.add_parser("score", help="draw and score every candidate of a run, ranked",
                       description="Draw M images per candidate over a prompt set, score "
                                   "their fidelity to the photos and to the prompts, and "
                                   "rank the candidates (table, report.html, scatter plot).")
    p.add_argument("run", help="a run id (r7 or 7), 'last', or a run folder")
    p.add_argument("--prompts", default="auto",
                   help="object, live, world, or a file of prompts with {} for the word "
                        "(default: DreamBench live prompts for cats/dogs, object prompts else)")
    p.add_argument("--prompt-limit", type=int, help="use the first N prompts only")
    p.add_argument("--class-word", help="the subject's class word (default: the run's --init)")
    p.add_argument("-n", "--images", type=int,
                   help="images per candidate, cycling the prompts (default: one per prompt)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--subject", help="world model: the oracle's subject id (default: from "
                                     "the class word)")
    add_scoring_options(p)
    p.add_argument("--device", help="cuda, mps, cpu (default: the best available)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"))
    add_ray_options(p)
    add_project_option(p)
    p.set_defaults(func=_cmd_score)


def _cmd_score(a: argparse.Namespace) -> int:
    from ..experiments.report import ranked_table
    from ..experiments.scoring import score
    settings = score_settings(a, prompts=a.prompts, prompt_limit=a.prompt_limit,
                              class_word=a.class_word, images=a.images, seed=a.seed,
                              subject=a.subject)
    if a.ray is not None:
        board = load_distributed().ray_score(a.run, settings, a.project, ProgressBar(),
                                             a.ray or None, a.ray_groups)
    elif a.ray_groups is not None:
        raise OnewordError("--ray-groups: only with --ray")
    else:
        board = score(a.run, settings, a.project, on_event=ProgressBar())
    print(f"run {board.run.name} ({board.run.token}), evaluation e{board.evaluation_id}, "
          f"judge {board.judge}, {len(board.prompts)} prompts:")
    print(ranked_table(board))
    print(f"report: {board.report}")
    print(f"plot:   {board.plot}")
    return 0


# -- runs, show, rate ----------------------------------------------------------------------
def add_runs_parser(sub) -> None:
    p = sub.add_parser("runs", help="list the runs of the project",
                       description="List the runs recorded in the experiment store.")
    p.add_argument("--kind", choices=("learn", "sweep", "bench", "evolve", "mix"))
    add_project_option(p)
    p.set_defaults(func=_cmd_runs)


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _cmd_runs(a: argparse.Namespace) -> int:
    with Store.open(a.project) as store:
        runs = store.runs(a.kind)
        if not runs:
            print(f"no runs yet in {store.folder}")
            return 0
        lines = [["run", "kind", "status", "started", "token", "model", "cands", "step",
                  "folder"]]
        for r in runs:
            lines.append([r.name, r.kind, r.status, _when(r.created), r.token, r.model,
                          str(len(store.candidates(r.id))), str(r.step), _short(r.folder)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return 0


def _short(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def add_show_parser(sub) -> None:
    p = sub.add_parser("show", help="show one run: settings, candidates, files, scores",
                       description="Show everything the store holds about one run.")
    p.add_argument("run", help="a run id (r7 or 7), 'last', or a run folder")
    add_project_option(p)
    p.set_defaults(func=_cmd_show)


def _cmd_show(a: argparse.Namespace) -> int:
    from ..experiments.report import describe_run
    with Store.open(a.project) as store:
        print(describe_run(store, store.find_run(a.run)))
    return 0


def add_rate_parser(sub) -> None:
    p = sub.add_parser("rate", help="record your rating of a candidate",
                       description="Record a rating (e.g. 1-5) of a candidate of a run.")
    p.add_argument("run", help="a run id (r7 or 7), 'last', or a run folder")
    p.add_argument("candidate", help="the candidate, e.g. c03 or 3")
    p.add_argument("rating", type=int, help="your rating, e.g. 1 to 5")
    p.add_argument("--note", default="", help="a few words on why")
    add_project_option(p)
    p.set_defaults(func=_cmd_rate)


def _cmd_rate(a: argparse.Namespace) -> int:
    with Store.open(a.project) as store:
        run = store.find_run(a.run)
        cand = store.find_candidate(run.id, a.candidate)
        store.rate(cand.id, a.rating, a.note)
    print(f"rated {run.name} {cand.name}: {a.rating}")
    return 0


# -- bench -------------------------------------------------------------------------------------
def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark protocol",
                       description="Benchmarks with real weights.")
    bench = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    d = bench.add_parser("dreambench", help="DreamBooth's DreamBench: 30 subjects x 25 prompts",
                         description="Learn each DreamBench subject, draw 4 images of each of "
                                     "its 25 prompts and report DINO, CLIP-I and CLIP-T.")
    d.add_argument("--data", default=os.environ.get("ONEWORD_DREAMBENCH"),
                   help="the DreamBench folder, one sub-folder per subject "
                        "(default: $ONEWORD_DREAMBENCH)")
    d.add_argument("--subjects", type=_words, default=(), help="e.g. dog,cat2 (default: all)")
    d.add_argument("--prompt-limit", type=int, help="the first N prompts per subject only")
    d.add_argument("--images-per-prompt", type=int, default=4)
    d.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    d.add_argument("--lr", type=float, default=5e-3)
    d.add_argument("--vectors", type=int, default=1)
    d.add_argument("--batch-size", type=int, default=1)
    d.add_argument("--grad-accum", type=int, default=4)
    d.add_argument("--resolution", type=int)
    d.add_argument("--checkpoint-every", type=int, default=500)
    d.add_argument("--seed", type=int, default=0)
    add_candidate_options(d, 1)
    add_scoring_options(d, sample_steps="--sample-steps")
    d.add_argument("--out", help="benchmark folder (default: a new folder in the project)")
    add_model_options(d)
    add_project_option(d)
    d.set_defaults(func=_cmd_dreambench)


def _cmd_dreambench(a: argparse.Namespace) -> int:
    from ..experiments.dreambench_run import DreamBenchSettings, run_dreambench, table_markdown
    from ..core.train import TrainConfig
    if not a.data:
        raise OnewordError("--data is missing: give the DreamBench folder (one sub-folder of "
                           "photos per subject), or set ONEWORD_DREAMBENCH")
    training = TrainConfig(token="<s>", init_word="thing", vectors=a.vectors, steps=a.steps,
                           lr=a.lr, batch_size=a.batch_size, grad_accum=a.grad_accum,
                           resolution=a.resolution, checkpoint_every=a.checkpoint_every,
                           seed=a.seed)
    settings = DreamBenchSettings(
        data=Path(a.data), subjects=a.subjects, prompt_limit=a.prompt_limit,
        images_per_prompt=a.images_per_prompt, plan=candidate_plan(a), training=training,
        score=score_settings(a), max_batch=a.max_batch)
    choice = api.ModelChoice(a.model, a.device, a.dtype)
    result = run_dreambench(settings, choice, a.project, a.out, on_event=ProgressBar())
    print(f"benchmark {result['run']} in {result['folder']}:")
    print(table_markdown(result["summary"], len(result["subjects"]), a.candidates))
    return 0
