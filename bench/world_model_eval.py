"""Does the world model draw what its prompts ask for? Scored by the world's oracle.

    python bench/world_model_eval.py MODEL_DIR [--device cpu] [--n 48] [--steps 20] [--cfg 5]

Prompts come from the world's caption grammar with their specs:
  * `--n` ordinary objects, each naming shape, colour, scene and style (often also pattern,
    second colour, size or position); scored per attribute and all four together;
  * `--per-subject` class-word prompts per hidden subject ("a photo of a cat in the snow"),
    scored per class word as the share drawn as any hidden subject of that class (and their
    scene and style). Class words also name class members in training (any colours), so this
    share is expected near the training share of hidden subjects among them, not 100%. Also:
    the share drawn with the subject's shape, colours and pattern, and of those the share the
    oracle calls the subject (it has the subject's mark), the ceiling for a learned word.
Reference rows: the oracle on true renders of the same specs (its own ceiling), and on VAE
reconstructions of fresh renders (the ceiling the VAE leaves). Target for the trained model:
>= 90% of samples show the prompted shape, colour, scene and style.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oneword.adapters.loading import load_model  # noqa: E402
from oneword.adapters.pipelines import SCHEDULERS  # noqa: E402
from oneword.core.generate import Sampling, contact_sheet, draw, to_pil  # noqa: E402
from oneword.world.captions import caption  # noqa: E402
from oneword.world.metrics import predict_indices  # noqa: E402
from oneword.world.model import reconstruction_check  # noqa: E402
from oneword.world.oracle import HEADS, WEIGHTS, load_oracle  # noqa: E402
from oneword.world.render import (  # noqa: E402
    SCENES,
    STYLES,
    SUBJECT_IDS,
    SUBJECTS_BY_ID,
    render_batch,
    sample_specs,
    subject_spec,
)

ATTRIBUTES = ("shape", "color", "scene", "style")
TARGET = 0.90


def ordinary_prompts(n: int, generator: torch.Generator):
    """n (prompt, spec) pairs of ordinary objects, captioned by the grammar."""
    specs = sample_specs(n, generator, hidden_fraction=0.0)
    return [caption(s, generator) for s in specs], specs


def subject_prompts(per_subject: int, generator: torch.Generator):
    """Class-word prompts for every hidden subject in random scenes and styles."""
    specs = []
    for sid in SUBJECT_IDS:
        for _ in range(per_subject):
            scene = SCENES[int(torch.randint(len(SCENES), (1,), generator=generator))]
            style = STYLES[int(torch.randint(len(STYLES), (1,), generator=generator))]
            specs.append(subject_spec(sid, scene, style, generator))
    return [caption(s, generator) for s in specs], specs


def hits(pred: dict[str, torch.Tensor], specs, head: str) -> torch.Tensor:
    """Per image, whether the oracle's `head` matches the spec (bool [B])."""
    want = torch.tensor([HEADS[head].index(getattr(s, head) or "none") for s in specs])
    return pred[head] == want


def attribute_scores(pred, specs) -> dict[str, float]:
    """Accuracy per attribute, all four together, and pattern/colour2 where the object has one."""
    per = {k: hits(pred, specs, k) for k in ATTRIBUTES}
    out = {k: v.float().mean().item() for k, v in per.items()}
    out["all four"] = torch.stack(list(per.values())).all(0).float().mean().item()
    patterned = torch.tensor([s.pattern != "solid" for s in specs])
    if patterned.any():
        for k in ("pattern", "color2"):
            out[k + " (patterned)"] = hits(pred, specs, k)[patterned].float().mean().item()
    return out


def subject_scores(pred, specs) -> dict[str, float]:
    """Per class word, the share of its prompts drawn as any hidden subject of that class."""
    names = HEADS["subject"]
    drawn = [
        SUBJECTS_BY_ID[names[i]].class_word if names[i] in SUBJECTS_BY_ID else None
        for i in pred["subject"].tolist()
    ]
    ok = torch.tensor([d == SUBJECTS_BY_ID[s.subject].class_word for d, s in zip(drawn, specs)])
    classes = sorted({SUBJECTS_BY_ID[s.subject].class_word for s in specs})
    out = {
        c: ok[[i for i, s in enumerate(specs) if SUBJECTS_BY_ID[s.subject].class_word == c]]
        .float()
        .mean()
        .item()
        for c in classes
    }
    out["mean"] = ok.float().mean().item()
    for k in ("scene", "style"):
        out[k] = hits(pred, specs, k).float().mean().item()
    # A hidden subject differs from a class member of the same attributes only by its mark:
    # the share of look-alikes the oracle calls the subject is what a learned word can reach.
    alike = torch.stack(
        [hits(pred, specs, k) for k in ("shape", "color", "color2", "pattern")]
    ).all(0)
    out["subject's attributes"] = alike.float().mean().item()
    out["  of those, marked"] = (
        (hits(pred, specs, "subject") & alike).sum() / alike.sum().clamp_min(1)
    ).item()
    return out


def real_renders(specs, seed: int, device) -> torch.Tensor:
    return render_batch(specs, torch.Generator(device=device).manual_seed(seed), device)


def print_table(
    title: str, generated: dict[str, float], real: dict[str, float], first: str = "generated"
) -> None:
    print(f"\n{title:<26}{first:>10}{'renders':>10}")
    for k, v in generated.items():
        flag = "" if k not in ATTRIBUTES + ("all four",) else ("  ok" if v >= TARGET else "  < 90%")
        print(f"  {k:<24}{v:>10.3f}{real.get(k, float('nan')):>10.3f}{flag}")


def evaluate(args) -> dict:
    device = torch.device(args.device)
    oracle = load_oracle(device, args.oracle)
    model = load_model(args.model, args.device)
    g = torch.Generator().manual_seed(args.seed)
    sampling = Sampling(steps=args.steps, cfg=args.cfg, scheduler=args.scheduler, size=64)
    o_prompts, o_specs = ordinary_prompts(args.n, g)
    s_prompts, s_specs = subject_prompts(args.per_subject, g)
    prompts, specs = o_prompts + s_prompts, o_specs + s_specs
    seeds = [args.seed * 100_000 + i for i in range(len(prompts))]
    start = time.monotonic()
    images = draw(model, prompts, seeds, None, sampling, batch=args.batch)
    seconds = time.monotonic() - start
    pred = predict_indices(oracle, images)
    real = predict_indices(oracle, real_renders(specs, args.seed, device))
    n = len(o_specs)
    split = lambda p, a, b: {k: v[a:b] for k, v in p.items()}  # noqa: E731
    result = {
        "model": args.model,
        "device": str(device),
        "prompts": len(prompts),
        "subject_prompts": len(s_prompts),
        "sampling": vars(sampling),
        "draw_seconds": round(seconds, 1),
        "ordinary": attribute_scores(split(pred, 0, n), o_specs),
        "ordinary_real": attribute_scores(split(real, 0, n), o_specs),
        "subjects": subject_scores(split(pred, n, len(specs)), s_specs),
        "subjects_real": subject_scores(split(real, n, len(specs)), s_specs),
        "examples": [
            {"prompt": p, "predicted": {k: HEADS[k][int(pred[k][i])] for k in HEADS}}
            for i, p in enumerate(prompts[:8])
        ],
    }
    trained = Path(args.model) / "train_log.json"
    if trained.exists():
        c = json.loads(trained.read_text())["config"]
        h, m = c.get("hidden_fraction", 0.0), c.get("member_fraction", 0.0)
        result["trained_class_word_subject_share"] = h / (h + m) if h + m else None
    if args.recon:
        result["vae_reconstruction"] = reconstruction_check(
            model.pipe.vae.float(), oracle, args.recon, seed=args.seed + 1, device=device
        )
    if args.sheet:
        to_pil(contact_sheet(images[:64], columns=8)).save(args.sheet)
    return result


def report(result: dict) -> None:
    s = result["sampling"]
    print(
        f"world model eval: {result['model']} on {result['device']}: {result['prompts']} "
        f"prompts, {s['steps']} DDIM steps, cfg {s['cfg']}, drawn in {result['draw_seconds']}s"
    )
    print_table("ordinary objects", result["ordinary"], result["ordinary_real"])
    share = result.get("trained_class_word_subject_share")
    if result["subject_prompts"]:
        print_table("hidden subjects (class word)", result["subjects"], result["subjects_real"])
        if share is not None:
            print(
                f"  (in training, {share:.0%} of the images captioned by a class word show the "
                "hidden subject; the rest are class members)"
            )
    if "vae_reconstruction" in result:
        r = result["vae_reconstruction"]
        print_table("VAE reconstructions", r["vae"], r["real"], first="recon")
    print("\nexamples:")
    for e in result["examples"]:
        p = e["predicted"]
        print(
            f"  {e['prompt']!r} -> {p['color']} {p['shape']} ({p['pattern']}, "
            f"{p['color2']}), {p['scene']}, {p['style']}, subject {p['subject']}"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a world-model folder (diffusers pipeline)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=48, help="ordinary-object prompts")
    p.add_argument("--per-subject", type=int, default=2, help="class-word prompts per subject")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--scheduler", default="ddim", choices=SCHEDULERS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--recon", type=int, default=128, help="renders for the VAE check (0: skip)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (on a busy machine 1 can be fastest)",
    )
    p.add_argument("--oracle", default=str(WEIGHTS))
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument("--sheet", default=None, help="save a PNG contact sheet of the first 64")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.oracle).exists():
        print(
            f"error: no oracle weights at {args.oracle}; train them with "
            "python -m oneword.world.oracle train",
            file=sys.stderr,
        )
        return 2
    result = evaluate(args)
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
