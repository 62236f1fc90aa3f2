"""How the world model is trained: its configuration, the presets for a GPU and a 2-core CPU,
and the vocabulary its tokenizer knows."""

from dataclasses import dataclass
from pathlib import Path

from ..adapters.tiny import (
    TinyShapes,
)
from ..adapters.tokenizer import TINY_EXTRA_WORDS
from ..core.prompts import template_words
from ..errors import OnewordError
from .captions import vocabulary

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
    name_share: float = 0.7
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
        return TinyShapes(
            text_width=self.text_width,
            text_layers=self.text_layers,
            unet_channels=tuple(self.unet_channels),
            vae_channels=tuple(self.vae_channels),
            unet_layers=self.unet_layers,
            latent_size=self.latent_size,
        )


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
    for name in (
        "weight_decay",
        "grad_clip",
        "l1_weight",
        "kl_weight",
        "min_snr_gamma",
        "object_weight",
        "align_weight",
        "pattern_weight",
        "mark_weight",
    ):
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
    if (
        not c.align_blocks
        or len(set(c.align_blocks)) != len(c.align_blocks)
        or any(not 0 <= b < len(c.unet_channels) for b in c.align_blocks)
    ):
        _fail(
            "align_blocks",
            c.align_blocks,
            f"give distinct down blocks from 0 to {len(c.unet_channels) - 1}",
        )


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
    "cpu": dict(
        minutes=110.0,
        batch_size=32,
        vae_batch_size=16,
        lr=4e-4,
        vae_lr=1e-3,
        warmup_steps=100,
        fresh_share=0.25,
        pool_batches=32,
        scale_images=256,
        vae_amp=True,
        log_every=20,
    ),
    # Seconds: for tests and smoke runs (a tiny architecture, a few steps, no budget).
    "tiny": dict(
        minutes=None,
        vae_steps=2,
        steps=2,
        batch_size=4,
        vae_batch_size=4,
        warmup_steps=1,
        scale_images=8,
        text_width=32,
        text_layers=1,
        unet_channels=(32, 64),
        vae_channels=(8, 8, 16),
        ema_decay=0.9,
        align_weight=0.0,
        log_every=1,
    ),
}


def preset(name: str, **overrides) -> WorldModelConfig:
    if name not in PRESETS:
        raise OnewordError(f"--preset {name}: choose one of {', '.join(PRESETS)}")
    return WorldModelConfig(**{**PRESETS[name], **overrides})


def world_vocabulary() -> list[str]:
    """Whole-word tokens: the world's grammar, oneword's templates and common init words."""
    return sorted(set(vocabulary()) | set(template_words()) | set(TINY_EXTRA_WORDS))
