"""Quality bench on the world model: does a learned word draw the right subject in new contexts?

For each hidden subject: render 5 training photos in varied scenes, learn its word, then draw
novel-context prompts (`oneword.world.evaluate.NOVEL_PROMPTS`) x seeds with
  learned      the learned word,
  class        the class word alone (the floor: "a cat" is any of a family of objects),
  description  the subject's attributes in words (what a user could write without oneword),
  name         the subject's own name, which the world model was taught (the ceiling: what
               the model draws of the subject at best; only on models that know the names),
and score every image with the oracle: concept fidelity (share of images it calls the subject)
and prompt fidelity (share showing the prompted scene and style). Every figure comes with a
95% percentile-bootstrap interval over images (the median row: images resampled within every
subject, then the median taken).

    python bench/quality.py                       # 8 subjects, 12 prompts x 8 seeds
    python bench/quality.py --subjects cat,dog --prompts 4 --seeds 2 --steps 100
    python bench/quality.py --vectors 4 --kinds learned   # one recipe variant, learned rows only
    python bench/quality.py --per-layer --kinds learned   # per-layer (P+) words
    python bench/quality.py --candidates 16 --image-seed 1000   # oneword's sweep + pick
    python bench/quality.py --companion --kinds learned           # photos with a companion
    python bench/quality.py --companion --mask --kinds learned    # ... learned with masks

--companion: the photos show the subject beside its companion (`evaluate.companion_photos`, a
small green triangle: the mascot's dish); every row then also reports the companion's share,
the images where the oracle reads the companion's shape and colour. --mask learns with the
subject's masks (`learn --mask`, floor --mask-floor), with or without --companion;
--auto-mask learns with the masks the model makes itself (`learn --mask auto`), never reading
the world's masks.

With --candidates K the learned word is what `oneword sweep` ranks first: K seeds trained in one
sweep, each drawn on 24 selection images (image seeds 0..23) and ranked by the label-free score
(concept similarity to the photos + prompt fidelity; no oracle labels); the pick is then scored
on the bench's images, whose seeds start at --image-seed (give one past the selection seeds).

Words are learned for `oneword learn`'s default steps for the model (300 on the world model:
its folder's oneword.json says so) with batch 4 and lr 5e-3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from oneword import api
from oneword.adapters.loading import load_model
from oneword.core.flat_stop import FlatStop
from oneword.core.generate import Sampling, Words, draw, to_pil
from oneword.core.prompts import placeholder_names
from oneword.core.train import TrainConfig, train
from oneword.experiments import auto_masks as automatic
from oneword.world import evaluate
from oneword.world.metrics import bootstrap_interval
from oneword.world.oracle import load_oracle
from oneword.world.render import SUBJECT_IDS, SUBJECTS_BY_ID

KINDS = ("learned", "class", "description", "name")


def learn_subject(
    model,
    subject_id: str,
    steps: int,
    seed: int,
    work: Path,
    lr: float,
    vectors: int = 1,
    lr_schedule: str = "constant",
    per_layer: bool = False,
    stop_when_flat: bool = False,
    companion: bool = False,
    mask_floor: float | None = None,
    auto_mask: bool = False,
):
    """Learn `<s-ID>` from 5 rendered photos (beside the companion, if asked; with the
    subject's masks, if a floor is given, or with the masks `learn --mask auto` makes from the
    photos); returns (Words, photos, token, steps taken)."""
    subject = SUBJECTS_BY_ID[subject_id]
    token = f"<s-{subject_id}>"
    generator = torch.Generator().manual_seed(seed)
    if companion:
        photos, masks = evaluate.companion_photos(subject_id, 5, generator)
    else:
        photos, masks = evaluate.subject_photos_and_masks(subject_id, 5, generator)
    if auto_mask:  # the world's masks are left unread: the model makes its own
        images = [to_pil(p) for p in photos]  # at the world's 64 px, as learn sees them
        made = automatic.auto_masks(model, images, subject.class_word, 64, seed=seed)
        masks = torch.stack([automatic.eight_bit(m.training_weight())[None] for m in made])
    pixels = torch.cat([photos, photos.flip(-1)]) * 2 - 1  # the trainer's flip variants
    if mask_floor is not None:
        masks = torch.cat([masks, masks.flip(-1)])
    model.add_placeholder_tokens(placeholder_names(token, vectors))
    config = TrainConfig(
        token=token,
        init_word=subject.class_word,
        vectors=vectors,
        per_layer=per_layer,
        stop_when_flat=FlatStop() if stop_when_flat else None,
        steps=steps,
        seed=seed,
        lr=lr,
        lr_schedule=lr_schedule,
        batch_size=4,
        grad_accum=1,
        checkpoint_every=steps,
        mask_floor=mask_floor,
    )
    masks = masks if mask_floor is not None else None
    state = train(model, pixels, config, work / subject_id, masks=masks)
    return Words({token: vectors}, state.rows()[0:1]), photos, token, state.step


def learn_by_sweep(a, subject_id: str, steps: int, work: Path):
    """The word `oneword sweep` ranks first among a.candidates seeds, registered in a fresh
    model; returns (model, Words, photos, token, steps)."""
    from sweep_world import label_free_pick, subject_photo_folder, world_score_settings

    from oneword.adapters.loading import ModelChoice
    from oneword.core.embeddings import load_embeddings
    from oneword.core.generate import register_words
    from oneword.experiments.scoring import score
    from oneword.experiments.sweep import CandidatePlan, first_file, sweep

    token = f"<s-{subject_id}>"
    folder = subject_photo_folder(subject_id, work / "photos" / subject_id, a.learn_seed)
    photos = evaluate.subject_photos(subject_id, 5, torch.Generator().manual_seed(a.learn_seed))
    config = TrainConfig(
        token=token,
        init_word=SUBJECTS_BY_ID[subject_id].class_word,
        steps=steps,
        lr=a.lr,
        lr_schedule=a.lr_schedule,
        batch_size=4,
        grad_accum=1,
        checkpoint_every=steps,
        candidates=CandidatePlan(count=a.candidates, seed=a.learn_seed).candidates(),
    )
    result = sweep([str(folder)], config, ModelChoice(a.model, a.device), work / "store")
    settings = world_score_settings(a, 24, 0, subject_id)
    pick = label_free_pick(score(f"r{result.run_id}", settings, work / "store")).index
    model = load_model(a.model, a.device)
    words = register_words(model, load_embeddings(first_file(result.files[pick])))
    return model, words, photos, token, steps


def knows_names(model) -> bool:
    """Whether the model's tokenizer has every subject's name as one token (models trained
    with `--name-share`); on others the name row would measure nothing."""
    return all(
        len(model.tokenizer(s.name, add_special_tokens=False).input_ids) == 1
        for s in SUBJECTS_BY_ID.values()
    )


def score_subject(model, oracle, subject_id, words, token, photos, prompts, seeds, sampling, kinds):
    results = {}
    for kind in kinds:
        texts = [t.format(evaluate.subject_phrase(subject_id, kind, token)) for t in prompts]
        batch = [p for p in texts for _ in seeds]
        images = draw(model, batch, [s for _ in texts for s in seeds], words, sampling)
        results[kind] = evaluate.score_images(oracle, images, batch, subject_id, photos)
    return results


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="world")
    p.add_argument("--subjects", default=",".join(SUBJECT_IDS))
    p.add_argument("--kinds", default=",".join(KINDS), help=f"rows among {', '.join(KINDS)}")
    p.add_argument("--prompts", type=int, default=len(evaluate.NOVEL_PROMPTS))
    p.add_argument("--seeds", type=int, default=8, help="image seeds per prompt")
    p.add_argument("--steps", type=int, help="default: the model's (`oneword learn`'s default)")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--lr-schedule", default="constant")
    p.add_argument("--vectors", type=int, default=1)
    p.add_argument("--per-layer", action="store_true", help="P+ words (`learn --per-layer`)")
    p.add_argument(
        "--stop-when-flat", action="store_true", help="`learn --stop-when-flat` (its defaults)"
    )
    p.add_argument("--learn-seed", type=int, default=0, help="seed of the photos and the learning")
    p.add_argument("--companion", action="store_true", help="photos beside a companion")
    p.add_argument("--mask", action="store_true", help="learn with the subject's masks")
    p.add_argument("--auto-mask", action="store_true", help="learn with `--mask auto`'s masks")
    p.add_argument("--mask-floor", type=float, default=0.1)
    p.add_argument("--candidates", type=int, help="learn K seeds in a sweep, score its pick")
    p.add_argument("--image-seed", type=int, default=0, help="first image seed of the bench")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--device")
    p.add_argument("--json", help="write the table here too")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    probe = load_model(a.model, a.device)
    oracle = load_oracle(str(probe.device))
    prompts = evaluate.NOVEL_PROMPTS[: a.prompts]
    seeds = list(range(a.image_seed, a.image_seed + a.seeds))
    sampling = Sampling(a.sample_steps, a.cfg, "ddim", 64)
    kinds = [k for k in a.kinds.split(",") if k]
    if "name" in kinds and not knows_names(probe):
        print(f"{a.model} was not taught the subjects' names: no name (ceiling) row")
        kinds.remove("name")
    table, figures = {}, {}
    steps = api.default_steps(a.model) if a.steps is None else a.steps
    with tempfile.TemporaryDirectory() as work:
        for subject_id in a.subjects.split(","):
            start = time.time()
            if a.candidates:
                model, words, photos, token, taken = learn_by_sweep(
                    a, subject_id, steps, Path(work) / subject_id
                )
            else:
                model = load_model(a.model, a.device)  # fresh: one placeholder token per model
                words, photos, token, taken = learn_subject(
                    model,
                    subject_id,
                    steps,
                    a.learn_seed,
                    Path(work),
                    a.lr,
                    a.vectors,
                    a.lr_schedule,
                    a.per_layer,
                    a.stop_when_flat,
                    a.companion,
                    a.mask_floor if a.mask or a.auto_mask else None,
                    a.auto_mask,
                )
            learned_s = time.time() - start
            table[subject_id] = score_subject(
                model, oracle, subject_id, words, token, photos, prompts, seeds, sampling, kinds
            )
            figures[subject_id] = {**subject_figures(table[subject_id]), "steps": taken}
            print_row(subject_id, figures[subject_id], kinds, learned_s, time.time() - start)
    summary = print_summary(table, kinds)
    if a.json:
        Path(a.json).write_text(json.dumps(report(figures, summary, a, steps), indent=2))
    return 0


def interval(hits: list[torch.Tensor]) -> tuple[float, float]:
    return bootstrap_interval(hits, torch.Generator().manual_seed(0))


def cell(value: float, ci: tuple[float, float]) -> str:
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def subject_figures(row) -> dict:
    """One subject's figures per kind of phrase, each share with its interval."""
    return {
        k: {
            "concept_fidelity": v.concept_fidelity,
            "prompt_fidelity": v.prompt_fidelity,
            "concept_similarity": v.concept_similarity,
            "concept_ci95": interval([v.concept_hits]),
            "companion_share": v.companion_hits.mean().item(),
            "companion_ci95": interval([v.companion_hits]),
            "prompt_ci95": interval([v.prompt_hits]),
            "images": v.concept_hits.numel(),
        }
        for k, v in row.items()
    }


def print_row(subject_id, figures, kinds, learn_s, total_s):
    if not hasattr(print_row, "header"):
        print_row.header = True
        print(
            f"{'subject':9s}"
            + "".join(
                f"{k + ' concept':>22s}{k + ' prompt':>22s}{k + ' companion':>22s}" for k in kinds
            )
            + f"{'steps':>7s}{'learn s':>9s}{'total s':>9s}"
        )
    cells = "".join(
        f"{cell(figures[k]['concept_fidelity'], figures[k]['concept_ci95']):>22s}"
        f"{cell(figures[k]['prompt_fidelity'], figures[k]['prompt_ci95']):>22s}"
        f"{cell(figures[k]['companion_share'], figures[k]['companion_ci95']):>22s}"
        for k in kinds
    )
    steps = figures["steps"]
    print(f"{subject_id:9s}{cells}{steps:7d}{learn_s:9.0f}{total_s:9.0f}", flush=True)


def print_summary(table, kinds) -> dict:
    summary, cells = {}, ""
    for k in kinds:
        out = summary[k] = {}
        for metric in ("concept", "prompt", "companion"):
            hits = [getattr(r[k], f"{metric}_hits") for r in table.values()]
            median = statistics.median(h.mean().item() for h in hits)
            out[metric] = {"median": median, "ci95": interval(hits)}
            cells += f"{cell(median, out[metric]['ci95']):>22s}"
        out["similarity"] = statistics.median(r[k].concept_similarity for r in table.values())
    images = next(iter(table.values()))[kinds[0]].concept_hits.numel()
    print(f"{'median':9s}{cells}")
    print(
        f"({len(table)} subjects x {images} images per row and subject; 95% bootstrap "
        "intervals over images)"
    )
    return summary


def report(figures, summary, a, steps) -> dict:
    settings = {
        "model": a.model,
        "prompts": a.prompts,
        "seeds": a.seeds,
        "steps": steps,
        "lr": a.lr,
        "lr_schedule": a.lr_schedule,
        "vectors": a.vectors,
        "per_layer": a.per_layer,
        "stop_when_flat": a.stop_when_flat,
        "learn_seed": a.learn_seed,
        "companion": a.companion,
        "mask_floor": a.mask_floor if a.mask or a.auto_mask else None,
        "auto_mask": a.auto_mask,
        "candidates": a.candidates,
        "image_seed": a.image_seed,
        "sample_steps": a.sample_steps,
        "cfg": a.cfg,
    }
    return {"settings": settings, "subjects": figures, "median": summary}


if __name__ == "__main__":
    sys.exit(main())
