"""Recipes bench on the world model: concept fidelity, prompt fidelity, the edit test, the
word's norm and the seconds to learn, per recipe (`learn --recipe`), along the steps.

For each subject: the quality bench's 5 photos (learning seed 0), one word per recipe learned
in stages (its checkpoint continued: one run, looked at after each stage), and after each
stage the quality bench's 12 novel prompts x 8 image seeds (96 images: concept fidelity, prompt
fidelity); after the last stage also the edit test (`oneword.world.edits`, 96 images: the edit
obeyed, the subject kept, both). The class word is drawn on the same prompts once per subject.

    python bench/recipes.py                                  # 5 subjects, 4 recipes
    python bench/recipes.py --auto-mask --json bench/results/recipes_world_automask.json
    python bench/recipes.py --merge a.json b.json --json both.json  # subjects run apart

With --json the file is rewritten after each subject; run the same command again after a stop
and the subjects already there are kept.
    python bench/recipes.py --subjects toy --recipes 'plain;core:context=1' --stages 100,300 --quick

Learning seconds are the training's own (drawing and judging excluded), from a fresh model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from quality import interval

from oneword.adapters.loading import load_model
from oneword.core.generate import Sampling, Words, draw, to_pil
from oneword.core.prompts import placeholder_names
from oneword.core.recipes import RECIPES, recipe_defaults, vocabulary_radius
from oneword.core.train import TrainConfig, train
from oneword.experiments import auto_masks as automatic
from oneword.world import edits, evaluate
from oneword.world.metrics import bootstrap_interval
from oneword.world.oracle import load_oracle
from oneword.world.render import SUBJECTS_BY_ID

BENCH_SUBJECTS = "cat,dog,ball,robot,teddy"


def photos_of(model, subject_id: str, seed: int, auto_mask: bool):
    """The quality bench's photos [5, 3, 64, 64] in [0, 1], and (auto_mask) the masks
    `learn --mask auto` makes of them."""
    photos, _ = evaluate.subject_photos_and_masks(
        subject_id, 5, torch.Generator().manual_seed(seed)
    )
    if not auto_mask:
        return photos, None
    word = SUBJECTS_BY_ID[subject_id].class_word
    made = automatic.auto_masks(model, [to_pil(p) for p in photos], word, 64, seed=seed)
    return photos, torch.stack([automatic.eight_bit(m.training_weight())[None] for m in made])


def learn_in_stages(a, subject_id, recipe, photos, masks, work: Path, on_stage):
    """One run of `recipe`, stopped after each of a.stages and continued from its checkpoint;
    on_stage(model, words, token, step, learn_seconds) after each."""
    model = load_model(a.model, a.device)
    token = f"<s-{subject_id}>"
    model.add_placeholder_tokens(placeholder_names(token, 1))
    pixels = torch.cat([photos, photos.flip(-1)]) * 2 - 1
    flipped = None if masks is None else torch.cat([masks, masks.flip(-1)])
    seconds = 0.0
    for i, stage in enumerate(a.stages):
        config = TrainConfig(
            token=token,
            init_word=SUBJECTS_BY_ID[subject_id].class_word,
            steps=a.stages[-1],
            stop_at=stage,
            seed=a.learn_seed,
            lr=a.lr,
            batch_size=4,
            grad_accum=1,
            checkpoint_every=a.stages[-1],
            mask_floor=None if masks is None else a.mask_floor,
            recipe=recipe_of(recipe),
        )
        start = time.time()
        state = train(model, pixels, config, work / recipe, resume=i > 0, masks=flipped)
        seconds += time.time() - start
        on_stage(model, Words({token: 1}, state.rows()[0:1]), token, stage, seconds)


def recipe_of(spec: str):
    """'directional' or 'directional:prior=0.1,...': a recipe's defaults, some replaced."""
    name, _, settings = spec.partition(":")
    pairs = [kv.split("=") for kv in settings.split(",") if kv]
    return replace(recipe_defaults(name), **{k: float(v) for k, v in pairs})


def bench_images(model, oracle, a, subject_id, phrase, words, photos) -> dict:
    """The quality bench's 96 images of one phrase: concept and prompt hits."""
    texts = [t.format(phrase) for t in evaluate.NOVEL_PROMPTS[: a.prompts]]
    seeds = list(range(a.image_seed, a.image_seed + a.seeds))
    batch = [p for p in texts for _ in seeds]
    images = draw(model, batch, [s for _ in texts for s in seeds], words, a.sampling)
    scores = evaluate.score_images(oracle, images, batch, subject_id, photos)
    return {"concept": scores.concept_hits, "prompt": scores.prompt_hits}


def edit_images(model, oracle, a, subject_id, noun, words) -> dict:
    """The edit test's images of one noun ("<s-cat>" or "cat"): obeyed, kept, both."""
    chosen = edits.edit_set(subject_id, a.image_seed)
    if a.quick:
        chosen = chosen[::4]
    prompts, seeds = edits.prompts_for(chosen, noun), [e.seed for e in chosen]
    images = draw(model, prompts, seeds, words, a.sampling)
    out = {}
    for what, hits in edits.judge(oracle, images, chosen).items():
        for kind, values in edits.by_kind(chosen, hits).items():
            out[f"edit_{what}_{kind}"] = values
    return out


def run_subject(a, oracle, subject_id, work: Path) -> dict:
    """Every recipe's stages, and the class word's row, for one subject."""
    probe = load_model(a.model, a.device)
    photos, masks = photos_of(probe, subject_id, a.learn_seed, a.auto_mask)
    class_word = SUBJECTS_BY_ID[subject_id].class_word
    row = {}
    if a.class_row:
        row["class"] = bench_images(probe, oracle, a, subject_id, f"a {class_word}", None, photos)
        row["class"].update(edit_images(probe, oracle, a, subject_id, class_word, None))
    radius = vocabulary_radius(probe.vocabulary_table, probe.embedding_layout)[0]
    for recipe in a.recipes:
        stages = row[recipe] = {}

        def on_stage(model, words, token, step, seconds, stages=stages):
            figures = bench_images(model, oracle, a, subject_id, token, words, photos)
            if step == a.stages[-1]:
                figures.update(edit_images(model, oracle, a, subject_id, token, words))
            norm = float(words.rows.norm(dim=-1).max())
            stages[step] = {**figures, "norm": norm, "learn_s": seconds}
            f = {k: _mean(v) for k, v in figures.items()}
            line = f"{subject_id:6s} {recipe:12s} step {step:4d}  concept {f['concept']:.2f}"
            line += f"  prompt {f['prompt']:.2f}  norm {norm:.2f} ({norm / radius:.1f}x)"
            if "edit_both_all" in f:
                line += f"  edits obeyed {f['edit_obeyed_all']:.2f} kept {f['edit_kept_all']:.2f}"
                line += f" both {f['edit_both_all']:.2f}"
            print(f"{line}  learn {seconds:.0f}s", flush=True)

        learn_in_stages(a, subject_id, recipe, photos, masks, work / subject_id, on_stage)
    if not a.class_row:
        return row
    c = row["class"]
    print(
        f"{subject_id:6s} {'class word':12s}            concept {_mean(c['concept']):.2f}  prompt "
        f"{_mean(c['prompt']):.2f}  edits obeyed {_mean(c['edit_obeyed_all']):.2f} kept "
        f"{_mean(c['edit_kept_all']):.2f} both {_mean(c['edit_both_all']):.2f}",
        flush=True,
    )
    return row


def _mean(hits: torch.Tensor) -> float:
    return float(hits.float().mean())


def summarize(table: dict, a) -> dict:
    """Per recipe and stage (and the class word): the median over subjects and the pooled
    mean of every figure, each share with its 95% bootstrap interval."""
    out = {}
    first = next(iter(table.values()))
    rows = {"class": [table[s]["class"] for s in table]} if "class" in first else {}
    for recipe in a.recipes:
        for step in a.stages:
            rows[f"{recipe}@{step}"] = [table[s][recipe][step] for s in table]
    for name, per_subject in rows.items():
        figures = {}
        for key, first in per_subject[0].items():
            values = [r[key] for r in per_subject]
            if isinstance(first, torch.Tensor):
                figures[key] = _share(values)
            else:
                figures[key] = {"median": statistics.median(values), "each": values}
        out[name] = figures
    reference = f"{a.recipes[0]}@{a.stages[-1]}"
    if reference in rows:
        for name, per_subject in rows.items():
            for key, share in out[name].items():
                if "pooled" in share and key in out[reference]:
                    share["minus_reference"] = _paired(per_subject, rows[reference], key)
    return out


def _paired(rows: list[dict], reference: list[dict], key: str) -> dict:
    """The pooled share minus the reference row's, image by image (the same prompt and image
    seed on both sides), with its 95% bootstrap interval."""
    diff = torch.cat([r[key].float() - q[key].float() for r, q in zip(rows, reference)])
    gen = torch.Generator().manual_seed(0)
    return {"mean": _mean(diff), "ci95": bootstrap_interval([diff], gen, statistic="mean")}


def _share(hits: list[torch.Tensor]) -> dict:
    gen = torch.Generator().manual_seed(0)
    pooled = torch.cat([h.float() for h in hits])
    return {
        "median": statistics.median(_mean(h) for h in hits),
        "median_ci95": interval(hits),
        "pooled": _mean(pooled),
        "pooled_ci95": _pooled_interval(pooled, gen),
        "each": [_mean(h) for h in hits],
        "images": int(pooled.numel()),
    }


def _pooled_interval(pooled: torch.Tensor, gen: torch.Generator) -> tuple[float, float]:
    return bootstrap_interval([pooled], gen)


def print_summary(summary: dict) -> None:
    keys = ("concept", "prompt", "edit_obeyed_all", "edit_kept_all", "edit_both_all")
    print(f"\n{'row':22s}" + "".join(f"{k:>24s}" for k in keys) + f"{'norm':>8s}{'learn s':>9s}")
    for name, f in summary.items():
        cells = ""
        for k in keys:
            if k in f:
                lo, hi = f[k]["pooled_ci95"]
                cells += f"{f[k]['pooled']:>8.2f} [{lo:.2f}, {hi:.2f}]  "
            else:
                cells += f"{'':>24s}"
        norm = f"{f['norm']['median']:8.2f}" if "norm" in f else f"{'':8s}"
        learn = f"{f['learn_s']['median']:9.0f}" if "learn_s" in f else ""
        print(f"{name:22s}{cells}{norm}{learn}")
    print("(pooled over subjects; 95% bootstrap intervals over images)")
    _print_differences(summary)


def _print_differences(summary: dict) -> None:
    keys = ("concept", "prompt", "edit_obeyed_all", "edit_kept_all", "edit_both_all")
    named = [(n, f) for n, f in summary.items() if "minus_reference" in f["concept"]]
    if not named:
        return
    print(f"\n{'minus the first recipe':22s}" + "".join(f"{k:>26s}" for k in keys))
    for name, f in named:
        cells = ""
        for k in keys:
            if k in f and "minus_reference" in f[k]:
                d = f[k]["minus_reference"]
                cells += f"{d['mean']:>+8.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]  "
            else:
                cells += f"{'':>26s}"
        print(f"{name:22s}{cells}")
    print("(at the last stage, image by image on the same prompts and image seeds)")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="world")
    p.add_argument("--subjects", default=BENCH_SUBJECTS)
    p.add_argument("--recipes", default=";".join(RECIPES), help="name[:setting=value,...];...")
    p.add_argument("--stages", default="50,100,150,200,300", help="steps to look at")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--learn-seed", type=int, default=0)
    p.add_argument("--auto-mask", action="store_true", help="learn with `--mask auto`'s masks")
    p.add_argument("--mask-floor", type=float, default=0.1)
    p.add_argument("--prompts", type=int, default=len(evaluate.NOVEL_PROMPTS))
    p.add_argument("--seeds", type=int, default=8, help="image seeds per prompt")
    p.add_argument("--image-seed", type=int, default=0)
    p.add_argument("--no-class", dest="class_row", action="store_false", help="no class-word row")
    p.add_argument("--quick", action="store_true", help="a quarter of the edit test's images")
    p.add_argument("--device")
    p.add_argument("--json", help="write the summary (and the per-image table) here")
    p.add_argument("--merge", nargs="+", help="summarize these earlier --json files together")
    a = p.parse_args(argv)
    a.recipes = [r for r in a.recipes.split(";") if r]
    a.stages = sorted(int(s) for s in a.stages.split(","))
    a.sampling = Sampling(20, 5.0, "ddim", 64)
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if a.merge:
        table = merged(a.merge)
    else:
        # Subjects already in --json are kept, so a stopped run goes on where it stopped.
        table = merged([a.json]) if a.json and Path(a.json).exists() else {}
        oracle = load_oracle("cpu" if a.device is None else a.device)
        with tempfile.TemporaryDirectory() as work:
            for subject_id in a.subjects.split(","):
                if subject_id not in table:
                    table[subject_id] = run_subject(a, oracle, subject_id, Path(work))
                    write_record(a, table, summarize(table, a))
    summary = summarize(table, a)
    print_summary(summary)
    if a.json:
        write_record(a, table, summary)
    return 0


def write_record(a, table: dict, summary: dict) -> None:
    if not a.json:
        return
    settings = {k: v for k, v in vars(a).items() if k not in ("sampling", "json")}
    record = {"settings": settings, "rows": summary, "table": _plain(table)}
    partial = Path(a.json).with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=1))
    partial.replace(a.json)


def _plain(value):
    """The table as JSON: hit tensors as lists, stage keys as strings."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def merged(paths: list[str]) -> dict:
    """The per-subject tables of several earlier runs' JSON files (subjects split among
    processes), with their hits as tensors again."""

    def back(value, depth=0):
        if isinstance(value, list):
            return torch.tensor(value)
        if isinstance(value, dict):
            return {(int(k) if k.isdigit() else k): back(v) for k, v in value.items()}
        return value

    table = {}
    for path in paths:
        table.update(back(json.loads(Path(path).read_text())["table"]))
    return table


if __name__ == "__main__":
    sys.exit(main())
