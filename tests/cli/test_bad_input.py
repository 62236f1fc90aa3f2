"""Every bad input: exit code 2, one line naming the option or file, no traceback, nothing
lost; and where the line says what to do, doing it makes the command succeed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from oneword.checks import MAX_ID, MAX_SEED
from oneword.cli import main
from oneword.core.embeddings import LearnedEmbedding, save_embedding
from oneword.core.train import CHECKPOINT_NAME
from oneword.experiments.schema import DB_NAME

HUGE = str(MAX_ID + 1)  # one past SQLite's integer range
LONG = " ".join(["a cat"] * 60)  # past any text encoder's 77 tokens


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(err: str) -> str:
    """The one error line, the last thing printed (a progress bar may come before it)."""
    lines = [line.strip("\r ") for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("oneword: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err and "WARNING" not in err, err
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` and a hash of its contents (to see that nothing is lost)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(DB_NAME)  # the store may log the failure
    }


def emb(path: Path, rows: torch.Tensor, token: str = "<e>") -> Path:
    save_embedding(LearnedEmbedding(token, rows, {}), path, "diffusers")
    return path


def good(t: Path) -> Path:
    return emb(
        t / "good.safetensors", torch.randn(1, 32, generator=torch.Generator().manual_seed(1))
    )


def nan_file(t: Path) -> Path:
    rows = torch.zeros(2, 32)
    rows[1, 3] = float("nan")
    path = t / "nan.safetensors"
    from safetensors.torch import save_file

    save_file({"<bad>": rows}, str(path))  # written by another tool: NaN and all
    return path


def learn(t, m, p, *extra):
    return [
        "learn",
        p,
        "--token",
        "<x>",
        "--init",
        "cat",
        "--steps",
        "1",
        "--grad-accum",
        "1",
        "--model",
        m,
        "--out",
        t / "run",
        *extra,
    ]


def junk_photos(t: Path) -> Path:
    folder = t / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def half_checkpoint(t: Path) -> Path:
    (t / "run").mkdir()
    torch.save({"step": 1, "rows": torch.zeros(1, 1, 32)}, t / "run" / CHECKPOINT_NAME)
    return t


def masks_beside(p: Path, size=(48, 40), value=255, names=("photo0", "photo1", "photo2", "photo3")):
    """A mask <stem>.mask.png beside each named photo of the photo folder (48x40 photos)."""
    from PIL import Image

    for name in names:
        Image.new("L", size, value).save(p / f"{name}.mask.png")
    return p


def mask_folder(t: Path, *names: str) -> Path:
    from PIL import Image

    folder = t / "masks"
    folder.mkdir(exist_ok=True)
    for name in names:
        Image.new("L", (48, 40), 255).save(folder / name)
    return folder


def trained_with_masks(t: Path, m: Path, p: Path) -> Path:
    """A run learned with masks, then one of its masks changed."""
    from PIL import Image

    masks_beside(p)
    assert main([str(a) for a in learn(t, m, p, "--mask")]) == 0
    Image.new("L", (48, 40), 128).save(p / "photo0.mask.png")
    return p


def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# (name, argv(tmp, model, photos), what the line must say, setup(monkeypatch) or None)
CASES = [
    (
        "mask of another size than its photo",
        lambda t, m, p: learn(t, m, masks_beside(p, size=(10, 10)), "--mask"),
        "photo0.mask.png: the mask is 10x10 pixels but its photo",
        None,
    ),
    (
        "mask all black",
        lambda t, m, p: learn(t, m, masks_beside(p, value=0), "--mask"),
        "photo0.mask.png: the mask is empty",
        None,
    ),
    (
        "mask file without its photo",
        lambda t, m, p: learn(t, m, masks_beside(p, names=("ghost",)), "--mask"),
        "ghost.mask.png: a mask whose photo",
        None,
    ),
    (
        "mask-dir file without its photo",
        lambda t, m, p: learn(
            t, m, p, "--mask", "--mask-dir", mask_folder(t, "photo0.png", "ghost.png")
        ),
        "ghost.png: a mask in --mask-dir whose photo",
        None,
    ),
    (
        "photo without a mask",
        lambda t, m, p: learn(t, m, masks_beside(p, names=("photo0",)), "--mask"),
        "photo1.png: no mask for this photo (looked for",
        None,
    ),
    (
        "sweep photo without a mask",
        lambda t, m, p: ["sweep", *learn(t, m, p, "--mask", "--candidates", 2)[1:]],
        "photo0.png: no mask for this photo",
        None,
    ),
    (
        "mask-dir not a folder",
        lambda t, m, p: learn(t, m, p, "--mask", "--mask-dir", t / "nowhere"),
        "--mask-dir",
        None,
    ),
    (
        "mask-dir without mask",
        lambda t, m, p: learn(t, m, p, "--mask-dir", mask_folder(t)),
        "only with --mask",
        None,
    ),
    (
        "class word with mask files",
        lambda t, m, p: learn(t, m, masks_beside(p), "--mask", "--class-word", "cat"),
        "--class-word cat: only with --mask auto",
        None,
    ),
    (
        "class word with no mask",
        lambda t, m, p: learn(t, m, p, "--no-mask", "--class-word", "cat"),
        "--class-word: not with --no-mask",
        None,
    ),
    (
        "mask model without mask auto",
        lambda t, m, p: learn(t, m, masks_beside(p), "--mask", "--mask-model", t),
        "only with --mask auto",
        None,
    ),
    (
        "mask model that is not one",
        lambda t, m, p: learn(t, m, p, "--mask", "auto", "--mask-model", t / "nowhere"),
        "not a folder, nor in the local cache",
        None,
    ),
    (
        "mask-dir with mask auto",
        lambda t, m, p: learn(t, m, p, "--mask", "auto", "--mask-dir", mask_folder(t)),
        "not with --mask auto",
        None,
    ),
    (
        "masks written into the photos' folder",
        lambda t, m, p: ["masks", p, "--init", "cat", "--out", p, "--model", m],
        "the photos' own folder",
        None,
    ),
    (
        "masks without a class word",
        lambda t, m, p: ["masks", p, "--out", t / "masks", "--model", m],
        "give --init WORD or --class-word WORD",
        None,
    ),
    (
        "mask floor above 1",
        lambda t, m, p: learn(t, m, masks_beside(p), "--mask", "--mask-floor", 2),
        "--mask-floor 2",
        None,
    ),
    (
        "mask floor without mask",
        lambda t, m, p: learn(t, m, p, "--no-mask", "--mask-floor", 0.5),
        "--mask-floor: not with --no-mask",
        None,
    ),
    (
        "resume with other masks",
        lambda t, m, p: learn(t, m, trained_with_masks(t, m, p), "--mask", "--resume"),
        "trained on other photos",
        None,
    ),
    (
        "device not a name",
        lambda t, m, p: learn(t, m, p, "--device", "gpu0"),
        "--device gpu0",
        None,
    ),
    (
        "device cuda absent",
        lambda t, m, p: learn(t, m, p, "--device", "cuda"),
        "no CUDA GPU",
        no_cuda,
    ),
    ("device mps absent", lambda t, m, p: learn(t, m, p, "--device", "mps"), "--device mps", None),
    ("seed beyond 64 bits", lambda t, m, p: learn(t, m, p, "--seed", 2**64), "--seed", None),
    ("seed negative", lambda t, m, p: learn(t, m, p, "--seed", -1), "--seed -1", None),
    (
        "generate seed + n beyond range",
        lambda t, m, p: ["generate", "a <e>", "--seed", MAX_SEED, "-n", 2, "--model", m],
        "--seed",
        None,
    ),
    (
        "weight decay negative",
        lambda t, m, p: learn(t, m, p, "--weight-decay", -0.1),
        "--weight-decay -0.1",
        None,
    ),
    (
        "warmup negative",
        lambda t, m, p: learn(t, m, p, "--warmup-steps", -1),
        "--warmup-steps -1",
        None,
    ),
    (
        "preview negative",
        lambda t, m, p: learn(t, m, p, "--preview-every", -1),
        "--preview-every -1",
        None,
    ),
    ("lr infinite", lambda t, m, p: learn(t, m, p, "--lr", "inf"), "--lr inf", None),
    (
        "one init word per vector, but too few",
        lambda t, m, p: learn(t, m, p, "--init", "face,logo", "--vectors", "3"),
        "2 comma-separated words for --vectors 3",
        None,
    ),
    (
        "flat threshold out of range",
        lambda t, m, p: learn(t, m, p, "--stop-when-flat", "--flat-threshold", "2"),
        "--flat-threshold 2",
        None,
    ),
    (
        "vectors beyond the text length",
        lambda t, m, p: learn(t, m, p, "--vectors", 1000),
        "at most",
        None,
    ),
    ("out is a file", lambda t, m, p: learn(t, m, p, "--out", _file(t)), "--out", None),
    ("mix -o a folder", lambda t, m, p: ["mix", good(t), good(t), "-o", t], "is a folder", None),
    (
        "mix weights infinite",
        lambda t, m, p: ["mix", good(t), good(t), "--weights", "inf,1", "-o", t / "m.safetensors"],
        "--weights",
        None,
    ),
    (
        "generate cfg nan",
        lambda t, m, p: ["generate", "a cat", "--cfg", "nan", "--model", m],
        "--cfg nan",
        None,
    ),
    (
        "generate a learned word past the text length",
        lambda t, m, p: ["generate", LONG + " <e>", "--embedding", good(t), "--model", m],
        "<e> is cut off",
        None,
    ),
    (
        "generate size",
        lambda t, m, p: ["generate", "a cat", "--size", 12, "--model", m],
        "--size 12",
        None,
    ),
    (
        "generate no images",
        lambda t, m, p: ["generate", "a cat", "-n", 0, "--model", m],
        "-n 0",
        None,
    ),
    ("show a huge run id", lambda t, m, p: ["show", f"r{HUGE}"], "run " + HUGE, None),
    ("inspect a huge run id", lambda t, m, p: ["inspect", HUGE, "--model", m], "run " + HUGE, None),
    ("rate a huge run id", lambda t, m, p: ["rate", HUGE, "c00", 3], "run " + HUGE, None),
    ("rate 99", lambda t, m, p: ["rate", "r1", "c00", 99], "rating 99", None),
    ("rate -5", lambda t, m, p: ["rate", "r1", "c00", -5], "rating -5", None),
    (
        "generate a NaN embedding",
        lambda t, m, p: ["generate", "a <bad>", "--embedding", nan_file(t), "--model", m],
        "<bad>",
        None,
    ),
    (
        "inspect a NaN embedding",
        lambda t, m, p: ["inspect", nan_file(t), "--model", m],
        "NaN",
        None,
    ),
    (
        "mix a NaN embedding",
        lambda t, m, p: ["mix", nan_file(t), good(t), "-o", t / "m.safetensors"],
        "nan.safetensors",
        None,
    ),
    (
        "the same embedding twice",
        lambda t, m, p: [
            "generate",
            "a <e>",
            "--embedding",
            good(t),
            "--embedding",
            good(t),
            "--model",
            m,
        ],
        "given twice",
        None,
    ),
    (
        "checkpoint missing keys",
        lambda t, m, p: learn(half_checkpoint(t), m, p, "--resume"),
        "missing config",
        None,
    ),
    (
        "every photo unreadable",
        lambda t, m, p: ["learn", junk_photos(t), "--token", "<x>", "--init", "cat", "--model", m],
        "b.png",
        None,
    ),
]


def _file(t: Path) -> Path:
    (t / "taken.txt").write_text("mine")
    return t / "taken.txt"


@pytest.mark.parametrize("name,argv,expected,setup", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_loses_nothing(
    capsys, monkeypatch, tmp_path, tiny_model_dir, photo_dir, name, argv, expected, setup
):
    if setup:
        setup(monkeypatch)
    args = argv(tmp_path, tiny_model_dir, photo_dir)
    before = snapshot(tmp_path)
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    line = error_line(err)
    assert expected in line and "Traceback" not in err
    assert snapshot(tmp_path).items() >= before.items()  # every file as it was


def test_every_unreadable_photo_is_named_with_its_reason(capsys, tmp_path, tiny_model_dir):
    line = error_line(
        run(capsys, "learn", junk_photos(tmp_path), "--token", "<x>", "--init", "cat")[2]
    )
    assert "a.jpg: not an image" in line and "b.png" in line


# -- the advice works when followed ----------------------------------------------------------
def test_a_long_prompt_with_its_word_first_draws(capsys, caplog, tmp_path, tiny_model_dir):
    out = tmp_path / "drawn"
    argv = ["generate", "<e> " + LONG, "--embedding", good(tmp_path), "--model", tiny_model_dir]
    code, _, err = run(capsys, *argv, "--steps", 1, "-n", 1, "--out", out)
    assert code == 0, err
    assert list(out.glob("*.png")) and "first 75 of 121 tokens" in caplog.text


def test_vectors_advice_works(capsys, tmp_path, tiny_model_dir, photo_dir):
    line = error_line(
        run(capsys, *learn(tmp_path, tiny_model_dir, photo_dir, "--vectors", 1000))[2]
    )
    fit = int(line.split("give --vectors ")[1].split()[0])
    assert 1 < fit < 77
    code, _, err = run(capsys, *learn(tmp_path, tiny_model_dir, photo_dir, "--vectors", fit))
    assert code == 0, err


def test_out_file_and_mix_folder_advice_work(capsys, tmp_path, tiny_model_dir, photo_dir):
    line = error_line(
        run(capsys, *learn(tmp_path, tiny_model_dir, photo_dir, "--out", _file(tmp_path)))[2]
    )
    folder = line.split("(e.g. ")[1].rstrip(")")
    assert run(capsys, *learn(tmp_path, tiny_model_dir, photo_dir, "--out", folder))[0] == 0
    assert (tmp_path / "taken.txt").read_text() == "mine"
    line = error_line(run(capsys, "mix", good(tmp_path), good(tmp_path), "-o", tmp_path)[2])
    target = line.split("e.g. ")[1]
    assert run(capsys, "mix", good(tmp_path), good(tmp_path), "-o", target)[0] == 0
    assert Path(target).is_file()


def test_masks_class_word_advice_works(capsys, tmp_path, tiny_model_dir, photo_dir):
    argv = ["masks", photo_dir, "--out", tmp_path / "masks", "--model", tiny_model_dir]
    line = error_line(run(capsys, *argv)[2])
    assert "give --init WORD or --class-word WORD" in line
    code, _, err = run(capsys, *argv, "--init", "cat")
    assert code == 0, err


def test_device_advice_works(capsys, tmp_path, tiny_model_dir, photo_dir):
    line = error_line(
        run(capsys, *learn(tmp_path, tiny_model_dir, photo_dir, "--device", "gpu0"))[2]
    )
    assert "leave --device out" in line
    assert run(capsys, *learn(tmp_path, tiny_model_dir, photo_dir))[0] == 0


def test_damaged_checkpoint_advice_works(capsys, tmp_path, tiny_model_dir, photo_dir):
    half_checkpoint(tmp_path)
    line = error_line(run(capsys, *learn(tmp_path, tiny_model_dir, photo_dir, "--resume"))[2])
    assert "delete it and run the command again without --resume" in line
    (tmp_path / "run" / CHECKPOINT_NAME).unlink()
    code, _, err = run(capsys, *learn(tmp_path, tiny_model_dir, photo_dir))
    assert code == 0, err
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(b"garbage")
    line = error_line(run(capsys, *learn(tmp_path, tiny_model_dir, photo_dir, "--resume"))[2])
    assert "not readable" in line and "without --resume" in line


def test_divergence_advice_works(capsys, tmp_path, tiny_model_dir, photo_dir, monkeypatch):
    from oneword.adapters.pipelines import TextToImageModel

    real = TextToImageModel.predict_noise
    calls = {"n": 0}

    def poisoned(self, *args):
        calls["n"] += 1
        out = real(self, *args)
        return out * float("nan") if calls["n"] > 2 else out

    monkeypatch.setattr(TextToImageModel, "predict_noise", poisoned)
    argv = learn(tmp_path, tiny_model_dir, photo_dir, "--steps", 4, "--checkpoint-every", 2)
    line = error_line(run(capsys, *argv)[2])
    assert "lower --lr" in line and "--resume" in line
    monkeypatch.setattr(TextToImageModel, "predict_noise", real)
    code, _, err = run(capsys, *argv, "--lr", "1e-3", "--resume")
    assert code == 0, err
    saved = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    assert saved["step"] == 4 and '"lr": 0.001' in saved["config"]


def test_a_full_store_is_one_line_and_its_advice_works(
    capsys, tmp_path, tiny_model_dir, photo_dir, monkeypatch
):
    """SQLite says 'database or disk is full' when the run's files are recorded."""
    import sqlite3

    real = sqlite3.connect

    class Full(sqlite3.Connection):
        def executemany(self, sql, *args):
            if "INTO files" in sql:
                raise sqlite3.OperationalError("database or disk is full")
            return super().executemany(sql, *args)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, factory=Full, **k))
    argv = learn(tmp_path, tiny_model_dir, photo_dir, "--steps", 2)
    line = error_line(run(capsys, *argv)[2])
    assert "could not write the store (database or disk is full)" in line
    assert "make room" in line and "--resume" in line
    monkeypatch.setattr(sqlite3, "connect", real)
    code, _, err = run(capsys, *argv, "--resume")
    assert code == 0, err
    assert (tmp_path / "run" / "x.safetensors").is_file()


def test_an_init_word_in_pieces_is_reported(capsys, tmp_path, tiny_model_dir, photo_dir):
    code, _, err = run(capsys, *learn(tmp_path, tiny_model_dir, photo_dir, "--init", "catt"))
    assert code == 0, err
    assert "--init 'catt'" in err and "3 pieces (c + at + t)" in err


def test_tokens_in_other_scripts_get_their_own_run_folders(
    capsys, tmp_path, tiny_model_dir, photo_dir, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for token in ("<うちのねこ>", "<наш-кот>"):
        argv = ["learn", photo_dir, "--token", token, "--init", "cat", "--steps", 1,
                "--grad-accum", 1, "--model", tiny_model_dir]  # fmt: skip
        assert run(capsys, *argv)[0] == 0
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"うちのねこ", "наш-кот"}
    assert (tmp_path / "runs" / "うちのねこ" / "うちのねこ.safetensors").is_file()


def test_the_sdxl_pair_of_diffusers_is_read_by_inspect_and_mix(capsys, tmp_path):
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        save_file(
            {"<p>": torch.randn(1, 32, generator=gen)},
            str(tmp_path / folder / "learned_embeds.safetensors"),
        )
        second = tmp_path / folder / "learned_embeds_2.safetensors"  # tiny-sdxl: 32 + 48
        save_file({"<p>": torch.randn(1, 48, generator=gen)}, str(second))
    pair = [tmp_path / f / "learned_embeds.safetensors" for f in ("a", "b")]
    code, out, err = run(capsys, "inspect", *pair, "--model", "tiny-sdxl")
    assert code == 0, err
    assert "<p>: 1 vector(s)" in out
    code, out, err = run(capsys, "mix", *pair, "-o", tmp_path / "ab.safetensors")
    assert code == 0, err
    from oneword.core.embeddings import load_embeddings

    (mixed,) = load_embeddings(tmp_path / "ab.safetensors")
    assert mixed.layout == (32, 48)
