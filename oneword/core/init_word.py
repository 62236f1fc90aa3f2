"""The --init word: the token ids a new word starts from, and a note when the tokenizer
splits it into pieces."""

from __future__ import annotations

from ..errors import OnewordError
from .interface import TextToImage
from .vectors import vector_words


def init_token_ids(model: TextToImage, init_word: str | None) -> list:
    """The --init word's token ids, or one list of ids per vector ("face,logo,outfit")."""
    per_vector = vector_words(init_word)
    words = per_vector or ([init_word] if init_word else [])
    ids = [model.word_token_ids(w) for w in words]
    for word, found in zip(words, ids):
        if not found:
            raise OnewordError(
                f"--init {init_word!r}: the tokenizer makes no tokens of {word!r}; "
                "give a word such as cat"
            )
    return ids if per_vector else (ids[0] if ids else [])


def describe_init(model: TextToImage, init_word: str | None) -> str | None:
    """A note when the tokenizer splits an --init word into several pieces (a typo often
    becomes a few letters), saying what the token starts from; None otherwise."""
    if not init_word:
        return None
    words = init_word.replace(",", " ").split()
    split = {w: ids for w in words if len(ids := model.word_token_ids(w)) > 1}
    if not split:
        return None
    tokens = model.vocabulary_tokens()
    split = {w: [tokens[i].replace("</w>", "") for i in ids] for w, ids in split.items()}
    parts = "; ".join(f"{w!r} -> {len(p)} pieces ({' + '.join(p)})" for w, p in split.items())
    return (
        f"note: --init {init_word!r}: the tokenizer does not know it as one word: "
        f"{parts}; the token starts from their mean (check the spelling, or give a common word)"
    )
