"""fp16 training with a dynamic loss scale, on CPU: the tiny model's prediction is passed
through fp16 arithmetic that underflows (or overflows) the gradients as an fp16 UNet does at
SD shapes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from oneword.adapters.loading import load_model
from oneword.core.checkpoint import read_checkpoint
from oneword.core.train import CHECKPOINT_NAME, TrainConfig, loss_scaler, train

CONFIG = TrainConfig(token="<h>", init_word="cat", steps=6, grad_accum=3, lr=1e-2)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    m = load_model(str(tiny_model_dir), "cpu")
    m.add_placeholder_tokens(["<h>"])
    return m


@pytest.fixture(scope="module")
def photos():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def through_fp16(model, factor: float, dtype=torch.float16):
    """The model claiming `dtype` weights, its prediction multiplied by `factor` in fp16: the
    backward pass multiplies the incoming gradient by `factor` in fp16 too, so a small factor
    flushes it to zero and a large one overflows it, unless the loss is scaled."""
    fake = dataclasses.replace(model, dtype=dtype)

    def predict(noisy, timesteps, text):
        out = model.predict_noise(noisy, timesteps, text)
        return (out.half() * torch.tensor(factor, dtype=torch.float16)).float()

    fake.predict_noise = predict
    fake.encode_images = model.encode_images
    return fake


def test_only_fp16_gets_a_loss_scale():
    cpu = torch.device("cpu")
    assert isinstance(loss_scaler(cpu, torch.float16), torch.amp.GradScaler)
    assert loss_scaler(cpu, torch.bfloat16) is None and loss_scaler(cpu, torch.float32) is None


def test_fp16_gradients_that_vanish_unscaled_still_train(model, photos, tmp_path):
    tiny = 2.0**-20  # each gradient element ~1e-3 x 2^-20: below fp16's smallest number
    unscaled = train(
        through_fp16(model, tiny, torch.float32), photos, CONFIG, tmp_path / "fp32-claim"
    )
    assert unscaled.scaler is None
    assert all(bool((p.grad == 0).all()) for p in unscaled.params)  # learning stalls
    scaled = train(through_fp16(model, tiny), photos, CONFIG, tmp_path / "fp16")
    assert scaled.scaler is not None and scaled.scaler.get_scale() == 2.0**16
    assert not torch.equal(scaled.rows(), unscaled.rows())
    assert all(bool((p.grad != 0).any()) for p in scaled.params)


def test_an_overflow_skips_the_step_and_lowers_the_scale(model, photos, tmp_path):
    fake = through_fp16(model, 64.0)
    state = train(fake, photos, CONFIG, tmp_path / "run")
    assert state.step == CONFIG.steps and all(math.isfinite(x) for x in state.history)
    assert state.scaler.get_scale() < 2.0**16  # overflowed at least once, and went on
    assert torch.isfinite(state.rows()).all()
    one = train(fake, photos, dataclasses.replace(CONFIG, stop_at=1), tmp_path / "one")
    fresh = train(fake, photos, dataclasses.replace(CONFIG, stop_at=1, lr=0.5), tmp_path / "lr")
    assert torch.equal(one.rows(), fresh.rows())  # step 1 overflowed: skipped, lr never used


def test_the_loss_scale_is_in_the_checkpoint_and_resumes_exactly(model, photos, tmp_path):
    fake = through_fp16(model, 64.0)
    whole = train(fake, photos, CONFIG, tmp_path / "whole")
    part = train(fake, photos, dataclasses.replace(CONFIG, stop_at=3), tmp_path / "part")
    saved = read_checkpoint(tmp_path / "part" / CHECKPOINT_NAME, CONFIG, check=False)
    assert saved["scaler"]["scale"] == part.scaler.get_scale() < 2.0**16
    resumed = train(fake, photos, CONFIG, tmp_path / "part", resume=True)
    assert resumed.scaler.get_scale() == whole.scaler.get_scale()
    assert torch.equal(resumed.rows(), whole.rows()) and resumed.history == whole.history
