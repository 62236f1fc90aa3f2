"""The edit test: prompts where a word must give way, judged by the oracle on both sides.

A word that overpowers its prompt draws the subject the same whatever the prompt asks; a word
that has not learned its subject obeys the prompt but draws something else. So each image is
judged twice: the edit obeyed (the style and scene asked for; the colour asked of the subject;
the pattern asked of it) and the subject still itself in what the edit did not touch (in a new
style or scene: the oracle still calls it the subject; under a new colour: its shape and
pattern; under a new pattern: its shape and colour). The world draws one object per image, so
the test has no "beside another object" prompts.

96 images per subject: the 27 styles x scenes at 2 seeds, 4 colours at 6 seeds and 3 patterns
at 6 seeds (the colour and pattern prompts go round the scenes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .captions import PATTERN_ADJ, SCENE_PHRASE, STYLE_PREFIX
from .metrics import predict_indices
from .oracle import HEADS
from .render import COLORS, PATTERNS, SCENES, STYLES, SUBJECTS_BY_ID

EDIT_KINDS = ("style", "colour", "pattern")
# Colours asked of a subject, in this order, skipping its own two
EDIT_COLORS = ("blue", "green", "purple", "yellow", "red", "pink")


@dataclass(frozen=True)
class Edit:
    """One image of the edit test: its prompt ("{}" is the subject's noun phrase without an
    article, e.g. "<s-cat>" or "cat"), its image seed, what it asks and what must stay."""

    kind: str  # one of EDIT_KINDS
    template: str
    seed: int
    asked: tuple[tuple[str, str], ...]  # (oracle head, value) the image must show
    kept: tuple[tuple[str, str], ...]  # (oracle head, value) of the subject it must keep


def edit_set(subject_id: str, first_seed: int = 0) -> list[Edit]:
    """The 96 images of the edit test for one subject."""
    s = SUBJECTS_BY_ID[subject_id]
    itself = (("subject", s.id),)
    out = []
    for i, (style, scene) in enumerate((a, b) for a in STYLES for b in SCENES):
        template = f"{STYLE_PREFIX[style][0]} a {{}} {SCENE_PHRASE[scene][0]}"
        for seed in range(2):
            asked = (("style", style), ("scene", scene))
            out.append(Edit("style", template, first_seed + 2 * i + seed, asked, itself))
    colours = [c for c in EDIT_COLORS if c not in (s.color, s.color2)][:4]
    patterns = [p for p in PATTERNS if p != s.pattern]
    keep_for_colour = (("shape", s.shape), ("pattern", s.pattern))
    keep_for_pattern = (("shape", s.shape), ("color", s.color))
    asks = [("colour", c, (("color", c),), keep_for_colour) for c in colours]
    asks += [("pattern", PATTERN_ADJ[p], (("pattern", p),), keep_for_pattern) for p in patterns]
    for j, (kind, word, asked, kept) in enumerate(asks):
        for seed in range(6):
            scene = SCENES[(6 * j + seed) % len(SCENES)]
            template = f"a photo of a {word} {{}} {SCENE_PHRASE[scene][0]}"
            out.append(Edit(kind, template, first_seed + 100 + 6 * j + seed, asked, kept))
    return out


def prompts_for(edits: list[Edit], phrase: str) -> list[str]:
    """Each edit's prompt with the subject's phrase ("<s-cat>", "cat") in place."""
    return [e.template.format(phrase) for e in edits]


def judge(oracle, images: torch.Tensor, edits: list[Edit]) -> dict[str, torch.Tensor]:
    """[B] 0/1 per image: 'obeyed' (every asked attribute read), 'kept' (every kept one read)
    and 'both'."""
    predicted = predict_indices(oracle, images)

    def reads(pairs, i) -> bool:
        return all(int(predicted[head][i]) == HEADS[head].index(v) for head, v in pairs)

    obeyed = torch.tensor([reads(e.asked, i) for i, e in enumerate(edits)], dtype=torch.float)
    kept = torch.tensor([reads(e.kept, i) for i, e in enumerate(edits)], dtype=torch.float)
    return {"obeyed": obeyed, "kept": kept, "both": obeyed * kept}


def by_kind(edits: list[Edit], hits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The hits of each kind of edit, and of all of them ('all')."""
    kinds = [e.kind for e in edits]
    out = {k: hits[torch.tensor([x == k for x in kinds])] for k in EDIT_KINDS}
    return {**out, "all": hits}


assert all(c in COLORS for c in EDIT_COLORS)
