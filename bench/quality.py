"""Quality bench on the world model: does a learned word draw the right subject in new contexts?

For each hidden subject: render 5 training photos in varied scenes, learn its word, then draw
novel-context prompts (`oneword.world.evaluate.NOVEL_PROMPTS`) x seeds with the learned word, the
class word alone (lower baseline) and the subject's true attribute description (reference),
and score every image with the oracle.

    python bench/quality.py                       # 8 subjects, 12 prompts x 4 seeds
    python bench/quality.py --subjects cat,dog --prompts 4 --seeds 2 --steps 100

Words are learned for `oneword learn`'s default steps for the model (300 on the world model:
its folder's oneword.json says so; see `oneword.world.model.LEARN_STEPS` for why not SD's 3000).
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
from oneword.core.generate import Sampling, Words, draw
from oneword.adapters.loading import load_model
from oneword.core.train import TrainConfig, train
from oneword.world import evaluate
from oneword.world.oracle import load_oracle
from oneword.world.render import SUBJECT_IDS, SUBJECTS_BY_ID

KINDS = ("learned", "class", "description")


def learn_subject(model, subject_id: str, steps: int, seed: int, work: Path, lr: float):
    """Learn `<s-ID>` from 5 rendered photos; returns (Words, photos)."""
    subject = SUBJECTS_BY_ID[subject_id]
    token = f"<s-{subject_id}>"
    photos = evaluate.subject_photos(subject_id, 5, torch.Generator().manual_seed(seed))
    pixels = torch.cat([photos, photos.flip(-1)]) * 2 - 1  # the trainer's flip variants
    model.add_placeholder_tokens([token])
    config = TrainConfig(token=token, init_word=subject.class_word, steps=steps, seed=seed,
                         lr=lr, batch_size=4, grad_accum=1, checkpoint_every=steps)
    state = train(model, pixels, config, work / subject_id)
    return Words({token: 1}, state.rows()[0:1]), photos, token


def score_subject(model, oracle, subject_id, words, token, photos, prompts, seeds, sampling):
    results = {}
    for kind in KINDS:
        texts = [t.format(evaluate.subject_phrase(subject_id, kind, token)) for t in prompts]
        batch = [p for p in texts for _ in seeds]
        images = draw(model, batch, [s for _ in texts for s in seeds], words, sampling)
        results[kind] = evaluate.score_images(oracle, images, batch, subject_id, photos)
    return results


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="world")
    p.add_argument("--subjects", default=",".join(SUBJECT_IDS))
    p.add_argument("--prompts", type=int, default=len(evaluate.NOVEL_PROMPTS))
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, help="default: the model's (`oneword learn`'s default)")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--device")
    p.add_argument("--json", help="write the table here too")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    oracle = load_oracle(str(load_model(a.model, a.device).device))
    prompts = evaluate.NOVEL_PROMPTS[:a.prompts]
    seeds = list(range(a.seeds))
    sampling = Sampling(a.sample_steps, a.cfg, "ddim", 64)
    table = {}
    steps = api.default_steps(a.model) if a.steps is None else a.steps
    with tempfile.TemporaryDirectory() as work:
        for subject_id in a.subjects.split(","):
            start = time.time()
            model = load_model(a.model, a.device)  # fresh: one placeholder token per model
            words, photos, token = learn_subject(model, subject_id, steps, 0, Path(work), a.lr)
            learned_s = time.time() - start
            table[subject_id] = score_subject(model, oracle, subject_id, words, token, photos,
                                              prompts, seeds, sampling)
            print_row(subject_id, table[subject_id], learned_s, time.time() - start)
    print_summary(table)
    if a.json:
        Path(a.json).write_text(json.dumps(
            {s: {k: v.__dict__ for k, v in r.items()} for s, r in table.items()}, indent=2))
    return 0


SIMILARITY = "similarity l/c/d"  # graded concept similarity: learned / class / description


def similarities(values) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def print_row(subject_id, row, learn_s, total_s):
    if not hasattr(print_row, "header"):
        print_row.header = True
        print(f"{'subject':9s}" + "".join(f"{k + ' concept':>21s}{k + ' prompt':>20s}"
                                            for k in KINDS)
              + f"{SIMILARITY:>18s}{'learn s':>9s}{'total s':>9s}")
    cells = "".join(f"{row[k].concept_fidelity:21.2f}{row[k].prompt_fidelity:20.2f}" for k in KINDS)
    sims = similarities(row[k].concept_similarity for k in KINDS)
    print(f"{subject_id:9s}{cells}{sims:>18s}{learn_s:9.0f}{total_s:9.0f}", flush=True)


def print_summary(table):
    cells = ""
    for k in KINDS:
        concept = statistics.median(r[k].concept_fidelity for r in table.values())
        prompt = statistics.median(r[k].prompt_fidelity for r in table.values())
        cells += f"{concept:21.2f}{prompt:20.2f}"
    sims = similarities(statistics.median(r[k].concept_similarity for r in table.values())
                        for k in KINDS)
    print(f"{'median':9s}{cells}{sims:>18s}")


if __name__ == "__main__":
    sys.exit(main())
