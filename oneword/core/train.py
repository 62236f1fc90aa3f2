"""Textual Inversion (Gal et al. 2022, "An Image is Worth One Word").

Every weight of the model stays frozen; gradient descent on the noise-prediction loss finds the
placeholder rows of the token table that make the model draw the user's photos. The trainer
carries one more dimension than the paper: K candidates (different seeds, inits or learning
rates) train side by side in one batch, each sample conditioned on its own candidate's rows, so
that K batched candidates learn exactly what K separate runs would.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..checks import at_least, finite, seed_range
from ..errors import Interrupted, OnewordError, WriteFailed
from ..events import Checkpointed, EventSink, Finished, Message, Started, Stepped, ignore
from . import diffusion
from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointFile,
    TrainingState,
    load_checkpoint,
    save_checkpoint,
    uninterrupted,
)
from .flat_stop import FlatStop, FlatWatch, flat_watch
from .init_word import describe_init, init_token_ids
from .interface import TextToImage
from .latents import (
    Batch,
    PhotoLatents,
    batch_loss,
    draw_batch,
    encode_photos,
    photos_fingerprint,
)
from .memory import OutOfMemory, draw_previews, encode_training_photos, memory_advice
from .per_layer import spread_over_layers, word_layers
from .prompts import MODES, templates, token_string
from .recipes import Recipe, RecipeTerms, recipe_first_rows
from .vectors import initial_rows_by_layout, vector_words

log = logging.getLogger(__name__)

# re-exported: where a run keeps its state, and how its photos are drawn
__all__ = [
    "CHECKPOINT_NAME",
    "TrainingState",
    "Batch",
    "batch_loss",
    "draw_batch",
    "encode_photos",
    "OutOfMemory",
]


@dataclass(frozen=True)
class Candidate:
    """One embedding being learned: its randomness, its starting point and its learning rate."""

    seed: int
    init: str = "word"  # "word": the init word's rows; "random": random rows of vocabulary norm
    jitter: float = 0.0  # Gaussian noise on the init, in units of the vocabulary's spread
    lr: float | None = None  # None: the run's lr

    def __post_init__(self):
        if self.init not in ("word", "random"):
            raise OnewordError(f"candidate init {self.init!r}: choose 'word' or 'random'")
        seed_range(self.seed, "candidate seed")
        finite(self.jitter, "--jitter", low=0)
        if self.lr is not None and not (finite(self.lr, "candidate lr") > 0):
            raise OnewordError(f"candidate lr {self.lr}: must be positive")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a Textual Inversion run learns."""

    token: str
    init_word: str | None = None
    vectors: int = 1
    per_layer: bool = False  # P+: one set of vectors per cross-attention layer (core.per_layer)
    mode: str = "object"
    steps: int = 3000
    lr: float = 5e-3
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 1
    grad_accum: int = 4
    resolution: int | None = None  # None: the model's native resolution
    crop: str = "center"
    crops_per_photo: int = 4  # random crops cached per photo when crop == "random"
    flip: bool = True
    seed: int = 0
    candidates: tuple[Candidate, ...] = ()  # empty: one candidate with `seed`
    max_batch: int | None = None  # samples per forward pass; None: all at once
    checkpoint_every: int = 100
    preview_every: int = 0
    preview_prompts: tuple[str, ...] = ()
    stop_when_flat: FlatStop | None = None  # DVAR early stop (core.flat_stop)
    # Train only up to this step; the lr schedule still spans `steps`, so a run stopped here
    # and continued later (a rung of successive halving) learns what one whole run does.
    stop_at: int | None = None
    # Masked training: the loss weight outside the photos' masks (weight = floor + (1 - floor)
    # · mask); None: no masks, every pixel counts the same.
    mask_floor: float | None = None
    # Less memory, the same result up to rounding: UNet gradient checkpointing (activations
    # recomputed in the backward pass), VAE slicing, the photos encoded one at a time
    low_memory: bool = False
    # How the word is learned (core.recipes): plain TI, directional, cross-init or core
    recipe: Recipe = Recipe()

    @property
    def last_step(self) -> int:
        return self.steps if self.stop_at is None else min(self.steps, self.stop_at)

    def __post_init__(self):
        _validate(self)

    @property
    def candidate_list(self) -> tuple[Candidate, ...]:
        return self.candidates or (Candidate(seed=self.seed),)

    @property
    def token_text(self) -> str:
        return token_string(self.token, self.vectors)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "TrainConfig":
        data = json.loads(text)
        data["candidates"] = tuple(Candidate(**c) for c in data.get("candidates", ()))
        data["preview_prompts"] = tuple(data.get("preview_prompts", ()))
        flat = data.get("stop_when_flat")
        data["stop_when_flat"] = FlatStop(**flat) if flat else None
        data["recipe"] = Recipe(**data.get("recipe", {}))
        return TrainConfig(**data)


def _validate(c: TrainConfig) -> None:
    if not c.token or any(ch.isspace() for ch in c.token):
        raise OnewordError(f"--token {c.token!r}: give one word without spaces, e.g. <my-cat>")
    if c.mode not in MODES:
        raise OnewordError(f"--mode {c.mode}: choose one of {', '.join(MODES)}")
    if c.crop not in ("center", "random"):
        raise OnewordError(f"--crop {c.crop}: choose center or random")
    if c.lr_schedule not in diffusion.LR_SCHEDULES:
        raise OnewordError(
            f"--lr-schedule {c.lr_schedule}: choose one of {', '.join(diffusion.LR_SCHEDULES)}"
        )
    positive = {
        "vectors": c.vectors,
        "steps": c.steps,
        "batch_size": c.batch_size,
        "grad_accum": c.grad_accum,
        "crops_per_photo": c.crops_per_photo,
        "checkpoint_every": c.checkpoint_every,
    }
    for name, value in positive.items():
        at_least(value, f"--{name.replace('_', '-')}", 1)
    at_least(c.warmup_steps, "--warmup-steps", 0)
    at_least(c.preview_every, "--preview-every", 0)
    finite(c.weight_decay, "--weight-decay", low=0)
    if not finite(c.lr, "--lr") > 0:
        raise OnewordError(f"--lr {c.lr}: must be positive")
    seed_range(c.seed)
    if c.resolution is not None and (c.resolution < 8 or c.resolution % 8):
        raise OnewordError(f"--resolution {c.resolution}: must be a multiple of 8")
    if c.stop_at is not None:
        at_least(c.stop_at, "stop_at", 1)
    if c.mask_floor is not None:
        finite(c.mask_floor, "--mask-floor", low=0, high=1)
    if c.max_batch is not None and c.max_batch < 1:
        raise OnewordError(f"--max-batch {c.max_batch}: must be 1 or more")
    words = vector_words(c.init_word)
    if words and (len(words) != c.vectors or not all(words)):
        raise OnewordError(
            f"--init {c.init_word!r}: {len(words)} comma-separated words for --vectors "
            f"{c.vectors}; give one word per vector (or --vectors {len(words)}), none empty"
        )
    needs_word = any(k.init == "word" for k in c.candidate_list)
    if needs_word and not (c.init_word and c.init_word.strip()):
        raise OnewordError(
            "--init is missing: give a word for what the photos show "
            "(e.g. --init cat), which the new token starts from"
        )


class TrainingDiverged(OnewordError):
    pass


def start_state(
    model: TextToImage, config: TrainConfig, start_rows: torch.Tensor | None = None
) -> TrainingState:
    """Fresh rows, optimizer and per-candidate generators. start_rows [K, ...]: each
    candidate's rows to start from instead of its init (words bred from trained ones, trained
    on: population-based training, Jaderberg et al. 2017); the generators are seeded alike."""
    init_ids = init_token_ids(model, config.init_word)
    generators, params, groups = [], [], []
    table = model.vocabulary_table
    layout = getattr(model, "embedding_layout", (table.shape[1],))
    layers = word_layers(model.cross_attention_layers, model.name) if config.per_layer else 1
    for cand in config.candidate_list:
        gen = torch.Generator().manual_seed(cand.seed)
        rows = initial_rows_by_layout(
            table, layout, init_ids, config.vectors, cand.init, cand.jitter, gen
        )
        if start_rows is None:
            rows = recipe_first_rows(model, config.recipe, config.token, rows)
        rows = spread_over_layers(rows, layers) if config.per_layer else rows
        if start_rows is not None:  # the caller checks the shape: [K, *rows.shape]
            rows = start_rows[len(params)].detach().to(rows.dtype).reshape(rows.shape).clone()
        param = torch.nn.Parameter(rows.to(model.device))
        generators.append(gen)
        params.append(param)
        groups.append({"params": [param], "lr": cand.lr or config.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    scaler = loss_scaler(model.device, model.dtype)
    return TrainingState(
        step=0, params=params, optimizer=optimizer, generators=generators, scaler=scaler
    )


def loss_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler | None:
    """A dynamic loss scale for fp16 weights, None otherwise. Gradients through an fp16 UNet
    fall below fp16's range (~1e-5 per element at SD shapes) and vanish unscaled; the scale
    starts at 2^16, halves when a gradient overflows (that step is skipped) and doubles after
    2000 good steps. bf16 has fp32's range and needs none. One scale serves all candidates of
    a batch, so an overflow in one candidate's gradients skips the step for all of them."""
    if dtype != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def optimizer_step(
    model: TextToImage,
    state: TrainingState,
    config: TrainConfig,
    latents: PhotoLatents | list[PhotoLatents],
    caption_ids: torch.Tensor,
    terms: RecipeTerms | None = None,
) -> float:
    """One optimizer step over grad_accum micro-batches; returns the mean loss (the noise
    prediction's; `terms`, the recipe's, is added to what is minimised, not to the loss shown).

    A step happens whole or not at all: interrupted (Ctrl-C, a failure) before the update,
    the generators are put back where the step started, so `state` is the state after the
    previous step, the one a checkpoint may hold."""
    factor = diffusion.lr_factor(state.step, config.steps, config.lr_schedule, config.warmup_steps)
    for group in state.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    state.optimizer.zero_grad(set_to_none=True)
    weight = 1.0 / (config.batch_size * config.grad_accum)  # per-candidate mean
    total = torch.zeros((), device=model.device)
    at_start = [g.get_state() for g in state.generators]
    scaler = state.scaler
    try:
        for _ in range(config.grad_accum):
            rows = torch.stack(list(state.params))  # [K, N, d] or per-layer [K, layers, N, d]
            batch = draw_batch(
                latents, caption_ids, len(model.alphas_cumprod), state.generators, config.batch_size
            )
            total += batch_loss(model, rows, batch, weight, config.max_batch, scaler).mean()
        extra = None if terms is None else terms.loss(model, state.params, state.step)
        if extra is not None:
            (extra if scaler is None else scaler.scale(extra)).backward()
        if scaler is not None:
            scaler.unscale_(state.optimizer)  # the true gradients, checked and stepped on
        grads_finite = torch.stack([p.grad for p in state.params]).isfinite().all()
        loss = float(total) / config.grad_accum  # one device sync per step
        overflow = not bool(grads_finite)
        if terms is not None:
            terms.project(state.params)
        if not math.isfinite(loss) or (overflow and not _may_skip(scaler)):
            raise TrainingDiverged(f"loss became {loss} at step {state.step + 1}")
    except BaseException:
        for gen, saved in zip(state.generators, at_start):
            gen.set_state(saved)
        state.optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # the same scale, without the half step's unscaling
            state.scaler = torch.amp.GradScaler(model.device.type)
            state.scaler.load_state_dict(scaler.state_dict())
        raise
    with uninterrupted():
        if scaler is None:
            state.optimizer.step()
        else:  # skips the update after an overflow, and adjusts the scale
            scaler.step(state.optimizer)
            scaler.update()
            if overflow:
                log.info("step %d: fp16 gradients overflowed; skipped it", state.step + 1)
        state.step += 1
        if terms is not None:
            terms.after_step(state.params, state.step, config.steps)
        state.loss_smoothed = smooth(state.loss_smoothed, loss, state.step)
        state.history.append(loss)
    return loss


def _may_skip(scaler: torch.amp.GradScaler | None) -> bool:
    """Whether an overflow may be skipped: under a loss scale still above 1 (below, the
    gradients themselves are infinite: the run diverged)."""
    return scaler is not None and scaler.get_scale() > 1.0


def check_vectors_fit(model: TextToImage, config: TrainConfig) -> None:
    """Refuse more vectors than the text encoder reads with the longest training caption
    around them (the rest would be cut off); needs the placeholder tokens added."""
    length = int(model.token_ids([""]).shape[-1])
    captions = [t.format(config.token_text) for t in templates(config.mode)]
    longest = max(len(model.word_token_ids(c)) for c in captions) + 2  # start and end
    if longest <= length:
        return
    fit = config.vectors - (longest - length)
    others = longest - config.vectors
    raise OnewordError(
        f"--vectors {config.vectors}: the text encoder reads {length} tokens and the longest "
        f"training caption needs {others} besides the vectors, so at most {max(fit, 0)} fit; "
        f"give --vectors {max(fit, 1)} or fewer"
    )


def caption_token_ids(model: TextToImage, config: TrainConfig) -> torch.Tensor:
    """Token ids [num_templates, L] of every training caption, tokenized once."""
    return model.token_ids([t.format(config.token_text) for t in templates(config.mode)])


def smooth(previous: float, value: float, step: int, beta: float = 0.95) -> float:
    """Bias-corrected exponential moving average of the loss, as in Adam's moments."""
    raw_prev = previous * (1 - beta ** (step - 1)) if step > 1 else 0.0
    return (beta * raw_prev + (1 - beta) * value) / (1 - beta**step)


def train(
    model: TextToImage,
    photos: torch.Tensor | list[torch.Tensor],
    config: TrainConfig,
    run_dir: Path,
    on_event: EventSink = ignore,
    resume: bool = False,
    on_preview=None,
    masks: torch.Tensor | list[torch.Tensor] | None = None,
    start_rows: torch.Tensor | None = None,
) -> TrainingState:
    """Learn the placeholder rows of every candidate; checkpoints and previews go to run_dir.

    photos: [M, 3, R, R] in [-1, 1], every crop/flip variant to sample from; or a list of K
    such tensors, one per candidate (random crops drawn from each candidate's own seed).
    on_preview(step, rows [K, N, d]) renders preview images; it is called every preview_every
    steps. masks: with `config.mask_floor`, the photos' masks [M, 1, R, R] in [0, 1], laid
    out as the photos are, that weight the loss per pixel. start_rows [K, ...]: the
    candidates' rows to start from instead of their inits (see `start_state`).
    """
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_NAME
    if (masks is None) != (config.mask_floor is None):
        raise ValueError("masks and config.mask_floor go together: give both or neither")
    photos_id = photos_fingerprint(photos, masks)
    check_vectors_fit(model, config)
    if config.low_memory:
        model.speed_up(low_memory=True)
    state = start_state(model, config, start_rows)
    # the recipe's anchors come from the init word, for children started from bred rows too
    first = state if start_rows is None else start_state(model, config)
    terms = RecipeTerms(model, config.recipe, config.token, first.rows())
    note = describe_init(model, config.init_word)
    if note and not resume:
        on_event(Message(note))
    if resume:
        if not ckpt.exists():
            raise OnewordError(f"--resume: {ckpt} does not exist; start without --resume")
        load_checkpoint(state, config, photos_id, ckpt)
    elif ckpt.exists():
        raise OnewordError(
            f"{run_dir}: this run folder already has a checkpoint; pass --resume "
            "to continue it or choose another --out"
        )
    else:
        save_checkpoint(state, config, photos_id, ckpt)  # a good state to fall back to
    latents = encode_training_photos(model, photos, config, len(state.params), masks)
    caption_ids = caption_token_ids(model, config)
    on_event(
        Started(
            config.steps,
            state.step,
            len(state.params),
            config.batch_size * config.grad_accum * len(state.params),
        )
    )
    checkpoint = CheckpointFile(ckpt, photos_id)
    flat = config.stop_when_flat
    watch = flat_watch(model, flat, latents, caption_ids, len(state.params), config.max_batch)
    steps = (model, state, config, latents, caption_ids, checkpoint, on_event, on_preview, watch)
    _run_steps(*steps, terms)
    on_event(Finished(state.step))
    return state


def _run_steps(
    model: TextToImage,
    state: TrainingState,
    config: TrainConfig,
    latents,
    caption_ids: torch.Tensor,
    checkpoint: CheckpointFile,
    on_event: EventSink,
    on_preview,
    watch: FlatWatch | None,
    terms: RecipeTerms | None = None,
) -> None:
    """The steps, then the last checkpoint. Each way out keeps a checkpoint to resume from:
    the last good one (divergence, a full disk), or the state of the last whole step."""
    ckpt, photos_id = checkpoint.path, checkpoint.photos_id
    saved = [state.step]

    def save() -> None:
        save_checkpoint(state, config, photos_id, ckpt)
        saved[0] = state.step

    try:
        while state.step < config.last_step:
            if watch is not None and watch.should_stop(state):
                on_event(Message(f"stopped at step {state.step}: the fixed-batch loss is flat"))
                break
            loss = optimizer_step(model, state, config, latents, caption_ids, terms)
            lr = state.optimizer.param_groups[0]["lr"]
            on_event(Stepped(state.step, config.steps, loss, state.loss_smoothed, lr))
            if state.step % config.checkpoint_every == 0 and state.step < config.last_step:
                save()
                on_event(Checkpointed(state.step, ckpt))
            if on_preview and config.preview_every and state.step % config.preview_every == 0:
                if not draw_previews(on_preview, state.step, state.rows(), on_event):
                    on_preview = None
        save()
    except TrainingDiverged as exc:
        raise TrainingDiverged(
            f"{exc}; kept the last good checkpoint (step {saved[0]}) in {ckpt}; "
            "lower --lr or use --dtype fp32, then run again with --resume"
        ) from None
    except WriteFailed as exc:
        raise WriteFailed(
            f"{exc}; kept the last good checkpoint (step {saved[0]}) in {ckpt}; "
            "then run the same command with --resume"
        ) from None
    except KeyboardInterrupt:
        try:
            save()
        except WriteFailed as exc:
            raise WriteFailed(
                f"interrupted at step {state.step}: {exc}; kept the checkpoint of step "
                f"{saved[0]}; run the same command with --resume"
            ) from None
        raise Interrupted(
            f"interrupted at step {state.step}; saved {ckpt}; "
            "run the same command with --resume to continue"
        ) from None
    except torch.cuda.OutOfMemoryError:
        samples = config.max_batch or config.batch_size * len(state.params)
        raise OutOfMemory(
            f"out of GPU memory with {samples} sample(s) per pass; kept the checkpoint of "
            f"step {saved[0]} in {ckpt}; {memory_advice(config, samples)}",
            samples,
        ) from None
