"""`oneword mix`, `arith`, `inspect` and `evolve`: search in embedding space."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import api
from ..core.embeddings import (FORMATS, LearnedEmbedding, check_width, layout_metadata,
                               load_embeddings, save_embedding)
from ..errors import OnewordError
from ..experiments.embedding_ops import CROSSOVERS, MIX_METHODS, SELECTIONS
from .core import add_model_options, add_project_option
from .progress import ProgressBar
from .sweep import (_floats, add_ray_options, add_scoring_options, load_distributed,
                    score_settings)


def register(sub) -> None:
    add_mix_parser(sub)
    add_arith_parser(sub)
    add_inspect_parser(sub)
    add_evolve_parser(sub)


def _load_first(path: str, option: str = "") -> LearnedEmbedding:
    found = load_embeddings(path)
    if len(found) != 1:
        raise OnewordError(f"{option or path}: holds {len(found)} tokens; give a file with one")
    return found[0]


def _output(a: argparse.Namespace, vectors, token: str, metadata: dict) -> Path:
    out = Path(a.out)
    fmt = a.format or ("a1111-pt" if out.suffix == ".pt" else "diffusers")
    emb = LearnedEmbedding(a.token or token, vectors.float(), metadata)
    return save_embedding(emb, out, fmt)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", required=True, help="the embedding file to write")
    p.add_argument("--token", help="the new file's token (default: the first input's)")
    p.add_argument("--format", choices=FORMATS,
                   help="file layout (default: diffusers; a1111-pt for a .pt name)")


# -- mix ---------------------------------------------------------------------------------------
def add_mix_parser(sub) -> None:
    p = sub.add_parser("mix", help="mix learned embeddings (weighted mean or slerp)",
                       description="Mix two or more learned embeddings of the same shape. "
                                   "norm-mean (default) keeps the rows' norms, which a plain "
                                   "mean shrinks; slerp moves along the sphere.")
    p.add_argument("embeddings", nargs="+", help="embedding files (two or more)")
    p.add_argument("--weights", type=_floats, help="one weight per file, e.g. 3,1 "
                                                   "(default: equal)")
    p.add_argument("--method", choices=MIX_METHODS, default="norm-mean")
    p.add_argument("--slerp", dest="method", action="store_const", const="slerp",
                   help="same as --method slerp")
    _add_output_options(p)
    p.set_defaults(func=_cmd_mix)


def _cmd_mix(a: argparse.Namespace) -> int:
    from ..experiments.embedding_ops import mix_by_layout
    if len(a.embeddings) < 2:
        raise OnewordError("mix: give two or more embedding files")
    inputs = [_load_first(path) for path in a.embeddings]
    layouts = {e.layout for e in inputs}
    if len(layouts) != 1:
        from ..core.embeddings import describe_layout
        names = " and ".join(sorted(describe_layout(x) for x in layouts))
        raise OnewordError(f"mix: the files are made for different models ({names}); "
                           "mix embeddings of one model family")
    shapes = {tuple(e.vectors.shape) for e in inputs}
    if len(shapes) != 1:
        raise OnewordError(f"mix: the files have different shapes {sorted(shapes)}; mix "
                           "embeddings with the same number of vectors and width")
    try:
        vectors = mix_by_layout([e.vectors for e in inputs], inputs[0].layout,
                                list(a.weights) if a.weights else None, a.method)
    except ValueError as exc:
        raise OnewordError(f"--weights: {exc}") from None
    meta = {**inputs[0].metadata, "mix": a.method, "parents": ",".join(a.embeddings),
            "weights": ",".join(map(str, a.weights or [1] * len(inputs)))}
    path = _output(a, vectors, inputs[0].token, meta)
    for path_in, e in zip(a.embeddings, inputs):
        print(f"  {path_in}: norm {_norms(e.vectors)}")
    print(f"{a.method} -> {path}: norm {_norms(vectors)}")
    return 0


def _norms(vectors) -> str:
    return ", ".join(f"{float(n):.4f}" for n in vectors.float().norm(dim=-1))


# -- arithmetic --------------------------------------------------------------------------------
def add_arith_parser(sub) -> None:
    p = sub.add_parser("arith", help="arithmetic on words: '<my-cat>' - cat + dog",
                       description="Add and subtract learned tokens and vocabulary words, e.g. "
                                   "oneword arith '\"<my-cat>\" - cat + dog' --embedding "
                                   "my-cat.safetensors -o my-dog.safetensors. A vocabulary "
                                   "word of several tokens counts as their mean.")
    p.add_argument("expression", help="terms joined by + and -, optionally 0.5*word")
    p.add_argument("--embedding", action="append", default=[],
                   help="a file defining a learned token used in the expression (repeatable)")
    p.add_argument("--no-keep-norm", dest="keep_norm", action="store_false",
                   help="keep the raw sum (default: rescale to the first term's norm)")
    _add_output_options(p)
    add_model_options(p)
    p.set_defaults(func=_cmd_arith)


def _cmd_arith(a: argparse.Namespace) -> int:
    from ..experiments.embedding_ops import combine, parse_expression
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
    meta = {**(first.metadata if first else {}), "expression": a.expression, "model": a.model,
            **layout_metadata(model.embedding_layout)}
    path = _output(a, result, first.token if first else "<result>", meta)
    print(f"{' '.join(shown)} -> {path}: norm {_norms(result)}")
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


# -- inspect -----------------------------------------------------------------------------------
def add_inspect_parser(sub) -> None:
    p = sub.add_parser("inspect", help="nearest vocabulary tokens, norms and cosines",
                       description="For each learned vector: the nearest vocabulary tokens "
                                   "by cosine (what the model 'thinks' it is) and its norm "
                                   "against the vocabulary's; then the cosine matrix between "
                                   "the embeddings. Give files, or a run (all its candidates).")
    p.add_argument("embeddings", nargs="+", help="embedding files, or run ids such as r3")
    p.add_argument("--top", type=int, default=5, help="nearest tokens shown (default 5)")
    add_model_options(p)
    p.set_defaults(model=None)
    add_project_option(p)
    p.set_defaults(func=_cmd_inspect)


def _inspect_inputs(refs: list[str], project) -> list[tuple[str, LearnedEmbedding]]:
    from ..experiments.scoring import candidate_embedding
    from ..experiments.store import Store
    out = []
    for ref in refs:
        if Path(ref).is_file():
            out.append((ref, _load_first(ref)))
            continue
        with Store.open(project) as store:
            run = store.find_run(ref)
            for cand in store.candidates(run.id):
                out.append((f"{run.name}/{cand.name}", candidate_embedding(store, run, cand)))
    return out


def _cmd_inspect(a: argparse.Namespace) -> int:
    from ..experiments.embedding_ops import (cosine_matrix, nearest_rows, norm_percentile,
                                             norm_summary)
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
    print(f"model {name}: {table.shape[0]} tokens of width {table.shape[1]}; row norms "
          f"mean {vocab['mean']:.4f} ± {vocab['std']:.4f} (5%-95%: {vocab['p5']:.4f}-"
          f"{vocab['p95']:.4f})")
    for label, emb in inputs:
        check_width(emb, model.embedding_layout, name, label)
        print(f"{label} {emb.token}: {emb.num_vectors} vector(s)")
        idx, cos = nearest_rows(emb.vectors, table, a.top)
        norms = emb.vectors.norm(dim=-1)
        pct = norm_percentile(norms, table)
        for v in range(emb.num_vectors):
            near = ", ".join(f"{tokens[i]} {c:.3f}" for i, c in
                             zip(idx[v].tolist(), cos[v].tolist()))
            print(f"  v{v}  norm {float(norms[v]):.4f} ({float(pct[v]):.0f}th percentile)  "
                  f"nearest: {near}")
    if len(inputs) > 1:
        _print_matrix([label for label, _ in inputs],
                      cosine_matrix([e.vectors for _, e in inputs]))
    return 0


def _print_matrix(labels: list[str], matrix) -> None:
    print("cosine between embeddings:")
    short = [str(i) for i in range(len(labels))]
    print("      " + " ".join(s.rjust(6) for s in short))
    for i, label in enumerate(labels):
        row = " ".join(f"{float(x):6.3f}" for x in matrix[i])
        print(f"  {short[i]:>3} {row}  {label}")


# -- evolve ------------------------------------------------------------------------------------
def add_evolve_parser(sub) -> None:
    p = sub.add_parser("evolve", help="breed new candidates from a run's best ones",
                       description="Genetic search over a run's candidates: selection, "
                                   "crossover, Gaussian mutation scaled to the vocabulary's "
                                   "spread, elitism (or CMA-ES). Each generation is a new run "
                                   "whose candidates are recorded with their parents. Fitness: "
                                   "your ratings (one generation at a time: rate, then evolve "
                                   "again) or an automatic score.")
    p.add_argument("run", help="the run to breed from (r7, 7, 'last' or its folder)")
    p.add_argument("--generations", type=int, default=1)
    p.add_argument("--population", type=int, default=8, help="children per generation")
    p.add_argument("--strategy", choices=("ga", "cma"), default="ga")
    p.add_argument("--fitness", default="auto",
                   help="rating, or a score metric: combined, concept_fidelity, clip_i..., "
                        "or a sum such as concept_fidelity+prompt_fidelity (default auto: "
                        "ratings if any, else combined)")
    p.add_argument("--selection", choices=SELECTIONS, default="tournament")
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--tournament-size", type=int, default=3)
    p.add_argument("--crossover", choices=CROSSOVERS, default="blend")
    p.add_argument("--blend-alpha", type=float, default=0.3)
    p.add_argument("--mutation", type=float, default=0.1,
                   help="Gaussian mutation in vocabulary standard deviations (default 0.1)")
    p.add_argument("--elites", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-render", action="store_true",
                   help="rating fitness: do not draw the children")
    p.add_argument("--prompts", default="auto", help="as for `oneword score`")
    p.add_argument("--prompt-limit", type=int)
    p.add_argument("--class-word")
    p.add_argument("-n", "--images", type=int, help="images per candidate")
    p.add_argument("--image-seed", type=int, default=0)
    p.add_argument("--subject")
    add_scoring_options(p)
    p.add_argument("--device")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"))
    add_project_option(p)
    add_ray_options(p)
    p.set_defaults(func=_cmd_evolve)


def _scorer(a: argparse.Namespace):
    """Plain scoring, or scoring on Ray workers with --ray."""
    from ..experiments.scoring import score
    if a.ray is None:
        if a.ray_groups is not None:
            raise OnewordError("--ray-groups: only with --ray")
        return score
    ray_score = load_distributed().ray_score
    return lambda run, settings, project, on_event: ray_score(
        run, settings, project, on_event, a.ray or None, a.ray_groups)


def _cmd_evolve(a: argparse.Namespace) -> int:
    from ..experiments.evolve import EvolveSettings, evolve
    from ..experiments.embedding_ops import Breeding
    breeding = Breeding(a.selection, a.top_k, a.tournament_size, a.crossover, a.blend_alpha,
                        a.mutation, a.elites)
    settings = EvolveSettings(a.generations, a.population, breeding, a.strategy, a.fitness,
                              a.seed)
    scoring = None if a.no_render else score_settings(
        a, prompts=a.prompts, prompt_limit=a.prompt_limit, class_word=a.class_word,
        images=a.images, seed=a.image_seed, subject=a.subject)
    runs = evolve(a.run, settings, scoring, a.project, ProgressBar(), _scorer(a))
    for run in runs:
        print(f"generation {run.settings['evolve']['generation']}: {run.name} "
              f"({a.population} candidates, fitness {run.settings['evolve']['fitness']}) "
              f"in {run.folder}")
    print(f"see: oneword show {runs[-1].name}; oneword serve")
    return 0
