"""--stop-when-flat (DVAR): the criterion, the stop, and a resume that stops at the same step."""

from __future__ import annotations

import pytest
import torch

from oneword.adapters.loading import load_model
from oneword.core.flat_stop import FlatStop, all_flat, is_flat
from oneword.core.train import TrainConfig, train
from oneword.errors import OnewordError
from oneword.events import Message, Stepped


def test_a_loss_that_levels_out_is_flat_and_one_falling_at_the_end_is_not():
    t = torch.arange(60, dtype=torch.float64)
    levelling = torch.exp(-t / 5)  # falls, then stays
    falling = torch.cat([torch.ones(50), torch.linspace(1, 0, 10)])  # still falling at the end
    assert is_flat(levelling, window=10, threshold=0.15)
    assert not is_flat(falling, window=10, threshold=0.15)
    assert not is_flat(levelling[:20], window=10, threshold=0.15)  # too short to tell
    assert not is_flat(torch.ones(30), window=10, threshold=0.15)  # no variance at all
    both = torch.stack([levelling, falling]).T.tolist()  # [T][K]
    assert not all_flat(both, 10, 0.15)  # a sweep stops when every candidate is flat
    assert all_flat(torch.stack([levelling, levelling]).T.tolist(), 10, 0.15)


def test_settings_are_checked_and_survive_the_config_file():
    with pytest.raises(OnewordError, match="--flat-threshold 2"):
        FlatStop(threshold=2)
    with pytest.raises(OnewordError, match="--flat-window 0"):
        FlatStop(window=0)
    config = TrainConfig(token="<c>", init_word="cat", stop_when_flat=FlatStop(window=3))
    assert TrainConfig.from_json(config.to_json()) == config


@pytest.fixture
def model(tiny_model_dir):
    m = load_model(str(tiny_model_dir))
    m.add_placeholder_tokens(["<c>"])
    return m


def _config():
    flat = FlatStop(every=1, window=3, threshold=0.9, samples=2)
    return TrainConfig(
        token="<c>", init_word="cat", steps=40, lr=5e-2, checkpoint_every=1, stop_when_flat=flat
    )


def test_training_stops_when_flat_and_a_resume_stops_at_the_same_step(model, tmp_path):
    photos = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    said = []
    whole = train(model, photos, _config(), tmp_path / "whole", on_event=said.append)
    assert 6 <= whole.step < 40  # stopped early, once 2 × window evaluations could judge
    assert any(isinstance(e, Message) and "flat" in e.text for e in said)
    assert len(whole.fixed_losses) == whole.step + 1  # steps 0 … step, one candidate each

    def stop_at_3(event):
        if isinstance(event, Stepped) and event.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(OnewordError, match="--resume"):
        train(model, photos, _config(), tmp_path / "split", on_event=stop_at_3)
    resumed = train(model, photos, _config(), tmp_path / "split", resume=True)
    assert resumed.step == whole.step and torch.equal(resumed.rows(), whole.rows())
    assert resumed.fixed_losses == whole.fixed_losses
