"""Sweeps on Ray: a local 2-CPU cluster trains groups of candidates to a plain sweep's result;
a worker killed mid-group is re-run from its checkpoint, every candidate recorded once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oneword.api import ModelChoice
from oneword.core.embeddings import load_embeddings
from oneword.core.train import Candidate, TrainConfig
from oneword.errors import OnewordError
from oneword.events import Finished, Started, Stepped
from oneword.experiments.store import Store
from oneword.experiments.sweep import sweep

CANDIDATES = (Candidate(1), Candidate(2, init="random", lr=3e-2), Candidate(3, jitter=0.5))


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster of 2 CPU workers for the module; no dashboard, no network.
    Every test that uses it is skipped when Ray is not installed."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
    )
    # the kill hook below is a function of this test module: ship it by value to the workers
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def config(**kw) -> TrainConfig:
    base = dict(
        token="<c>",
        init_word="cat",
        steps=4,
        batch_size=1,
        grad_accum=1,
        checkpoint_every=2,
        lr=1e-2,
        crop="random",
        crops_per_photo=2,
        candidates=CANDIDATES,
    )
    base.update(kw)
    return TrainConfig(**base)


def vectors(path) -> torch.Tensor:
    (emb,) = load_embeddings(path)
    return emb.vectors


def kill_once(group: int, step: int, folder: Path) -> None:
    """Runs in the worker: group 1 kills its own worker process at step 3 (after the step-2
    checkpoint), the first time only (a marker file says it happened)."""
    marker = Path(folder).parent / "killed-once"
    with open(Path(folder) / "steps.log", "a") as log:
        log.write(f"{os.getpid()} {step}\n")
    if group == 1 and step == 3 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def test_ray_groups_learn_what_a_plain_sweep_learns(cluster, tmp_path, tiny_model_dir, photo_dir):
    from oneword.experiments.ray_cluster import ray_sweep

    choice = ModelChoice(str(tiny_model_dir))
    plain = sweep([str(photo_dir)], config(), choice, out=tmp_path / "plain")
    events = []
    spread = ray_sweep(
        [str(photo_dir)], config(), choice, out=tmp_path / "ray", groups=2, on_event=events.append
    )
    assert [f["diffusers"].parent.name for f in spread.files] == ["c00", "c01", "c02"]
    for a, b in zip(spread.files, plain.files):
        torch.testing.assert_close(vectors(a["a1111"]), vectors(b["a1111"]), atol=1e-5, rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "ray" / "groups").iterdir()) == ["g00", "g01"]
    assert isinstance(events[-1], Finished) and any(isinstance(e, Started) for e in events)
    steps = [e.step for e in events if isinstance(e, Stepped)]
    assert steps == sorted(steps) and steps[-1] == 2 * 4  # both groups' steps, in order
    (emb,) = load_embeddings(spread.files[2]["diffusers"])
    assert emb.metadata["seed"] == "3" and emb.metadata["run"] == f"r{spread.run_id}"
    with Store.open() as store:
        run = store.run(spread.run_id)
        assert (run.kind, run.status, run.step) == ("sweep", "done", 4)
        recorded = store.candidates(spread.run_id)
        assert [(c.seed, c.init, c.lr) for c in recorded] == [
            (1, "word", 1e-2),
            (2, "random", 3e-2),
            (3, "jitter", 1e-2),
        ]
        assert store.files(spread.run_id, "embedding", recorded[1].id) == list(
            spread.files[1].values()
        )


def test_killed_worker_reruns_its_group_from_its_checkpoint(
    cluster, tmp_path, tiny_model_dir, photo_dir
):
    from oneword.experiments.ray_cluster import ray_sweep

    choice = ModelChoice(str(tiny_model_dir))
    cfg = config(candidates=CANDIDATES[:2], steps=4)
    spread = ray_sweep(
        [str(photo_dir)], cfg, choice, out=tmp_path / "ray", groups=2, on_step=kill_once
    )
    groups = tmp_path / "ray" / "groups"
    killed = int((groups / "killed-once").read_text())  # the worker did die
    tries = [line.split() for line in (groups / "g01" / "steps.log").read_text().splitlines()]
    assert [int(s) for p, s in tries if int(p) == killed] == [1, 2, 3]
    assert [int(s) for p, s in tries if int(p) != killed] == [3, 4]  # on from step 2's checkpoint
    assert [
        s
        for _, s in (
            line.split() for line in (groups / "g00" / "steps.log").read_text().splitlines()
        )
    ] == ["1", "2", "3", "4"]  # the other group ran once
    plain = sweep([str(photo_dir)], cfg, choice, out=tmp_path / "plain")
    for a, b in zip(spread.files, plain.files):
        torch.testing.assert_close(
            vectors(a["diffusers"]), vectors(b["diffusers"]), atol=1e-5, rtol=1e-5
        )
    with Store.open() as store:
        assert store.run(spread.run_id).status == "done"
        recorded = store.candidates(spread.run_id)
        assert [c.index for c in recorded] == [0, 1]  # every candidate once
        for cand, files in zip(recorded, spread.files):
            paths = store.files(spread.run_id, "embedding", cand.id)
            assert len(paths) == len(set(paths)) == len(files)
            assert all(p.exists() for p in paths)
        count = store.conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
        assert count == 2 + 2  # the Ray sweep's and the plain sweep's, no duplicates


def test_without_ray_nothing_imports_ray_and_ray_missing_is_one_line(tmp_path, photo_dir):
    """In a fresh process: the commands import no Ray without --ray; with --ray and no Ray
    installed (simulated), one line names the option and the extra to install."""
    code = f"""
import sys
from oneword.cli import main
import oneword.experiments.sweep, oneword.experiments.scoring, oneword.search.evolve
import oneword.cli.sweep
assert 'ray' not in sys.modules, 'ray imported'
assert main(["score", "r1", "--ray-groups", "2"]) == 2
sys.modules['ray'] = None  # as if Ray were not installed
sys.exit(main(["sweep", {str(photo_dir)!r}, "--token", "<c>", "--init", "cat", "--model",
               "tiny", "--ray"]))
"""
    env = {**os.environ, "ONEWORD_PROJECT": str(tmp_path / "project")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 2, done.stderr
    assert "--ray-groups: only with --ray" in done.stderr
    assert "--ray: Ray is not installed; pip install 'oneword[ray]'" in done.stderr


def test_cli_sweep_and_score_on_ray_match_plain_scores(
    capsys, cluster, tmp_path, tiny_model_dir, photo_dir, tiny_evaluators
):
    from oneword.cli import main

    project = tmp_path / "proj"
    judges = ["--clip-model", tiny_evaluators["clip"], "--dino-model", tiny_evaluators["dino"]]
    argv = [
        "sweep",
        photo_dir,
        "--token",
        "<c>",
        "--init",
        "cat",
        "--candidates",
        "3",
        "--steps",
        "2",
        "--grad-accum",
        "1",
        "--model",
        tiny_model_dir,
        "--project",
        project,
        "--ray",
        "--ray-groups",
        "2",
    ]
    assert main([str(a) for a in argv]) == 0
    assert "run r1: 3 candidates" in capsys.readouterr().out
    scoring = ["score", "r1", "--images", "2", "--steps", "2", *judges, "--project", project]
    assert main([str(a) for a in scoring + ["--ray", "--ray-groups", "2"]]) == 0
    assert main([str(a) for a in scoring]) == 0  # the same evaluation without Ray
    out = capsys.readouterr().out
    assert "evaluation e1" in out and "evaluation e2" in out
    with Store.open(project) as store:
        (e1, e2) = [ev["id"] for ev in store.evaluations(1)]
        spread, plain = store.scores(e1), store.scores(e2)
        assert set(spread) == set(plain) and len(spread) == 3
        for cand in spread:
            for metric, value in plain[cand].items():
                assert spread[cand][metric] == pytest.approx(value, abs=1e-4), metric
        for cand in store.candidates(1):
            assert len(store.images(cand.id, e1)) == 2  # recorded once, by the driver
    assert (project / "runs" / "r1-c" / "scores" / "e1" / "report.html").exists()
    # evolve --ray: the children of each generation are drawn and judged on the workers
    evolving = [
        "evolve",
        "r1",
        "--generations",
        "1",
        "--population",
        "3",
        "--images",
        "2",
        "--steps",
        "2",
        *judges,
        "--project",
        project,
        "--ray",
        "--ray-groups",
        "2",
    ]
    assert main([str(a) for a in evolving]) == 0
    assert "generation 1: r2" in capsys.readouterr().out
    with Store.open(project) as store:
        (evaluation,) = store.evaluations(2)
        kids = store.candidates(2)
        assert len(kids) == 3 and set(store.scores(evaluation["id"])) == {k.id for k in kids}
        assert all(len(store.images(k.id, evaluation["id"])) == 2 for k in kids)


def fail_group0_at_step3(group: int, step: int, folder: Path) -> None:
    if group == 0 and step == 3:
        raise RuntimeError("driver lost")


def test_failed_ray_sweep_resumes_every_group(cluster, tmp_path, tiny_model_dir, photo_dir):
    from oneword.experiments.ray_cluster import ray_sweep

    choice = ModelChoice(str(tiny_model_dir))
    cfg = config(candidates=CANDIDATES[:2])
    with pytest.raises(OnewordError, match="group g00 failed"):
        ray_sweep(
            [str(photo_dir)],
            cfg,
            choice,
            out=tmp_path / "ray",
            groups=2,
            on_step=fail_group0_at_step3,
        )
    with Store.open() as store:
        assert store.runs()[-1].status == "failed"
    with pytest.raises(OnewordError, match="--resume"):
        ray_sweep([str(photo_dir)], cfg, choice, out=tmp_path / "ray")
    resumed = ray_sweep([str(photo_dir)], cfg, choice, resume=True)  # groups: as started
    assert resumed.folder == tmp_path / "ray"
    plain = sweep([str(photo_dir)], cfg, choice, out=tmp_path / "plain")
    for a, b in zip(resumed.files, plain.files):
        torch.testing.assert_close(
            vectors(a["diffusers"]), vectors(b["diffusers"]), atol=1e-5, rtol=1e-5
        )
    with Store.open() as store:
        assert [r.status for r in store.runs()] == ["done", "done"]
        assert len(store.candidates(resumed.run_id)) == 2
