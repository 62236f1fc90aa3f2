"""`oneword arith`: arithmetic on words."""

from __future__ import annotations

import argparse

from .. import api
from ..core.embeddings import layout_metadata, load_embeddings
from ..errors import OnewordError
from .options import add_model_options, add_output_options, norms_text, write_output


def register(sub) -> None:
    p = sub.add_parser(
        "arith",
        help="arithmetic on words: '<my-cat>' - cat + dog",
        description="Add and subtract learned tokens and vocabulary words, e.g. "
        "oneword arith '\"<my-cat>\" - cat + dog' --embedding "
        "my-cat.safetensors -o my-dog.safetensors. A vocabulary "
        "word of several tokens counts as their mean.",
    )
    p.add_argument("expression", help="terms joined by + and -, optionally 0.5*word")
    p.add_argument(
        "--embedding",
        action="append",
        default=[],
        help="a file defining a learned token used in the expression (repeatable)",
    )
    p.add_argument(
        "--no-keep-norm",
        dest="keep_norm",
        action="store_false",
        help="keep the raw sum (default: rescale to the first term's norm)",
    )
    add_output_options(p)
    add_model_options(p)
    p.set_defaults(func=_cmd_arith)


def _cmd_arith(a: argparse.Namespace) -> int:
    from ..search.embedding_ops import combine, parse_expression

    try:
        terms = parse_expression(a.expression)
    except ValueError as exc:
        raise OnewordError(f"expression {a.expression!r}: {exc}") from None
    learned = {e.token: e for path in a.embedding for e in load_embeddings(path)}
    model = api.ModelChoice(a.model, a.device or "cpu", a.dtype).load()
    table = model.vocabulary_table.detach().float().cpu()
    parts, shown = [], []
    for term in terms:
        vectors = _term_vectors(term.word, learned, model, table)
        parts.append((term.coefficient, vectors))
        shown.append(f"{term.coefficient:+g}·{term.word}")
    try:
        result = combine(parts, a.keep_norm)
    except ValueError as exc:
        raise OnewordError(f"expression {a.expression!r}: {exc}") from None
    first = learned.get(terms[0].word)
    meta = {
        **(first.metadata if first else {}),
        "expression": a.expression,
        "model": a.model,
        **layout_metadata(model.embedding_layout),
    }
    path = write_output(a, result, first.token if first else "<result>", meta)
    print(f"{' '.join(shown)} -> {path}: norm {norms_text(result)}")
    return 0


def _term_vectors(word: str, learned: dict, model, table):
    if word in learned:
        return learned[word].vectors.float()
    if word.startswith("<") and word.endswith(">"):
        raise OnewordError(f"{word}: not a learned token of the --embedding files given")
    ids = model.word_token_ids(word)
    if not ids:
        raise OnewordError(f"{word}: not a word of the model's vocabulary")
    return table[ids].mean(dim=0, keepdim=True)
