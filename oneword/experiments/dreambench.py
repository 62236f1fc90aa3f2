"""The DreamBench benchmark of DreamBooth (Ruiz et al., CVPR 2023): its 30 subjects' classes
and its 25 object and 25 live-subject prompts, as the benchmark defines them.

In a prompt template `{token}` stands for the learned word and `{class}` for the subject's class
word ('a {token} {class} in the jungle' is the benchmark's 'a {0} {1} in the jungle'). The
photos are not shipped: the benchmark reads them from a folder of one sub-folder per subject.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import OnewordError

OBJECT_PROMPTS = tuple(
    f"a {{token}} {{class}} {rest}".strip()
    for rest in (
        "in the jungle",
        "in the snow",
        "on the beach",
        "on a cobblestone street",
        "on top of pink fabric",
        "on top of a wooden floor",
        "with a city in the background",
        "with a mountain in the background",
        "with a blue house in the background",
        "on top of a purple rug in a forest",
        "with a wheat field in the background",
        "with a tree and autumn leaves in the background",
        "with the Eiffel Tower in the background",
        "floating on top of water",
        "floating in an ocean of milk",
        "on top of green grass with sunflowers around it",
        "on top of a mirror",
        "on top of the sidewalk in a crowded street",
        "on top of a dirt road",
        "on top of a white rug",
    )
) + (
    "a red {token} {class}",
    "a purple {token} {class}",
    "a shiny {token} {class}",
    "a wet {token} {class}",
    "a cube shaped {token} {class}",
)

LIVE_PROMPTS = (
    tuple(
        f"a {{token}} {{class}} {rest}"
        for rest in (
            "in the jungle",
            "in the snow",
            "on the beach",
            "on a cobblestone street",
            "on top of pink fabric",
            "on top of a wooden floor",
            "with a city in the background",
            "with a mountain in the background",
            "with a blue house in the background",
            "on top of a purple rug in a forest",
            "wearing a red hat",
            "wearing a santa hat",
            "wearing a rainbow scarf",
            "wearing a black top hat and a monocle",
            "in a chef outfit",
            "in a firefighter outfit",
            "in a police outfit",
            "wearing pink glasses",
            "wearing a yellow shirt",
            "in a purple wizard outfit",
        )
    )
    + OBJECT_PROMPTS[-5:]
)

SUBJECT_CLASSES = {
    "backpack": "backpack",
    "backpack_dog": "backpack",
    "bear_plushie": "stuffed animal",
    "berry_bowl": "bowl",
    "can": "can",
    "candle": "candle",
    "cat": "cat",
    "cat2": "cat",
    "clock": "clock",
    "colorful_sneaker": "sneaker",
    "dog": "dog",
    "dog2": "dog",
    "dog3": "dog",
    "dog5": "dog",
    "dog6": "dog",
    "dog7": "dog",
    "dog8": "dog",
    "duck_toy": "toy",
    "fancy_boot": "boot",
    "grey_sloth_plushie": "stuffed animal",
    "monster_toy": "toy",
    "pink_sunglasses": "glasses",
    "poop_emoji": "toy",
    "rc_car": "toy",
    "red_cartoon": "cartoon",
    "robot_toy": "toy",
    "shiny_sneaker": "sneaker",
    "teapot": "teapot",
    "vase": "vase",
    "wolf_plushie": "stuffed animal",
}
LIVE_CLASSES = ("cat", "dog")
PROMPT_SETS = ("object", "live")
IMAGES_PER_PROMPT = 4


def prompts_for(kind: str) -> tuple[str, ...]:
    if kind == "object":
        return OBJECT_PROMPTS
    if kind == "live":
        return LIVE_PROMPTS
    raise OnewordError(f"--prompts {kind}: choose object, live or a text file of prompts")


def prompt_set_for_class(class_word: str) -> str:
    """'live' for the benchmark's live subjects (cats and dogs), else 'object'."""
    return "live" if class_word.strip().split()[-1:] in ([c] for c in LIVE_CLASSES) else "object"


def fill(template: str, token: str, class_word: str) -> str:
    """A prompt from a template: '{token}'/'{}' → the token, '{class}' → the class word."""
    text = template.replace("{token}", token).replace("{}", token)
    text = text.replace("{class}", class_word)
    return re.sub(r"\s+", " ", text).strip()


def read_prompt_file(path: str | Path) -> tuple[str, ...]:
    """Prompt templates, one a line ('#' comments); each must hold {} or {token}."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise OnewordError(f"--prompts {path}: no such file; give object, live or a text file")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    prompts = tuple(ln for ln in lines if ln and not ln.startswith("#"))
    if not prompts:
        raise OnewordError(f"--prompts {path}: holds no prompts")
    bad = [p for p in prompts if "{token}" not in p and "{}" not in p]
    if bad:
        raise OnewordError(
            f"--prompts {path}: the prompt {bad[0]!r} has no {{token}} (or {{}}) "
            "for the learned word"
        )
    return prompts


def subjects_in(folder: str | Path) -> dict[str, Path]:
    """Subject name → photo folder, for every sub-folder of a DreamBench-style folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise OnewordError(
            f"--data {folder}: no such folder; give the DreamBench folder "
            "(one sub-folder of photos per subject)"
        )
    found = {p.name: p for p in sorted(folder.iterdir()) if p.is_dir()}
    if not found:
        raise OnewordError(f"--data {folder}: has no subject sub-folders")
    return found


def read_classes(folder: str | Path) -> dict[str, str]:
    """Subject → class word: the benchmark's table, updated from the folder's
    prompts_and_classes.txt when it has one."""
    classes = dict(SUBJECT_CLASSES)
    listing = Path(folder) / "prompts_and_classes.txt"
    if listing.is_file():
        for line in listing.read_text().splitlines():
            parts = line.strip().split(",")
            if (
                len(parts) == 2
                and re.fullmatch(r"[A-Za-z0-9_-]+", parts[0])
                and parts[0] != "subject_name"
                and parts[1]
            ):
                classes[parts[0]] = parts[1]
    return classes
