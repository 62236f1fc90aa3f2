"""A CLIP tokenizer built in code, whose BPE merges make chosen words single tokens."""

from __future__ import annotations

import functools

TINY_EXTRA_WORDS = (
    "cat dog toy calico orange white black red blue green yellow pink brown ball bird cup robot "
    "teddy bear car house tree flower star heart blob sun moon sky sea snow grass night beach "
    "forest desert room painting sketch drawing watercolor oil by claude monet van gogh in at "
    "with and on under next to sitting wearing hat shirt girl boy person man woman face logo "
    "outfit style art photo picture image"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def build_clip_tokenizer(words: list[str], vocab_size: int | None = None):
    """A CLIPTokenizer whose BPE merges make each of `words` one token, like CLIP's own layout:
    byte characters, the same with '</w>', learned merges, then start and end tokens.

    vocab_size pads the vocabulary with unused tokens (to match a real table's size)."""
    from transformers import CLIPTokenizer

    byte_chars = list(bytes_to_unicode().values())
    merges = list(bpe_merges(tuple(sorted(set(w.lower() for w in words)))))
    vocab: dict[str, int] = {}
    for token in byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]:
        vocab.setdefault(token, len(vocab))
    while vocab_size and len(vocab) < vocab_size - 2:
        vocab[f"<|unused{len(vocab)}|>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


@functools.lru_cache(maxsize=8)
def bpe_merges(words: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """BPE merges (Sennrich et al. 2016) until every piece of every word is one symbol.

    Written out rather than `tokenizers`' BpeTrainer because that breaks ties between equally
    frequent pairs differently from one process to the next, so the same words gave other token
    ids each run; here ties go to the smallest pair, so a model built in code is the same
    everywhere."""
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.Whitespace()
    pieces: dict[tuple[str, ...], int] = {}
    for word in words:
        for piece, _ in split.pre_tokenize_str(word):
            symbols = tuple(piece[:-1]) + (piece[-1] + "</w>",)
            pieces[symbols] = pieces.get(symbols, 0) + 1
    merges = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols, n in pieces.items():
            for pair in zip(symbols, symbols[1:]):
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            return tuple(merges)
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        pieces = {merge_pair(symbols, best): n for symbols, n in pieces.items()}


def merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)
