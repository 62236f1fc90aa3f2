"""`oneword mix`: mix learned embeddings."""

from __future__ import annotations

import argparse
import sys

from ..errors import OnewordError
from ..search.embedding_ops import MIX_METHODS
from .options import (
    add_output_options,
    add_project_option,
    add_sphere_options,
    floats,
    load_first_embedding,
    norms_text,
    write_output,
)
from .vocabulary import draw_command, next_commands


def register(sub) -> None:
    p = sub.add_parser(
        "mix",
        help="mix learned embeddings (weighted mean or slerp)",
        description="Mix two or more learned embeddings of the same shape. "
        "norm-mean (default) keeps the rows' norms, which a plain "
        "mean shrinks; slerp moves along the sphere. Directional words "
        "(--recipe directional) are blended on the sphere of the vocabulary's "
        "median row norm, where they were learned.",
    )
    p.add_argument(
        "embeddings",
        nargs="+",
        metavar="WORD",
        help="two or more words: embedding files, run folders, run ids (r8: its best "
        "candidate), r8/c01, or last",
    )
    p.add_argument("--weights", type=floats, help="one weight per file, e.g. 3,1 (default: equal)")
    p.add_argument(
        "--method",
        choices=MIX_METHODS,
        default="norm-mean",
        help="mean, norm-mean (keeps the norms; default) or slerp",
    )
    p.add_argument(
        "--slerp", dest="method", action="store_const", const="slerp", help="same as --method slerp"
    )
    add_sphere_options(p, "blend", "when every word is directional")
    add_output_options(p)
    add_project_option(p)
    p.set_defaults(func=_cmd_mix)


def _cmd_mix(a: argparse.Namespace) -> int:
    from ..experiments.naming import resolve_word
    from ..search.embedding_ops import mix_by_layout

    if len(a.embeddings) < 2:
        raise OnewordError("mix: give two or more words (files, runs or candidates)")
    named = [resolve_word(ref, a.project) for ref in a.embeddings]
    for word in named:
        if word.note:
            print(word.note, file=sys.stderr)
    inputs = [load_first_embedding(str(word.path)) for word in named]
    layouts = {e.layout for e in inputs}
    if len(layouts) != 1:
        from ..core.embeddings import describe_layout

        names = " and ".join(sorted(describe_layout(x) for x in layouts))
        raise OnewordError(
            f"mix: the files are made for different models ({names}); "
            "mix embeddings of one model family"
        )
    shapes = {tuple(e.vectors.shape) for e in inputs}
    if len(shapes) != 1:
        raise OnewordError(
            f"mix: the files have different shapes {sorted(shapes)}; mix "
            "embeddings with the same number of vectors and width"
        )
    sphere = mix_sphere(a.on_sphere, named[0].label, inputs)
    try:
        vectors = mix_by_layout(
            [e.vectors for e in inputs],
            inputs[0].layout,
            list(a.weights) if a.weights else None,
            a.method,
            sphere,
        )
    except ValueError as exc:
        raise OnewordError(f"--weights: {exc}") from None
    meta = {
        **inputs[0].metadata,
        "mix": a.method,
        "parents": ",".join(word.label for word in named),
        "weights": ",".join(map(str, a.weights or [1] * len(inputs))),
    }
    if sphere is not None:
        meta["mix_radii"] = ",".join(f"{r:.6g}" for r in sphere.radii)
    path = write_output(a, vectors, inputs[0].token, meta)
    for word, e in zip(named, inputs):
        print(f"  {word.label}: norm {norms_text(e.vectors)}")
    where = " on the sphere" if sphere is not None else ""
    print(f"{a.method}{where} -> {path}: norm {norms_text(vectors)}")
    token = a.token or inputs[0].token
    print(next_commands(None, draw_command(token, str(path), inputs[0].metadata.get("model"))))
    return 0


def mix_sphere(asked: bool | None, label: str, inputs: list):
    """The sphere to blend on (the vocabulary of the model the first word names), or None:
    as asked, else when every word is directional."""
    from ..search.geometry import geometry_of, use_sphere

    if not use_sphere(asked, [e.metadata for e in inputs]):
        return None
    model = inputs[0].metadata.get("model")
    option = "--on-sphere" if asked else "mix (directional words)"
    if not model:
        raise OnewordError(
            f"{option}: {label} does not say which model it was learned with, whose "
            "vocabulary gives the sphere; mix with --off-sphere"
        )
    sphere = geometry_of(model).sphere()
    if tuple(sphere.layout) != tuple(inputs[0].layout):
        raise OnewordError(
            f"{option}: {label} does not fit the vocabulary of {model}, the model it names; "
            "mix with --off-sphere"
        )
    return sphere
