"""Single-file checkpoints in the original (LDM) layout, loaded offline by diffusers' own
`from_single_file` with the configs oneword writes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from oneword.adapters.loading import load_model
from oneword.adapters.single_file import FAMILIES, family_of, write_family_config
from oneword.cli import main
from oneword.errors import OnewordError
from tests.adapters.ldm_layout import diffusers_weights, write_ldm_checkpoint

UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"
SD1 = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SD2 = "cond_stage_model.model.token_embedding.weight"
XL = "conditioner.embedders.1.model.token_embedding.weight"


@pytest.fixture(scope="module")
def ldm_file(tmp_path_factory, tiny_model_dir):
    """The tiny model as one .safetensors file in the LDM key layout."""
    return write_ldm_checkpoint(
        tiny_model_dir, tmp_path_factory.mktemp("ckpt") / "tiny-ldm.safetensors"
    )


def test_the_family_is_told_from_the_keys(tmp_path):
    unet = {UNET_KEY: (320, 4, 3, 3)}
    path = tmp_path / "model.safetensors"
    assert family_of(path, {**unet, SD1: (49408, 768)}) == "sd1"
    assert family_of(path, {**unet, SD1: (500, 32)}) == "tiny"
    assert family_of(path, {**unet, SD2: (49408, 1024)}) == "sd2-v"
    assert family_of(path, {**unet, XL: (49408, 1280)}) == "sdxl"
    assert family_of(path, {**unet, XL: (49408, 1280), "v_pred": ()}) == "sdxl-v"
    yaml = path.with_suffix(".yaml")  # A1111's convention: a yaml beside the checkpoint
    yaml.write_text("model:\n  params:\n    parameterization: 'v'\n")
    assert family_of(path, {**unet, SD2: (49408, 1024)}) == "sd2-v"
    yaml.write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert family_of(path, {**unet, SD2: (49408, 1024)}) == "sd2"
    for shapes, said in (
        ({SD1: (49408, 768)}, "no Stable Diffusion UNet"),
        (unet, "found no SD 1.x"),
        ({**unet, SD1: (49408, 512)}, "512-d"),
    ):
        with pytest.raises(OnewordError, match=said) as info:
            family_of(path, shapes)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_the_family_configs_are_the_real_architectures(tmp_path):
    """Parameter counts of the models the written configs describe (built without memory)."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    vocabulary = tmp_path / "clip"
    vocabulary.mkdir()
    (vocabulary / "vocab.json").write_text("{}")
    (vocabulary / "merges.txt").write_text("#version: 0.2\n")
    expected = {  # UNet, text encoder(s): the published sizes of SD 1.5, SD 2.1 and SDXL base
        "sd1": (859_520_964, [123_060_480]),
        "sd2-v": (865_910_724, [340_387_840]),
        "sdxl": (2_567_463_684, [123_060_480, 694_659_840]),
    }
    for family, (unet_size, text_sizes) in expected.items():
        folder = write_family_config(family, tmp_path / family, vocabulary)
        with init_empty_weights():
            unet = diffusers.UNet2DConditionModel.from_config(
                diffusers.UNet2DConditionModel.load_config(folder / "unet")
            )
            vae = diffusers.AutoencoderKL.from_config(
                diffusers.AutoencoderKL.load_config(folder / "vae")
            )
            texts = [
                cls(transformers.CLIPTextConfig.from_pretrained(folder / name))
                for name, cls in (
                    ("text_encoder", transformers.CLIPTextModel),
                    ("text_encoder_2", transformers.CLIPTextModelWithProjection),
                )
                if (folder / name).is_dir()
            ]
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert (count(unet), [count(t) for t in texts]) == (unet_size, text_sizes), family
        assert count(vae) == 83_653_863
    assert set(FAMILIES) == {"sd1", "sd2", "sd2-v", "sdxl", "sdxl-v"}


def test_an_ldm_file_loads_offline_with_the_same_weights(ldm_file, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(str(ldm_file))
    reference = diffusers_weights(tiny_model_dir)
    loaded = {
        f"{part}.{key}": value
        for part in ("unet", "vae", "text_encoder")
        for key, value in getattr(model.pipe, part).state_dict().items()
        if "position_ids" not in key
    }
    loaded = {k.replace(".table.", "."): v for k, v in loaded.items()}  # the placeholder wrap
    assert set(loaded) == set(reference)
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert model.native_resolution == 32 and model.family == "custom-32"


def test_learn_and_generate_on_a_single_file(capsys, tmp_path, ldm_file, photo_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = ["--model", str(ldm_file)]
    code = main(
        ["learn", str(photo_dir), "--token", "<s>", "--init", "cat", "--steps", "2"]
        + ["--grad-accum", "1", "--out", str(tmp_path / "run"), *common]
    )
    assert code == 0, capsys.readouterr().err
    code = main(
        ["generate", "a photo of <s>", "--embedding", str(tmp_path / "run" / "s.safetensors")]
        + ["-n", "1", "--steps", "2", "--out", str(tmp_path / "images"), *common]
    )
    assert code == 0, capsys.readouterr().err
    assert len(list((tmp_path / "images").glob("*.png"))) == 2


def test_a_missing_tokenizer_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("ONEWORD_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "sd15.safetensors"
    save_file({UNET_KEY: torch.zeros(1), SD1: torch.zeros(2, 768)}, path)
    assert main(["generate", "a cat", "--model", str(path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("oneword: error:")]
    assert len(lines) == 1 and "vocab.json" in lines[0] and "clip-tokenizer" in lines[0], err
