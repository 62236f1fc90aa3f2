"""`oneword sweep` → `score` → `runs`/`show`/`rate`, the report, and `bench dreambench`, end to
end on the tiny model with tiny evaluators."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from oneword.cli import main
from oneword.experiments import dreambench
from oneword.experiments.report import scatter_plot
from oneword.experiments.scoring import ScoreSettings, prompt_job
from oneword.experiments.store import Store


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def judges(evaluators):
    return ["--clip-model", evaluators["clip"], "--dino-model", evaluators["dino"]]


def test_sweep_score_runs_show_rate(capsys, tmp_path, tiny_model_dir, photo_dir, tiny_evaluators):
    project = tmp_path / "proj"
    code, out, err = run(
        capsys,
        "sweep",
        photo_dir,
        "--token",
        "<c>",
        "--init",
        "cat",
        "--candidates",
        "3",
        "--inits",
        "word,random",
        "--lrs",
        "1e-2,2e-2",
        "--steps",
        "2",
        "--grad-accum",
        "1",
        "--max-batch",
        "2",
        "--model",
        tiny_model_dir,
        "--project",
        project,
    )
    assert code == 0, err
    assert "run r1: 3 candidates" in out and "oneword score r1" in out
    code, out, err = run(
        capsys,
        "score",
        "r1",
        "--images",
        "3",
        "--steps",
        "2",
        *judges(tiny_evaluators),
        "--project",
        project,
    )
    assert code == 0, err
    table = out.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("rank"))
    assert [line.split()[0] for line in table[header + 1 : header + 4]] == ["1", "2", "3"]
    assert {"CLIP-I", "DINO", "CLIP-T", "combined"} <= set(table[header].split())
    assert "photos" in table[header + 4]  # the real photos' own row
    folder = project / "runs" / "r1-c" / "scores" / "e1"
    page = (folder / "report.html").read_text()
    assert all(f"{c}.png" in page for c in ("c00", "c01", "c02")) and "scatter.png" in page
    assert Image.open(folder / "scatter.png").size == (720, 540)
    assert len(list((folder / "c01").glob("*.png"))) == 3
    # the same seeds for every candidate: paired comparisons
    assert json.loads(Image.open(folder / "c00" / "002-s2.png").text["seed"]) == 2
    with Store.open(project) as store:
        (ev,) = store.evaluations(1)
        scores = store.scores(ev["id"])
        assert len(scores) == 3 and sorted(s["rank"] for s in scores.values()) == [1, 2, 3]
        assert all(
            {"clip_i", "dino", "clip_t", "combined", "pareto"} <= set(s) for s in scores.values()
        )
        assert any(s["pareto"] for s in scores.values())
        assert len(store.images(store.candidates(1)[0].id, ev["id"])) == 3

    code, out, err = run(
        capsys, "rate", "r1", "c01", "5", "--note", "best ears", "--project", project
    )
    assert code == 0, err
    code, out, err = run(capsys, "runs", "--project", project)
    assert code == 0 and "r1" in out and "sweep" in out and "done" in out
    code, out, err = run(capsys, "show", "last", "--project", project)
    assert code == 0, err
    assert (
        "c01  seed 1  init word  lr 0.02" in out
        and "c02  seed 2  init random  lr 0.01" in out
        and "rated 5" in out
    )
    assert "evaluation e1" in out and "#1 " in out


def test_learn_is_recorded_and_score_needs_a_finished_run(
    capsys, tmp_path, tiny_model_dir, photo_dir
):
    code, _, err = run(
        capsys,
        "learn",
        photo_dir,
        "--token",
        "<d>",
        "--init",
        "dog",
        "--steps",
        "1",
        "--model",
        tiny_model_dir,
        "--out",
        tmp_path / "r",
    )
    assert code == 0, err
    code, out, _ = run(capsys, "runs")
    assert "learn" in out and "<d>" in out and "done" in out
    code, out, _ = run(capsys, "show", tmp_path / "r")
    assert "c00  seed 0  init word" in out and "learned_embeds.safetensors" in out
    code, _, err = run(capsys, "score", "r7")
    assert code == 2 and "r7: no such run" in err
    with Store.open() as store:
        store.create_run("sweep", tmp_path / "empty", "tiny", "<e>")
    code, _, err = run(capsys, "score", "last")
    assert code == 2 and "has no candidates yet" in err


def test_prompt_jobs_cycle_prompts_with_paired_seeds(tmp_path):
    job = prompt_job(ScoreSettings(images=27, seed=5), "tiny", "<c>", "dog")
    assert job.templates == dreambench.LIVE_PROMPTS  # dogs get the live-subject prompts
    assert job.drawn[0] == "a <c> dog in the jungle" and job.drawn[25] == job.drawn[0]
    assert job.judged[0] == "a dog in the jungle" and job.seeds[:2] == [5, 6]
    assert (
        prompt_job(ScoreSettings(), "tiny", "<c>", "teapot").templates == dreambench.OBJECT_PROMPTS
    )
    limited = prompt_job(ScoreSettings(prompt_limit=2), "tiny", "<c>", "teapot")
    assert len(limited.drawn) == 2
    (tmp_path / "p.txt").write_text("# mine\na {} on a boat\n")
    mine = prompt_job(ScoreSettings(prompts=str(tmp_path / "p.txt")), "tiny", "<c>", "cat")
    assert mine.drawn == ["a <c> on a boat"] and mine.judged == ["a on a boat"]
    (tmp_path / "bad.txt").write_text("a boat\n")
    with pytest.raises(Exception, match="no {token}"):
        prompt_job(ScoreSettings(prompts=str(tmp_path / "bad.txt")), "tiny", "<c>", "cat")


def test_dreambench_prompts_are_the_benchmarks():
    assert len(dreambench.OBJECT_PROMPTS) == len(dreambench.LIVE_PROMPTS) == 25
    assert (
        dreambench.OBJECT_PROMPTS[12] == "a {token} {class} with the Eiffel Tower in the background"
    )
    assert dreambench.LIVE_PROMPTS[13] == "a {token} {class} wearing a black top hat and a monocle"
    assert len(dreambench.SUBJECT_CLASSES) == 30


def test_scatter_marks_the_front(tmp_path):
    points = [(0.5, 0.2, "c00", True), (0.4, 0.1, "c01", False), (0.3, 0.3, "c02", True)]
    path = scatter_plot(points, tmp_path / "s.png", "fidelity", "prompt", "t")
    pixels = torch.tensor(list(Image.open(path).convert("RGB").getdata()))
    red = ((pixels[:, 0] > 180) & (pixels[:, 1] < 90)).sum()
    assert red > 50  # front points and the line joining them
    scatter_plot([(0.5, float("nan"), "c00", True)], tmp_path / "one.png", "f", "p")


def test_bench_dreambench_on_a_tiny_subject(capsys, tmp_path, tiny_model_dir, tiny_evaluators):
    data = tmp_path / "dreambench"
    gen = torch.Generator().manual_seed(1)
    (data / "dog").mkdir(parents=True)
    for i in range(3):
        pixels = (torch.rand(36, 36, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(data / "dog" / f"{i:02d}.jpg")
    code, out, err = run(
        capsys,
        "bench",
        "dreambench",
        "--data",
        data,
        "--subjects",
        "dog",
        "--prompt-limit",
        "2",
        "--images-per-prompt",
        "1",
        "--steps",
        "2",
        "--grad-accum",
        "1",
        "--sample-steps",
        "2",
        *judges(tiny_evaluators),
        "--model",
        tiny_model_dir,
        "--out",
        tmp_path / "bench",
    )
    assert code == 0, err
    assert "| oneword TI (mean of 1 candidates) |" in out and "Real images (these photos)" in out
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    dog = results["subjects"]["dog"]
    assert dog["class"] == "dog" and dog["prompts"] == "live"
    assert {"dino", "clip_i", "clip_t"} <= set(dog["best"])
    with Store.open() as store:
        bench, sweep = store.runs("bench")[0], store.runs("sweep")[0]
        assert bench.status == "done" and sweep.parent_run == bench.id
        (ev,) = store.evaluations(sweep.id)
        assert len(store.images(store.candidates(sweep.id)[0].id, ev["id"])) == 2
    code, _, err = run(
        capsys,
        "bench",
        "dreambench",
        "--data",
        data,
        "--subjects",
        "cat",
        "--model",
        tiny_model_dir,
    )
    assert code == 2 and "--subjects cat" in err


def test_the_oracle_judges_the_world_model(monkeypatch):
    from oneword.experiments.scoring import OracleJudge, make_judge
    from oneword.world import metrics, oracle, render

    monkeypatch.setattr(oracle, "load_oracle", lambda device="cpu": oracle.Oracle().eval())
    judge = make_judge(ScoreSettings(), "world", "cat")  # auto: the oracle on the world model
    assert isinstance(judge, OracleJudge) and judge.subject == "cat"
    with pytest.raises(Exception, match="--subject is missing"):
        make_judge(ScoreSettings(judge="oracle"), "tiny", "teapot")
    gen = torch.Generator().manual_seed(0)
    specs = [render.subject_spec("cat", "beach", "photo", gen) for _ in range(4)]
    refs = render.render_batch(specs, gen)
    judge.prepare(refs, ["a photo of a on the beach", "a sketch of a in the snow"])
    assert judge.requested[1] == {"style": "sketch", "scene": "snow"}
    images = render.render_batch(specs[:3], gen)
    index = torch.tensor([0, 1, 1])
    scores = judge.measure(images, index)
    assert set(scores) == {"concept_fidelity", "concept_similarity", "prompt_fidelity"}
    expected = (
        metrics.prompt_fidelity(judge.oracle, images[:1], judge.requested[0])
        + 2 * metrics.prompt_fidelity(judge.oracle, images[1:], judge.requested[1])
    ) / 3
    assert scores["prompt_fidelity"] == pytest.approx(expected)
    assert 0 <= scores["concept_fidelity"] <= 1


def test_the_world_model_draws_the_novel_context_prompts():
    from oneword.world.evaluate import NOVEL_PROMPTS

    job = prompt_job(ScoreSettings(), "world", "<c>", "cat")
    assert job.templates == NOVEL_PROMPTS
    assert job.drawn[0] == NOVEL_PROMPTS[0].format("<c>")


def test_new_commands_have_help(capsys):
    for command in (
        ["sweep"],
        ["score"],
        ["runs"],
        ["show"],
        ["rate"],
        ["bench"],
        ["bench", "dreambench"],
    ):
        with pytest.raises(SystemExit) as done:
            main(command + ["--help"])
        assert done.value.code == 0
        assert "usage: oneword" in capsys.readouterr().out
