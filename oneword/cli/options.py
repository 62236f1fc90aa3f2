"""Options and helpers that several commands share."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import api
from ..adapters.feature_models import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL
from ..adapters.pipelines import SCHEDULERS
from ..checks import at_least
from ..core.diffusion import LR_SCHEDULES
from ..core.embeddings import FORMATS, LearnedEmbedding, load_embeddings, save_embedding
from ..core.flat_stop import FlatStop
from ..core.generate import Sampling
from ..core.prompts import MODES
from ..core.recipes import DEFAULT_RECIPE, RECIPES, recipe_defaults
from ..core.train import TrainConfig
from ..errors import OnewordError
from ..experiments.auto_masks import AutoMasking, class_word_of
from .vocabulary import add_sample_steps_option

DEFAULT_MASK_FLOOR = 0.1


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=api.DEFAULT_MODEL,
        help="hub id, diffusers folder, .safetensors/.ckpt file (SD 1.x/2.x or "
        "SDXL), or a built-in model: tiny, tiny-sdxl, world "
        f"(default: {api.DEFAULT_MODEL})",
    )
    p.add_argument("--device", help="cuda, mps, cpu (default: the best available)")
    p.add_argument(
        "--dtype",
        choices=("fp32", "fp16", "bf16"),
        help="frozen-weight precision (default: bf16/fp16 on GPUs, fp32 on CPU)",
    )


def add_project_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--project",
        help="experiment store folder (default: $ONEWORD_PROJECT, else ./oneword-project)",
    )


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The options of a Textual Inversion run (shared by learn and sweep)."""
    p.add_argument("--token", required=True, help="the new word, e.g. '<my-cat>'")
    p.add_argument("--init", dest="init_word", help="a word for what the photos show, e.g. cat")
    p.add_argument("--vectors", type=int, default=1, help="vectors for the token (default 1)")
    p.add_argument(
        "--per-layer",
        action="store_true",
        help="P+: its own vectors for every cross-attention layer of the UNet (SD 1.x/2.x); "
        "also writes their mean as a plain word for other tools",
    )
    p.add_argument("--mode", choices=MODES, default="object", help="object or style captions")
    p.add_argument(
        "--steps",
        type=int,
        help=f"optimizer steps (default {api.DEFAULT_STEPS}, or "
        "what the model folder's oneword.json says: 300 on the world model, "
        "which overfits sooner)",
    )
    p.add_argument("--lr", type=float, default=5e-3, help="learning rate (default 5e-3)")
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="learning rate over the steps (default constant)",
    )
    p.add_argument(
        "--warmup-steps", type=int, default=0, help="steps of linear warm-up of the lr (default 0)"
    )
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    p.add_argument("--batch-size", type=int, default=1, help="samples per micro-batch")
    p.add_argument("--grad-accum", type=int, default=4, help="micro-batches per step")
    p.add_argument("--resolution", type=int, help="training size (default: the model's)")
    p.add_argument(
        "--crop",
        choices=("center", "random"),
        default="center",
        help="square crop of each photo: its center, or --crops-per-photo random ones",
    )
    p.add_argument("--crops-per-photo", type=int, default=4, help="random crops cached per photo")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal flips")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the training's randomness (default 0)"
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=100,
        help="steps between checkpoints that --resume continues from (default 100)",
    )
    p.add_argument(
        "--stop-when-flat",
        action="store_true",
        help="stop before --steps once the loss on a fixed batch of draws is flat (DVAR)",
    )
    p.add_argument("--flat-every", type=int, default=5, help="steps between its evaluations")
    p.add_argument("--flat-window", type=int, default=10, help="evaluations it compares")
    p.add_argument("--flat-threshold", type=float, default=0.15, help="window/total variance ratio")
    p.add_argument(
        "--low-memory",
        action="store_true",
        help="for GPUs short of memory (SDXL on 16-24 GB): gradient checkpointing, VAE "
        "slicing, photos encoded one at a time; slower, the same result up to rounding (on by "
        "itself when one sample per pass runs out of memory)",
    )
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default=DEFAULT_RECIPE,
        help=f"how the word is learned (default {DEFAULT_RECIPE}): plain Textual Inversion; "
        "directional (its norm kept at the vocabulary's, only its direction learned); "
        "cross-init (starts at the text encoder's output for --init); core (the other words "
        "of a prompt kept as they are with --init in its place). Every recipe writes a plain "
        "word that other tools load",
    )
    add_mask_options(p)


def add_mask_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "masks",
        "weight the loss per pixel by a mask per photo, so the word learns the subject and "
        "not what is around it; a photo's mask is <photo stem>.mask.png beside it (cat1.jpg: "
        "cat1.mask.png), else <photo stem>.png (or .jpg, .webp) in --mask-dir, else the "
        "photo's own alpha channel; white counts fully, black counts --mask-floor, grey "
        "in between. --mask auto, the default, makes the masks with the model itself, from "
        "where its cross-attention finds the class word (--class-word, else --init) in each "
        "photo; `oneword masks` writes them to look at first",
    )
    g.add_argument(
        "--mask",
        nargs="?",
        const=True,
        type=mask_choice,
        help="train with each photo's mask file; `--mask auto` (the default): masks made by "
        "the model",
    )
    g.add_argument(
        "--no-mask",
        action="store_true",
        help="learn from the whole photos (the default is --mask auto where there is a class word)",
    )
    g.add_argument("--mask-dir", metavar="DIR", help="a folder of masks named as the photos")
    add_auto_mask_options(g)
    g.add_argument(
        "--mask-floor",
        type=float,
        metavar="F",
        help=f"loss weight outside the masks, 0 to 1 (default {DEFAULT_MASK_FLOOR})",
    )


def add_auto_mask_options(g) -> None:
    """What automatic masks look for, and with what (learn, sweep and masks)."""
    g.add_argument(
        "--class-word",
        metavar="WORD",
        help="what --mask auto looks for in the photos (default: the --init words)",
    )
    g.add_argument(
        "--mask-model",
        metavar="PATH",
        help="--mask auto with a CLIPSeg model you have (a folder, or a hub id in your cache) "
        "instead of the model's own attention",
    )


def training_config(a: argparse.Namespace, **settings) -> TrainConfig:
    """The TrainConfig of the options added by `add_training_options`, plus `settings`."""
    return TrainConfig(
        token=a.token,
        init_word=a.init_word,
        vectors=a.vectors,
        per_layer=a.per_layer,
        mode=a.mode,
        steps=api.default_steps(a.model) if a.steps is None else a.steps,
        lr=a.lr,
        lr_schedule=a.lr_schedule,
        warmup_steps=a.warmup_steps,
        weight_decay=a.weight_decay,
        batch_size=a.batch_size,
        grad_accum=a.grad_accum,
        resolution=a.resolution,
        crop=a.crop,
        crops_per_photo=a.crops_per_photo,
        flip=a.flip,
        seed=a.seed,
        checkpoint_every=a.checkpoint_every,
        stop_when_flat=_flat_stop(a),
        mask_floor=_mask_floor(a),
        low_memory=a.low_memory,
        recipe=recipe_defaults(a.recipe),
        **settings,
    )


def mask_choice(text: str) -> str:
    if text != "auto":
        raise argparse.ArgumentTypeError(
            f"{text!r}: give --mask alone (mask files) or --mask auto, after the photos"
        )
    return text


_MASK_OPTIONS = ("mask", "mask_dir", "mask_floor", "class_word", "mask_model")


def mask_mode(a: argparse.Namespace) -> str | None:
    """How a run's photos are masked: "files" (--mask), "auto" (--mask auto, the default where
    there is a class word), or None (--no-mask; a Ray sweep without --mask)."""
    if a.no_mask:
        for name in _MASK_OPTIONS:
            if getattr(a, name) is not None:
                option = "--" + name.replace("_", "-")
                raise OnewordError(f"{option}: not with --no-mask; leave one of them out")
        return None
    if a.mask is True:
        return "files"
    if a.mask == "auto":
        return "auto"
    if getattr(a, "ray", None) is not None or not class_word_of(a.init_word, a.class_word):
        return None  # no default masks where they cannot be made
    return "auto"


def auto_masking(a: argparse.Namespace) -> AutoMasking | None:
    """`--mask auto`'s settings (the default), else None (--class-word only with it)."""
    if mask_mode(a) != "auto":
        for option, value in (("--class-word", a.class_word), ("--mask-model", a.mask_model)):
            if value is not None:
                raise OnewordError(f"{option} {value}: only with --mask auto; add it")
        return None
    word = class_word_of(a.init_word, a.class_word)
    return AutoMasking(word, seed=a.seed, mask_model=a.mask_model)


def _mask_floor(a: argparse.Namespace) -> float | None:
    """The config's mask_floor: None without masks."""
    if mask_mode(a) is None:
        for option, value in (("--mask-floor", a.mask_floor), ("--mask-dir", a.mask_dir)):
            if value is not None:
                raise OnewordError(f"{option} {value}: only with --mask; add --mask")
        return None
    if mask_mode(a) == "auto" and a.mask_dir is not None:
        if a.mask == "auto":
            raise OnewordError(f"--mask-dir {a.mask_dir}: not with --mask auto; leave one out")
        raise OnewordError(f"--mask-dir {a.mask_dir}: only with --mask; add --mask")
    return DEFAULT_MASK_FLOOR if a.mask_floor is None else a.mask_floor


def _flat_stop(a: argparse.Namespace) -> FlatStop | None:
    if not a.stop_when_flat:
        return None
    return FlatStop(every=a.flat_every, window=a.flat_window, threshold=a.flat_threshold)


# -- candidates and Ray (sweep, score, evolve) --------------------------------------------
def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas") from None


def words(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def max_batch_option(text: str) -> int | str:
    if text in ("auto", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number, auto or all") from None


def add_candidate_options(p: argparse.ArgumentParser, default_count: int) -> None:
    p.add_argument(
        "--candidates",
        type=int,
        default=default_count,
        help=f"candidate embeddings trained together (default {default_count})",
    )
    p.add_argument(
        "--inits",
        type=words,
        default=("word",),
        help="starting points, cycled over the candidates: word, random, jitter (default word)",
    )
    p.add_argument(
        "--jitter",
        type=float,
        default=0.1,
        help="noise of the jitter init, in vocabulary std (default 0.1)",
    )
    p.add_argument(
        "--lrs",
        type=floats,
        default=(),
        help="learning rates crossed with --inits, e.g. 2e-3,5e-3 (default: --lr)",
    )
    p.add_argument(
        "--max-batch",
        type=max_batch_option,
        default="auto",
        help="samples per forward pass: a number, all, or auto (fit the free memory; default)",
    )


def candidate_plan(a: argparse.Namespace):
    from ..experiments.sweep import CandidatePlan

    return CandidatePlan(count=a.candidates, seed=a.seed, inits=a.inits, jitter=a.jitter, lrs=a.lrs)


def load_ray_cluster():
    """oneword.experiments.ray_cluster (and Ray), imported only for --ray."""
    try:
        from ..experiments import ray_cluster as distributed
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise OnewordError("--ray: Ray is not installed; pip install 'oneword[ray]'") from None
    return distributed


def add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="spread groups of candidates over a Ray cluster (ADDRESS, e.g. auto or "
        "ray://host:10001; none: $RAY_ADDRESS or a local one); needs "
        "pip install oneword[ray] and a run folder on shared storage",
    )
    p.add_argument(
        "--ray-groups",
        type=int,
        help="Ray tasks to split the candidates into (default: one per GPU of the "
        "cluster, else per CPU)",
    )


# -- scoring (score, evolve, serve) ---------------------------------------------------------
def add_device_options(p: argparse.ArgumentParser) -> None:
    """--device and --dtype of a command that draws with a run's own model."""
    p.add_argument("--device", help="cuda, mps, cpu (default: the best available)")
    p.add_argument(
        "--dtype",
        choices=("fp32", "fp16", "bf16"),
        help="frozen-weight precision (default: bf16/fp16 on GPUs, fp32 on CPU)",
    )


def model_or_none(text: str) -> str | None:
    return None if text.lower() == "none" else text


def add_scoring_options(p: argparse.ArgumentParser, old_steps: str | None = "--steps") -> None:
    """Drawing and judging options; old_steps: the old spelling of --sample-steps there."""
    add_sample_steps_option(p, 30, old_steps)
    p.add_argument("--cfg", type=float, default=7.5, help="guidance scale (default 7.5)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="ddim", help="sampler (default ddim)")
    p.add_argument("--size", type=int, help="image size (default: the model's)")
    p.add_argument(
        "--judge",
        choices=("auto", "features", "oracle"),
        default="auto",
        help="features: CLIP + DINO; oracle: the world model's oracle; auto: the "
        "oracle on the world model, else features",
    )
    p.add_argument(
        "--clip-model",
        type=model_or_none,
        default=DEFAULT_CLIP_MODEL,
        help=f"CLIP hub id or folder, or none (default {DEFAULT_CLIP_MODEL})",
    )
    p.add_argument(
        "--dino-model",
        type=model_or_none,
        default=DEFAULT_DINO_MODEL,
        help=f"DINO hub id or folder, or none (default {DEFAULT_DINO_MODEL})",
    )
    p.add_argument(
        "--fidelity-weight",
        type=float,
        default=0.5,
        help="weight of fidelity against prompt-following in the combined score",
    )


def score_settings(a: argparse.Namespace, **extra):
    from ..experiments.scoring import ScoreSettings

    at_least(a.sample_steps, "--sample-steps", 1)
    sampling = Sampling(a.sample_steps, a.cfg, a.scheduler, a.size)
    return ScoreSettings(
        sampling=sampling,
        judge=a.judge,
        clip_model=a.clip_model,
        dino_model=a.dino_model,
        fidelity_weight=a.fidelity_weight,
        device=a.device,
        dtype=a.dtype,
        **extra,
    )


def load_first_embedding(path: str, option: str = "") -> LearnedEmbedding:
    found = load_embeddings(path)
    if len(found) != 1:
        raise OnewordError(f"{option or path}: holds {len(found)} tokens; give a file with one")
    return found[0]


def write_output(a: argparse.Namespace, vectors, token: str, metadata: dict) -> Path:
    out = Path(a.out)
    fmt = a.format or ("a1111-pt" if out.suffix == ".pt" else "diffusers")
    emb = LearnedEmbedding(a.token or token, vectors.float(), metadata)
    return save_embedding(emb, out, fmt)


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", required=True, help="the embedding file to write")
    p.add_argument("--token", help="the new file's token (default: the first input's)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="file layout (default: diffusers; a1111-pt for a .pt name)",
    )


def add_sphere_options(p: argparse.ArgumentParser, what: str, default: str) -> None:
    """--on-sphere / --off-sphere (dest on_sphere: True, False, or None for the default):
    `what` is done on the sphere of the vocabulary's median row norm, by `default`."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--on-sphere",
        dest="on_sphere",
        action="store_const",
        const=True,
        help=f"{what} on the sphere of the vocabulary's median row norm, each vector kept "
        f"at that norm (default: {default})",
    )
    g.add_argument(
        "--off-sphere",
        dest="on_sphere",
        action="store_const",
        const=False,
        help=f"{what} on the vectors as they are, even for directional words",
    )


def norms_text(vectors) -> str:
    return ", ".join(f"{float(n):.4f}" for n in vectors.float().norm(dim=-1))


def short_path(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
