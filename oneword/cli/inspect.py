"""`oneword inspect`: nearest vocabulary tokens, norms and cosines."""

from __future__ import annotations

import argparse

from .. import api
from ..core.embeddings import LearnedEmbedding, check_width
from ..errors import OnewordError
from .options import add_model_options, add_project_option, load_first_embedding


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="nearest vocabulary tokens, norms and cosines",
        description="For each learned vector: the nearest vocabulary tokens "
        "by cosine (what the model 'thinks' it is) and its norm "
        "against the vocabulary's; then the cosine matrix between "
        "the embeddings. Give files, or a run (all its candidates).",
    )
    p.add_argument(
        "embeddings",
        nargs="+",
        metavar="WORD",
        help="words: embedding files, runs (r3, last or a run folder: all its candidates), "
        "or candidates (r3/c01)",
    )
    p.add_argument("--top", type=int, default=5, help="nearest tokens shown (default 5)")
    add_model_options(p)
    p.set_defaults(model=None)
    add_project_option(p)
    p.set_defaults(func=_cmd_inspect)


def _inspect_inputs(refs: list[str], project) -> list[tuple[str, LearnedEmbedding]]:
    from ..experiments.naming import resolve_run_words

    out = []
    for ref in refs:
        for word in resolve_run_words(ref, project):
            out.append((word.label, load_first_embedding(str(word.path))))
    return out


def _cmd_inspect(a: argparse.Namespace) -> int:
    from ..search.embedding_ops import cosine_matrix, norm_summary

    if a.top < 1:
        raise OnewordError(f"--top {a.top}: must be 1 or more")
    inputs = _inspect_inputs(a.embeddings, a.project)
    if not inputs:
        raise OnewordError("inspect: no embeddings found")
    name = a.model or inputs[0][1].metadata.get("model") or api.DEFAULT_MODEL
    model = api.ModelChoice(name, a.device or "cpu", a.dtype).load()
    table = model.vocabulary_table.detach().float().cpu()
    tokens = model.vocabulary_tokens()
    vocab = norm_summary(table)
    print(
        f"model {name}: {table.shape[0]} tokens of width {table.shape[1]}; row norms "
        f"median {vocab['p50']:.4f}, 95th percentile {vocab['p95']:.4f} (mean "
        f"{vocab['mean']:.4f} ± {vocab['std']:.4f}, 5th percentile {vocab['p5']:.4f})"
    )
    for label, emb in inputs:
        check_width(emb, model.embedding_layout, name, label)
        layers = f" in each of {emb.layers} layers" if emb.layers > 1 else ""
        recipe = emb.metadata.get("recipe")
        learned = f", learned by the {recipe} recipe" if recipe else ""
        print(f"{label} {emb.token}: {emb.num_vectors} vector(s){layers}{learned}")
        _print_vectors(emb, table, tokens, a.top, vocab["p50"])
    if len(inputs) > 1:
        _print_matrix([label for label, _ in inputs], cosine_matrix([e.vectors for _, e in inputs]))
    return 0


def _print_vectors(
    emb: LearnedEmbedding, table, tokens: list[str], top: int, median: float
) -> None:
    """Each vector's norm and nearest vocabulary tokens; a per-layer word's layer by layer."""
    from ..core.per_layer import layer_names
    from ..search.embedding_ops import nearest_rows, norm_percentile

    rows = emb.vectors.reshape(-1, emb.width)  # [layers × N, d]
    names = layer_names(emb.layers) if emb.layers > 1 else ("",)
    labels = [f"{layer} v{v}".strip() for layer in names for v in range(emb.num_vectors)]
    idx, cos = nearest_rows(rows, table, top)
    norms = rows.norm(dim=-1)
    pct = norm_percentile(norms, table)
    for i, label in enumerate(labels):
        near = ", ".join(f"{tokens[t]} {c:.3f}" for t, c in zip(idx[i].tolist(), cos[i].tolist()))
        print(
            f"  {label}  norm {float(norms[i]):.4f} ({float(norms[i]) / median:.1f}x the "
            f"vocabulary's median, {_percentile_text(float(pct[i]))})  nearest: {near}"
        )


def _percentile_text(percent: float) -> str:
    if percent >= 100:
        return "longer than every vocabulary row"
    return f"{percent:.0f}th percentile"


def _print_matrix(labels: list[str], matrix) -> None:
    print("cosine between embeddings:")
    short = [str(i) for i in range(len(labels))]
    print("      " + " ".join(s.rjust(6) for s in short))
    for i, label in enumerate(labels):
        row = " ".join(f"{float(x):6.3f}" for x in matrix[i])
        print(f"  {short[i]:>3} {row}  {label}")
