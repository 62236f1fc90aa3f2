"""Composite subjects on the world model: when does a word of several vectors pay?

A composite is an ordinary object of the world whose identity is several attribute groups at
once: shape, colour and second colour ("a purple yellow striped heart"). No word names it and no
subject head knows it: the oracle judges an image by whether each of those three attribute heads
reads the composite's value. The pattern is reported apart: the world model draws the patterns
of ordinary objects poorly even when a prompt names them (description rows: pattern 0.12-0.25 of
24 images, against 0.88-1.00 for shape, colour and second colour), so requiring it would leave
no room to measure. For each composite: render 5 photos in varied scenes, learn
a word with each recipe of --recipes, draw the novel-context prompts x seeds, and report the
share of images showing the composite with its 95% bootstrap interval, beside two rows without
learning:
  class        the shape word alone ("a heart"): the floor,
  description  the four attributes in words: what the model draws of the composite at best.

Recipes: `1` one vector from the shape word; `N` N vectors all from the shape word; `N:words`
N vectors, vector i from its own word (`--init "heart,purple,yellow,striped"`).

    python bench/composite_world.py                       # 3 composites, recipes 1,2,4,4:words
    python bench/composite_world.py --composites purple-yellow-striped-heart --seeds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from oneword.adapters.loading import load_model
from oneword.core.generate import Sampling, Words, draw
from oneword.core.prompts import placeholder_names
from oneword.core.train import TrainConfig, train
from oneword.world import evaluate
from oneword.world.captions import PATTERN_ADJ, describe
from oneword.world.metrics import attribute_hits, bootstrap_interval
from oneword.world.oracle import load_oracle
from oneword.world.render import Spec, render_batch

ATTRIBUTES = ("shape", "color", "color2")
COMPOSITES = {
    "purple-yellow-striped-heart": Spec(
        "heart", "purple", "yellow", "stripes", "medium", "center", "grass", "photo"
    ),
    "blue-orange-dotted-star": Spec(
        "star", "blue", "orange", "dots", "medium", "center", "grass", "photo"
    ),
    "green-white-striped-triangle": Spec(
        "triangle", "green", "white", "stripes", "medium", "center", "grass", "photo"
    ),
}


def composite_photos(spec: Spec, count: int, generator: torch.Generator) -> torch.Tensor:
    """[count, 3, 64, 64] in [0, 1]: the composite in varied scenes, sizes and places."""
    specs = []
    for i in range(count):
        size = ("medium", "large")[int(torch.randint(2, (), generator=generator))]
        position = ("left", "center", "right")[int(torch.randint(3, (), generator=generator))]
        scene = evaluate.PHOTO_SCENES[i % len(evaluate.PHOTO_SCENES)]
        specs.append(replace(spec, size=size, position=position, scene=scene))
    return render_batch(specs, generator)


def composite_hits(oracle, images: torch.Tensor, spec: Spec) -> torch.Tensor:
    """[B] bool: the shape, colour and second colour heads read the composite's values."""
    hits = attribute_hits(oracle, images, {a: getattr(spec, a) for a in ATTRIBUTES})
    return torch.stack(list(hits.values())).all(0)


def recipe_init(recipe: str, spec: Spec) -> tuple[int, str]:
    """(vectors, --init) of a recipe such as `2` or `4:words`."""
    count, _, how = recipe.partition(":")
    vectors = int(count)
    if how == "words":
        words = [spec.shape, spec.color, spec.color2, PATTERN_ADJ[spec.pattern]]
        if vectors != len(words):
            raise SystemExit(f"recipe {recipe}: ':words' needs {len(words)} vectors")
        return vectors, ",".join(words)
    return vectors, spec.shape


def learn(model, spec: Spec, recipe: str, photos: torch.Tensor, a, work: Path) -> Words:
    vectors, init = recipe_init(recipe, spec)
    token = "<composite>"
    model.add_placeholder_tokens(placeholder_names(token, vectors))
    config = TrainConfig(
        token=token,
        init_word=init,
        vectors=vectors,
        steps=a.steps,
        seed=a.learn_seed,
        lr=a.lr,
        batch_size=4,
        grad_accum=1,
        checkpoint_every=a.steps,
    )
    pixels = torch.cat([photos, photos.flip(-1)]) * 2 - 1  # the trainer's flip variants
    state = train(model, pixels, config, work)
    return Words({token: vectors}, state.rows()[0:1])


def score_row(model, oracle, spec: Spec, phrase: str, words, a) -> dict:
    prompts = evaluate.NOVEL_PROMPTS[: a.prompts]
    seeds = list(range(a.image_seed, a.image_seed + a.seeds))
    texts = [t.format(phrase) for t in prompts for _ in seeds]
    sampling = Sampling(a.sample_steps, a.cfg, "ddim", 64)
    images = draw(model, texts, [s for _ in prompts for s in seeds], words, sampling)
    hits = composite_hits(oracle, images, spec).float()
    interval = bootstrap_interval([hits], torch.Generator().manual_seed(0))
    pattern = attribute_hits(oracle, images, {"pattern": spec.pattern})["pattern"].float()
    return {
        "share": hits.mean().item(),
        "ci95": interval,
        "images": hits.numel(),
        "pattern": pattern.mean().item(),
    }


def composite_rows(name: str, a, oracle, work: Path) -> dict:
    spec = COMPOSITES[name]
    photos = composite_photos(spec, 5, torch.Generator().manual_seed(a.learn_seed))
    rows = {}
    base = load_model(a.model, a.device)
    rows["class"] = score_row(base, oracle, spec, f"a {spec.shape}", None, a)
    rows["description"] = score_row(base, oracle, spec, f"a {describe(spec)}", None, a)
    for recipe in a.recipes.split(","):
        start = time.time()
        model = load_model(a.model, a.device)  # fresh: one placeholder token per model
        words = learn(model, spec, recipe, photos, a, work / f"{name}-{recipe.replace(':', '-')}")
        learn_s = time.time() - start
        rows[f"learned {recipe}"] = score_row(model, oracle, spec, "<composite>", words, a)
        rows[f"learned {recipe}"]["learn_s"] = learn_s
    return rows


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="world")
    p.add_argument("--composites", default=",".join(COMPOSITES))
    p.add_argument("--recipes", default="1,2,4,4:words", help="vectors[:words] per recipe")
    p.add_argument("--prompts", type=int, default=len(evaluate.NOVEL_PROMPTS))
    p.add_argument("--seeds", type=int, default=8, help="image seeds per prompt")
    p.add_argument("--image-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--learn-seed", type=int, default=0)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--device")
    p.add_argument("--json", help="write the table here too")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    oracle = load_oracle()
    out = {"command": " ".join(sys.argv), "composites": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.composites.split(","):
            rows = out["composites"][name] = composite_rows(name, a, oracle, Path(tmp))
            for row, r in rows.items():
                low, high = r["ci95"]
                took = f"  (learned in {r['learn_s']:.0f}s)" if "learn_s" in r else ""
                print(
                    f"{name:30s} {row:16s} {r['share']:.2f} [{low:.2f}, {high:.2f}]  "
                    f"pattern {r['pattern']:.2f}{took}"
                )
            if a.json:
                Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
