"""The world model: oneword's own small *pretrained* text-to-image model of the procedural world.

No real Stable Diffusion weights can be downloaded here, so oneword trains an SD-layout model
(CLIP text encoder, UNet2DConditionModel, AutoencoderKL, DDIM scheduler) on images rendered on
the fly by `render.py` and captioned by `captions.py`. Hidden subjects ("cat", "dog", ...) appear
in many training images but their captions use only the class word, which also names the other
members of the class (same shape, any colours); Textual Inversion must be able to learn the
subjects back. This model is oneword's default model and its quality bench.

    python -m oneword.world.model train --out DIR --device cuda --minutes 6 --seed 0
    python -m oneword.world.model train --out DIR --preset cpu --threads 2  # 110 min, 2 cores

Phase 1 trains the VAE (MSE + a little L1 + a small KL) and sets its scaling factor to
1/std of its latents (as SD's 0.18215). Phase 2 freezes the VAE and trains UNet and text
encoder jointly on the noise-prediction loss (Ho et al. 2020) with Min-SNR weighting (Hang et al.
2023), 10% empty captions for classifier-free guidance (Ho & Salimans 2022), AdamW with warm-up
and cosine decay, gradient clipping, bf16 autocast on CUDA and an EMA of the weights; with
`--align-weight` (0.5 by default) also representation alignment to the oracle's features
(Yu et al. 2024; `FeatureAlignment`), which only steers training and is not saved. Both
phases run against a wall-clock budget checked every step, so the model is saved in time even
when the machine is slower than expected. The folder is saved in fp16 and loads with
`oneword.adapters.loading.load_model(folder)`; `train_log.json` beside the weights records the run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..core import diffusion
from ..errors import OnewordError
from ..adapters.tokenizer import TINY_EXTRA_WORDS
from ..adapters.tiny import (Components, TinyShapes, build_components, load_components,
                             save_components)
from ..adapters.loading import load_model, write_model_settings
from ..core.prompts import OBJECT_TEMPLATES, template_words
from .captions import caption, describe, subject_noun, vocabulary
from .render import (HIDDEN_SUBJECTS, Spec, render_batch, render_with_coverage,
                     sample_specs)

IMAGE_SIZE = 64
LOG_NAME = "train_log.json"
MAX_FILE_MB = 15.0  # each .safetensors must come back from a GPU machine
MAX_TOTAL_MB = 25.0
# Default learning steps for words on this model, written into its folder (oneword.json). SD at
# 512 px wants thousands; the 64 px world model overfits its 5 photos after a few hundred
# (measured in docs/experiments.md).
LEARN_STEPS = 300


# -- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class WorldModelConfig:
    """Everything that decides how the world model is trained (sizes, budget, optimisation)."""
    minutes: float | None = 6.0  # wall-clock budget for the whole run; None: step limits only
    vae_share: float = 0.2  # share of the budget (after setup) spent on the VAE
    reserve_share: float = 0.04  # share of the budget kept for measuring and saving
    vae_steps: int = 1_000_000  # step caps (the budget usually ends a phase first)
    steps: int = 1_000_000
    vae_batch_size: int = 256
    batch_size: int = 512
    vae_lr: float = 1e-3
    lr: float = 5e-4
    warmup_steps: int = 300
    min_lr_share: float = 0.05  # the cosine decays to this share of the lr
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0: no EMA
    cond_drop: float = 0.1  # captions replaced by "" (classifier-free guidance)
    template_share: float = 0.1  # captions from oneword's TI templates ("a photo of a cat")
    # A class-word caption shows the hidden subject h(1 - n) / (h(1 - n) + m) of the time (h, m:
    # the two fractions, n: name_share): 25% without names, 9% at n = 0.7. So the class word
    # alone rarely draws the subject: the floor of the quality bench.
    hidden_fraction: float = 0.15  # images showing a hidden subject
    member_fraction: float = 0.45  # other members of the subjects' classes ("a cat", any colours)
    # Share of a hidden subject's captions that call it by its name ("a photo of a mittens"), the
    # rest by its class word: the name gives the model one word that means the subject, so
    # prompts with it measure the best a learned word can reach on this model.
    name_share: float = 0.0
    # A saved world model folder to continue training from (its VAE and scaling factor are kept,
    # the VAE phase is skipped; names missing from its tokenizer are added, each starting at its
    # class word's embedding). None: train from scratch.
    init_from: str | None = None
    l1_weight: float = 0.1
    kl_weight: float = 1e-7  # on the KL summed over latent elements, per sample
    min_snr_gamma: float = 5.0  # 0: the plain loss
    fresh_share: float = 1.0  # share of each batch rendered anew; the rest comes from a pool
    pool_batches: int = 8  # pool size in batches, when fresh_share < 1
    scale_images: int = 1024  # images measured for the VAE scaling factor
    text_width: int = 192
    text_layers: int = 3
    unet_channels: tuple[int, ...] = (64, 128, 128)
    unet_layers: int = 1
    vae_channels: tuple[int, ...] = (32, 64, 128)
    object_weight: float = 3.0  # extra loss weight on the object's pixels (it is small)
    # Extra loss weight on the pixels of the pattern's second colour and of a hidden subject's
    # mark, the details that decide a subject but cover ~1% of an image. Off by default: the
    # weighted loss favours marked images, so class words drew the subjects far more often
    # (docs/experiments.md).
    pattern_weight: float = 0.0
    mark_weight: float = 0.0
    # Representation alignment (REPA): weight of the loss pulling the UNet's 8x8 hidden states
    # towards the oracle's features of the clean image; 0: off. See `FeatureAlignment`. It
    # doubles the shapes drawn at the same budget; a larger weight did not help learned words
    # (docs/experiments.md).
    align_weight: float = 0.5
    # UNet down blocks aligned (0: 16x16 for 16x16 latents, 1: 8x8); block 0 as well did not
    # pay on the cpu preset (docs/experiments.md).
    align_blocks: tuple[int, ...] = (1,)
    amp: bool | None = None  # bf16 autocast; None: on CUDA only
    vae_amp: bool | None = None  # bf16 autocast for the VAE; None: as `amp`
    compile: bool = False  # torch.compile the UNet's training forward
    log_every: int = 200
    seed: int = 0

    def __post_init__(self):
        _validate(self)

    @property
    def latent_size(self) -> int:
        return IMAGE_SIZE // 2 ** (len(self.vae_channels) - 1)

    @property
    def shapes(self) -> TinyShapes:
        return TinyShapes(text_width=self.text_width, text_layers=self.text_layers,
                          unet_channels=tuple(self.unet_channels),
                          vae_channels=tuple(self.vae_channels), unet_layers=self.unet_layers,
                          latent_size=self.latent_size)


def _fail(name: str, value, why: str):
    raise OnewordError(f"--{name.replace('_', '-')} {value}: {why}")


def _validate(c: WorldModelConfig) -> None:
    if c.minutes is not None and not c.minutes > 0:
        _fail("minutes", c.minutes, "must be positive")
    if not isinstance(c.scale_images, int) or c.scale_images < 2:
        _fail("scale_images", c.scale_images, "must be a whole number, 2 or more")
    for name in ("vae_steps", "steps", "warmup_steps", "pool_batches"):
        if not isinstance(getattr(c, name), int) or getattr(c, name) < 0:
            _fail(name, getattr(c, name), "must be a whole number, 0 or more")
    for name in ("vae_batch_size", "batch_size", "log_every", "text_layers", "unet_layers"):
        if not isinstance(getattr(c, name), int) or getattr(c, name) < 1:
            _fail(name, getattr(c, name), "must be a whole number, 1 or more")
    for name in ("vae_lr", "lr"):
        if not getattr(c, name) > 0:
            _fail(name, getattr(c, name), "must be positive")
    for name in ("weight_decay", "grad_clip", "l1_weight", "kl_weight", "min_snr_gamma",
                 "object_weight", "align_weight", "pattern_weight", "mark_weight"):
        if not getattr(c, name) >= 0:
            _fail(name, getattr(c, name), "must be 0 or more")
    for name in ("vae_share", "reserve_share", "fresh_share"):
        if not 0 < getattr(c, name) <= 1:
            _fail(name, getattr(c, name), "must be in (0, 1]")
    for name in ("ema_decay", "cond_drop", "template_share", "min_lr_share"):
        if not 0 <= getattr(c, name) < 1:
            _fail(name, getattr(c, name), "must be in [0, 1)")
    for name in ("hidden_fraction", "member_fraction", "name_share"):
        if not 0 <= getattr(c, name) <= 1:
            _fail(name, getattr(c, name), "must be in [0, 1]")
    if c.hidden_fraction + c.member_fraction > 1:
        _fail("member_fraction", c.member_fraction, "with --hidden-fraction must be 1 or less")
    if c.cond_drop + c.template_share >= 1:
        _fail("template_share", c.template_share, "with --cond-drop must leave grammar captions")
    if c.vae_share + c.reserve_share >= 1:
        _fail("vae_share", c.vae_share, "with the reserve must leave time for the UNet")
    if c.init_from is not None and not (Path(c.init_from) / "model_index.json").is_file():
        _fail("init_from", c.init_from, "is not a saved model folder (no model_index.json)")
    if c.minutes is None and c.steps >= 1_000_000:
        _fail("minutes", c.minutes, "give a time budget or a step limit")
    _validate_sizes(c)
    if not c.align_blocks or len(set(c.align_blocks)) != len(c.align_blocks) or any(
            not 0 <= b < len(c.unet_channels) for b in c.align_blocks):
        _fail("align_blocks", c.align_blocks,
              f"give distinct down blocks from 0 to {len(c.unet_channels) - 1}")


def _validate_sizes(c: WorldModelConfig) -> None:
    if not 2 <= len(c.vae_channels) <= 4:
        _fail("vae_channels", c.vae_channels, "give 2 to 4 blocks (64 px -> 32..8 px latents)")
    if len(c.unet_channels) < 2:
        _fail("unet_channels", c.unet_channels, "give 2 or more blocks")
    if c.latent_size < 2 ** (len(c.unet_channels) - 1):
        _fail("unet_channels", c.unet_channels, "too many blocks for the latent size")
    for name in ("unet_channels", "vae_channels"):
        if any(ch < 8 or ch % 8 for ch in getattr(c, name)):
            _fail(name, getattr(c, name), "channels must be multiples of 8 (8 norm groups)")
    heads = max(2, c.text_width // 64)  # as oneword.adapters.tiny.build_components
    if c.text_width < 16 or c.text_width % heads:
        _fail("text_width", c.text_width, f"must be 16 or more and divisible by {heads}")


PRESETS: dict[str, dict] = {
    # One H100/H200, ~6 minutes (the defaults): fresh renders every step, large batches, as
    # per-step launch overhead more than FLOPs bounds the steps of these small models.
    "gpu": dict(),
    # Two CPU cores, <= 2 hours: renders are slow on CPU, so most of each batch reuses a pool.
    # The object covers ~5-25% of an image: weighting its pixels 4x makes both phases learn
    # shapes, colours and patterns sooner. bf16 autocast doubles the VAE's speed on CPUs with
    # AMX/AVX512-BF16 (it slows the UNet's small convolutions, so the UNet stays fp32).
    "cpu": dict(minutes=110.0, batch_size=32, vae_batch_size=16, lr=4e-4, vae_lr=1e-3,
                warmup_steps=100, fresh_share=0.25, pool_batches=32, scale_images=256,
                vae_amp=True, log_every=20),
    # Seconds: for tests and smoke runs (a tiny architecture, a few steps, no budget).
    "tiny": dict(minutes=None, vae_steps=2, steps=2, batch_size=4, vae_batch_size=4,
                 warmup_steps=1, scale_images=8, text_width=32, text_layers=1,
                 unet_channels=(32, 64), vae_channels=(8, 8, 16), ema_decay=0.9, align_weight=0.0,
                 log_every=1),
}


def preset(name: str, **overrides) -> WorldModelConfig:
    if name not in PRESETS:
        raise OnewordError(f"--preset {name}: choose one of {', '.join(PRESETS)}")
    return WorldModelConfig(**{**PRESETS[name], **overrides})


def world_vocabulary() -> list[str]:
    """Whole-word tokens: the world's grammar, oneword's templates and common init words."""
    return sorted(set(vocabulary()) | set(template_words()) | set(TINY_EXTRA_WORDS))


# -- run-time helpers ----------------------------------------------------------------------
@dataclass
class Generators:
    """One random stream per purpose: specs and captions on the CPU, pixels and noise on the
    training device."""
    specs: torch.Generator
    captions: torch.Generator
    pool: torch.Generator
    render: torch.Generator
    noise: torch.Generator

    @staticmethod
    def from_seed(seed: int, device: torch.device) -> "Generators":
        base = torch.Generator().manual_seed(seed)
        s = [int(x) for x in torch.randint(2 ** 62, (5,), generator=base)]
        cpu = [torch.Generator().manual_seed(x) for x in s[:3]]
        return Generators(*cpu, *(torch.Generator(device=device).manual_seed(x) for x in s[3:]))


class Clock:
    """Wall-clock budget of a run, counted from `start` (time.monotonic())."""

    def __init__(self, minutes: float | None, start: float | None = None):
        self.start = time.monotonic() if start is None else start
        self.budget = None if minutes is None else minutes * 60.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def seconds_left(self, reserve: float = 0.0) -> float:
        if self.budget is None:
            return math.inf
        return self.budget * (1 - reserve) - self.elapsed()


def amp_context(device: torch.device, enabled: bool):
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def use_amp(config: WorldModelConfig, device: torch.device) -> bool:
    return device.type == "cuda" if config.amp is None else bool(config.amp)


def use_vae_amp(config: WorldModelConfig, device: torch.device) -> bool:
    return use_amp(config, device) if config.vae_amp is None else bool(config.vae_amp)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lr_multiplier(step: int, progress: float, warmup_steps: int, min_share: float) -> float:
    """Linear warm-up over steps, then cosine decay over the phase's progress (steps or time)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return warm * (min_share + (1 - min_share) * cosine)


class Stream:
    """Batches of (specs, tensor) from `make(n)`: fresh each step, or, when `fresh < batch`,
    `fresh` new examples per step replace the oldest of a pool the batch is drawn from."""

    def __init__(self, make: Callable[[int], tuple[list[Spec], torch.Tensor]], batch: int,
                 fresh_share: float, pool_batches: int, generator: torch.Generator):
        self.make, self.batch, self.generator = make, batch, generator
        self.fresh = max(1, round(batch * fresh_share))
        self.pool_size = max(batch, batch * pool_batches) if self.fresh < batch else 0
        self.specs: list[Spec] = []
        self.data: torch.Tensor | None = None
        self.cursor = 0

    def _fill(self) -> None:
        specs, parts = [], []
        for i in range(0, self.pool_size, self.batch):
            s, d = self.make(min(self.batch, self.pool_size - i))
            specs += s
            parts.append(d)
        self.specs, self.data = specs, torch.cat(parts)

    def next(self) -> tuple[list[Spec], torch.Tensor]:
        if not self.pool_size:
            return self.make(self.batch)
        if self.data is None:
            self._fill()
        specs, data = self.make(self.fresh)
        slots = [(self.cursor + i) % self.pool_size for i in range(self.fresh)]
        self.cursor = (self.cursor + self.fresh) % self.pool_size
        self.data[torch.tensor(slots, device=self.data.device)] = data
        for slot, spec in zip(slots, specs):
            self.specs[slot] = spec
        pick = torch.randperm(self.pool_size, generator=self.generator)[:self.batch]
        return [self.specs[i] for i in pick.tolist()], self.data[pick.to(self.data.device)]


class CaptionTokens:
    """Token ids [B, 77] for captions, padded as Stable Diffusion does.

    Every word of the world's vocabulary is one token, so a caption made of them is tokenized
    by a dictionary look-up (the tokenizer takes ~70 us a caption, too slow for a GPU step);
    any other caption goes through the tokenizer itself.
    """

    def __init__(self, tokenizer, device: torch.device, words: list[str] | None = None):
        self.tokenizer, self.device = tokenizer, device
        self.length = int(tokenizer.model_max_length)
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id
        self.word_ids: dict[str, int] = {}
        for word in words if words is not None else world_vocabulary():
            ids = tokenizer(word, add_special_tokens=False).input_ids
            if len(ids) == 1 and word == word.lower():
                self.word_ids[word] = ids[0]

    def ids(self, text: str) -> list[int]:
        words = text.split()
        if len(words) + 2 <= self.length and all(w in self.word_ids for w in words):
            row = [self.bos] + [self.word_ids[w] for w in words] + [self.eos]
            return row + [self.pad] * (self.length - len(row))
        return self.tokenizer(text, padding="max_length", truncation=True,
                              max_length=self.length).input_ids

    def __call__(self, captions: list[str]) -> torch.Tensor:
        rows = torch.tensor([self.ids(c) for c in captions], dtype=torch.long)
        return rows.to(self.device, non_blocking=True)


def object_phrase(spec: Spec, generator: torch.Generator, name_share: float = 0.0) -> str:
    """What oneword's templates call the object: a hidden subject's name or class word (see
    `subject_noun`), a class member's class word, or its attributes."""
    if spec.subject is not None:
        return subject_noun(spec, generator, name_share)
    return spec.class_word or describe(spec)


def training_captions(specs: list[Spec], config: WorldModelConfig,
                      generator: torch.Generator) -> list[str]:
    """Grammar captions, some empty (for guidance), some from oneword's TI templates."""
    draws = torch.rand(len(specs), generator=generator).tolist()
    picks = torch.randint(len(OBJECT_TEMPLATES), (len(specs),), generator=generator).tolist()
    out = []
    for spec, u, k in zip(specs, draws, picks):
        if u < config.cond_drop:
            out.append("")
        elif u < config.cond_drop + config.template_share:
            out.append(OBJECT_TEMPLATES[k].format(object_phrase(spec, generator,
                                                                config.name_share)))
        else:
            out.append(caption(spec, generator, config.name_share))
    return out


class Ema:
    """Exponential moving average of parameters (fp32), with the usual warm-up of the decay."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.decay = decay
        self.live = [p.detach() for p in params]
        self.shadow = [p.detach().float().clone() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.float() for p in self.live], 1 - decay)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for shadow, p in zip(self.shadow, self.live):
            p.copy_(shadow)


def make_optimizer(params, lr: float, weight_decay: float, device: torch.device):
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay,
                             **extra)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def size_report(parts: Components) -> dict[str, dict[str, float]]:
    """Parameters (millions) and fp16 size (MB) of each trained module and in total."""
    out = {}
    for name in ("text_encoder", "unet", "vae"):
        n = parameter_count(getattr(parts, name))
        out[name] = {"params_m": round(n / 1e6, 3), "fp16_mb": round(2 * n / 1e6, 2)}
    total = sum(v["params_m"] for v in out.values())
    out["total"] = {"params_m": round(total, 3), "fp16_mb": round(2 * total, 2)}
    return out


# -- phases --------------------------------------------------------------------------------
@dataclass
class PhaseLog:
    name: str
    steps: int = 0
    seconds: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last)
    samples_per_s: float = 0.0


def run_phase(log: PhaseLog, step_fn: Callable[[int], torch.Tensor], optimizer, base_lr: float,
              max_steps: int, seconds: float, batch: int, config: WorldModelConfig,
              device: torch.device) -> PhaseLog:
    """Optimizer steps until `max_steps` or `seconds` (whichever comes first); the cosine lr
    follows whichever of the two is further along. Prints a line every `log_every` steps."""
    start = time.monotonic()
    total, count = torch.zeros((), device=device), 0
    while log.steps < max_steps:
        progress = max(log.steps / max_steps, (time.monotonic() - start) / max(seconds, 1e-9))
        if progress >= 1:
            break
        lr = base_lr * lr_multiplier(log.steps, progress, config.warmup_steps, config.min_lr_share)
        for group in optimizer.param_groups:
            group["lr"] = lr
        total += step_fn(log.steps)
        count += 1
        log.steps += 1
        if log.steps % config.log_every == 0 or log.steps == 1:
            mean = float(total) / count  # synchronises
            if not math.isfinite(mean):
                raise OnewordError(f"world model {log.name} training diverged at step "
                                   f"{log.steps} (loss {mean}); lower --lr")
            total, count = torch.zeros((), device=device), 0
            log.losses.append((log.steps, round(mean, 5)))
            spent = time.monotonic() - start
            print(f"[{log.name}] step {log.steps} loss {mean:.4f} lr {lr:.2e} "
                  f"{spent:.0f}s {log.steps * batch / max(spent, 1e-9):.0f} img/s", flush=True)
    if count:
        mean = float(total) / count
        log.losses.append((log.steps, round(mean, 5)))
    _sync(device)
    log.seconds = round(time.monotonic() - start, 2)
    log.samples_per_s = round(log.steps * batch / max(log.seconds, 1e-9), 1)
    return log


def render_images(n: int, config: WorldModelConfig, gens: Generators,
                  device: torch.device) -> tuple[list[Spec], torch.Tensor]:
    """Specs and renders [n,4,64,64]: RGB in [0,1], then the pixels' loss weights."""
    specs = sample_specs(n, gens.specs, hidden_fraction=config.hidden_fraction,
                         member_fraction=config.member_fraction)
    images, coverage = render_with_coverage(specs, gens.render, device)
    return specs, torch.cat([images, pixel_weights(coverage, config)], 1)


def pixel_weights(coverage: torch.Tensor, config: WorldModelConfig) -> torch.Tensor:
    """Loss weights [B,1,h,w] from `render_with_coverage`'s coverage [B,3,h,w]: 1 on the
    scene, more on the object, its pattern and a hidden subject's mark."""
    extra = torch.tensor([config.object_weight, config.pattern_weight, config.mark_weight],
                         device=coverage.device).view(1, 3, 1, 1)
    return 1 + (coverage * extra).sum(1, keepdim=True)


def vae_loss(vae, images: torch.Tensor, weights: torch.Tensor, config: WorldModelConfig,
             generator: torch.Generator) -> torch.Tensor:
    """MSE weighted by `weights` [B,1,64,64] (from `pixel_weights`) + l1_weight * L1 on pixels
    in [-1, 1], + kl_weight * KL (summed per sample)."""
    x = images * 2 - 1
    dist = vae.encode(x).latent_dist
    z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator,
                                           device=x.device, dtype=dist.mean.dtype)
    rec = vae.decode(z).sample.float()
    mean, logvar = dist.mean.float(), dist.logvar.float()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1).mean()
    mse = diffusion.weighted_per_sample_mse(rec, x, weights).mean()
    return mse + config.l1_weight * F.l1_loss(rec, x) + config.kl_weight * kl


def train_vae(parts: Components, config: WorldModelConfig, gens: Generators,
              device: torch.device, seconds: float) -> PhaseLog:
    vae = parts.vae.train().requires_grad_(True)
    params = list(vae.parameters())
    optimizer = make_optimizer(params, config.vae_lr, config.weight_decay, device)
    stream = Stream(lambda n: render_images(n, config, gens, device), config.vae_batch_size,
                    config.fresh_share, config.pool_batches, gens.pool)
    amp = use_vae_amp(config, device)

    def step(_: int) -> torch.Tensor:
        _, images = stream.next()
        with amp_context(device, amp):
            loss = vae_loss(vae, images[:, :3], images[:, 3:], config, gens.noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        return loss.detach().float()

    log = run_phase(PhaseLog("vae"), step, optimizer, config.vae_lr, config.vae_steps, seconds,
                    config.vae_batch_size, config, device)
    vae.eval().requires_grad_(False)
    return log


@torch.no_grad()
def encode_latent_params(vae, images: torch.Tensor, amp: bool) -> torch.Tensor:
    """Unscaled posterior mean and std, concatenated on channels [B, 2c, h, w] (fp32)."""
    with amp_context(images.device, amp):
        dist = vae.encode(images * 2 - 1).latent_dist
    return torch.cat([dist.mean.float(), dist.std.float()], 1)


def sample_latents(params: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    mean, std = params.chunk(2, dim=1)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device)
    return mean + std * noise


@torch.no_grad()
def measure_scaling_factor(vae, config: WorldModelConfig, gens: Generators,
                           device: torch.device) -> float:
    """1 / std of sampled latents of fresh renders, so scaled latents have unit std."""
    values = []
    batch = config.vae_batch_size
    for i in range(0, config.scale_images, batch):
        _, images = render_images(min(batch, config.scale_images - i), config, gens, device)
        params = encode_latent_params(vae, images[:, :3], use_vae_amp(config, device))
        values.append(sample_latents(params, gens.noise).flatten())
    std = float(torch.cat(values).std())
    if not (math.isfinite(std) and std > 0):
        raise OnewordError(f"world model VAE latents have std {std}; the VAE did not train")
    return float(f"{1 / std:.5g}")


def snr_weights(alpha_bar: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023); ones when gamma is 0."""
    if not gamma:
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


class FeatureAlignment:
    """Representation alignment (REPA; Yu et al. 2024, "Representation Alignment for
    Generation: Training Diffusion Transformers Is Easier Than You Think").

    For each UNet down block in `blocks`, a small projector maps the block's hidden states (from
    the noisy input; for 16x16 latents block 0 works at 16x16, block 1 at 8x8) to a frozen
    encoder's features of the clean image at the same resolution (its last convolution there);
    the loss is 1 - their cosine similarity, averaged over positions and blocks. It only shapes
    what the UNet learns: the projectors are dropped after training and the saved UNet is a plain
    SD UNet. The encoder here is the world's oracle (the part of REPA that DINOv2 plays); it
    knows shapes, which the UNet otherwise learns slowly. Its features enter no sampling path.
    """

    def __init__(self, unet, oracle, device: torch.device, seed: int = 0,
                 blocks: tuple[int, ...] = (1,), latent_size: int = 16):
        self.oracle = oracle.eval().requires_grad_(False)
        self.blocks = tuple(blocks)
        self.teacher = {b: _last_conv_at(self.oracle.body, latent_size // 2 ** b) for b in blocks}
        if any(width % 4 ** b for b, (_, width) in self.teacher.items()):
            raise OnewordError(f"--align-blocks {blocks}: the oracle's widths do not fold onto "
                               "the latent grid")
        self.hidden: dict[int, torch.Tensor] = {}
        self.handles, projectors = [], []
        with torch.random.fork_rng(devices=[]):  # torch.nn initialises from the global RNG
            torch.manual_seed(seed)
            for b in self.blocks:
                block = unet.down_blocks[b]
                site = block.attentions[0] if getattr(block, "attentions", None) else block.resnets[0]
                self.handles.append(site.register_forward_hook(partial(self._keep, b)))
                projectors.append(torch.nn.Sequential(
                    torch.nn.Conv2d(block.resnets[0].out_channels, 256, 1), torch.nn.SiLU(),
                    torch.nn.Conv2d(256, 256, 1), torch.nn.SiLU(),
                    torch.nn.Conv2d(256, self.teacher[b][1], 1)))
        self.projectors = torch.nn.ModuleList(projectors).to(device)

    def _keep(self, block: int, _module, _inputs, output) -> None:
        self.hidden[block] = (output[0] if isinstance(output, tuple)
                              else getattr(output, "sample", output))

    @torch.no_grad()
    def targets(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """Oracle features of clean renders [B,3,64,64] in [0,1] for every block, concatenated
        along channels on the latents' `size` x `size` grid (fp32), so they are pooled with the
        latents: block b's [C, size/2^b, size/2^b] features are folded depth-to-space into
        [C/4^b, size, size] (`loss` unfolds them; no copy, no interpolation)."""
        wanted = {layer: b for b, (layer, _) in self.teacher.items()}
        x, found = images.float() * 2 - 1, {}
        for i, layer in enumerate(self.oracle.body[:max(wanted) + 1]):
            x = layer(x)
            if i in wanted:
                found[wanted[i]] = F.pixel_shuffle(x, size // x.shape[-1])
        return torch.cat([found[b] for b in self.blocks], 1)

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """1 - cosine similarity of the projected hidden states and the targets, averaged."""
        teachers = targets.split([self.teacher[b][1] // 4 ** b for b in self.blocks], dim=1)
        losses = []
        for b, projector, teacher in zip(self.blocks, self.projectors, teachers):
            student = projector(self.hidden[b].float())
            teacher = F.pixel_unshuffle(teacher, 2 ** b)
            losses.append(1 - F.cosine_similarity(student, teacher, dim=1).mean())
        return torch.stack(losses).mean()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.hidden = {}


def _last_conv_at(body: torch.nn.Sequential, size: int) -> tuple[int, int]:
    """(index, channels) of the last convolution in `body` with a `size` x `size` output for a
    64 px input."""
    x, found = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=next(body.parameters()).device), None
    with torch.no_grad():
        for i, layer in enumerate(body):
            x = layer(x)
            if isinstance(layer, torch.nn.Conv2d) and x.shape[-1] == size:
                found = (i, x.shape[1])
    if found is None:
        raise OnewordError(f"--align-blocks: the oracle has no {size}x{size} features to align to")
    return found


def make_alignment(unet, config: WorldModelConfig, device: torch.device):
    """The REPA helper when `align_weight` > 0 (needs the oracle's weights), else None."""
    if not config.align_weight:
        return None
    oracle = _oracle_or_none(device)
    if oracle is None:
        from .oracle import WEIGHTS
        raise OnewordError(f"--align-weight {config.align_weight}: needs the oracle at {WEIGHTS}; "
                           "train it (python -m oneword.world.oracle train) or pass 0")
    return FeatureAlignment(unet, oracle, device, seed=config.seed, blocks=config.align_blocks,
                            latent_size=config.latent_size)


def train_unet(parts: Components, config: WorldModelConfig, gens: Generators,
               device: torch.device, seconds: float) -> tuple[PhaseLog, Ema | None]:
    unet, text_encoder, vae = parts.unet, parts.text_encoder, parts.vae
    unet.train().requires_grad_(True)
    text_encoder.train().requires_grad_(True)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = make_optimizer(params, config.lr, config.weight_decay, device)
    ema = Ema(params, config.ema_decay) if config.ema_decay else None
    amp = use_amp(config, device)
    scale = float(vae.config.scaling_factor)
    prediction_type = parts.scheduler.config.prediction_type
    alphas = parts.scheduler.alphas_cumprod.to(device, torch.float32)
    tokens = CaptionTokens(parts.tokenizer, device)
    forward = torch.compile(unet) if config.compile else unet

    vae_amp = use_vae_amp(config, device)
    align = make_alignment(unet, config, device)
    if align is not None:
        params += list(align.projectors.parameters())
        optimizer.add_param_group({"params": list(align.projectors.parameters())})
    channels = 2 * vae.config.latent_channels + 1

    def make(n: int):  # [n, 2c+1 (+f), h, w]: posterior mean, std, loss weights (, REPA)
        specs, images = render_images(n, config, gens, device)
        params = encode_latent_params(vae, images[:, :3], vae_amp)
        size = params.shape[-1]
        pieces = [params, F.adaptive_avg_pool2d(images[:, 3:], params.shape[-2:])]
        if align is not None:
            pieces.append(align.targets(images[:, :3], size))
        return specs, torch.cat(pieces, 1)

    stream = Stream(make, config.batch_size, config.fresh_share, config.pool_batches,
                    gens.pool)

    def step(i: int) -> torch.Tensor:
        specs, stored = stream.next()
        latent_params, targets = stored[:, :channels], stored[:, channels:]
        latents = sample_latents(latent_params[:, :-1], gens.noise) * scale
        ids = tokens(training_captions(specs, config, gens.captions))
        noise = torch.randn(latents.shape, generator=gens.noise, device=device)
        t = torch.randint(0, alphas.shape[0], (latents.shape[0],), generator=gens.noise,
                          device=device)
        alpha_bar = alphas[t]
        noisy = diffusion.add_noise(latents, noise, alpha_bar)
        with amp_context(device, amp):
            states = text_encoder(ids)[0]
            pred = forward(noisy, t, encoder_hidden_states=states).sample
        target = diffusion.prediction_target(prediction_type, latents, noise, alpha_bar)
        weights = snr_weights(alpha_bar, config.min_snr_gamma, prediction_type)
        pixels = latent_params[:, -1:]
        loss = (diffusion.weighted_per_sample_mse(pred, target, pixels) * weights).mean()
        if align is not None:
            loss = loss + config.align_weight * align.loss(targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(i)
        return loss.detach().float()

    log = run_phase(PhaseLog("unet"), step, optimizer, config.lr, config.steps, seconds,
                    config.batch_size, config, device)
    if align is not None:
        align.close()
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return log, ema


@torch.no_grad()
def reconstruction_check(vae, oracle, n: int, seed: int, device: torch.device,
                         batch: int = 128) -> dict[str, dict[str, float]]:
    """Oracle accuracy per head on fresh renders and on their VAE reconstructions."""
    from .oracle import HEADS, labels
    g = torch.Generator(device=device).manual_seed(seed)
    hits = {"real": {k: 0 for k in HEADS}, "vae": {k: 0 for k in HEADS}}
    for i in range(0, n, batch):
        specs = sample_specs(min(batch, n - i), torch.Generator().manual_seed(seed + i))
        images = render_batch(specs, g, device)
        dist = vae.encode(images * 2 - 1).latent_dist
        recon = ((vae.decode(dist.mean).sample.float() + 1) / 2).clamp(0, 1)
        target = labels(specs, device)
        for kind, x in (("real", images), ("vae", recon)):
            logits = oracle(x)
            for k in HEADS:
                hits[kind][k] += int((logits[k].argmax(1) == target[k]).sum())
    return {kind: {k: round(v / n, 4) for k, v in h.items()} for kind, h in hits.items()}


def _oracle_or_none(device: torch.device):
    from .oracle import WEIGHTS, load_oracle
    return load_oracle(device) if WEIGHTS.exists() else None


# -- the whole run -------------------------------------------------------------------------
def build_world_components(config: WorldModelConfig) -> Components:
    if config.init_from is not None:
        parts = load_components(config.init_from)
        add_subject_names(parts)
        return parts
    return build_components(world_vocabulary(), config.shapes, seed=config.seed)


def add_subject_names(parts: Components) -> list[str]:
    """Give a loaded model's tokenizer the hidden subjects' names it lacks, one token each,
    whose embeddings start at the subject's class word; returns the names added."""
    tokenizer = parts.tokenizer
    missing = [s for s in HIDDEN_SUBJECTS
               if len(tokenizer(s.name, add_special_tokens=False).input_ids) != 1]
    if not missing:
        return []
    tokenizer.add_tokens([s.name for s in missing])
    parts.text_encoder.resize_token_embeddings(len(tokenizer))
    table = parts.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for s in missing:
            [class_id] = tokenizer(s.class_word, add_special_tokens=False).input_ids
            table[tokenizer.convert_tokens_to_ids(s.name)] = table[class_id]
    return [s.name for s in missing]


def save_fp16(parts: Components, folder: Path) -> dict[str, float]:
    """Save the pipeline with fp16 weights (copies: `parts` stay as they are); returns the
    size (MB) of each weights file."""
    half = [copy.deepcopy(m).to("cpu", torch.float16)
            for m in (parts.text_encoder, parts.unet, parts.vae)]
    save_components(Components(parts.tokenizer, *half, parts.scheduler), folder)
    files = sorted(folder.glob("*/*.safetensors"))
    return {str(p.relative_to(folder)): round(p.stat().st_size / 1e6, 2) for p in files}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, "\
           f"{torch.get_num_threads()} threads)"


def train_world_model(config: WorldModelConfig, out: str | Path, device: str | torch.device,
                      start: float | None = None, oracle_check: int = 512) -> dict:
    """Train the world model and save it (fp16 diffusers folder + train_log.json) in `out`.

    `start` (time.monotonic()) is when the budget began; default now. Returns the log.
    """
    clock = Clock(config.minutes, start)
    device = torch.device(device)
    out = Path(out)
    gens = Generators.from_seed(config.seed, device)
    parts = build_world_components(config)
    sizes = size_report(parts)
    print("parameters: " + ", ".join(f"{k} {v['params_m']:.2f}M ({v['fp16_mb']:.1f} MB fp16)"
                                     for k, v in sizes.items()), flush=True)
    for name in ("text_encoder", "unet", "vae"):
        getattr(parts, name).to(device)
    if config.init_from is None:
        train_seconds = clock.seconds_left(config.reserve_share)
        vae_log = train_vae(parts, config, gens, device, train_seconds * config.vae_share)
        scale = measure_scaling_factor(parts.vae, config, gens, device)
        parts.vae.register_to_config(scaling_factor=scale)
    else:  # continued training keeps the VAE, so the UNet's latents keep their meaning
        vae_log, scale = PhaseLog("vae"), float(parts.vae.config.scaling_factor)
        parts.vae.eval().requires_grad_(False)
    print(f"vae scaling factor {scale}", flush=True)
    unet_seconds = clock.seconds_left(config.reserve_share)
    unet_log, ema = train_unet(parts, config, gens, device, unet_seconds)
    if ema is not None:
        ema.copy_to_params()
    files = save_fp16(parts, out)
    write_model_settings(out, {"learn_steps": LEARN_STEPS})
    log = _run_log(config, device, sizes, scale, vae_log, unet_log, files, clock)
    (out / LOG_NAME).write_text(json.dumps(log, indent=2) + "\n")
    print(f"saved {out} in {clock.elapsed():.0f}s: " + ", ".join(
        f"{k} {v} MB" for k, v in files.items()), flush=True)
    check = _vae_check(parts, device, oracle_check, clock, config)
    if check is not None:
        log["reconstruction_oracle"] = check
        (out / LOG_NAME).write_text(json.dumps(log, indent=2) + "\n")
    return log


def _vae_check(parts, device, n, clock: Clock, config: WorldModelConfig):
    """Oracle accuracy on reconstructions, if the oracle exists and the budget is not spent
    (it runs after saving, so it never holds the model back)."""
    if not n or clock.seconds_left() <= 0:
        return None
    oracle = _oracle_or_none(device)
    if oracle is None:
        return None
    check = reconstruction_check(parts.vae, oracle, n, seed=config.seed + 777, device=device)
    print("oracle on real / VAE-reconstructed renders: " + ", ".join(
        f"{k} {check['real'][k]:.2f}/{check['vae'][k]:.2f}" for k in check["real"]), flush=True)
    return check


def _run_log(config, device, sizes, scale, vae_log, unet_log, files, clock) -> dict:
    big = {k: v for k, v in files.items() if v >= MAX_FILE_MB}
    if big or sum(files.values()) > MAX_TOTAL_MB:
        print(f"warning: weights exceed {MAX_FILE_MB} MB per file or {MAX_TOTAL_MB} MB in all: "
              f"{files}", flush=True)
    return {"config": asdict(config), "device": str(device), "device_name": _device_name(device),
            "torch": torch.__version__, "sizes": sizes, "files_mb": files,
            "scaling_factor": scale, "phases": {"vae": asdict(vae_log), "unet": asdict(unet_log)},
            "reconstruction_oracle": None, "wall_seconds": round(clock.elapsed(), 1)}


def verify(folder: Path, device: str) -> tuple[int, ...]:
    """Load the saved folder as oneword does and draw one image; returns its shape."""
    from ..core.generate import Sampling, draw
    model = load_model(str(folder), device)
    image = draw(model, ["a photo of a red star on the beach"], [0], None,
                 Sampling(steps=4, cfg=3.0, scheduler="ddim", size=IMAGE_SIZE))
    if image.shape != (1, 3, IMAGE_SIZE, IMAGE_SIZE) or not torch.isfinite(image).all():
        raise OnewordError(f"{folder}: the saved world model draws {tuple(image.shape)} images")
    return tuple(image.shape)


# -- command line --------------------------------------------------------------------------
def _blocks(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give block numbers like 0,1") from None


_OVERRIDES = {"minutes": float, "steps": int, "vae_steps": int, "batch_size": int,
              "vae_batch_size": int, "lr": float, "vae_lr": float, "vae_share": float,
              "hidden_fraction": float, "member_fraction": float, "fresh_share": float,
              "object_weight": float, "pattern_weight": float, "mark_weight": float,
              "align_weight": float, "align_blocks": _blocks, "name_share": float,
              "init_from": str,
              "ema_decay": float, "log_every": int, "seed": int}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m oneword.world.model",
                                description="Train oneword's world model (see the module doc).")
    p.add_argument("cmd", choices=["train"])
    p.add_argument("--out", required=True, help="folder for the diffusers pipeline")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: best available)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="settings for the machine (default: gpu on CUDA, else cpu)")
    for name, kind in _OVERRIDES.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help="overrides the preset" + ("; 0: no time limit"
                                                      if name == "minutes" else ""))
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (compiling takes a minute or more)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (on a busy machine 1 can be fastest)")
    p.add_argument("--no-verify", action="store_true", help="skip loading the saved model back")
    p.add_argument("--oracle-check", type=int, default=None,
                   help="renders for the oracle's VAE check after saving, when its weights "
                        "exist (default: 512 on CUDA, 128 elsewhere; 0: skip)")
    return p


def config_from_args(args) -> WorldModelConfig:
    from ..adapters.device import pick_device
    device = pick_device(args.device)
    name = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    if overrides.get("minutes") == 0:
        overrides["minutes"] = None
    if args.compile:
        overrides["compile"] = True
    return preset(name, **overrides)


def main(argv: list[str] | None = None) -> int:
    start = time.monotonic()
    args = _parser().parse_args(argv)
    try:
        return _train_command(args, start)
    except OnewordError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


def _train_command(args, start: float) -> int:
    from ..adapters.device import pick_device
    device = pick_device(args.device)
    config = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    print(f"training the world model on {_device_name(device)}: {json.dumps(asdict(config))}",
          flush=True)
    check = args.oracle_check
    if check is None:
        check = 512 if device.type == "cuda" else 128
    log = train_world_model(config, args.out, device, start=start, oracle_check=check)
    vae, unet = log["phases"]["vae"], log["phases"]["unet"]
    print(f"done: vae {vae['steps']} steps ({vae['samples_per_s']:.0f} img/s), unet "
          f"{unet['steps']} steps ({unet['samples_per_s']:.0f} img/s), scaling factor "
          f"{log['scaling_factor']}", flush=True)
    if not args.no_verify:
        shape = verify(Path(args.out), str(device))
        print(f"verified: load_model draws {shape} images ({time.monotonic() - start:.0f}s)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
