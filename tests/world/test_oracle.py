import pytest
import torch
import torch.nn.functional as F

from oneword.world import SCENES, STYLES, SUBJECT_IDS, Spec, decoy_spec, render_batch, subject_spec
from oneword.world.captions import parse_prompt
from oneword.world.metrics import (
    attribute_accuracy,
    concept_fidelity,
    concept_similarity,
    prompt_fidelity,
    subject_hits,
)
from oneword.world.oracle import (
    FEAT_DIM,
    HEADS,
    adopt_weights,
    evaluate,
    labels,
    load_oracle,
    new_oracle,
    save_oracle,
    train_oracle,
)


@pytest.fixture(scope="module")
def oracle():
    torch.set_grad_enabled(False)
    yield load_oracle()
    torch.set_grad_enabled(True)


def subject_images(subject_id, n, seed, decoy=False):
    g = torch.Generator().manual_seed(seed)
    specs = [
        subject_spec(subject_id, SCENES[i % len(SCENES)], STYLES[i % len(STYLES)], g)
        for i in range(n)
    ]
    if decoy:
        specs = [decoy_spec(s) for s in specs]
    return render_batch(specs, g)


def test_small_and_under_a_million_params(oracle):
    assert sum(p.numel() for p in oracle.parameters()) < 1_000_000


def test_heldout_accuracy_every_head(oracle):
    acc = evaluate(oracle, n=256, seed=2024, batch_size=128)
    assert set(acc) == set(HEADS)
    for head, a in acc.items():
        assert a >= 0.95, (head, a)


def test_features_are_normalised(oracle):
    x = subject_images("cat", 4, 0)
    f = oracle.features(x)
    assert f.shape == (4, FEAT_DIM)
    assert torch.allclose(f.norm(dim=1), torch.ones(4), atol=1e-5)


def test_every_subject_recognised_and_decoys_rejected(oracle):
    for i, sid in enumerate(SUBJECT_IDS):
        x = subject_images(sid, 12, i)
        assert concept_fidelity(oracle, x, sid) >= 0.9, sid
        assert concept_fidelity(oracle, subject_images(sid, 12, i, decoy=True), sid) <= 0.1, sid


def test_concept_fidelity_a_vs_b(oracle):
    cats = subject_images("cat", 24, 1)
    assert concept_fidelity(oracle, cats, "cat") >= 0.9
    assert concept_fidelity(oracle, cats, "dog") <= 0.05


def test_concept_similarity_orders_subjects(oracle):
    cats, refs = subject_images("cat", 24, 2), subject_images("cat", 24, 3)
    dogs = subject_images("dog", 24, 4)
    same, other = concept_similarity(oracle, cats, refs), concept_similarity(oracle, dogs, refs)
    assert -1 <= other < same <= 1
    assert same - other > 0.2


def test_metrics_accept_other_resolutions(oracle):
    cats = subject_images("cat", 12, 5)
    big = F.interpolate(cats, size=(128, 128), mode="bilinear", align_corners=False)
    assert concept_fidelity(oracle, big, "cat") >= 0.9


def test_prompt_fidelity_and_attribute_accuracy(oracle):
    prompt = "a painting of a red white striped star in the snow"
    g = torch.Generator().manual_seed(6)
    specs = [
        Spec(
            "star",
            "red",
            "white",
            "stripes",
            ["medium", "large"][i % 2],
            ["left", "center", "right"][i % 3],
            "snow",
            "painting",
        )
        for i in range(24)
    ]
    x = render_batch(specs, g)
    req = parse_prompt(prompt)
    assert prompt_fidelity(oracle, x, req) >= 0.9
    assert prompt_fidelity(oracle, x, prompt) == prompt_fidelity(oracle, x, req)
    acc = attribute_accuracy(oracle, x, {**req, "size": "small"})
    assert set(acc) == {"style", "color", "color2", "pattern", "shape", "scene"}
    assert min(acc.values()) >= 0.9
    assert prompt_fidelity(oracle, x, "a photo of a red star in the snow") <= 0.1
    wrong = attribute_accuracy(oracle, x, "a sketch of a blue star at night")
    assert wrong["style"] <= 0.1 and wrong["color"] <= 0.1 and wrong["scene"] <= 0.1
    assert wrong["shape"] >= 0.9
    assert prompt_fidelity(oracle, x, "a painting of <x>") >= 0.9
    assert prompt_fidelity(oracle, x, "<x>") == 1.0


def test_labels_match_heads():
    s = Spec("star", "red", "white", "stripes", "small", "left", "snow", "painting")
    lab = labels([s])
    assert {k: HEADS[k][v.item()] for k, v in lab.items()} == {
        "shape": "star",
        "color": "red",
        "color2": "white",
        "pattern": "stripes",
        "scene": "snow",
        "style": "painting",
        "subject": "none",
    }


def test_a_fresh_oracle_is_seeded_by_its_generator_not_the_global_rng():
    rng = torch.get_rng_state()
    with torch.enable_grad():
        a, b, c = (
            train_oracle(
                steps=1, batch_size=2, generator=torch.Generator().manual_seed(s), log_every=0
            )
            for s in (3, 3, 4)
        )
    assert torch.equal(torch.get_rng_state(), rng)
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    assert torch.equal(flat(a), flat(b)) and not torch.equal(flat(a), flat(c))


def test_fine_tuning_starts_from_the_given_weights_and_leaves_global_rng_alone():
    start = load_oracle()
    before = {k: v.detach().clone() for k, v in start.named_parameters()}
    rng = torch.get_rng_state()
    with torch.enable_grad():
        tuned = train_oracle(
            steps=2,
            batch_size=4,
            generator=torch.Generator().manual_seed(0),
            lr=1e-4,
            log_every=0,
            init=start,
        )
    assert torch.equal(torch.get_rng_state(), rng)
    assert not tuned.training
    after = dict(tuned.named_parameters())
    moved = [(after[k] - v).abs().max().item() for k, v in before.items()]
    assert 0 < max(moved) < 0.05  # a small step away from the start, not a fresh network


def test_fine_tuning_after_a_label_change_keeps_every_other_weight(tmp_path):
    old = new_oracle(torch.Generator().manual_seed(1))
    old.heads["shape"] = torch.nn.Linear(FEAT_DIM, len(HEADS["shape"]) + 1)  # one shape more
    save_oracle(old, tmp_path / "old.safetensors", half=False)
    fresh = new_oracle(torch.Generator().manual_seed(2))
    fresh_shape_head = fresh.heads["shape"].weight.detach().clone()
    assert adopt_weights(fresh, tmp_path / "old.safetensors") == ["shape"]
    assert torch.equal(fresh.heads["shape"].weight, fresh_shape_head)
    kept = dict(old.state_dict())
    for k, v in fresh.state_dict().items():
        if not k.startswith("heads.shape."):
            assert torch.equal(v, kept[k]), k


def test_companion_photos_show_the_subject_beside_its_companion(oracle):
    from dataclasses import replace

    from oneword.world import evaluate
    from oneword.world.evaluate import COMPANION, companion_hits, companion_photos

    photos, masks = companion_photos("robot", 6, torch.Generator().manual_seed(3))
    assert photos.shape == (6, 3, 64, 64) and masks.shape == (6, 1, 64, 64)
    assert 0 <= masks.min() and masks.max() <= 1 and (masks > 0.5).float().mean() > 0.05
    # the oracle reads the subject in each photo, and the companion where it stands alone
    assert subject_hits(oracle, photos, "robot").all()
    alone = [replace(COMPANION, position=p, scene=s) for p in ("left", "right") for s in SCENES]
    shown = companion_hits(
        oracle, render_batch(alone, torch.Generator().manual_seed(4)), [None] * len(alone)
    )
    assert shown.float().mean() > 0.9
    # in the photos its green shows beside the subject, except in green scenes, where it is
    # not counted; the subject alone shows none of it
    scenes = [evaluate.PHOTO_SCENES[i % len(evaluate.PHOTO_SCENES)] for i in range(6)]
    expected = torch.tensor([s not in evaluate.GREEN_SCENES for s in scenes])
    assert torch.equal(companion_hits(oracle, photos, scenes), expected)
    plain = evaluate.subject_photos("robot", 6, torch.Generator().manual_seed(3))
    assert not companion_hits(oracle, plain, scenes).any()
    # the mask is the subject: green (the companion) barely shows inside it, plenty outside
    green = (photos[:, 1] > photos[:, 0] + 0.2) & (photos[:, 1] > photos[:, 2] + 0.2)
    inside = masks[:, 0] > 0.5
    assert green[inside].float().mean() < 0.02 and green[~inside].float().mean() > 0.03
