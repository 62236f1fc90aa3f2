"""Caption templates for training and the preview prompts.

Gal et al. (2022) train with neutral captions around the placeholder so that the learned vector
takes the subject (object mode) or the look (style mode) and nothing else. The wording here is
our own.
"""

from __future__ import annotations

OBJECT_TEMPLATES = (
    "a photo of a {}",
    "a picture of the {}",
    "a close photo of a {}",
    "a bright photo of the {}",
    "a dark photo of a {}",
    "a cropped photo of the {}",
    "a good photo of a {}",
    "a small {} in a photo",
    "a large {} in a photo",
    "a clean photo of the {}",
    "a blurry photo of a {}",
    "a photo of my {}",
    "an image of the {}",
    "the {} in a photo",
)

STYLE_TEMPLATES = (
    "a painting in the style of {}",
    "a picture in the style of {}",
    "an image in the style of {}",
    "a drawing in the style of {}",
    "a small painting in the style of {}",
    "a large picture in the style of {}",
    "a bright painting in the style of {}",
    "a dark image in the style of {}",
    "a cropped drawing in the style of {}",
    "a good picture in the style of {}",
    "art in the style of {}",
    "a work in the style of {}",
)

MODES = ("object", "style")

PREVIEW_PROMPTS = {
    "object": ("a photo of a {}", "a painting of a {} on the beach"),
    "style": ("a painting in the style of {}", "a cat in the style of {}"),
}


def templates(mode: str) -> tuple[str, ...]:
    if mode == "object":
        return OBJECT_TEMPLATES
    if mode == "style":
        return STYLE_TEMPLATES
    raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


def token_string(token: str, num_vectors: int) -> str:
    """The text a multi-vector token stands for: '<t> <t>_1 <t>_2' (diffusers' convention)."""
    return " ".join(placeholder_names(token, num_vectors))


def placeholder_names(token: str, num_vectors: int) -> list[str]:
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def expand_tokens(prompt: str, tokens: dict[str, int]) -> str:
    """Replace each learned token by its full multi-vector string."""
    for token, n in sorted(tokens.items(), key=lambda kv: -len(kv[0])):
        if n > 1:
            prompt = prompt.replace(token, token_string(token, n))
    return prompt


def template_words() -> list[str]:
    """Every word the templates and previews use (for building tiny tokenizers)."""
    words: set[str] = set()
    for text in OBJECT_TEMPLATES + STYLE_TEMPLATES + sum(PREVIEW_PROMPTS.values(), ()):
        words.update(w for w in text.replace("{}", " ").split())
    return sorted(words)
