"""Faults a run survives: Ctrl-C at any moment of a step, a disk that fills while the
checkpoint is written; each leaves a checkpoint that resumes to the uninterrupted result."""

from __future__ import annotations

import pytest
import torch

from oneword.adapters.loading import load_model
from oneword.core.checkpoint import read_checkpoint
from oneword.core.train import CHECKPOINT_NAME, TrainConfig, train
from oneword.errors import OnewordError, WriteFailed
from oneword.events import Stepped


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    m = load_model(str(tiny_model_dir))
    m.add_placeholder_tokens(["<c>", "<c>_1"])
    return m


@pytest.fixture(scope="module")
def photos():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


CONFIG = TrainConfig(
    token="<c>", init_word="cat", vectors=2, steps=5, batch_size=1, grad_accum=3, lr=1e-2
)


@pytest.fixture(scope="module")
def whole(model, photos, tmp_path_factory):
    return train(model, photos, CONFIG, tmp_path_factory.mktemp("whole"))


def interrupting(model, monkeypatch, at_call: int):
    """Make the model's n-th UNet pass raise KeyboardInterrupt (in the middle of a step)."""
    real = model.predict_noise
    calls = {"n": 0}

    def forward(*args):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(model, "predict_noise", forward)


@pytest.mark.parametrize("at_call", [2, 8])  # step 1's second micro-batch, step 3's second
def test_ctrl_c_mid_step_then_resume_is_the_uninterrupted_run(
    model, photos, whole, tmp_path, monkeypatch, at_call
):
    interrupting(model, monkeypatch, at_call)
    with pytest.raises(OnewordError, match="--resume"):
        train(model, photos, CONFIG, tmp_path)
    monkeypatch.undo()
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["step"] == (at_call - 1) // CONFIG.grad_accum  # the last whole step
    resumed = train(model, photos, CONFIG, tmp_path, resume=True)
    assert torch.equal(resumed.rows(), whole.rows())
    assert resumed.history == whole.history


def test_ctrl_c_from_an_event_sink_then_resume_is_the_uninterrupted_run(
    model, photos, whole, tmp_path
):
    def stop(event):
        if isinstance(event, Stepped) and event.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(OnewordError, match="interrupted at step 2"):
        train(model, photos, CONFIG, tmp_path, on_event=stop)
    resumed = train(model, photos, CONFIG, tmp_path, resume=True)
    assert torch.equal(resumed.rows(), whole.rows())


def test_a_full_disk_keeps_the_last_good_checkpoint(model, photos, whole, tmp_path, monkeypatch):
    """The third checkpoint write fails halfway, as torch's writer does on a full disk."""
    real = torch.save
    writes = {"n": 0}

    def filling(obj, f, *args, **kwargs):
        writes["n"] += 1
        if writes["n"] == 3:
            with open(f, "wb") as out:
                out.write(b"PK\x03\x04 half a checkpoint")
            raise RuntimeError(
                "[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed "
                "writing file data/0: file write failed, unexpected pos 64 vs 4096"
            )
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", filling)
    config = TrainConfig(**{**CONFIG.__dict__, "checkpoint_every": 2})
    with pytest.raises(WriteFailed, match=r"last good checkpoint \(step 2\).*--resume") as err:
        train(model, photos, config, tmp_path)
    assert str(tmp_path / CHECKPOINT_NAME) in str(err.value) and "\n" not in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temp file left
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME, config)["step"] == 2
    resumed = train(model, photos, config, tmp_path, resume=True)
    assert torch.equal(resumed.rows(), whole.rows())


def test_resume_may_lower_the_learning_rate(model, photos, tmp_path):
    train(model, photos, TrainConfig(**{**CONFIG.__dict__, "steps": 2}), tmp_path)
    lower = TrainConfig(**{**CONFIG.__dict__, "steps": 3, "lr": 1e-3})
    with pytest.raises(OnewordError, match="steps"):  # what is learned may not change
        train(model, photos, lower, tmp_path, resume=True)
    lower = TrainConfig(**{**CONFIG.__dict__, "steps": 2, "lr": 1e-3})
    state = train(model, photos, lower, tmp_path, resume=True)
    assert state.optimizer.param_groups[0]["initial_lr"] == 1e-3


@pytest.mark.parametrize(
    "change, option",
    [
        ({"weight_decay": -0.1}, "--weight-decay"),
        ({"weight_decay": float("nan")}, "--weight-decay"),
        ({"warmup_steps": -1}, "--warmup-steps"),
        ({"preview_every": -1}, "--preview-every"),
        ({"lr": float("inf")}, "--lr"),
        ({"seed": 2**64}, "--seed"),
        ({"seed": -3}, "--seed"),
    ],
)
def test_config_refuses_out_of_range_numbers(change, option):
    with pytest.raises(OnewordError, match=option):
        TrainConfig(**{**CONFIG.__dict__, **change})


def test_ctrl_c_during_the_update_is_raised_after_it():
    import os
    import signal

    from oneword.core.checkpoint import uninterrupted

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with uninterrupted():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("the whole update")
        assert done == ["the whole update"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup: Ctrl-C stays ignored
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_run_stopped_at_a_step_then_continued_is_the_whole_run(model, photos, tmp_path):
    """Successive halving trains a candidate rung by rung: stopping at step 2 and going on
    must give the uninterrupted run, also under a schedule that spans all the steps."""
    cosine = TrainConfig(**{**CONFIG.__dict__, "lr_schedule": "cosine"})
    whole = train(model, photos, cosine, tmp_path / "whole")
    part = TrainConfig(**{**cosine.__dict__, "stop_at": 2})
    stopped = train(model, photos, part, tmp_path / "rungs")
    assert stopped.step == 2 and read_checkpoint(tmp_path / "rungs" / CHECKPOINT_NAME, part)
    resumed = train(model, photos, cosine, tmp_path / "rungs", resume=True)
    assert resumed.step == 5 and torch.equal(resumed.rows(), whole.rows())
    assert resumed.history == whole.history


def test_a_checkpoint_cut_to_some_candidates_continues_them_as_before(model, photos, tmp_path):
    from oneword.core.checkpoint import keep_candidates
    from oneword.core.latents import photos_fingerprint
    from oneword.core.train import Candidate

    three = TrainConfig(**{**CONFIG.__dict__, "candidates": tuple(Candidate(s) for s in (0, 1, 2))})
    whole = train(model, photos, three, tmp_path / "whole")
    train(model, photos, TrainConfig(**{**three.__dict__, "stop_at": 2}), tmp_path / "cut")
    kept = TrainConfig(
        **{**three.__dict__, "candidates": (three.candidates[2], three.candidates[0])}
    )
    for _ in range(2):  # cutting again to the same candidates changes nothing
        keep_candidates(
            tmp_path / "cut" / CHECKPOINT_NAME, three, kept.candidates, photos_fingerprint(photos)
        )
    resumed = train(model, photos, kept, tmp_path / "cut", resume=True)
    assert torch.equal(resumed.rows(), whole.rows()[[2, 0]])
