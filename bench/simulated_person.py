"""A simulated person choosing a word in the gallery's loop, on the world model (measurement,
not the product).

The person sees each candidate's images (8 a round, the gallery's drawing: the same prompts and
seeds for every generation) and stars each image: 1 + 2 · (the subject is there) + 2 · (the
prompt is followed), as the world's oracle sees it, and with probability 1/6 a wrong star
instead (uniform among the other four): human-like noise. Then the gallery's own loop runs:
rate -> breed the next generation from the ratings -> draw it like its parents
(`search.evolve.breed_from_ratings` and `draw_like_parents`, what `n` in the gallery does),
for R rounds. After every round the person's word is their best rated candidate so far (ties:
the newest); its concept fidelity on held-out images (seeds 10000.., never shown to the
person) is printed against the automatic pick of K seeds (the label-free pick on the
selection images, `search.picks`).

    python bench/simulated_person.py --subjects cat --candidates 16 --steps 300 --rounds 10
    python bench/simulated_person.py --quick     # one subject, a few steps: does it run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from search_world import HeldOut, image_settings  # noqa: E402
from sweep_world import subject_photo_folder  # noqa: E402

from oneword.adapters.loading import ModelChoice, load_model  # noqa: E402
from oneword.core.generate import Sampling  # noqa: E402
from oneword.core.train import TrainConfig  # noqa: E402
from oneword.experiments.scoring import ScoreSettings, candidate_embedding, score  # noqa: E402
from oneword.experiments.store import Store  # noqa: E402
from oneword.experiments.sweep import CandidatePlan, sweep  # noqa: E402
from oneword.experiments.verdicts import rating_of  # noqa: E402
from oneword.search.embedding_ops import Breeding  # noqa: E402
from oneword.search.evolve import breed_from_ratings, draw_like_parents, render  # noqa: E402
from oneword.search.picks import label_free_pick  # noqa: E402

STARS = (1, 2, 3, 4, 5)


class Rater:
    """Stars images as the oracle sees them, a share `error_rate` of the stars wrong."""

    def __init__(self, subject: str, token: str, error_rate: float, seed: int, device=None):
        from oneword.world.oracle import load_oracle

        self.oracle = load_oracle(device or "cpu")
        self.subject, self.token, self.error_rate = subject, token, error_rate
        self.generator = torch.Generator().manual_seed(seed)
        self.stars_given = 0

    def true_stars(self, path: Path, prompt: str) -> int:
        from oneword.world import metrics
        from oneword.world.captions import parse_prompt

        pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy())
        image = pixels.permute(2, 0, 1)[None].float() / 255
        subject = bool(metrics.subject_hits(self.oracle, image, self.subject)[0])
        requested = parse_prompt(prompt.replace(self.token, ""))
        requested.pop("subject", None)
        hits = metrics.attribute_hits(self.oracle, image, requested)
        follows = all(bool(h[0]) for h in hits.values())
        return 1 + 2 * subject + 2 * follows

    def stars(self, path: Path, prompt: str) -> int:
        true = self.true_stars(path, prompt)
        self.stars_given += 1
        if float(torch.rand((), generator=self.generator)) >= self.error_rate:
            return true
        others = [s for s in STARS if s != true]
        return others[int(torch.randint(len(others), (), generator=self.generator))]

    def rate_run(self, project: Path, run_id: int, per_candidate: int) -> dict[int, float]:
        """Star the newest drawn images of every candidate of a run, in the store as the
        gallery records them (one rating per image); the candidates' ratings."""
        out = {}
        with Store.open(project) as store:
            evaluation = store.evaluations(run_id)[-1]["id"]
            for cand in store.candidates(run_id):
                for image in store.images(cand.id, evaluation)[:per_candidate]:
                    stars = self.stars(Path(image["path"]), image["prompt"])
                    store.rate(cand.id, stars, "", image["id"])
                out[cand.id] = rating_of(store.ratings(cand.id))
        return out


@dataclass
class PersonRun:
    """What the loop did: per round, the person's word and its held-out verdict."""

    rounds: list[dict] = field(default_factory=list)
    images_shown: int = 0


def person_loop(
    project: Path,
    start_run: int,
    rater: Rater,
    held: HeldOut,
    a,
    drawing: ScoreSettings,
    breeding: Breeding,
    automatic: dict | None = None,
) -> PersonRun:
    """R rounds of rate -> breed -> draw from `start_run`; the person's word after each."""
    out, rated, measured = PersonRun(), {}, {}
    render(f"r{start_run}", drawing, project)  # the first look at the sweep's candidates
    current = start_run
    for r in range(1, a.rounds + 1):
        ratings = rater.rate_run(project, current, a.images_per_round)
        out.images_shown += len(ratings) * a.images_per_round
        for cid, value in ratings.items():
            rated[cid] = (value, r)
        best = max(rated, key=lambda c: (rated[c][0], rated[c][1], c))
        if best not in measured:
            measured[best] = held(candidate_vectors(project, best))
        row = round_row(r, best, rated[best][0], measured[best], out.images_shown, automatic)
        out.rounds.append(row)
        print_round(row, flush=True)
        if r == a.rounds:
            break
        child = breed_from_ratings(current, project, a.population, breeding, a.seed)
        draw_like_parents(child.name, drawing, project)
        current = child.id
    return out


def candidate_vectors(project: Path, candidate_id: int) -> torch.Tensor:
    with Store.open(project) as store:
        cand = store.candidate(candidate_id)
        return candidate_embedding(store, store.run(cand.run_id), cand).vectors


def round_row(r, cid, rating, verdict, shown, automatic) -> dict:
    row = {
        "round": r,
        "candidate": cid,
        "rating": round(rating, 3),
        "concept_fidelity": verdict["concept_fidelity"],
        "prompt_fidelity": verdict["prompt_fidelity"],
        "held_out_images": verdict["images"],
        "images_shown": shown,
    }
    if automatic is not None:
        row["minus_automatic_pick"] = round(
            verdict["concept_fidelity"] - automatic["concept_fidelity"], 4
        )
    return row


def print_round(row: dict, flush: bool = False) -> None:
    versus = row.get("minus_automatic_pick")
    tail = f", {versus:+.3f} vs the automatic pick" if versus is not None else ""
    print(
        f"round {row['round']}: the person's word, candidate id {row['candidate']} (rating "
        f"{row['rating']:.2f}), held-out concept {row['concept_fidelity']:.3f}, prompt "
        f"{row['prompt_fidelity']:.3f}{tail} ({row['images_shown']} images shown)",
        flush=flush,
    )


def summary(run: PersonRun, automatic: dict) -> dict:
    """Rounds until the person's word beats the automatic pick, and by how much after 5 and
    10 rounds (None where the loop ran fewer)."""
    bar = automatic["concept_fidelity"]
    beats = [r["round"] for r in run.rounds if r["concept_fidelity"] > bar]
    after = {n: next((r for r in run.rounds if r["round"] == n), None) for n in (5, 10)}
    return {
        "first_round_beating_the_automatic_pick": beats[0] if beats else None,
        **{
            f"minus_automatic_pick_after_{n}": (row["minus_automatic_pick"] if row else None)
            for n, row in after.items()
        },
    }


# -- one subject, standalone -------------------------------------------------------------------
def drawing_settings(a, subject: str) -> ScoreSettings:
    """What the person is shown: the gallery's drawing, 8 images over the world's prompts."""
    return ScoreSettings(
        prompts="world",
        images=a.images_per_round,
        seed=0,
        sampling=Sampling(a.sample_steps, a.cfg, "ddim", None),
        judge="oracle",
        subject=subject,
        device=a.device,
    )


def subject_config(a, subject: str, count: int) -> TrainConfig:
    from oneword.core.recipes import recipe_defaults
    from oneword.world.render import SUBJECTS_BY_ID

    return TrainConfig(
        token=f"<s-{subject}>",
        init_word=SUBJECTS_BY_ID[subject].class_word,
        steps=a.steps,
        lr=a.lr,
        batch_size=a.batch_size,
        grad_accum=1,
        checkpoint_every=max(a.steps // 2, 1),
        candidates=CandidatePlan(count=count, seed=0).candidates(),
        recipe=recipe_defaults(a.recipe),
    )


def breeding_of(a, selection: str = "tournament", top_k: int = 4) -> Breeding:
    return Breeding(
        selection=selection,
        top_k=top_k,
        crossover=a.crossover,
        mutation=a.mutation,
        elites=a.elites,
    )


def held_out_judge(a, subject: str, photos: Path, token: str, vectors: int) -> HeldOut:
    """The judge of a subject's held-out images, with the bench's model and drawing options."""
    from oneword.world.render import SUBJECTS_BY_ID

    model = load_model(a.model, a.device)
    class_word = SUBJECTS_BY_ID[subject].class_word
    return HeldOut(model, a, subject, class_word, photos, token, vectors)


def subject_person(subject: str, a, project: Path) -> dict:
    photos = subject_photo_folder(subject, project / "photos" / subject, a.photo_seed)
    config = subject_config(a, subject, a.candidates)
    result = sweep([str(photos)], config, ModelChoice(a.model, a.device), project)
    board = score(f"r{result.run_id}", image_settings(a, 0, subject), project)
    held = held_out_judge(a, subject, photos, config.token, config.vectors)
    automatic = held(candidate_vectors(project, label_free_pick(board).id))
    print(f"\n## {subject}: automatic pick of {a.candidates}: concept "
          f"{automatic['concept_fidelity']:.3f}", flush=True)  # fmt: skip
    rater = Rater(subject, config.token, a.error_rate, a.seed, a.device)
    run = person_loop(
        project, result.run_id, rater, held, a, drawing_settings(a, subject), breeding_of(a),
        automatic,
    )  # fmt: skip
    return {"automatic": automatic, "rounds": run.rounds, **summary(run, automatic)}


def add_person_options(p: argparse.ArgumentParser) -> None:
    """The person's options (shared with bench/search_compute.py)."""
    p.add_argument("--rounds", type=int, default=10, help="rate -> breed -> draw rounds")
    p.add_argument("--images-per-round", type=int, default=8, help="images seen per candidate")
    p.add_argument("--error-rate", type=float, default=1 / 6, help="share of wrong stars")
    p.add_argument("--population", type=int, default=8, help="children per generation")
    p.add_argument("--crossover", default="blend")
    p.add_argument("--mutation", type=float, default=0.1)
    p.add_argument("--elites", type=int, default=1)


def add_world_options(p: argparse.ArgumentParser) -> None:
    """Training, drawing and held-out options of the world benches (search_world's names)."""
    p.add_argument("--model", default="world")
    p.add_argument("--subjects", default="cat,dog,ball,robot,teddy")
    p.add_argument("--candidates", type=int, default=16, help="seeds of the automatic pick")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--recipe", default="plain", help="how every word is learned (learn --recipe)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--photo-seed", type=int, default=0)
    p.add_argument("--prompts", type=int, default=12, help="novel-context prompts (<= 12)")
    p.add_argument("--images-per-prompt", type=int, default=2, help="selection images")
    p.add_argument("--held-out-per-prompt", type=int, default=4, help="held-out images")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--threads", type=int)
    p.add_argument("--project")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="one subject, a few steps and images")


QUICK = {
    "subjects": "cat",
    "candidates": 3,
    "steps": 4,
    "prompts": 2,
    "images_per_prompt": 1,
    "held_out_per_prompt": 2,
    "sample_steps": 4,
    "rounds": 2,
    "images_per_round": 2,
    "population": 2,
}


def parse(argv, extra=None, quick=QUICK, description: str = __doc__):
    p = argparse.ArgumentParser(description=description.splitlines()[0])
    add_world_options(p)
    add_person_options(p)
    if extra:
        extra(p)
    a = p.parse_args(argv)
    if a.quick:
        for name, value in quick.items():
            setattr(a, name, value)
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    project = Path(a.project) if a.project else Path(tempfile.mkdtemp(prefix="person-world-"))
    started, results = time.time(), {}
    for subject in a.subjects.split(","):
        results[subject] = subject_person(subject, a, project)
        report = {
            "args": vars(a),
            "machine": platform.platform(),
            "threads": torch.get_num_threads(),
            "seconds": round(time.time() - started, 1),
            "subjects": results,
            "project": str(project),
        }
        if a.out:
            Path(a.out).write_text(json.dumps(report, indent=2, default=str))
    for subject, r in results.items():
        found = {k: v for k, v in r.items() if k.startswith(("first", "minus"))}
        print(f"{subject}: {json.dumps(found)}")
    print(f"total {round(time.time() - started, 1)}s, project {project}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
