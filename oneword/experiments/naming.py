"""Naming a learned word: one rule for every command that takes one.

A word is named by
- an embedding file (.safetensors, .pt, .bin, or a card .png);
- a run of the project's store: its id (`r8` or `8`), `last` (the newest run that made
  words: learn, sweep, evolve or mix), or its folder. A run means its best candidate: the one
  ranked first by its newest `oneword score`, else the best rated, else its first; the note
  says which was taken and why;
- one candidate of a run: `r8/c01`, `last/c01`, `<run folder>/c01`;
- a folder that no run records but that holds an embedding file (`learned_embeds.safetensors`
  first).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.embeddings import DIFFUSERS_FILE
from ..errors import OnewordError
from .store import CandidateRecord, RunRecord, Store

WORD_RUN_KINDS = ("learn", "sweep", "evolve", "mix")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
_CANDIDATE = re.compile(r"^(?P<run>.+)/(?P<cand>[cC]\d+)$")
HOW_TO_NAME = "give an embedding file, a run folder, a run id (r8), r8/c01 or last"


@dataclass(frozen=True)
class NamedWord:
    """What a name resolved to: the embedding file, a short label, and how it was chosen."""

    path: Path
    label: str  # r8/c01 for a candidate, else the name given
    note: str = ""  # how a run's candidate was chosen ("" where nothing was chosen)
    run: RunRecord | None = None
    candidate: CandidateRecord | None = None


def resolve_word(ref: str | Path, project: str | Path | None = None, option: str = "") -> NamedWord:
    """The word named by `ref` (see the module's rule); `option` names it in errors."""
    text = str(ref).strip()
    path = Path(text).expanduser()
    if path.is_file():
        return NamedWord(path, text)
    with Store.open(project) as store:
        return word_in(store, text, option)


def resolve_run_words(
    ref: str | Path, project: str | Path | None = None, option: str = ""
) -> list[NamedWord]:
    """Like `resolve_word`, but a run names every one of its candidates (inspect compares
    them); a file or `r8/c01` names one word."""
    text = str(ref).strip()
    path = Path(text).expanduser()
    if path.is_file():
        return [NamedWord(path, text)]
    with Store.open(project) as store:
        run = _run_or_none(store, text)
        if run is None:
            return [word_in(store, text, option)]
        return [_candidate_word(store, run, c) for c in _candidates_of(store, run)]


def word_in(store: Store, text: str, option: str = "") -> NamedWord:
    """`resolve_word` in an open store, for a name that is not a file."""
    named = _CANDIDATE.match(text)
    if named and not Path(text).expanduser().exists():
        run = _run_or_none(store, named["run"])
        if run is None:
            raise _unknown(store, text, option)
        return _candidate_word(store, run, store.find_candidate(run.id, named["cand"]))
    run = _run_or_none(store, text)
    if run is not None:
        cand, note = best_candidate(store, run)
        return _candidate_word(store, run, cand, note)
    folder = Path(text).expanduser()
    if folder.is_dir():
        found = folder_embedding(folder)
        if found is not None:
            return NamedWord(found, text)
        raise OnewordError(
            f"{option + ' ' if option else ''}{text}: a folder with no embedding file and no "
            f"run of {store.folder} records it; {HOW_TO_NAME} (see `oneword runs`)"
        )
    raise _unknown(store, text, option)


def _unknown(store: Store, text: str, option: str) -> OnewordError:
    return OnewordError(
        f"{option + ' ' if option else ''}{text}: no such file, run or candidate in "
        f"{store.folder}; {HOW_TO_NAME} (see `oneword runs`, or pass --project)"
    )


def _run_or_none(store: Store, text: str) -> RunRecord | None:
    """The run named by an id, `last` or a recorded folder; None if it names none."""
    if text == "last":
        runs = [r for r in store.runs() if r.kind in WORD_RUN_KINDS and store.candidates(r.id)]
        if not runs:
            raise OnewordError(f"last: no run in {store.folder} has made a word yet")
        return runs[-1]
    try:
        return store.find_run(text)
    except OnewordError:
        if re.fullmatch(r"[rR]?\d+", text):
            raise  # an id that is not in the store: its own error says so
        return None


def word_run(store: Store, ref: str) -> RunRecord:
    """A run whose candidates are words (for commands that take a whole run, as evolve):
    an id, `last` (the newest run that made words) or a run folder; `r8/c01` is refused with
    what to give instead."""
    text = str(ref).strip()
    named = _CANDIDATE.match(text)
    if named and not Path(text).expanduser().exists():
        raise OnewordError(
            f"{text}: names one candidate; this command takes a whole run: give {named['run']}"
        )
    run = _run_or_none(store, text)
    if run is None:
        raise OnewordError(
            f"run {text}: no run with this id or folder in {store.folder}; see `oneword runs` "
            "(or pass --project)"
        )
    return run


def _candidates_of(store: Store, run: RunRecord) -> list[CandidateRecord]:
    cands = store.candidates(run.id)
    if not cands:
        raise OnewordError(
            f"run {run.name}: has no candidates yet; finish it first (rerun its command "
            "with --resume) or name another run"
        )
    return cands


def best_candidate(store: Store, run: RunRecord) -> tuple[CandidateRecord, str]:
    """A run's best candidate and a note of why it was taken ("" for a run of one)."""
    from .verdicts import latest_scores, rating_of

    cands = _candidates_of(store, run)
    if len(cands) == 1:
        return cands[0], ""
    scores = latest_scores(store, run)
    ranked = [c for c in cands if "rank" in scores.get(c.id, {})]
    if ranked:
        best = min(ranked, key=lambda c: scores[c.id]["rank"])
        return best, f"{run.name} is {run.name}/{best.name}: ranked first by `oneword score`"
    rated = [(rating_of(store.ratings(c.id)), c) for c in cands]
    rated = [(v, c) for v, c in rated if not math.isnan(v)]
    if rated:
        value, best = max(rated, key=lambda vc: (vc[0], -vc[1].index))
        return best, f"{run.name} is {run.name}/{best.name}: your best rated ({value:g})"
    return cands[0], (
        f"{run.name} is {run.name}/{cands[0].name}: its {len(cands)} candidates are not scored "
        f"yet; run `oneword score {run.name}` to rank them, or name one ({run.name}/c01)"
    )


def candidate_file(store: Store, run: RunRecord, cand: CandidateRecord) -> Path:
    """The embedding file of a candidate: a per-layer word's own file, else diffusers'."""
    from ..core.per_layer import PER_LAYER_SUFFIX

    files = store.files(run.id, "embedding", cand.id)
    chosen = (
        [f for f in files if f.name.endswith(PER_LAYER_SUFFIX)]
        or [f for f in files if f.name == DIFFUSERS_FILE]
        or files
    )
    if not chosen or not chosen[0].is_file():
        raise OnewordError(
            f"run {run.name}: candidate {cand.name} has no embedding file yet; "
            "finish the run first (rerun its command with --resume)"
        )
    return chosen[0]


def _candidate_word(
    store: Store, run: RunRecord, cand: CandidateRecord, note: str = ""
) -> NamedWord:
    return NamedWord(candidate_file(store, run, cand), f"{run.name}/{cand.name}", note, run, cand)


def folder_embedding(folder: Path) -> Path | None:
    """The embedding file of a folder: diffusers' file, else its only embedding file."""
    if (folder / DIFFUSERS_FILE).is_file():
        return folder / DIFFUSERS_FILE
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in EMBEDDING_SUFFIXES)
    found = [p for p in found if p.is_file()]
    return found[0] if len(found) == 1 else None


_TOKEN = re.compile(r"<[^<>\s]+>")


def unloaded_tokens(prompt: str, loaded: list[str]) -> list[str]:
    """The `<token>`s of a prompt that no loaded word defines (each once, in order)."""
    return [t for t in dict.fromkeys(_TOKEN.findall(prompt)) if t not in loaded]
