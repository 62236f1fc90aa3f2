"""`oneword learn` and `oneword generate`."""

from __future__ import annotations

import argparse
import time

from .. import api
from ..core.diffusion import LR_SCHEDULES
from ..errors import OnewordError
from ..core.generate import Sampling
from ..adapters.pipelines import SCHEDULERS
from ..core.prompts import MODES
from ..core.train import TrainConfig
from .progress import ProgressBar


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=api.DEFAULT_MODEL,
                   help="hub id, diffusers folder, .safetensors/.ckpt file (SD 1.x/2.x or "
                        "SDXL), or a built-in model: tiny, tiny-sdxl, world "
                        f"(default: {api.DEFAULT_MODEL})")
    p.add_argument("--device", help="cuda, mps, cpu (default: the best available)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"),
                   help="frozen-weight precision (default: bf16/fp16 on GPUs, fp32 on CPU)")


def add_project_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", help="experiment store folder (default: $ONEWORD_PROJECT, "
                                     "else ./oneword-project)")


def add_learn_parser(sub) -> None:
    p = sub.add_parser("learn", help="learn a new token from a few photos",
                       description="Learn a new token from 3-10 photos by Textual Inversion.")
    p.add_argument("photos", nargs="+", help="a folder of photos, or photo files")
    add_training_options(p)
    p.add_argument("--max-batch", type=int, help="samples per forward pass (saves memory)")
    p.add_argument("--preview-every", type=int, default=0, help="0: no previews")
    p.add_argument("--preview-prompt", action="append", default=[],
                   help="prompt for previews (repeatable; default: two per mode)")
    p.add_argument("--out", help="run folder (default: runs/<token>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_model_options(p)
    add_project_option(p)
    p.set_defaults(func=_cmd_learn)


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The options of a Textual Inversion run (shared by learn and sweep)."""
    p.add_argument("--token", required=True, help="the new word, e.g. '<my-cat>'")
    p.add_argument("--init", dest="init_word", help="a word for what the photos show, e.g. cat")
    p.add_argument("--vectors", type=int, default=1, help="vectors for the token (default 1)")
    p.add_argument("--mode", choices=MODES, default="object", help="object or style captions")
    p.add_argument("--steps", type=int, help=f"optimizer steps (default {api.DEFAULT_STEPS}, or "
                   "what the model folder's oneword.json says: 300 on the world model, "
                   "which overfits sooner)")
    p.add_argument("--lr", type=float, default=5e-3, help="learning rate (default 5e-3)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=1, help="samples per micro-batch")
    p.add_argument("--grad-accum", type=int, default=4, help="micro-batches per step")
    p.add_argument("--resolution", type=int, help="training size (default: the model's)")
    p.add_argument("--crop", choices=("center", "random"), default="center")
    p.add_argument("--crops-per-photo", type=int, default=4, help="random crops cached per photo")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)


def training_config(a: argparse.Namespace, **settings) -> TrainConfig:
    """The TrainConfig of the options added by `add_training_options`, plus `settings`."""
    return TrainConfig(
        token=a.token, init_word=a.init_word, vectors=a.vectors, mode=a.mode,
        steps=api.default_steps(a.model) if a.steps is None else a.steps,
        lr=a.lr, lr_schedule=a.lr_schedule, warmup_steps=a.warmup_steps,
        weight_decay=a.weight_decay, batch_size=a.batch_size, grad_accum=a.grad_accum,
        resolution=a.resolution, crop=a.crop, crops_per_photo=a.crops_per_photo, flip=a.flip,
        seed=a.seed, checkpoint_every=a.checkpoint_every, **settings)


def _cmd_learn(a: argparse.Namespace) -> int:
    config = training_config(a, max_batch=a.max_batch, preview_every=a.preview_every,
                             preview_prompts=tuple(a.preview_prompt))
    choice = api.ModelChoice(a.model, a.device, a.dtype)
    started = time.time()
    files = api.learn(a.photos, config, choice, a.out, a.resume, on_event=ProgressBar(),
                      project=a.project)
    print(f"learned {a.token} in {time.time() - started:.0f}s:")
    for path in files.values():
        print(f"  {path}")
    return 0


def add_generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="draw images from a prompt with learned tokens",
                       description="Draw images from a prompt that uses learned tokens.")
    p.add_argument("prompt", help="e.g. 'a painting of <my-cat> by Claude Monet'")
    p.add_argument("--embedding", action="append", default=[],
                   help="a learned embedding file (.safetensors/.pt/.bin; repeatable)")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("-n", "--num-images", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="ddim")
    p.add_argument("--size", type=int, help="image size (default: the model's)")
    p.add_argument("--out", default="images", help="output folder (default: images)")
    add_model_options(p)
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(a: argparse.Namespace) -> int:
    if a.num_images < 1:
        raise OnewordError(f"-n {a.num_images}: must be 1 or more")
    if a.steps < 1:
        raise OnewordError(f"--steps {a.steps}: must be 1 or more")
    if a.size is not None and (a.size < 8 or a.size % 8):
        raise OnewordError(f"--size {a.size}: must be a multiple of 8")
    sampling = Sampling(a.steps, a.cfg, a.scheduler, a.size)
    choice = api.ModelChoice(a.model, a.device, a.dtype)
    paths = api.generate(a.prompt, a.embedding, choice, a.num_images, a.seed, sampling,
                         a.negative, a.out, on_event=ProgressBar())
    for path in paths:
        print(path)
    return 0




def register(sub) -> None:
    add_learn_parser(sub)
    add_generate_parser(sub)
