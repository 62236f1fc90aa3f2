"""--low-memory, and every way a run can run out of GPU memory (injected on CPU): the probe
passes, one sample per pass, encoding the photos, the previews. Each goes on by itself where
something can still be saved, or stops with one line of advice that works."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from oneword.adapters.loading import load_model
from oneword.adapters.pipelines import TextToImageModel
from oneword.api import ModelChoice, PreviewSettings, learn
from oneword.cli import main
from oneword.core.embeddings import load_embeddings
from oneword.core.generate import Sampling
from oneword.core.memory import OutOfMemory, photos_per_pass
from oneword.core.train import TrainConfig, train
from oneword.experiments import micro_batch
from oneword.experiments.micro_batch import LOW_MEMORY_NOTE, fit_to_memory

OOM = torch.cuda.OutOfMemoryError
CONFIG = TrainConfig(token="<m>", init_word="cat", steps=2, grad_accum=2, lr=1e-2)


def oom(text: str = "CUDA out of memory. Tried to allocate 2.00 GiB (simulated)"):
    return OOM(text)


def vectors(files) -> torch.Tensor:
    (emb,) = load_embeddings(files["diffusers"])
    return emb.vectors


@pytest.fixture
def messages():
    return []


def sink(messages):
    return lambda event: messages.append(getattr(event, "text", ""))


@pytest.fixture(scope="module")
def plain(tiny_model_dir, tmp_path_factory):
    """The photos' run with nothing running out of memory."""

    folder = tmp_path_factory.mktemp("photos")
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        pixels = (torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"photo{i}.png")
    out = tmp_path_factory.mktemp("plain")
    files = learn([str(folder)], CONFIG, ModelChoice(str(tiny_model_dir)), out / "run")
    return folder, vectors(files)


def test_low_memory_checkpoints_slices_and_learns_the_same(tiny_model_dir, tmp_path):
    model = load_model(str(tiny_model_dir))
    model.add_placeholder_tokens(["<m>"])
    photos = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    whole = train(model, photos, CONFIG, tmp_path / "plain")
    sizes = []
    real = model.encode_images
    model.encode_images = lambda pixels: sizes.append(len(pixels)) or real(pixels)
    low = train(model, photos, dataclasses.replace(CONFIG, low_memory=True), tmp_path / "low")
    assert model.low_memory and model.pipe.unet.is_gradient_checkpointing
    assert model.pipe.vae.use_slicing and sizes == [1] * 5  # photos one at a time
    torch.testing.assert_close(low.rows(), whole.rows(), atol=1e-6, rtol=1e-5)


def test_photos_per_vae_pass():
    assert photos_per_pass(512, False) == 8
    assert photos_per_pass(768, False) == photos_per_pass(1024, False) == 2
    assert photos_per_pass(512, True) == photos_per_pass(1024, True) == 1


def test_one_sample_out_of_memory_goes_on_with_low_memory(
    plain, tiny_model_dir, tmp_path, monkeypatch, messages
):
    """A pass of one sample fails until low memory is on; the run goes on by itself from the
    last checkpoint and learns what the plain run learns."""
    folder, expected = plain
    real = TextToImageModel.predict_noise

    def short(self, noisy, *args):
        if not self.low_memory:
            raise oom()
        return real(self, noisy, *args)

    monkeypatch.setattr(TextToImageModel, "predict_noise", short)
    files = learn(
        [str(folder)],
        CONFIG,
        ModelChoice(str(tiny_model_dir)),
        tmp_path / "r",
        on_event=sink(messages),
    )
    assert any("--low-memory" in m for m in messages), messages
    torch.testing.assert_close(vectors(files), expected, atol=1e-5, rtol=1e-5)


def test_out_of_memory_with_low_memory_is_one_line_that_says_what_helps(
    plain, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    folder, _ = plain
    monkeypatch.setattr(TextToImageModel, "predict_noise", lambda *a: (_ for _ in ()).throw(oom()))
    argv = ["learn", str(folder), "--token", "<m>", "--init", "cat", "--steps", "2"]
    argv += ["--model", str(tiny_model_dir), "--out", str(tmp_path / "r"), "--low-memory"]
    assert main([*argv, "--no-mask"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("oneword: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("oneword: error: out of GPU memory with 1 sample(s) per pass")
    assert "smaller --resolution" in lines[0] and "another --out" in lines[0]


def test_photo_encoding_out_of_memory_encodes_one_at_a_time(
    plain, tiny_model_dir, tmp_path, monkeypatch, messages
):
    folder, expected = plain
    real = TextToImageModel.encode_images
    sizes = []

    def short(self, pixels):
        sizes.append(len(pixels))
        if len(pixels) > 1:
            raise oom()
        return real(self, pixels)

    monkeypatch.setattr(TextToImageModel, "encode_images", short)
    files = learn(
        [str(folder)],
        CONFIG,
        ModelChoice(str(tiny_model_dir)),
        tmp_path / "r",
        on_event=sink(messages),
    )
    assert sizes[0] > 1 and set(sizes[1:]) == {1}
    assert any("--low-memory" in m for m in messages)
    torch.testing.assert_close(vectors(files), expected, atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(TextToImageModel, "encode_images", lambda *a: (_ for _ in ()).throw(oom()))
    model = load_model(str(tiny_model_dir))
    model.add_placeholder_tokens(["<m>"])
    photos = torch.zeros(2, 3, 32, 32)
    low = dataclasses.replace(CONFIG, low_memory=True)
    with pytest.raises(OutOfMemory, match="encoding the photos at 32 px.*--resolution") as info:
        train(model, photos, low, tmp_path / "again")
    assert "\n" not in str(info.value)


def test_previews_out_of_memory_stop_the_previews_not_the_batch(
    plain, tiny_model_dir, tmp_path, monkeypatch, messages
):
    folder, expected = plain
    monkeypatch.setattr("oneword.api.draw", lambda *a, **k: (_ for _ in ()).throw(oom()))
    passes = []
    real = TextToImageModel.predict_noise

    def counted(self, noisy, *args):
        passes.append(len(noisy))
        return real(self, noisy, *args)

    monkeypatch.setattr(TextToImageModel, "predict_noise", counted)
    config = dataclasses.replace(CONFIG, preview_every=1)
    files = learn(
        [str(folder)],
        config,
        ModelChoice(str(tiny_model_dir)),
        tmp_path / "r",
        preview=PreviewSettings(sampling=Sampling(steps=2)),
        on_event=sink(messages),
    )
    assert [m for m in messages if "previews off from step 1" in m]
    assert not [m for m in messages if "samples per pass" in m or "--low-memory" in m]
    assert set(passes) == {1}  # batch 1 x 1 candidate, as without previews
    torch.testing.assert_close(vectors(files), expected, atol=1e-6, rtol=1e-6)


# -- the probe passes of --max-batch auto ---------------------------------------------------
@pytest.fixture
def on_cuda(tiny_model_dir, monkeypatch):
    """The tiny model as if on a GPU with 10 GiB free; each probe pass adds 1 GiB per
    sample, unless `failing` says it runs out of memory."""
    model = dataclasses.replace(load_model(str(tiny_model_dir)), device=torch.device("cuda"))
    failing = {"sizes": set(), "unless_low_memory": False}

    def peak(probed, config, size):
        if size in failing["sizes"] and not (failing["unless_low_memory"] and probed.low_memory):
            raise oom()
        return size * 2**30

    monkeypatch.setattr(micro_batch, "probe_peak", peak)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    return model, failing


def test_the_probe_plans_the_samples_per_pass(on_cuda, messages):
    model, failing = on_cuda
    many = dataclasses.replace(CONFIG, batch_size=16)
    assert fit_to_memory(model, many, "auto", sink(messages)).max_batch == 8  # 0.8 x 10 GiB
    failing["sizes"] = {2}
    fitted = fit_to_memory(model, many, "auto", sink(messages))
    assert fitted.max_batch == 1 and not fitted.low_memory and not messages


def test_a_probe_of_one_sample_out_of_memory_turns_low_memory_on(on_cuda, messages):
    model, failing = on_cuda
    failing.update(sizes={1, 2}, unless_low_memory=True)
    fitted = fit_to_memory(model, dataclasses.replace(CONFIG, batch_size=4), "auto", sink(messages))
    assert fitted.low_memory and model.low_memory and fitted.max_batch is None  # 4 fit
    assert messages == [LOW_MEMORY_NOTE]
    failing["unless_low_memory"] = False
    with pytest.raises(OutOfMemory, match=r"1 sample per pass at 32 px; start again with a sm"):
        fit_to_memory(model, CONFIG, "auto", sink(messages))
    with pytest.raises(OutOfMemory) as info:
        fit_to_memory(model, CONFIG, "auto", sink(messages))
    assert "--resume" not in str(info.value)  # no checkpoint yet: nothing to resume


def test_a_resumed_run_keeps_the_samples_per_pass_and_low_memory_it_ran_with(
    plain, tiny_model_dir, tmp_path, monkeypatch
):
    """On a GPU, kernels are chosen by batch shape: a resumed run re-probing the free memory
    could pass other micro-batches and drift from the uninterrupted run in the last bits."""
    from oneword.core.train import Candidate
    from oneword.events import Stepped
    from oneword.experiments.sweep import sweep

    folder, _ = plain
    config = dataclasses.replace(
        CONFIG, steps=4, checkpoint_every=1, candidates=tuple(Candidate(s) for s in range(3))
    )
    config = dataclasses.replace(config, low_memory=True)
    real = TextToImageModel.predict_noise
    passes = []

    def counted(self, noisy, *args):
        passes.append((len(noisy), self.low_memory))
        return real(self, noisy, *args)

    def killed_at_2(event):
        if isinstance(event, Stepped) and event.step == 2:
            raise RuntimeError("killed")

    monkeypatch.setattr(TextToImageModel, "predict_noise", counted)
    choice = ModelChoice(str(tiny_model_dir))
    with pytest.raises(RuntimeError):
        sweep([str(folder)], config, choice, out=tmp_path / "r", max_batch=2, on_event=killed_at_2)
    assert set(passes) == {(2, True), (1, True)}  # 3 samples: 2 + 1 per micro-batch
    passes.clear()
    plain_config = dataclasses.replace(config, low_memory=False)  # as typed again, no flag
    sweep([str(folder)], plain_config, choice, out=tmp_path / "r", resume=True, max_batch="auto")
    assert passes and set(passes) == {(2, True), (1, True)}  # auto on a CPU would pass all 3


def test_drawing_out_of_memory_goes_on_in_smaller_batches(tiny_model_dir, monkeypatch, capsys):
    from oneword.core.generate import draw

    model = load_model(str(tiny_model_dir))
    sampling = Sampling(steps=2)
    prompts, seeds = ["a photo of a cat"] * 5, list(range(5))
    whole = draw(model, prompts, seeds, None, sampling)
    real = model.generate
    batches = []

    def short(cond, uncond, generators, *args):
        batches.append(len(generators))
        if len(generators) > 2:
            raise oom()
        return real(cond, uncond, generators, *args)

    model.generate = short
    halved = draw(model, prompts, seeds, None, sampling)
    assert batches == [5, 4, 2, 2, 1]  # 8 at a time (5 left), 4, then 2s
    torch.testing.assert_close(halved, whole, atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(TextToImageModel, "generate", lambda *a: (_ for _ in ()).throw(oom()))
    argv = ["generate", "a photo of a cat", "--model", str(tiny_model_dir), "-n", "2"]
    assert main([*argv, "--steps", "2", "--out", str(tiny_model_dir.parent / "images")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("oneword: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "drawing one image at 32 px; give a smaller --size" in lines[0]


def test_automatic_masks_out_of_memory_go_draw_by_draw_then_one_line(
    plain, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    from oneword.core.masking import MaskRecipe
    from oneword.experiments.auto_masks import auto_masks

    folder, _ = plain
    model = load_model(str(tiny_model_dir))
    photo = Image.open(next(folder.glob("*.png")))
    recipe = MaskRecipe(min_contrast=0.0)
    expected = auto_masks(model, [photo], "cat", 32, recipe)[0].weight
    real = TextToImageModel.predict_noise

    def fits_one(self, noisy, *rest):
        if len(noisy) > 1:
            raise oom()
        return real(self, noisy, *rest)

    monkeypatch.setattr(TextToImageModel, "predict_noise", fits_one)
    torch.testing.assert_close(auto_masks(model, [photo], "cat", 32, recipe)[0].weight, expected)
    monkeypatch.setattr(TextToImageModel, "predict_noise", lambda *a: (_ for _ in ()).throw(oom()))
    argv = ["learn", str(folder), "--token", "<m>", "--init", "cat", "--steps", "1"]
    assert main([*argv, "--model", str(tiny_model_dir), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("oneword: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "out of GPU memory making the masks" in lines[0] and "--no-mask" in lines[0]
