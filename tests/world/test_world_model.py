"""The world model's trainer: a few-step CPU run saves a folder oneword loads and draws with."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F

from oneword.adapters.loading import load_model
from oneword.api import default_steps
from oneword.core.generate import Sampling, draw
from oneword.errors import OnewordError
from oneword.world.model import build_parser, config_from_args, train_world_model
from oneword.world.render import HIDDEN_SUBJECTS
from oneword.world.training_config import LEARN_STEPS, LOG_NAME, WorldModelConfig, preset
from oneword.world.training_loop import PhaseLog, Stream, lr_multiplier, run_phase
from oneword.world.vae_phase import pixel_weights


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids thread hand-offs (which dominate on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_run_saves_a_model_that_loads_and_draws(tmp_path, one_thread):
    config = preset("tiny", vae_steps=2, steps=2, batch_size=2, vae_batch_size=2, scale_images=4)
    folder = tmp_path / "world"
    train_world_model(config, folder, "cpu", oracle_check=0)

    log = json.loads((folder / LOG_NAME).read_text())
    assert log["phases"]["vae"]["steps"] == 2 and log["phases"]["unet"]["steps"] == 2
    assert log["config"]["steps"] == 2 and log["device"] == "cpu"
    assert all(v < 15 for v in log["files_mb"].values())

    assert default_steps(str(folder)) == LEARN_STEPS  # the folder carries its learning length
    model = load_model(str(folder), "cpu")
    assert model.native_resolution == 64
    assert float(model.pipe.vae.config.scaling_factor) == pytest.approx(log["scaling_factor"])
    assert len(model.word_token_ids("cat")) == 1 and len(model.word_token_ids("photo")) == 1
    images = draw(
        model,
        ["a photo of a cat on the beach", "a red star in the snow"],
        [0, 1],
        None,
        Sampling(steps=2, cfg=3.0, scheduler="ddim", size=64),
    )
    assert images.shape == (2, 3, 64, 64) and torch.isfinite(images).all()


@pytest.mark.parametrize(
    "bad",
    [
        dict(minutes=0),
        dict(minutes=-1.0),
        dict(steps=-1),
        dict(batch_size=0),
        dict(lr=0.0),
        dict(cond_drop=1.0),
        dict(vae_share=0.0),
        dict(vae_share=0.97),
        dict(ema_decay=1.0),
        dict(hidden_fraction=1.5),
        dict(member_fraction=-0.1),
        dict(member_fraction=0.9),
        dict(unet_channels=(30, 60)),
        dict(unet_channels=(64,)),
        dict(align_weight=-0.5),
        dict(vae_channels=(32,)),
        dict(text_width=200),
        dict(fresh_share=0.0),
        dict(minutes=None, steps=1_000_000),
        dict(scale_images=1),
        dict(batch_size=2.5),
        dict(align_blocks=()),
        dict(align_blocks=(1, 1)),
        dict(align_blocks=(3,)),
        dict(mark_weight=-1.0),
        dict(pattern_weight=-0.1),
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(OnewordError):
        WorldModelConfig(**bad)


def test_pixel_weights_add_up_object_pattern_and_mark():
    coverage = torch.zeros(1, 3, 2, 2)
    coverage[0, 0] = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # object
    coverage[0, 1, 1, 0] = 1.0  # the pattern's second colour
    coverage[0, 2, 1, 1] = 0.5  # half a mark
    config = WorldModelConfig(object_weight=3.0, pattern_weight=2.0, mark_weight=10.0)
    expected = torch.tensor([[1.0, 4.0], [6.0, 9.0]])
    assert torch.equal(pixel_weights(coverage, config)[0, 0], expected)


def test_presets_are_valid_and_fit_the_size_limits():
    gpu, cpu = preset("gpu"), preset("cpu")
    assert gpu.latent_size == 16 and gpu.shapes == cpu.shapes
    assert cpu.minutes <= 120 and gpu.minutes == 6
    with pytest.raises(OnewordError):
        preset("tpu")


def test_command_line_overrides_the_preset():
    args = build_parser().parse_args(
        [
            "train",
            "--out",
            "x",
            "--device",
            "cpu",
            "--preset",
            "gpu",
            "--minutes",
            "0",
            "--steps",
            "5",
            "--lr",
            "1e-4",
        ]
    )
    config = config_from_args(args)
    assert config.minutes is None and config.steps == 5 and config.lr == 1e-4
    assert config.batch_size == preset("gpu").batch_size


def test_a_phase_stops_at_its_time_budget():
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=1.0)
    config = WorldModelConfig(log_every=1000)

    def step(_):
        time.sleep(0.01)
        return torch.tensor(1.0)

    start = time.monotonic()
    log = run_phase(
        PhaseLog("unet"), step, optimizer, 1.0, 1_000_000, 0.2, 4, config, torch.device("cpu")
    )
    assert 0.15 < time.monotonic() - start < 1.0
    assert 1 <= log.steps < 100 and log.losses[-1] == (log.steps, 1.0)


def test_lr_warms_up_then_decays_to_its_floor():
    assert lr_multiplier(0, 0.0, 10, 0.05) == pytest.approx(0.1)
    assert lr_multiplier(20, 0.0, 10, 0.05) == pytest.approx(1.0)
    assert lr_multiplier(20, 1.0, 10, 0.05) == pytest.approx(0.05)


def test_pool_stream_mixes_fresh_and_kept_examples():
    made = []

    def make(n):
        start = sum(made)
        made.append(n)
        return [None] * n, torch.arange(start, start + n).float()

    stream = Stream(
        make, batch=8, fresh_share=0.25, pool_batches=4, generator=torch.Generator().manual_seed(0)
    )
    specs, data = stream.next()
    assert len(specs) == 8 and data.shape == (8,) and len(set(data.tolist())) == 8
    assert made == [8, 8, 8, 8, 2]  # pool of 32, then 2 fresh per step
    assert stream.data.max() == 33  # the two newest replaced the oldest


def test_caption_ids_match_the_tokenizer():
    from oneword.adapters.tokenizer import build_clip_tokenizer
    from oneword.world import sample_specs
    from oneword.world.training_config import world_vocabulary
    from oneword.world.training_loop import CaptionTokens, training_captions

    tokenizer = build_clip_tokenizer(world_vocabulary())
    g = torch.Generator().manual_seed(0)
    captions = training_captions(sample_specs(64, g), preset("gpu", template_share=0.5), g)
    captions += ["", "A Photo of a CAT", "a photo of a zebra", "a <new> cat"]
    fast = CaptionTokens(tokenizer, torch.device("cpu"))(captions)
    slow = tokenizer(captions, padding="max_length", max_length=77, truncation=True).input_ids
    assert fast.tolist() == slow


def test_templates_call_members_and_subjects_by_their_class_word():
    from oneword.world import Spec, sample_specs
    from oneword.world.training_loop import object_phrase

    g = torch.Generator().manual_seed(0)
    specs = sample_specs(200, g, hidden_fraction=0.3, member_fraction=0.3)
    words = {object_phrase(s, g) for s in specs if s.subject or s.class_word}
    assert words and words <= {"cat", "dog", "ball", "bird", "cup", "robot", "teddy", "toy"}
    assert (
        object_phrase(Spec("star", "red", "red", "solid", "small", "left", "sea", "photo"), g)
        == "red star"
    )
    named = {object_phrase(s, g, name_share=1.0) for s in specs if s.subject}
    assert named and named <= {h.name for h in HIDDEN_SUBJECTS}


def test_continued_training_keeps_the_vae_and_teaches_the_names(tmp_path, one_thread):
    from oneword.adapters.tiny import build_components, load_components, save_components
    from oneword.world.model import add_subject_names
    from oneword.world.training_config import world_vocabulary

    names = {h.name for h in HIDDEN_SUBJECTS}
    config = preset("tiny")
    before = build_components([w for w in world_vocabulary() if w not in names], config.shapes)
    save_components(before, tmp_path / "before")
    later = preset("tiny", init_from=str(tmp_path / "before"), name_share=0.7)
    train_world_model(later, tmp_path / "after", "cpu", oracle_check=0)

    after = load_components(tmp_path / "after")
    assert json.loads((tmp_path / "after" / LOG_NAME).read_text())["phases"]["vae"]["steps"] == 0
    assert all(
        torch.equal(a.half(), b)
        for a, b in zip(before.vae.state_dict().values(), after.vae.state_dict().values())
    )
    assert all(len(after.tokenizer(n, add_special_tokens=False).input_ids) == 1 for n in names)
    assert add_subject_names(after) == []  # already taught: nothing added twice

    fresh = load_components(tmp_path / "before")
    assert sorted(add_subject_names(fresh)) == sorted(names)
    table = fresh.text_encoder.get_input_embeddings().weight
    ids = fresh.tokenizer(["mittens", "cat"], add_special_tokens=False).input_ids
    assert torch.equal(table[ids[0][0]], table[ids[1][0]])


def test_continued_training_needs_a_saved_model_folder(tmp_path):
    with pytest.raises(OnewordError, match="--init-from .*model_index.json"):
        preset("tiny", init_from=str(tmp_path))


def _alignment_setup(seed: int = 0, blocks=(0, 1)):
    from oneword.world.alignment import FeatureAlignment
    from oneword.world.model import build_world_components
    from oneword.world.oracle import load_oracle
    from oneword.world.render import render_batch, sample_specs

    config = preset("tiny")
    parts = build_world_components(config)
    align = FeatureAlignment(
        parts.unet,
        load_oracle("cpu"),
        torch.device("cpu"),
        seed=seed,
        blocks=blocks,
        latent_size=config.latent_size,
    )
    g = torch.Generator().manual_seed(seed)
    images = render_batch(sample_specs(4, g), g, torch.device("cpu"))
    size = config.latent_size
    latents = torch.randn(4, 4, size, size, generator=g)
    states = torch.randn(4, 77, config.text_width, generator=g)
    return parts.unet, align, align.targets(images, size), latents, states, images


def test_feature_alignment_trains_the_unet_towards_the_oracle_and_leaves_no_trace(one_thread):
    unet, align, targets, latents, states, _ = _alignment_setup()
    keys = set(unet.state_dict())
    widths = [p[-1].out_channels for p in align.projectors]
    assert widths == [96, 160]  # the oracle's last 16x16 and 8x8 convolutions
    assert targets.shape == (4, 96 + 160 // 4) + latents.shape[-2:]  # 8x8 folded onto 16x16
    params = list(unet.parameters()) + list(align.projectors.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    t = torch.tensor([10, 300, 600, 900])
    losses = []
    for _ in range(8):
        unet(latents, t, encoder_hidden_states=states)
        loss = align.loss(targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert 0 < losses[-1] < losses[0] - 0.05  # 1 - cosine similarity falls
    assert all(p.grad is None for p in align.oracle.parameters())  # the teacher is frozen
    assert unet.conv_in.weight.grad.abs().sum() > 0  # the UNet itself learns from it

    align.close()
    unet(latents, t, encoder_hidden_states=states)
    assert align.hidden == {}  # the hooks are gone
    assert set(unet.state_dict()) == keys  # the saved UNet is a plain SD UNet


def test_feature_alignment_projector_is_the_same_for_the_same_seed():
    first, second = _alignment_setup(seed=3)[1], _alignment_setup(seed=3)[1]
    assert torch.equal(first.projectors[1][0].weight, second.projectors[1][0].weight)
    other = _alignment_setup(seed=4)[1]
    assert not torch.equal(first.projectors[1][0].weight, other.projectors[1][0].weight)


def test_feature_alignment_on_one_block_targets_the_oracles_last_8x8_features():
    _, align, targets, latents, _, images = _alignment_setup(blocks=(1,))
    expected = align.oracle.body[:-2](images * 2 - 1)  # up to its last convolution
    assert align.teacher == {1: (len(align.oracle.body) - 3, expected.shape[1])}
    assert targets.shape == (4, expected.shape[1] // 4) + latents.shape[-2:]
    torch.testing.assert_close(F.pixel_unshuffle(targets, 2), expected)  # exactly its features
