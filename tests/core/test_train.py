"""The trainer: the Textual Inversion invariant, resume, batched candidates, divergence."""

from __future__ import annotations

import pytest
import torch

from oneword.core.invariant import TextualInversionInvariant
from oneword.core.train import (
    CHECKPOINT_NAME,
    Candidate,
    TrainConfig,
    TrainingDiverged,
    start_state,
    train,
)
from oneword.errors import OnewordError
from oneword.events import Stepped


def config(**kw):
    base = dict(
        token="<c>",
        init_word="cat",
        vectors=2,
        steps=4,
        batch_size=2,
        grad_accum=2,
        checkpoint_every=2,
        lr=1e-2,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_only_placeholder_rows_change(model, photos, tmp_path):
    table_before = model.vocabulary_table.detach().clone()
    invariant = TextualInversionInvariant(model)
    state = train(model, photos, config(), tmp_path / "run")
    invariant.check()
    assert torch.equal(model.vocabulary_table, table_before)
    cat = model.word_token_ids("cat")
    start = table_before[cat].mean(0)
    assert not torch.allclose(state.rows()[0].cpu(), start.repeat(2, 1))  # the rows did learn
    frozen = [
        p
        for part in (model.pipe.unet, model.pipe.vae, model.text_encoder)
        for p in part.parameters()
    ]
    assert all(not p.requires_grad and p.grad is None for p in frozen)


def test_invariant_notices_a_changed_weight(model):
    invariant = TextualInversionInvariant(model)
    with torch.no_grad():
        next(model.pipe.unet.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(AssertionError, match="unet"):
        invariant.check()


def test_resume_reaches_the_same_result(model, photos, tmp_path):
    whole = train(model, photos, config(steps=6), tmp_path / "whole")

    def stop_at_3(event):
        if isinstance(event, Stepped) and event.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(OnewordError, match="--resume"):
        train(model, photos, config(steps=6), tmp_path / "split", on_event=stop_at_3)
    resumed = train(model, photos, config(steps=6), tmp_path / "split", resume=True)
    assert resumed.step == 6
    assert torch.equal(resumed.rows(), whole.rows())
    assert resumed.history == whole.history


def test_resume_refuses_other_settings(model, photos, tmp_path):
    train(model, photos, config(steps=2), tmp_path / "run")
    with pytest.raises(OnewordError, match="weight_decay"):
        train(model, photos, config(steps=2, weight_decay=0.5), tmp_path / "run", resume=True)
    with pytest.raises(OnewordError, match="--resume"):
        train(model, photos, config(steps=2), tmp_path / "run")


def test_batched_candidates_equal_separate_runs(model, photos, tmp_path):
    seeds = (11, 12, 13)
    batched = train(
        model, photos, config(candidates=tuple(Candidate(s) for s in seeds)), tmp_path / "batched"
    )
    for k, seed in enumerate(seeds):
        single = train(model, photos, config(seed=seed), tmp_path / f"single{seed}")
        torch.testing.assert_close(batched.rows()[k], single.rows()[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched.rows()[0], batched.rows()[1])


def test_candidates_start_from_given_rows_and_train_on_from_them(model, photos, tmp_path):
    """start_rows (bred words trained on): the first step starts from them, not the init."""
    gen = torch.Generator().manual_seed(0)
    given = torch.randn(2, 2, model.embedding_width, generator=gen) * 0.1
    candidates = (Candidate(1), Candidate(2))
    torch.testing.assert_close(
        start_state(model, config(candidates=candidates), given).rows().cpu(), given
    )
    state = train(
        model, photos, config(candidates=candidates, steps=1), tmp_path / "run", start_rows=given
    )
    moved = (state.rows().cpu() - given).abs().max()
    assert 0 < moved < 0.02  # one Adam step of lr 1e-2 from the given rows


def test_micro_batching_does_not_change_the_result(model, photos, tmp_path):
    whole = train(model, photos, config(candidates=(Candidate(1), Candidate(2))), tmp_path / "a")
    chunked = train(
        model, photos, config(candidates=(Candidate(1), Candidate(2)), max_batch=3), tmp_path / "b"
    )
    torch.testing.assert_close(chunked.rows(), whole.rows(), atol=1e-5, rtol=1e-5)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(model, photos, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = model.predict_noise

    def flaky(*args):
        calls["n"] += 1
        out = real(*args)
        return out * float("nan") if calls["n"] > 6 else out

    monkeypatch.setattr(model, "predict_noise", flaky)
    with pytest.raises(TrainingDiverged, match=r"last good checkpoint \(step 2\)"):
        train(model, photos, config(steps=6, checkpoint_every=2), tmp_path / "run")
    saved = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    assert saved["step"] == 2 and torch.isfinite(saved["rows"]).all()


def test_config_validation_names_the_option():
    with pytest.raises(OnewordError, match="--init"):
        TrainConfig(token="<c>")
    with pytest.raises(OnewordError, match="--steps"):
        TrainConfig(token="<c>", init_word="cat", steps=0)
    with pytest.raises(OnewordError, match="--token"):
        TrainConfig(token="my cat", init_word="cat")
    TrainConfig(token="<c>", candidates=(Candidate(0, init="random"),))  # no init word needed


# -- masked training -------------------------------------------------------------------------
def half_masks(count: int) -> torch.Tensor:
    masks = torch.zeros(count, 1, 32, 32)
    masks[:, :, :, :16] = 1.0  # the left half: whole latent cells
    return masks


def test_masked_training_changes_only_the_placeholder_rows(model, photos, tmp_path):
    invariant = TextualInversionInvariant(model)
    state = train(model, photos, config(mask_floor=0.1), tmp_path / "run", masks=half_masks(4))
    invariant.check()
    plain = train(model, photos, config(), tmp_path / "plain")
    assert not torch.allclose(state.rows(), plain.rows())  # the masks changed what was learned


def test_an_all_white_mask_learns_what_no_mask_does(model, photos, tmp_path):
    white = torch.ones(4, 1, 32, 32)
    masked = train(model, photos, config(mask_floor=0.0), tmp_path / "m", masks=white)
    plain = train(model, photos, config(), tmp_path / "p")
    assert torch.allclose(masked.rows(), plain.rows(), atol=1e-6)


def _pointwise(model, monkeypatch):
    """A model whose latent cell and prediction depend only on their own pixels (no
    convolution reaches across), so that the pixels outside a mask can only act through the
    loss, which is what the mask weights."""
    factor, channels = model.vae_factor, model.latent_channels

    def encode_images(pixels):
        mean = torch.nn.functional.avg_pool2d(pixels.float(), factor).mean(1, keepdim=True)
        mean = mean.repeat(1, channels, 1, 1).to(model.device)
        return mean, torch.full_like(mean, 0.01)

    def predict_noise(noisy, timesteps, text):
        return noisy * text.float().mean(dim=(1, 2)).view(-1, 1, 1, 1)

    monkeypatch.setattr(model, "encode_images", encode_images)
    monkeypatch.setattr(model, "predict_noise", predict_noise)


def test_at_floor_zero_the_pixels_outside_the_mask_do_not_change_what_is_learned(
    model, photos, tmp_path, monkeypatch
):
    _pointwise(model, monkeypatch)
    other = photos.clone()
    other[:, :, :, 16:] = -photos[:, :, :, 16:]  # another background, right of the mask
    masks = half_masks(4)

    def learned(pixels, floor, name):
        return train(model, pixels, config(mask_floor=floor), tmp_path / name, masks=masks).rows()

    assert torch.equal(learned(photos, 0.0, "a"), learned(other, 0.0, "b"))
    assert not torch.allclose(learned(photos, 0.5, "c"), learned(other, 0.5, "d"))


def test_resume_refuses_other_masks(model, photos, tmp_path):
    run = tmp_path / "run"
    train(model, photos, config(steps=4, stop_at=2, mask_floor=0.1), run, masks=half_masks(4))
    other = half_masks(4)
    other[0, 0, 0, 0] = 0.0 if other[0, 0, 0, 0] else 1.0
    longer = config(steps=4, mask_floor=0.1)
    with pytest.raises(OnewordError, match="other photos"):
        train(model, photos, longer, run, resume=True, masks=other)
    with pytest.raises(OnewordError, match="mask_floor"):
        train(model, photos, config(steps=4, mask_floor=0.2), run, resume=True, masks=half_masks(4))
    assert train(model, photos, longer, run, resume=True, masks=half_masks(4)).step == 4
