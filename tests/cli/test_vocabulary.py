"""One vocabulary of options: help for every option, --version, old spellings with a note,
and every command that makes a run says its id and what to run next."""

from __future__ import annotations

import argparse

import pytest

import oneword
from oneword.cli import build_parser, main


def all_parsers(parser: argparse.ArgumentParser, path: str = "oneword"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_parsers(sub, f"{path} {name}")


def test_every_option_has_help():
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, parser in all_parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and action.help != argparse.SUPPRESS
        and not (action.help or "").strip()
    ]
    assert missing == []


def test_steps_train_and_sample_steps_draw_everywhere():
    for path, parser in all_parsers(build_parser()):
        shown = {
            o for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings
        }
        if "--steps" in shown:
            assert path.split()[-1] in ("learn", "sweep", "demo", "dreambench"), path
        if "--seed" in shown and path.split()[-1] in ("generate", "score", "card"):
            raise AssertionError(f"{path}: image seeds are --image-seed")


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"oneword {oneword.__version__}"


def test_old_spellings_work_with_a_note(capsys, tmp_path, tiny_model_dir):
    out = tmp_path / "images"
    argv = ["generate", "a cat", "-n", "1", "--steps", "2", "--seed", "3"]
    assert main(argv + ["--model", str(tiny_model_dir), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "--steps here is now --sample-steps" in err and "--seed here is now --image-seed" in err
    assert (out / "a-cat-3.png").is_file()


def test_commands_that_make_a_run_say_its_id_and_what_next(capsys, tmp_path, tiny_model_dir,
                                                            photo_dir):  # fmt: skip
    model = ["--model", str(tiny_model_dir)]
    argv = ["learn", str(photo_dir), "--token", "<n>", "--init", "cat", "--steps", "1",
            "--grad-accum", "1", "--out", str(tmp_path / "run"), *model]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "run r1: learned <n>" in out
    assert "next: oneword generate 'a photo of <n> in the snow' --embedding r1 --model" in out
    assert main(["generate", "a <n>", "--embedding", "r1", "-n", "1", "--sample-steps", "1",
                 "--out", str(tmp_path / "images"), *model]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "run r2: 1 image and a contact sheet" in out and "next: oneword serve" in out
