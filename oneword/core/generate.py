"""Drawing with learned words: prompts with placeholder tokens → images → PNG files."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from ..checks import at_least, finite
from ..errors import OnewordError
from ..files import atomic_write
from .interface import TextToImage
from .per_layer import spread_over_layers, word_layers
from .prompts import expand_tokens, placeholder_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Words:
    """Learned tokens registered in a model: `rows` [1, P, d] back every placeholder name
    ([1, layers, P, d] when a per-layer word is among them)."""

    tokens: dict[str, int]  # token -> number of vectors
    rows: torch.Tensor


def register_words(model: TextToImage, embeddings) -> Words:
    """Add each learned embedding's token(s) to the model's tokenizer; one row per vector.

    With a per-layer word among them, every word gets per-layer rows (a plain word the same
    rows in every layer), so that one prompt may hold both."""
    embeddings = list(embeddings)
    layered = {e.layers for e in embeddings if e.layers > 1}
    if layered:
        _check_layers(model, embeddings)
    layers = max(layered, default=1)
    tokens, rows = {}, []
    for emb in embeddings:
        names = placeholder_names(emb.token, emb.num_vectors)
        model.add_placeholder_tokens(names)
        tokens[emb.token] = emb.num_vectors
        vectors = emb.vectors.float()
        rows.append(spread_over_layers(vectors, layers) if layered and emb.layers == 1 else vectors)
    width = model.embedding_width
    empty = torch.zeros(0, width)
    stacked = torch.cat(rows, dim=-2) if rows else empty
    return Words(tokens, stacked.unsqueeze(0).to(model.device))


def _check_layers(model: TextToImage, embeddings) -> None:
    wanted = word_layers(model.cross_attention_layers, model.name)
    for emb in embeddings:
        if emb.layers > 1 and emb.layers != wanted:
            raise OnewordError(
                f"{emb.token}: a per-layer word of {emb.layers} layers, but model {model.name} "
                f"has {wanted} cross-attention layers; use it with the model it was learned on"
            )


def text_states(model: TextToImage, prompts: list[str], words: Words | None) -> torch.Tensor:
    """Hidden states [B, L, d] of prompts whose learned tokens read the learned rows."""
    if words is not None:
        prompts = [expand_tokens(p, words.tokens) for p in prompts]
    with torch.no_grad():
        rows = words.rows if words is not None and words.rows.shape[-2] else None
        return model.encode_text(model.token_ids(prompts), rows)


MAX_CFG = 100.0  # guidance beyond this only burns the image out


@dataclass(frozen=True)
class Sampling:
    """How images are drawn: denoising steps, guidance scale, sampler and size."""

    steps: int = 30
    cfg: float = 7.5
    scheduler: str = "ddim"
    size: int | None = None  # None: the model's native resolution

    def __post_init__(self):
        at_least(self.steps, "--sample-steps", 1)
        finite(self.cfg, "--cfg", low=0, high=MAX_CFG)
        if self.size is not None and (at_least(self.size, "--size", 8) % 8):
            raise OnewordError(f"--size {self.size}: must be a multiple of 8")


def sampling_record(sampling: Sampling, model: str) -> dict[str, object]:
    """The drawing settings as an image's metadata records them."""
    return {
        "steps": sampling.steps,
        "cfg": sampling.cfg,
        "scheduler": sampling.scheduler,
        "model": model,
    }


def draw(
    model: TextToImage,
    prompts: list[str],
    seeds: list[int],
    words: Words | None,
    sampling: Sampling,
    negative: str = "",
    batch: int = 8,
) -> torch.Tensor:
    """Images [B, 3, S, S] in [0, 1]; image i depends only on (prompts[i], seeds[i]), so
    after running out of GPU memory the images go on in batches half as large."""
    check_prompt_lengths(model, list(dict.fromkeys([*prompts, negative])), words)
    model.set_scheduler(sampling.scheduler)
    size = sampling.size or model.native_resolution
    out: list[torch.Tensor] = []
    while len(out) < len(prompts):
        s = len(out)
        chunk, chunk_seeds = prompts[s : s + batch], seeds[s : s + batch]
        try:
            cond = text_states(model, chunk, words)
            uncond = text_states(model, [negative] * len(chunk), words)
            gens = [torch.Generator(device="cpu").manual_seed(int(x)) for x in chunk_seeds]
            out.extend(model.generate(cond, uncond, gens, sampling.steps, sampling.cfg, size))
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch == 1:
                raise DrawingOutOfMemory(
                    f"out of GPU memory drawing one image at {size} px; give a smaller --size, "
                    "or free the GPU's memory (other programs)"
                ) from None
            batch = max(1, batch // 2)
            log.info("out of GPU memory drawing: %d images at a time from now on", batch)
    return torch.stack(out)


class DrawingOutOfMemory(OnewordError):
    """Not even one image fits in the GPU's memory."""


def check_prompt_lengths(model: TextToImage, prompts: list[str], words: Words | None) -> None:
    """Refuse a prompt whose learned word falls past what the text encoder reads (the
    tokenizer cuts it off without a word, and the image never shows it); log a prompt that
    loses only other words."""
    length = int(model.token_ids([""]).shape[-1]) - 2  # start and end tokens
    tokens = words.tokens if words is not None else {}
    learned = {
        model.word_token_ids(name)[0]: token
        for token, n in tokens.items()
        for name in placeholder_names(token, n)
    }
    for prompt in prompts:
        ids = model.word_token_ids(expand_tokens(prompt, tokens))
        if len(ids) <= length:
            continue
        lost = sorted({learned[i] for i in ids[length:] if i in learned})
        if lost:
            raise OnewordError(
                f"prompt {prompt!r}: {len(ids)} tokens but the text encoder reads {length}, "
                f"so {', '.join(lost)} is cut off; shorten the prompt or put the word earlier"
            )
        log.warning("prompt %r: only its first %d of %d tokens are read", prompt, length, len(ids))


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] → 8-bit RGB image."""
    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def save_png(
    image: torch.Tensor | Image.Image,
    path: Path,
    metadata: dict[str, object],
    chunks: dict[str, str] | None = None,
) -> Path:
    """Write a PNG atomically with every setting needed to redraw it in its text chunks: one
    per setting, all of them as JSON in `oneword`, and AUTOMATIC1111's `parameters` text (which
    its PNG Info, ComfyUI and image sites read) when the image has a prompt; then `chunks`."""
    picture = image if isinstance(image, Image.Image) else to_pil(image)
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    info.add_text("oneword", json.dumps(metadata, sort_keys=True))
    parameters = a1111_parameters(metadata, picture.size)
    if parameters is not None:
        info.add_text("parameters", parameters)
    for key, value in (chunks or {}).items():
        info.add_text(key, value)
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG", pnginfo=info))


# AUTOMATIC1111's names of the samplers oneword's schedulers are
SAMPLER_NAMES = {
    "ddim": "DDIM",
    "pndm": "PLMS",
    "euler": "Euler",
    "euler-a": "Euler a",
    "dpm++": "DPM++ 2M",
    "ddpm": "DDPM",
    "lms": "LMS",
}


def a1111_parameters(metadata: dict[str, object], size: tuple[int, int]) -> str | None:
    """AUTOMATIC1111's `parameters` text: the prompt, a `Negative prompt:` line, then
    `Steps: 30, Sampler: DDIM, CFG scale: 7.5, Seed: 8, Size: 512x512, Model: name`.

    A grid of several prompts or seeds is described by its first, as A1111 does; size is the
    image's (width, height) unless the metadata gives the size of the images drawn."""
    prompts = metadata.get("prompts") or [metadata.get("prompt")]
    seeds = [metadata["seed"]] if "seed" in metadata else metadata.get("seeds") or [None]
    if not prompts or not isinstance(prompts[0], str) or not prompts[0]:
        return None
    drawn = metadata.get("size")
    fields = {
        "Steps": metadata.get("steps"),
        "Sampler": SAMPLER_NAMES.get(str(metadata.get("scheduler")), metadata.get("scheduler")),
        "CFG scale": metadata.get("cfg"),
        "Seed": seeds[0],
        "Size": f"{drawn}x{drawn}" if drawn else f"{size[0]}x{size[1]}",
        "Model": _model_name(metadata.get("model")),
    }
    lines = [prompts[0].strip()]
    if metadata.get("negative"):
        lines.append(f"Negative prompt: {metadata['negative']}")
    settings = (f"{k}: {str(v).replace(',', ' ')}" for k, v in fields.items() if v is not None)
    lines.append(", ".join(settings))
    return "\n".join(lines)


def _model_name(model: object) -> str | None:
    """A model as A1111 names it: a checkpoint file by its stem, a folder by its name."""
    if not model:
        return None
    path = Path(str(model))
    return path.stem if path.suffix in (".safetensors", ".ckpt") else path.name


def contact_sheet(images: torch.Tensor, columns: int | None = None, pad: int = 2) -> torch.Tensor:
    """One image [3, H', W'] tiling images [B, 3, H, W] in a grid on a white background."""
    count, _, h, w = images.shape
    cols = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    sheet = torch.ones(3, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[:, y : y + h, x : x + w] = image
    return sheet


SHEET_TILE = 192  # tiles smaller than this are enlarged (sharp pixels) so captions fit


def labelled_sheet(
    images: torch.Tensor, captions: list[str], title: str = "", columns: int | None = None
) -> Image.Image:
    """A contact sheet a person can read: a title line, then images [B, 3, H, W] in a grid,
    each with its caption (prompt, seed, ...) under it, wrapped to the tile's width."""
    from PIL import ImageDraw, ImageFont

    count, _, h, w = images.shape
    cols = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    scale = max(1, -(-SHEET_TILE // max(h, w)))
    tile_w, tile_h = w * scale, h * scale
    font = ImageFont.load_default(size=13)
    lines = [_wrap(text, font, tile_w) for text in captions]
    caption_h = 16 * max((len(x) for x in lines), default=1) + 6
    top = 30 if title else 6
    pad = 8
    sheet = Image.new(
        "RGB", (cols * (tile_w + pad) + pad, top + rows * (tile_h + caption_h + pad)), "white"
    )
    pen = ImageDraw.Draw(sheet)
    if title:
        pen.text((pad, 8), title, fill="black", font=ImageFont.load_default(size=15))
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        x, y = pad + c * (tile_w + pad), top + r * (tile_h + caption_h + pad)
        sheet.paste(to_pil(image).resize((tile_w, tile_h), Image.NEAREST), (x, y))
        for k, line in enumerate(lines[i] if i < len(lines) else []):
            pen.text((x, y + tile_h + 3 + 16 * k), line, fill=(40, 40, 40), font=font)
    return sheet


def _wrap(text: str, font, width: int) -> list[str]:
    """Words of `text` in lines no wider than `width` pixels (a long word stays whole)."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines
