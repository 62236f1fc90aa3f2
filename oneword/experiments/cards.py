"""Embedding cards (`oneword card`): a picture of a learned word that carries the word.

The card shows one image drawn with the word and its name under it; inside it is the
embedding in the chunk AUTOMATIC1111 reads (see oneword.core.embedding_card), so the PNG can be
dropped into A1111's embeddings folder or given to any oneword `--embedding`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..adapters.loading import ModelChoice
from ..core.embedding_card import card_chunks
from ..core.embeddings import LearnedEmbedding, check_width, load_embeddings
from ..core.generate import Sampling, draw, register_words, sampling_record, save_png, to_pil
from ..core.prompts import PREVIEW_PROMPTS
from ..errors import OnewordError
from ..events import EventSink, Message, ignore
from ..files import file_stem
from .naming import resolve_word

CARD_SIZE = 384  # the drawn image is shown at least this large


@dataclass(frozen=True)
class CardSettings:
    seed: int = 0
    sampling: Sampling = field(default_factory=lambda: Sampling(steps=20))
    prompt: str | None = None  # None: "a photo of a <token>" ("... in the style of" for styles)


def make_card(
    source: str,
    out: str | Path | None = None,
    model: str | None = None,
    settings: CardSettings = CardSettings(),
    project: str | Path | None = None,
    device: str | None = None,
    on_event: EventSink = ignore,
) -> Path:
    """Write the card of a word (a file, a run: its best candidate, or r8/c01); returns its
    path."""
    emb, model_name, folder, note = _source(source, model, project)
    if note:
        on_event(Message(note))
    choice = ModelChoice(model_name, device)
    loaded = choice.load()
    check_width(emb, loaded.embedding_layout, loaded.name, source)
    words = register_words(loaded, [emb])
    mode = "style" if emb.metadata.get("mode") == "style" else "object"
    prompt = settings.prompt or PREVIEW_PROMPTS[mode][0].format(emb.token)
    (image,) = draw(loaded, [prompt], [settings.seed], words, settings.sampling)
    name = file_stem(emb.token, "embedding")
    path = Path(out) if out else folder / f"{name}-card.png"
    if path.suffix.lower() != ".png":
        raise OnewordError(f"--out {path}: a card is a .png file; give a name ending in .png")
    meta = {
        "prompt": prompt,
        "seed": settings.seed,
        "size": int(image.shape[-1]),
        **sampling_record(settings.sampling, model_name),
        "token": emb.token,
    }
    chunks = card_chunks(emb.vectors, emb.layout, name, {**emb.metadata, "token": emb.token})
    return save_png(_picture(to_pil(image), emb.token), path, meta, chunks)


def _source(
    source: str, model: str | None, project: str | Path | None
) -> tuple[LearnedEmbedding, str, Path, str]:
    """(embedding, model to draw with, folder for the card, how a run's candidate was chosen)
    of a word named as every command names one (see oneword.experiments.naming)."""
    word = resolve_word(source, project)
    found = load_embeddings(word.path)
    if len(found) != 1:
        raise OnewordError(f"{word.path}: holds {len(found)} tokens; a card carries one")
    if word.run is not None:
        folder = word.candidate.folder or word.run.folder or word.path.parent
        return found[0], model or word.run.model, folder, word.note
    chosen = model or found[0].metadata.get("model")
    if not chosen:
        raise OnewordError(f"{word.path}: the file does not say its model; pass --model")
    return found[0], chosen, word.path.parent, word.note


def _picture(image: Image.Image, token: str) -> Image.Image:
    """The drawn image, enlarged to CARD_SIZE (sharp pixels), with the token under it."""
    scale = max(1, -(-CARD_SIZE // image.width))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    font = ImageFont.load_default(size=max(14, image.width // 16))
    band = font.size * 2
    card = Image.new("RGB", (image.width, image.height + band), "white")
    card.paste(image, (0, 0))
    pen = ImageDraw.Draw(card)
    width = pen.textlength(token, font=font)
    pen.text(((image.width - width) / 2, image.height + band / 4), token, fill="black", font=font)
    return card
