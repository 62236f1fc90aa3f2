"""The pieces of the world model's training loops: random streams, the wall-clock budget,
batches from a pool of renders, caption tokens, the EMA, and one phase's optimisation loop."""

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..adapters.tiny import (
    Components,
)
from ..core.prompts import OBJECT_TEMPLATES
from ..errors import OnewordError
from .captions import caption, describe, subject_noun
from .render import Spec
from .training_config import WorldModelConfig, world_vocabulary


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
        s = [int(x) for x in torch.randint(2**62, (5,), generator=base)]
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

    def __init__(
        self,
        make: Callable[[int], tuple[list[Spec], torch.Tensor]],
        batch: int,
        fresh_share: float,
        pool_batches: int,
        generator: torch.Generator,
    ):
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
        pick = torch.randperm(self.pool_size, generator=self.generator)[: self.batch]
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
        return self.tokenizer(
            text, padding="max_length", truncation=True, max_length=self.length
        ).input_ids

    def __call__(self, captions: list[str]) -> torch.Tensor:
        rows = torch.tensor([self.ids(c) for c in captions], dtype=torch.long)
        return rows.to(self.device, non_blocking=True)


def object_phrase(spec: Spec, generator: torch.Generator, name_share: float = 0.0) -> str:
    """What oneword's templates call the object: a hidden subject's name or class word (see
    `subject_noun`), a class member's class word, or its attributes."""
    if spec.subject is not None:
        return subject_noun(spec, generator, name_share)
    return spec.class_word or describe(spec)


def training_captions(
    specs: list[Spec], config: WorldModelConfig, generator: torch.Generator
) -> list[str]:
    """Grammar captions, some empty (for guidance), some from oneword's TI templates."""
    draws = torch.rand(len(specs), generator=generator).tolist()
    picks = torch.randint(len(OBJECT_TEMPLATES), (len(specs),), generator=generator).tolist()
    out = []
    for spec, u, k in zip(specs, draws, picks):
        if u < config.cond_drop:
            out.append("")
        elif u < config.cond_drop + config.template_share:
            out.append(
                OBJECT_TEMPLATES[k].format(object_phrase(spec, generator, config.name_share))
            )
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
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay, **extra)


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


def run_phase(
    log: PhaseLog,
    step_fn: Callable[[int], torch.Tensor],
    optimizer,
    base_lr: float,
    max_steps: int,
    seconds: float,
    batch: int,
    config: WorldModelConfig,
    device: torch.device,
) -> PhaseLog:
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
                raise OnewordError(
                    f"world model {log.name} training diverged at step "
                    f"{log.steps} (loss {mean}); lower --lr"
                )
            total, count = torch.zeros((), device=device), 0
            log.losses.append((log.steps, round(mean, 5)))
            spent = time.monotonic() - start
            print(
                f"[{log.name}] step {log.steps} loss {mean:.4f} lr {lr:.2e} "
                f"{spent:.0f}s {log.steps * batch / max(spent, 1e-9):.0f} img/s",
                flush=True,
            )
    if count:
        mean = float(total) / count
        log.losses.append((log.steps, round(mean, 5)))
    _sync(device)
    log.seconds = round(time.monotonic() - start, 2)
    log.samples_per_s = round(log.steps * batch / max(log.seconds, 1e-9), 1)
    return log
