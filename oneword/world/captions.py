"""Caption grammar for the procedural world.

Ordinary objects are named by their attributes ("a red striped star"); hidden
subjects only ever by their class word ("a photo of a cat on the beach").
"""

from __future__ import annotations

import re

import torch

from .render import COLORS, HIDDEN_SUBJECTS, PATTERNS, SCENES, SHAPES, STYLES, SUBJECTS_BY_ID, Spec

STYLE_PREFIX = {
    "photo": ["a photo of", "a photograph of", "a picture of"],
    "painting": ["a painting of", "an oil painting of"],
    "sketch": ["a sketch of", "a pencil sketch of", "a drawing of"],
}
STYLE_SUFFIX = {"photo": "in a photo", "painting": "in a painting", "sketch": "in a sketch"}
SCENE_PHRASE = {
    "beach": ["on the beach", "at the beach"],
    "snow": ["in the snow"],
    "grass": ["on the grass"],
    "night": ["at night"],
    "desert": ["in the desert"],
    "forest": ["in the forest", "in the woods"],
    "sea": ["on the sea", "at sea"],
    "room": ["in a room"],
    "city": ["in the city"],
}
PATTERN_ADJ = {"solid": "plain", "stripes": "striped", "dots": "dotted", "patches": "patched"}
PATTERN_NOUN = {"stripes": "stripes", "dots": "dots", "patches": "patches"}
SIZE_WORD = {"small": "small", "medium": "medium", "large": "large"}
POSITION_PHRASE = {"left": "on the left", "center": "in the middle", "right": "on the right"}

# keyword -> value maps used by parse_prompt
STYLE_WORDS = {
    "photo": "photo",
    "photograph": "photo",
    "picture": "photo",
    "painting": "painting",
    "sketch": "sketch",
    "drawing": "sketch",
}
SCENE_WORDS = {
    "beach": "beach",
    "snow": "snow",
    "grass": "grass",
    "night": "night",
    "desert": "desert",
    "forest": "forest",
    "woods": "forest",
    "sea": "sea",
    "room": "room",
    "city": "city",
}
PATTERN_WORDS = {
    "plain": "solid",
    "striped": "stripes",
    "stripes": "stripes",
    "dotted": "dots",
    "dots": "dots",
    "patched": "patches",
    "patches": "patches",
}
POSITION_WORDS = {"left": "left", "middle": "center", "right": "right"}
CLASS_WORDS = {s.class_word: s.id for s in HIDDEN_SUBJECTS}
SUBJECT_NAMES = {s.name: s.id for s in HIDDEN_SUBJECTS}


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _choice(options, generator):
    return options[
        int(torch.randint(len(options), (1,), generator=generator, device=generator.device))
    ]


def _coin(p, generator):
    return float(torch.rand(1, generator=generator, device=generator.device)) < p


def describe(spec: Spec) -> str:
    """Canonical attribute description of the object (hidden subjects: their attributes)."""
    if spec.pattern == "solid":
        return f"{spec.color} {spec.shape}"
    return f"{spec.color} {spec.color2} {PATTERN_ADJ[spec.pattern]} {spec.shape}"


def reference_prompt(spec: Spec) -> str:
    """Deterministic full caption built from describe(): 'a photo of a red star on the beach'."""
    prefix = STYLE_PREFIX[spec.style][0]
    return f"{prefix} {_article(describe(spec))} {SCENE_PHRASE[spec.scene][0]}"


def subject_noun(spec: Spec, generator: torch.Generator, name_share: float = 0.0) -> str:
    """What a caption calls a hidden subject: its name with probability `name_share`, else its
    class word. No random draw is made when `name_share` is 0 (the captions stay as before)."""
    subject = SUBJECTS_BY_ID[spec.subject]
    if name_share > 0 and _coin(name_share, generator):
        return subject.name
    return subject.class_word


def _object_phrase(spec: Spec, generator, name_share: float) -> str:
    size = SIZE_WORD[spec.size] + " " if _coin(0.3, generator) else ""
    if spec.subject is not None:
        return size + subject_noun(spec, generator, name_share)
    if spec.class_word is not None:
        return size + spec.class_word
    if spec.pattern == "solid":
        plain = "plain " if _coin(0.2, generator) else ""
        return f"{size}{plain}{spec.color} {spec.shape}"
    form = int(torch.randint(4, (1,), generator=generator, device=generator.device))
    c, c2, adj = spec.color, spec.color2, PATTERN_ADJ[spec.pattern]
    return (
        size
        + [
            f"{c} {adj} {spec.shape}",
            f"{c} and {c2} {adj} {spec.shape}",
            f"{c} {spec.shape} with {c2} {PATTERN_NOUN.get(spec.pattern, '')}",
            f"{c} {c2} {adj} {spec.shape}",
        ][form]
    )


def caption(spec: Spec, generator: torch.Generator, name_share: float = 0.0) -> str:
    """A random caption for spec from the grammar; a hidden subject is called by its name with
    probability `name_share` (see `subject_noun`)."""
    obj = _article(_object_phrase(spec, generator, name_share))
    if _coin(0.2, generator):
        obj += " " + POSITION_PHRASE[spec.position]
    scene = _choice(SCENE_PHRASE[spec.scene], generator)
    if _coin(0.15, generator):
        return f"{obj} {scene} {STYLE_SUFFIX[spec.style]}"
    return f"{_choice(STYLE_PREFIX[spec.style], generator)} {obj} {scene}"


def vocabulary() -> list[str]:
    """Every word the grammar can produce, sorted (the subjects' names included)."""
    phrases = [p for v in STYLE_PREFIX.values() for p in v] + list(STYLE_SUFFIX.values())
    phrases += [p for v in SCENE_PHRASE.values() for p in v] + list(POSITION_PHRASE.values())
    phrases += list(PATTERN_ADJ.values()) + list(PATTERN_NOUN.values()) + list(SIZE_WORD.values())
    phrases += (
        COLORS + SHAPES + list(CLASS_WORDS) + list(SUBJECT_NAMES) + ["a", "an", "and", "with"]
    )
    return sorted({w for p in phrases for w in p.split()})


def tokenize(prompt: str) -> list[str]:
    """Lowercase words; placeholder tokens like '<my-cat>' are kept verbatim."""
    toks = [
        t if t.startswith("<") else re.sub(r"[^a-z]", "", t)
        for t in re.findall(r"<[^>]*>|[^\s<]+", prompt.lower())
    ]
    return [t for t in toks if t]


def parse_prompt(prompt: str) -> dict:
    """Which attributes a prompt requests: keys among style, scene, shape, color, color2,
    pattern, size, position, subject.  Unknown tokens are ignored."""
    out: dict = {}
    colors = []
    for w in tokenize(prompt):
        if w in STYLE_WORDS:
            out.setdefault("style", STYLE_WORDS[w])
        elif w in SCENE_WORDS:
            out.setdefault("scene", SCENE_WORDS[w])
        elif w in SHAPES:
            out.setdefault("shape", w)
        elif w in COLORS:
            colors.append(w)
        elif w in PATTERN_WORDS:
            out.setdefault("pattern", PATTERN_WORDS[w])
        elif w in SIZE_WORD:
            out.setdefault("size", w)
        elif w in POSITION_WORDS:
            out.setdefault("position", POSITION_WORDS[w])
        elif w in CLASS_WORDS:
            out.setdefault("subject", CLASS_WORDS[w])
        elif w in SUBJECT_NAMES:
            out.setdefault("subject", SUBJECT_NAMES[w])
    if colors:
        out["color"] = colors[0]
    if len(colors) > 1:
        out["color2"] = colors[1]
    elif colors and out.get("pattern") == "solid":
        out["color2"] = colors[0]
    return out


assert set(STYLE_PREFIX) == set(STYLES) and set(SCENE_PHRASE) == set(SCENES)
assert set(PATTERN_ADJ) == set(PATTERNS)
