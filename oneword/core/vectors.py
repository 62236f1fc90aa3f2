"""Operations on embedding vectors (pure functions on tensors)."""

from __future__ import annotations

import torch


def vocabulary_spread(table: torch.Tensor) -> tuple[float, float]:
    """(mean row norm, per-dimension standard deviation) of a token table [V, d]."""
    table = table.detach().float()
    return float(table.norm(dim=1).mean()), float(table.std(dim=0).mean())


def initial_rows(
    table: torch.Tensor,
    init_ids: list[int],
    num_vectors: int,
    init: str,
    jitter: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Starting rows [N, d] for a new token (Gal et al. 2022, sec. 4: start from a coarse word).

    "word": if the init word has exactly N tokens they fill the N vectors in order, otherwise
    every vector starts at their mean. `init_ids` may instead hold N lists, one word's tokens
    per vector (`--init "face,logo,outfit"`): vector i starts at the mean of word i.
    "random": Gaussian rows scaled to the vocabulary's mean norm. `jitter` adds Gaussian noise
    of that many vocabulary standard deviations.
    """
    table = table.detach().float().cpu()
    d = table.shape[1]
    mean_norm, spread = vocabulary_spread(table)
    if init == "random":
        rows = torch.randn(num_vectors, d, generator=generator)
        rows = rows / rows.norm(dim=1, keepdim=True) * mean_norm
    elif init_ids and isinstance(init_ids[0], list):
        rows = torch.stack([table[ids].mean(dim=0) for ids in init_ids])
    elif len(init_ids) == num_vectors:
        rows = table[init_ids].clone()
    else:
        rows = table[init_ids].mean(dim=0, keepdim=True).repeat(num_vectors, 1)
    if jitter:
        rows = rows + jitter * spread * torch.randn(num_vectors, d, generator=generator)
    return rows


def vector_words(init_word: str | None) -> list[str] | None:
    """The words of an `--init` that gives one word per vector ("face,logo,outfit"), or None
    for a plain init word."""
    if not init_word or "," not in init_word:
        return None
    return [w.strip() for w in init_word.split(",")]


def initial_rows_by_layout(
    table: torch.Tensor,
    layout: tuple[int, ...],
    init_ids: list[int],
    num_vectors: int,
    init: str,
    jitter: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """`initial_rows` for vectors made of several text encoders' parts side by side (an SDXL
    word is [clip_l | clip_g]): each part from its own table columns, so a random or jittered
    start has each part's own norm and spread. One part: exactly `initial_rows`."""
    if len(layout) == 1:
        return initial_rows(table, init_ids, num_vectors, init, jitter, generator)
    parts = table.split(list(layout), dim=1)
    return torch.cat(
        [initial_rows(part, init_ids, num_vectors, init, jitter, generator) for part in parts],
        dim=1,
    )
