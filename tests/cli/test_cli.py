"""End to end through the `oneword` command on the tiny model, and the bad-input table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from oneword.cli import main
from oneword.core.embeddings import LearnedEmbedding, load_embeddings, save_embedding
from oneword.core.train import CHECKPOINT_NAME


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_learn_then_generate(capsys, tmp_path, tiny_model_dir, photo_dir):
    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys,
        "learn",
        photo_dir,
        "--token",
        "<my-cat>",
        "--init",
        "calico cat",
        "--vectors",
        "2",
        "--steps",
        "4",
        "--checkpoint-every",
        "2",
        "--preview-every",
        "4",
        "--model",
        tiny_model_dir,
        "--out",
        run_dir,
    )
    assert code == 0, err
    files = {p.name for p in run_dir.iterdir()}
    assert {
        "learned_embeds.safetensors",
        "my-cat.safetensors",
        "my-cat.pt",
        CHECKPOINT_NAME,
        "run.json",
    } <= files
    assert (run_dir / "previews" / "step-000004.png").exists()
    (learned,) = load_embeddings(run_dir / "my-cat.safetensors")
    assert learned.token == "<my-cat>" and learned.vectors.shape == (2, 32)
    assert learned.metadata["init_word"] == "calico cat" and learned.metadata["steps"] == "4"

    out_dir = tmp_path / "images"
    code, out, err = run(
        capsys,
        "generate",
        "a painting of <my-cat> by claude monet",
        "--embedding",
        run_dir / "my-cat.pt",
        "-n",
        "3",
        "--seed",
        "7",
        "--steps",
        "3",
        "--model",
        tiny_model_dir,
        "--out",
        out_dir,
    )
    assert code == 0, err
    pngs = sorted(out_dir.glob("*-8.png"))
    assert len(pngs) == 1 and (out_dir / "a-painting-of-my-cat-by-claude-monet-grid.png").exists()
    meta = Image.open(pngs[0]).text
    assert meta["prompt"] == "a painting of <my-cat> by claude monet"
    assert json.loads(meta["seed"]) == 8 and json.loads(meta["steps"]) == 3
    assert json.loads(meta["oneword"])["seed"] == 8  # oneword's own chunk, beside A1111's
    prompt, settings = meta["parameters"].splitlines()
    assert prompt == "a painting of <my-cat> by claude monet"
    assert dict(f.split(": ", 1) for f in settings.split(", ")) == {
        "Steps": "3",
        "Sampler": "DDIM",
        "CFG scale": "7.5",
        "Seed": "8",
        "Size": "32x32",
        "Model": tiny_model_dir.name,
    }
    preview = Image.open(run_dir / "previews" / "step-000004.png").text["parameters"]
    assert preview.startswith("a photo of a <my-cat>") and "Seed: 1000" in preview
    code, shown, _ = run(capsys, "show", "last")  # the store holds what generate drew
    assert code == 0 and "generate of <my-cat>, done" in shown
    assert "images (3):" in shown and str(pngs[0]) in shown and "my-cat.pt" in shown
    # the same seed redraws the same image
    code, _, err = run(
        capsys,
        "generate",
        "a painting of <my-cat> by claude monet",
        "--embedding",
        run_dir / "learned_embeds.safetensors",
        "-n",
        "1",
        "--seed",
        "8",
        "--steps",
        "3",
        "--model",
        tiny_model_dir,
        "--out",
        tmp_path / "again",
    )
    again = Image.open(tmp_path / "again" / "a-painting-of-my-cat-by-claude-monet-8.png")
    # batch of 1 vs batch of 3: the same up to float rounding (one 8-bit level)
    diff = torch.tensor(list(again.getdata())) - torch.tensor(list(Image.open(pngs[0]).getdata()))
    assert int(diff.abs().max()) <= 1


def test_every_command_has_help(capsys):
    for command in ([], ["learn"], ["generate"]):
        with pytest.raises(SystemExit) as done:
            main(command + ["--help"])
        assert done.value.code == 0
        assert "usage: oneword" in capsys.readouterr().out


class Payload:
    """Stands for arbitrary pickled code in a downloaded .pt."""


def _pickled_pt(path):
    torch.save({"string_to_param": {"*": Payload()}}, path)
    return path


def _wide_embedding(path):
    save_embedding(LearnedEmbedding("<wide>", torch.zeros(1, 768), {}), path, "a1111")
    return path


BAD_INPUT = [
    (
        "empty photo folder",
        lambda t, m, p: ["learn", t / "nothing", "--token", "<x>", "--init", "cat", "--model", m],
        "nothing",
    ),
    (
        "unreadable photos only",
        lambda t, m, p: ["learn", _junk(t), "--token", "<x>", "--init", "cat", "--model", m],
        "no usable photos",
    ),
    (
        "token already a word",
        lambda t, m, p: [
            "learn",
            p,
            "--token",
            "cat",
            "--init",
            "cat",
            "--model",
            m,
            "--out",
            t / "r",
        ],
        "already exists",
    ),
    (
        "init word missing",
        lambda t, m, p: ["learn", p, "--token", "<x>", "--model", m],
        "--init is missing",
    ),
    (
        "model folder not a pipeline",
        lambda t, m, p: ["learn", p, "--token", "<x>", "--init", "cat", "--model", t],
        "not a diffusers pipeline",
    ),
    (
        "missing checkpoint file",
        lambda t, m, p: ["generate", "a <x>", "--model", t / "sd.ckpt"],
        "no such checkpoint",
    ),
    (
        "embedding of another width",
        lambda t, m, p: [
            "generate",
            "a <wide>",
            "--embedding",
            _wide_embedding(t / "w.safetensors"),
            "--model",
            m,
        ],
        "768",
    ),
    (
        "pickled .pt",
        lambda t, m, p: ["generate", "a <x>", "--embedding", _pickled_pt(t / "e.pt"), "--model", m],
        "refusing to load",
    ),
    (
        "resume without a run",
        lambda t, m, p: [
            "learn",
            p,
            "--token",
            "<x>",
            "--init",
            "cat",
            "--model",
            m,
            "--out",
            t / "new",
            "--resume",
        ],
        "does not exist",
    ),
    (
        "bad option value",
        lambda t, m, p: [
            "learn",
            p,
            "--token",
            "<x>",
            "--init",
            "cat",
            "--steps",
            "0",
            "--model",
            m,
        ],
        "--steps 0",
    ),
]


def _junk(tmp):
    folder = tmp / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg")
    return folder


@pytest.mark.parametrize("name,argv,expected", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_clear_line(
    capsys, tmp_path, tiny_model_dir, photo_dir, name, argv, expected
):
    code, out, err = run(capsys, *argv(tmp_path, tiny_model_dir, photo_dir))
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("oneword: error:")]
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err


def test_hub_model_offline_is_one_line(capsys, tmp_path, photo_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _, err = run(capsys, "generate", "a cat", "--model", "nobody/no-such-model")
    assert code == 2 and "--model nobody/no-such-model" in err and "Traceback" not in err


def test_demo_writes_the_sheet_and_page_and_scores_both_words(tmp_path, capsys):
    code, printed, _ = run(
        capsys, "demo", "--model", "tiny", "--steps", 2, "--out", tmp_path / "demo"
    )
    assert code == 0
    assert "class word" in printed and "learned word" in printed
    sheet = Image.open(tmp_path / "demo" / "contact_sheet.png")
    assert sheet.width > 64 and sheet.height > 64
    figure = Image.open(tmp_path / "demo" / "comparison.png")
    # the photos, then 6 prompts x (2 class + 2 learned) images, every image shown 3x as large
    photo = Image.open(tmp_path / "demo" / "photos" / "photo0.png").width
    drawn = Image.open(next((tmp_path / "demo" / "images").glob("*.png"))).width
    # the photos twice (as taken, then darkened outside their automatic masks), then the images
    assert figure.width >= 5 * 3 * photo and figure.height >= 2 * 3 * photo + 6 * 3 * drawn
    page = (tmp_path / "demo" / "index.html").read_text()
    assert 'src="comparison.png"' in page and "made by the model itself" in page
    assert "&lt;my-cat&gt;" in page
    assert len(list((tmp_path / "demo" / "run" / "masks").glob("*.png"))) == 5
    assert len(list((tmp_path / "demo" / "photos").glob("*.png"))) == 5
    code, listed, _ = run(capsys, "runs", "--kind", "generate")
    assert code == 0 and "<my-cat>" in listed and "done" in listed
    code, shown, _ = run(capsys, "show", "last")
    assert "images (24):" in shown and "learned_embeds.safetensors" in shown
    drawn = Image.open(next((tmp_path / "demo" / "images").glob("*-learned-s0.png")))
    assert "<my-cat>" in drawn.text["parameters"].splitlines()[0]


@pytest.mark.parametrize(
    "extra, steps",
    [
        ([], 300),
        (["--model", "tiny"], 3000),
        (["--model", "tiny", "--steps", "7"], 7),
    ],
)
def test_learn_steps_default_to_what_the_model_needs(extra, steps, tmp_path):
    from oneword.cli import build_parser
    from oneword.cli.options import training_config

    for command in ("learn", "sweep"):
        args = build_parser().parse_args(
            [command, str(tmp_path), "--token", "<x>", "--init", "cat", *extra]
        )
        assert training_config(args).steps == steps  # the 64 px world model overfits sooner


def test_a_per_layer_word_learns_draws_mixes_and_inspects(capsys, tmp_path, tiny_model_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 120, 200)).save(photos / f"p{i}.png")
    common = ["--token", "<p>", "--init", "cat", "--per-layer", "--steps", "2"]
    for seed in ("0", "1"):
        out = tmp_path / f"run{seed}"
        code, _, err = run(
            capsys,
            "learn",
            photos,
            *common,
            "--seed",
            seed,
            "--model",
            tiny_model_dir,
            "--out",
            out,
        )
        assert code == 0, err
    layered = tmp_path / "run0" / "p.per-layer.safetensors"
    (word,) = load_embeddings(layered)
    assert word.layers >= 2 and word.vectors.shape[1:] == (1, 32)
    (mean,) = load_embeddings(tmp_path / "run0" / "p.safetensors")  # what A1111 reads
    assert torch.allclose(mean.vectors, word.vectors.mean(0))

    code, _, err = run(
        capsys, "mix", layered, tmp_path / "run1" / "p.per-layer.safetensors",
        "--method", "slerp", "-o", tmp_path / "mixed.safetensors",
    )  # fmt: skip
    assert code == 0, err
    (mixed,) = load_embeddings(tmp_path / "mixed.safetensors")
    assert mixed.vectors.shape == word.vectors.shape

    images = tmp_path / "images"
    code, _, err = run(
        capsys, "generate", "a photo of <p>", "--embedding", tmp_path / "mixed.safetensors",
        "-n", "1", "--steps", "2", "--model", tiny_model_dir, "--out", images,
    )  # fmt: skip
    assert code == 0, err
    assert (images / "a-photo-of-p-0.png").is_file()

    code, out, err = run(capsys, "inspect", layered, "--model", tiny_model_dir, "--top", "2")
    assert code == 0, err
    assert f"1 vector(s) in each of {word.layers} layers" in out
    assert "layer00 v0" in out and f"layer{word.layers - 1:02d} v0" in out


def test_learn_stops_when_flat_and_writes_the_word_of_that_step(capsys, tmp_path, tiny_model_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32), (200, 80, 20)).save(photos / "p.png")
    flat = [
        "--stop-when-flat",
        "--flat-every",
        "1",
        "--flat-window",
        "3",
        "--flat-threshold",
        "0.9",
    ]
    code, _, err = run(
        capsys, "learn", photos, "--token", "<f>", "--init", "cat", "--steps", "60", "--lr",
        "5e-2", *flat, "--model", tiny_model_dir, "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, err
    (word,) = load_embeddings(tmp_path / "run" / "learned_embeds.safetensors")
    assert 6 <= int(word.metadata["steps"]) < 60
    assert f"stopped at step {word.metadata['steps']}" in err


def test_a_word_of_several_parts_starts_each_vector_from_its_own_word(
    capsys, tmp_path, tiny_model_dir, photo_dir
):
    run_dir = tmp_path / "run"
    code, _, err = run(
        capsys, "learn", photo_dir, "--token", "<mascot>", "--init", "cat,dog,red",
        "--vectors", "3", "--steps", "1", "--lr", "1e-9", "--model", tiny_model_dir,
        "--out", run_dir,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run(
        capsys, "inspect", run_dir / "learned_embeds.safetensors", "--model", tiny_model_dir,
        "--top", "1",
    )  # fmt: skip
    assert code == 0, err
    nearest = [line.split("nearest: ")[1].split()[0] for line in out.splitlines() if "  v" in line]
    assert nearest == ["cat</w>", "dog</w>", "red</w>"]  # what each vector became (lr ~0)


def test_learn_with_masks_beside_the_photos_then_show_names_them(capsys, tmp_path, tiny_model_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(2):
        pixels = (torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(photos / f"cat{i}.jpg")
        mask = Image.new("L", (48, 40), 0)
        mask.paste(255, (8, 4, 40, 36))
        mask.save(photos / f"cat{i}.mask.png")
    run_dir = tmp_path / "run"
    argv = ["learn", photos, "--token", "<m>", "--init", "cat", "--steps", 2, "--grad-accum", 1]
    argv += ["--model", tiny_model_dir, "--out", run_dir]
    code, _, err = run(capsys, *argv, "--mask", "--mask-floor", 0.2)
    assert code == 0, err
    info = json.loads((run_dir / "run.json").read_text())
    assert info["mask_floor"] == 0.2 and info["config"]["mask_floor"] == 0.2
    assert [Path(f["mask"]).name for f in info["mask"]["files"]] == [
        "cat0.mask.png",
        "cat1.mask.png",
    ]
    copy = Image.open(run_dir / "masks" / "cat0.png")
    assert copy.tobytes() == Image.open(photos / "cat0.mask.png").tobytes()
    code, out, err = run(capsys, "show", "last")
    assert code == 0, err
    assert "trained with masks (--mask-floor 0.2)" in out and "cat1.mask.png" in out
    # with --no-mask, the masks are no photos (and a note says so)
    code, out, err = run(capsys, *argv[:-2], "--no-mask", "--out", tmp_path / "plain")
    assert code == 0 and "2 mask file(s)" in err + out
    code, out, _ = run(capsys, "show", "last")
    assert "trained with masks" not in out


def test_learn_with_the_alpha_channel_as_mask(capsys, tmp_path, tiny_model_dir):
    photos = tmp_path / "cutouts"
    photos.mkdir()
    for i in range(2):
        image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
        image.paste((200, 40 * i, 10, 255), (10, 10, 30, 30))
        image.save(photos / f"logo{i}.png")
    argv = ["learn", photos, "--token", "<l>", "--init", "logo", "--steps", 1, "--grad-accum", 1]
    code, _, err = run(capsys, *argv, "--model", tiny_model_dir, "--out", tmp_path / "r", "--mask")
    assert code == 0, err
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert [f["mask"] for f in info["mask"]["files"]] == [
        f"alpha channel of {photos / 'logo0.png'}",
        f"alpha channel of {photos / 'logo1.png'}",
    ]
