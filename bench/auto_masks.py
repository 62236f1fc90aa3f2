"""Automatic masks (`--mask auto`) against the world's true masks, and what they cost.

    python bench/auto_masks.py iou        # choose the cut on dev render seeds, report on others
    python bench/auto_masks.py cost       # seconds per photo: world 64 px; SD 1.5 shapes 512 px
    python bench/auto_masks.py verdict    # photos with and without the subject: which are used

iou: for the bench's five subjects, 5 photos per render seed, clean photos and photos beside the
companion (`evaluate.companion_photos`). The recipe's choices are measured on the dev seeds
(IoU of each variant), the cut level is chosen there, and the chosen recipe is reported on the
test seeds: median IoU with a 95% bootstrap interval (photos resampled), and for companion
photos the share of the companion's pixels the mask takes in.

cost: the world model at 64 px, and Stable Diffusion 1.5's architecture with random weights at
512 px (it computes like the real model; its masks mean nothing): seconds per photo, and the
process's peak memory growth while making one mask.

verdict: on the test seeds, how many photos with their subject (clean and beside the companion)
are wrongly found empty, and how many photos without it (the subject painted over with the
scene beside it, row by row) are rightly found empty, so they train unmasked.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from oneword.adapters.loading import load_model
from oneword.core import masking
from oneword.core.generate import to_pil
from oneword.experiments import auto_masks
from oneword.world import evaluate
from oneword.world.render import SUBJECTS_BY_ID

SUBJECTS = ("cat", "dog", "ball", "robot", "teddy")
LEVELS = (0.4, 0.5, 0.6, 0.7, 0.8)


def world_photos(seeds: list[int], companion: bool) -> list[tuple]:
    """(subject, photo as PIL, true mask [64, 64], companion cover or None) of every photo."""
    out = []
    for subject in SUBJECTS:
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            if companion:
                photos, masks, fronts = evaluate.companion_photos_and_cover(subject, 5, gen)
            else:
                photos, masks = evaluate.subject_photos_and_masks(subject, 5, gen)
                fronts = [None] * len(photos)
            out += [(subject, to_pil(p), m[0], f) for p, m, f in zip(photos, masks, fronts)]
    return out


def heats(model, photos, recipe: masking.MaskRecipe) -> list[torch.Tensor]:
    return [
        auto_masks.photo_heat(
            model, image, SUBJECTS_BY_ID[s].class_word, 64, recipe, torch.Generator().manual_seed(i)
        )
        for i, (s, image, _, _) in enumerate(photos)
    ]


def scores(photos, heat_maps, recipe: masking.MaskRecipe) -> dict[str, list[float]]:
    """Per photo: IoU with the true mask (both cut at 0.5), share of the companion inside."""
    iou, inside, unused = [], [], 0
    for (_, _, true, front), heat in zip(photos, heat_maps):
        mask, share = masking.heat_to_mask(masking.normalise(heat[None]), recipe)
        if masking.found_subject(float(share[0]), float(masking.contrast(heat[None])), recipe):
            unused += 1
        full = F.interpolate(mask[None], size=true.shape, mode="bilinear")[0, 0] > 0.5
        truth = true > 0.5
        iou.append(float((full & truth).sum() / (full | truth).sum().clamp_min(1)))
        if front is not None:
            companion = front[0] > 0.5
            inside.append(float((full & companion).sum() / companion.sum().clamp_min(1)))
    return {"iou": iou, "companion_inside": inside, "unused": unused}


def median_interval(values: list[float], seed: int = 0) -> tuple[float, float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    idx = torch.randint(len(t), (2000, len(t)), generator=torch.Generator().manual_seed(seed))
    meds = t[idx].quantile(0.5, dim=1)
    low, high = meds.quantile(torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(t.median()), float(low), float(high)


def variants(base: masking.MaskRecipe) -> dict[str, masking.MaskRecipe]:
    """The choices measured (each one change from the chosen recipe)."""
    return {
        "chosen": base,
        "no self-attention refinement": replace(base, refine=0),
        "two refinement passes": replace(base, refine=2),
        "t = 50": replace(base, timestep=50),
        "t = 400": replace(base, timestep=400),
        "1 noise draw": replace(base, draws=1),
        "Otsu's level": replace(base, threshold="otsu"),
        "grown by 1 cell": replace(base, grow=1),
        "no feathering": replace(base, feather=0.0),
    }


def run_iou(dev: list[int], test: list[int], out: Path) -> dict:
    model = load_model("world")
    base = masking.MaskRecipe()
    dev_clean = world_photos(dev, companion=False)
    heat = heats(model, dev_clean, base)
    by_level = {
        level: statistics.median(scores(dev_clean, heat, replace(base, level=level))["iou"])
        for level in LEVELS
    }
    chosen = replace(base, level=max(by_level, key=by_level.get))
    print(f"dev seeds {dev}: median IoU by level {by_level}; chosen {chosen.level}", flush=True)
    report = {"dev_seeds": dev, "test_seeds": test, "levels_on_dev": by_level,
              "recipe": asdict(chosen), "variants_on_dev": {}, "test": {}}  # fmt: skip
    dev_companion = world_photos(dev, companion=True)
    for name, recipe in variants(chosen).items():
        row = {}
        for kind, photos in (("clean", dev_clean), ("companion", dev_companion)):
            s = scores(photos, heats(model, photos, recipe), recipe)
            row[kind] = statistics.median(s["iou"])
        report["variants_on_dev"][name] = row
        print(f"dev  {name:30s} clean {row['clean']:.3f}  companion {row['companion']:.3f}")
    for kind in ("clean", "companion"):
        photos = world_photos(test, companion=kind == "companion")
        s = scores(photos, heats(model, photos, chosen), chosen)
        med = median_interval(s["iou"])
        per_subject = {
            sub: statistics.median([v for (x, *_), v in zip(photos, s["iou"]) if x == sub])
            for sub in SUBJECTS
        }
        row = {"photos": len(photos), "median_iou": med, "unused": s["unused"],
               "per_subject": per_subject}  # fmt: skip
        if s["companion_inside"]:
            row["companion_inside_median"] = median_interval(s["companion_inside"])
            row["companion_inside_mean"] = statistics.mean(s["companion_inside"])
        report["test"][kind] = row
        print(f"test {kind}: {json.dumps(row)}", flush=True)
    out.write_text(json.dumps(report, indent=1))
    return report


def without_subject(photo: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The photo [3, H, W] with the subject painted over: each of its pixels takes the
    nearest pixel of the same row outside the mask."""
    out, outside = photo.clone(), mask < 0.05
    for y in range(photo.shape[1]):
        xs = outside[y].nonzero().flatten()
        if len(xs):
            nearest = xs[(xs[None] - torch.arange(photo.shape[2])[:, None]).abs().argmin(1)]
            out[:, y] = photo[:, y, nearest]
    return out


def run_verdict(test: list[int], out: Path) -> dict:
    model = load_model("world")
    recipe = masking.MaskRecipe()
    report = {}
    for kind in ("clean", "companion"):
        photos = world_photos(test, companion=kind == "companion")
        made = [auto_masks.auto_masks(model, [p], SUBJECTS_BY_ID[s].class_word, 64, recipe, i)[0]
                for i, (s, p, _, _) in enumerate(photos)]  # fmt: skip
        report[f"{kind}: with subject, found empty"] = [sum(m.verdict is not None for m in made),
                                                        len(made)]  # fmt: skip
    empty = []
    for subject in SUBJECTS:
        for seed in test:
            gen = torch.Generator().manual_seed(seed)
            photos, masks = evaluate.subject_photos_and_masks(subject, 5, gen)
            for i, (p, m) in enumerate(zip(photos, masks)):
                image = to_pil(without_subject(p, m[0]))
                word = SUBJECTS_BY_ID[subject].class_word
                empty.append(auto_masks.auto_masks(model, [image], word, 64, recipe, i)[0])
    report["without subject, found empty"] = [sum(m.verdict is not None for m in empty), len(empty)]
    print(json.dumps(report), flush=True)
    out.write_text(json.dumps(report, indent=1))
    return report


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cost(out: Path) -> dict:
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).parent))
    from full_size import build_sd15_components

    from oneword.adapters.pipelines import wrap_pipeline
    from oneword.adapters.tiny import sd_pipeline

    report = {"threads": torch.get_num_threads()}
    world = load_model("world")
    photos = [p for _, p, _, _ in world_photos([0], companion=False)][:5]
    auto_masks.auto_masks(world, photos[:1], "cat", 64)  # warm up
    start = time.perf_counter()
    auto_masks.auto_masks(world, photos, "cat", 64)
    report["world_64px_s_per_photo"] = (time.perf_counter() - start) / len(photos)
    print(f"world, 64 px: {report['world_64px_s_per_photo']:.3f} s a photo", flush=True)
    pipe = sd_pipeline(build_sd15_components(seed=0))
    sd = wrap_pipeline(pipe, "sd15-shapes", torch.device("cpu"), torch.float32)
    photo = Image.new("RGB", (512, 512), (120, 90, 60))
    before = peak_rss_mib()
    times = []
    for i in range(3):
        start = time.perf_counter()
        auto_masks.auto_masks(sd, [photo], "cat", 512, seed=i)
        times.append(time.perf_counter() - start)
    report["sd15_512px_s_per_photo"] = times
    report["sd15_peak_rss_growth_mib"] = peak_rss_mib() - before
    report["sd15_peak_rss_mib"] = peak_rss_mib()
    print(f"SD 1.5 shapes, 512 px: {times} s a photo; peak RSS {peak_rss_mib():.0f} MiB "
          f"(+{report['sd15_peak_rss_growth_mib']:.0f} while masking)", flush=True)  # fmt: skip
    out.write_text(json.dumps(report, indent=1))
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("iou", "cost", "verdict"))
    p.add_argument("--dev-seeds", default="0")
    p.add_argument("--test-seeds", default="1,2")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    results = Path(__file__).parent / "results"
    if a.what == "iou":
        seeds = [[int(s) for s in x.split(",")] for x in (a.dev_seeds, a.test_seeds)]
        run_iou(*seeds, a.out or results / "auto_masks_iou.json")
    elif a.what == "verdict":
        test = [int(s) for s in a.test_seeds.split(",")]
        run_verdict(test, a.out or results / "auto_masks_verdict.json")
    else:
        run_cost(a.out or results / "auto_masks_cost.json")


if __name__ == "__main__":
    main()
