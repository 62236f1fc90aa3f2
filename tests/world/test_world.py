import torch

from oneword.world import (
    COLORS,
    HIDDEN_SUBJECTS,
    PATTERNS,
    SCENES,
    SHAPES,
    STYLES,
    Spec,
    caption,
    decoy_spec,
    describe,
    parse_prompt,
    reference_prompt,
    render_batch,
    sample_specs,
    subject_spec,
    tokenize,
    vocabulary,
)
from oneword.world.captions import CLASS_WORDS
from oneword.world.render import render_with_coverage


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def render(seed, n=32):
    g = gen(seed)
    return render_batch(sample_specs(n, g), g)


def test_constants_sizes():
    assert len(SHAPES) >= 6 and len(COLORS) >= 8 and len(SCENES) >= 8 and len(STYLES) >= 3
    assert len(HIDDEN_SUBJECTS) >= 8 and len({s.class_word for s in HIDDEN_SUBJECTS}) == len(
        HIDDEN_SUBJECTS
    )
    combos = {(s.shape, s.color, s.color2, s.pattern) for s in HIDDEN_SUBJECTS}
    assert len(combos) == len(HIDDEN_SUBJECTS)


def test_render_shape_range_dtype():
    x = render(0, 48)
    assert x.shape == (48, 3, 64, 64) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    assert x.std() > 0.1


def test_determinism():
    assert torch.equal(render(7), render(7))
    assert not torch.equal(render(7), render(8))


def test_coverage_marks_the_object_of_the_same_render():
    specs = [
        Spec("square", "red", "blue", "solid", "large", pos, "grass", style)
        for pos in ("left", "right")
        for style in STYLES
    ]
    images, coverage = render_with_coverage(specs, gen(3))
    assert torch.equal(images, render_batch(specs, gen(3)))
    assert coverage.shape == (6, 3, 64, 64) and 0 <= coverage.min() and coverage.max() <= 1
    assert (coverage[:, 1:] == 0).all()  # solid, no mark
    left, right = coverage[:3, 0, 37, 20], coverage[3:, 0, 37, 20]
    assert (left == 1).all() and (right == 0).all()  # object centre vs the other side
    assert (coverage[:, 0, 0, 0] == 0).all()  # a corner is scene
    assert 0.1 < coverage[:, 0].mean() < 0.4


def test_coverage_marks_the_pattern_and_a_subjects_mark():
    plain = Spec("circle", "red", "white", "stripes", "large", "center", "grass", "photo")
    ball = subject_spec("ball", "grass", "photo", gen(1))
    _, coverage = render_with_coverage([plain, ball], gen(4))
    stripes, mark = coverage[:, 1], coverage[:, 2]
    assert 0.2 < stripes[0].sum() / coverage[0, 0].sum() < 0.8  # about half the body
    assert (mark[0] == 0).all() and mark[1].sum() > 10
    assert (stripes[1][mark[1] == 1] == 0).all()  # the mark paints over the stripes
    assert (coverage[:, 1:] <= coverage[:, :1] + 1e-6).all()  # details lie on the object


def test_every_attribute_renders():
    g = gen(1)
    specs = [
        Spec(
            sh,
            COLORS[i % len(COLORS)],
            COLORS[(i + 3) % len(COLORS)],
            PATTERNS[i % 4],
            "large",
            "center",
            SCENES[i % len(SCENES)],
            STYLES[i % len(STYLES)],
        )
        for i, sh in enumerate(SHAPES * 3)
    ]
    x = render_batch(specs, g)
    assert x.shape[0] == len(specs) and torch.isfinite(x).all()


def _one(spec, seed=3):
    return render_batch([spec], gen(seed))[0]


def test_style_is_a_visible_change():
    base = subject_spec("cat", "beach", "photo", gen(0))
    imgs = {st: _one(Spec(**{**base.__dict__, "style": st})) for st in STYLES}
    for a in STYLES:
        for b in STYLES:
            if a < b:
                assert (imgs[a] - imgs[b]).abs().mean() > 0.03, (a, b)


def test_scene_and_shape_change_pixels():
    base = Spec("star", "red", "white", "stripes", "large", "center", "beach", "photo")
    for field, other in [
        ("scene", "night"),
        ("shape", "circle"),
        ("pattern", "dots"),
        ("color", "blue"),
    ]:
        diff = (_one(base) - _one(Spec(**{**base.__dict__, field: other}))).abs().mean()
        assert diff > 0.01, field


def test_mark_distinguishes_subject_from_decoy():
    s = subject_spec("cat", "grass", "photo", gen(0))
    diff = (_one(s) - _one(decoy_spec(s))).abs().sum(0)
    assert 3 < (diff > 0.1).sum() < 400


def test_sample_specs_rules():
    specs = sample_specs(2000, gen(2))
    hidden = [s for s in specs if s.subject]
    assert 0.25 < len(hidden) / len(specs) < 0.35
    for s in specs:
        assert (s.color2 == s.color) == (s.pattern == "solid")
    by_id = {h.id: h for h in HIDDEN_SUBJECTS}
    for s in hidden:
        h = by_id[s.subject]
        assert (s.shape, s.color, s.color2, s.pattern) == (h.shape, h.color, h.color2, h.pattern)
        assert s.size in ("medium", "large")
    assert all(s.subject is None for s in sample_specs(200, gen(3), hidden_fraction=0.0))
    only = sample_specs(200, gen(4), hidden_fraction=1.0, subjects=["dog", "toy"])
    assert {s.subject for s in only} == {"dog", "toy"}
    assert sample_specs(10, gen(5)) == sample_specs(10, gen(5))


def test_subject_spec():
    s = subject_spec("ball", "snow", "sketch", gen(0))
    assert (s.subject, s.scene, s.style, s.shape) == ("ball", "snow", "sketch", "circle")


def test_vocabulary_covers_captions_exactly():
    vocab = vocabulary()
    assert vocab == sorted(set(vocab)) and all(w.isalpha() and w.islower() for w in vocab)
    g = gen(11)
    used = set()
    for s in sample_specs(4000, g):
        used.update(caption(s, g, name_share=0.5).split())
    assert used == set(vocab)


def test_names_appear_only_when_asked_and_only_for_their_subject():
    names = {h.name: h.id for h in HIDDEN_SUBJECTS}
    specs = sample_specs(600, gen(13))
    assert not any(set(caption(s, gen(i)).split()) & set(names) for i, s in enumerate(specs))
    for i, s in enumerate(specs):
        words = set(caption(s, gen(i), name_share=1.0).split())
        if s.subject:
            assert {names[w] for w in words & set(names)} == {s.subject}
            assert not words & set(CLASS_WORDS)
        else:
            assert not words & set(names)
    assert parse_prompt("a painting of a mittens in the snow")["subject"] == "cat"


def test_hidden_subjects_named_only_by_class_word():
    attr_words = (
        set(COLORS)
        | set(SHAPES)
        | {"plain", "striped", "dotted", "patched", "stripes", "dots", "patches"}
    )
    g = gen(12)
    for s in sample_specs(1500, g):
        words = set(caption(s, g).split())
        if s.subject:
            assert not words & attr_words
            assert CLASS_WORDS_BY_ID[s.subject] in words
            assert len(words & set(CLASS_WORDS)) == 1
        else:
            assert not words & set(CLASS_WORDS)


CLASS_WORDS_BY_ID = {v: k for k, v in CLASS_WORDS.items()}


def test_describe_and_reference_prompt():
    for h in HIDDEN_SUBJECTS:
        s = subject_spec(h.id, "beach", "photo", gen(0))
        assert describe(s) == h.description
        assert h.class_word not in reference_prompt(s).split()
        assert set(reference_prompt(s).split()) <= set(vocabulary())
    s = Spec("star", "red", "white", "stripes", "small", "left", "snow", "painting")
    assert reference_prompt(s) == "a painting of a red white striped star in the snow"
    s = Spec("heart", "orange", "orange", "solid", "small", "left", "night", "sketch")
    assert reference_prompt(s) == "a sketch of an orange heart at night"


def test_parse_prompt_examples():
    assert parse_prompt("a painting of <my-cat> in the snow") == {
        "style": "painting",
        "scene": "snow",
    }
    assert parse_prompt("A photo of a red striped star, on the beach.") == {
        "style": "photo",
        "color": "red",
        "pattern": "stripes",
        "shape": "star",
        "scene": "beach",
    }
    assert parse_prompt("a drawing of a red star with white dots at sea") == {
        "style": "sketch",
        "color": "red",
        "color2": "white",
        "shape": "star",
        "pattern": "dots",
        "scene": "sea",
    }
    assert parse_prompt("a photo of a cat in the woods")["subject"] == "cat"
    assert parse_prompt("<x> <y>") == {}
    assert tokenize("a <my-cat>, please") == ["a", "<my-cat>", "please"]


def test_parse_prompt_roundtrip_on_captions():
    g = gen(13)
    for s in sample_specs(800, g):
        p = parse_prompt(caption(s, g))
        assert p["style"] == s.style and p["scene"] == s.scene
        for k in ("shape", "color", "color2", "pattern", "subject", "size", "position"):
            if k in p:
                assert p[k] == getattr(s, k), (k, p, s)
        if s.subject is None:
            assert p["shape"] == s.shape and p["color"] == s.color
        assert parse_prompt(reference_prompt(s)).get("pattern", "solid") == s.pattern
