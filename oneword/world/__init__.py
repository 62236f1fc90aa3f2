"""oneword.world: a procedural world with an oracle that knows the truth of every image."""

from .render import (
    COLORS,
    HIDDEN_SUBJECTS,
    PATTERNS,
    POSITIONS,
    SCENES,
    SHAPES,
    SIZES,
    STYLES,
    SUBJECT_IDS,
    SUBJECTS_BY_ID,
    HiddenSubject,
    Spec,
    decoy_spec,
    render_batch,
    sample_specs,
    subject_spec,
)

__all__ = [
    "COLORS",
    "HIDDEN_SUBJECTS",
    "PATTERNS",
    "POSITIONS",
    "SCENES",
    "SHAPES",
    "SIZES",
    "STYLES",
    "SUBJECT_IDS",
    "SUBJECTS_BY_ID",
    "HiddenSubject",
    "Spec",
    "decoy_spec",
    "render_batch",
    "sample_specs",
    "subject_spec",
]
from .captions import caption, describe, parse_prompt, reference_prompt, tokenize, vocabulary

__all__ += ["caption", "describe", "parse_prompt", "reference_prompt", "tokenize", "vocabulary"]
