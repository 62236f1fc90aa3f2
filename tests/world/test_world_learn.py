"""The built-in world model loads through the standard loader, like a real checkpoint."""

from __future__ import annotations

import torch

from oneword.adapters.loading import WORLD_MODEL_FOLDER, load_model
from oneword.api import DEFAULT_MODEL

SHORT_LEARN_SUBJECT, SHORT_LEARN_STEPS = "robot", 300


def test_world_model_loads_like_a_checkpoint():
    model = load_model(str(WORLD_MODEL_FOLDER))
    assert model.native_resolution == 64
    assert model.tokenizer.tokenize("a painting of a cat in the snow") == [
        "a</w>",
        "painting</w>",
        "of</w>",
        "a</w>",
        "cat</w>",
        "in</w>",
        "the</w>",
        "snow</w>",
    ]


def test_world_model_is_the_default_and_draws_64px():
    assert DEFAULT_MODEL == "world"
    model = load_model(DEFAULT_MODEL)
    states = model.encode_text(model.token_ids(["a photo of a cat on the beach"]))
    images = model.generate(
        states,
        model.encode_text(model.token_ids([""])),
        [torch.Generator().manual_seed(0)],
        2,
        5.0,
        64,
    )
    assert images.shape == (1, 3, 64, 64) and 0 <= images.min() and images.max() <= 1


def test_a_short_learn_raises_concept_fidelity_over_the_class_word(tmp_path):
    """Textual Inversion on the world model: the default learn (300 steps) from the class word
    gives a word whose images the oracle more often finds to be the subject, and finds closer to
    the photos, than the class word's images (fixed seeds; about 45 s on 2 CPU cores).

    The robot, whose learned word the quality bench puts at 0.81 against 0.01 for its class word."""
    from oneword.core.generate import Sampling, Words, draw
    from oneword.core.train import TrainConfig, train
    from oneword.world import evaluate
    from oneword.world.oracle import load_oracle
    from oneword.world.render import SUBJECTS_BY_ID

    subject, steps = SHORT_LEARN_SUBJECT, SHORT_LEARN_STEPS
    model = load_model("world")
    photos = evaluate.subject_photos(subject, 5, torch.Generator().manual_seed(0))
    model.add_placeholder_tokens(["<s>"])
    config = TrainConfig(
        token="<s>",
        init_word=SUBJECTS_BY_ID[subject].class_word,
        steps=steps,
        lr=5e-3,
        batch_size=4,
        grad_accum=1,
        seed=0,
        checkpoint_every=steps,
    )
    state = train(model, torch.cat([photos, photos.flip(-1)]) * 2 - 1, config, tmp_path)
    words = Words({"<s>": 1}, state.rows()[0:1])
    seeds = [0, 1, 2, 3]
    scores = {}
    for how, phrase in (("learned", "<s>"), ("class", f"a {SUBJECTS_BY_ID[subject].class_word}")):
        batch = [t.format(phrase) for t in evaluate.NOVEL_PROMPTS[:4] for _ in seeds]
        images = draw(model, batch, seeds * 4, words, Sampling(steps=15, cfg=5.0, size=64))
        scores[how] = evaluate.score_images(load_oracle(), images, batch, subject, photos)
    # measured on the committed model: concept fidelity 0.81 learned vs 0.00 class word (16
    # images each), similarity 0.945 vs 0.771
    learned, class_word = scores["learned"], scores["class"]
    assert learned.concept_fidelity >= class_word.concept_fidelity + 0.5
    assert learned.concept_similarity > class_word.concept_similarity + 0.1
