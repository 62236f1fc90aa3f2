"""The gallery as the place to choose a word: a demo run, a scored sweep and a bred generation
in a real browser, with no broken image; candidates best first with a labelled score line."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from oneword.cli import main
from oneword.core.generate import Sampling
from oneword.experiments.scoring import ScoreSettings
from oneword.experiments.store import Store
from oneword.search.embedding_ops import Breeding

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from oneword.web.app import GalleryOptions, create_app  # noqa: E402
from tests.web import test_web as shared  # noqa: E402

browser = shared.browser  # the headless Chromium fixture

LOCAL = "http://127.0.0.1:8765"
# the gallery's own drawing settings: bred runs must not use these but their parents'
OPTIONS = GalleryOptions(
    population=3, breeding=Breeding(elites=1), drawing=ScoreSettings(images=1, seed=77)
)


def cli(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model_dir, tiny_evaluators) -> dict:
    """A project with a demo (r1 learn, r2 its images, written outside the project), a sweep
    scored with the tiny judges (r3), and a failed run (r4)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("choose")
    project = root / "proj"
    photos = root / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (70 * i, 90, 200 - 60 * i)).save(photos / f"p{i}.png")
    cli("demo", "--model", "tiny", "--steps", 2, "--out", root / "demo", "--project", project)
    cli("sweep", photos, "--token", "<c>", "--init", "cat", "--candidates", 3, "--steps", 2,
        "--grad-accum", 1, "--model", tiny_model_dir, "--project", project)  # fmt: skip
    judges = ["--clip-model", tiny_evaluators["clip"], "--dino-model", tiny_evaluators["dino"]]
    cli("score", "r3", "--images", 3, "--image-seed", 5, "--sample-steps", 2, *judges,
        "--project", project)  # fmt: skip
    with Store.open(project) as store:
        failed = store.create_run("learn", root / "gone", "tiny", "<f>", {}, [])
        store.update_run(failed.id, status="failed", note="photos/: no photos found")
    cli("learn", photos, "--token", "<p>", "--init", "cat", "--steps", 2, "--grad-accum", 1,
        "--model", tiny_model_dir, "--out", root / "learn", "--project", project)  # fmt: skip
    return {"project": project, "root": root}  # r5: a learn run with its previews


def test_a_scored_sweep_is_listed_best_first_with_a_short_score_line(made):
    client = TestClient(create_app(made["project"], OPTIONS), base_url=LOCAL)
    run = client.get("/api/runs/3").json()
    cands = run["candidates"]
    assert [c["rank"] for c in cands] == [1, 2, 3] and cands[0]["best"]
    assert not any(c["best"] for c in cands[1:])
    line = cands[0]["score"]
    assert set(line) >= {"concept", "prompt", "combined", "interval", "within_noise"}
    assert line["one_scale"] and line["interval"] is not None
    assert run["hint"] == "" and len(run["photos"]) == 3
    assert client.get("/api/runs/3/photos/0").content[:4] == b"\x89PNG"
    files = cands[0]["files"]
    assert {f["format"] for f in files} >= {"diffusers", "AUTOMATIC1111 .pt"}
    got = client.get(f"/api/candidates/{cands[0]['id']}/files/0")
    assert got.status_code == 200 and "attachment" in got.headers["content-disposition"]
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    assert runs["r3"]["best"] == line["combined"] and runs["r4"]["status"] == "failed"
    assert "failed: photos/: no photos found" in client.get("/api/runs/4").json()["hint"]


def test_the_demos_images_written_outside_the_project_are_served(made):
    client = TestClient(create_app(made["project"], OPTIONS), base_url=LOCAL)
    (drawn,) = client.get("/api/runs/2").json()["candidates"]
    assert len(drawn["images"]) >= 4
    for image in drawn["images"]:
        got = client.get(f"/api/images/{image['id']}")
        assert got.status_code == 200 and got.content[:4] == b"\x89PNG"
    assert client.get("/api/runs/1").json()["photos"]  # the demo's photos
    previews = client.get("/api/runs/5").json()["previews"]
    assert [p["name"] for p in previews] == ["step-000001", "step-000002"]
    assert client.get("/api/runs/5/previews/1").content[:4] == b"\x89PNG"
    assert client.get("/api/runs/5/previews/2").status_code == 404


def test_a_bred_generation_is_drawn_and_scored_like_its_parents(made, tmp_path):
    project = Path(shutil.copytree(made["project"], tmp_path / "proj"))
    client = TestClient(create_app(project, OPTIONS), base_url=LOCAL)
    parents = client.get("/api/runs/3").json()["candidates"]
    client.post(f"/api/candidates/{parents[1]['id']}/rating", json={"rating": 5})
    job = client.post("/api/runs/3/next").json()
    deadline = time.time() + 120
    while client.get(f"/api/jobs/{job['id']}").json()["state"] not in ("done", "failed"):
        assert time.time() < deadline
        time.sleep(0.1)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["state"] == "done", done
    child = client.get(f"/api/runs/{done['run_id']}").json()
    drawn = [(i["prompt"].replace("<c>", ""), i["seed"]) for i in parents[0]["images"]]
    for cand in child["candidates"]:
        assert [(i["prompt"].replace("<c>", ""), i["seed"]) for i in cand["images"]] == drawn
        assert cand["score"] is not None and cand["score"]["one_scale"]  # on the parents' scale


@pytest.fixture
def server(made, tmp_path):
    project = Path(shutil.copytree(made["project"], tmp_path / "proj"))
    with shared.serving(create_app(project, OPTIONS)) as address:
        yield address


ALL_IMAGES_SHOWN = """() => [...document.images].filter(i => i.offsetParent !== null)
    .every(i => i.complete && i.naturalWidth > 0)"""
BROKEN = """() => [...document.images].filter(i => i.offsetParent !== null)
    .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"""


def shot(page, name: str, folder: Path) -> None:
    """A full-page screenshot, into $ONEWORD_SHOTS where it names a folder (to look at by
    eye), else into the test's own folder."""
    folder = Path(os.environ.get("ONEWORD_SHOTS") or folder)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    assert (folder / f"{name}.png").stat().st_size > 0


def test_a_demo_a_sweep_and_a_bred_generation_show_no_broken_image(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(server)
    page.wait_for_function("() => document.querySelectorAll('#run-select option').length === 5")
    for run_id, name in ((2, "demo-images"), (1, "demo-learn"), (5, "learn-previews"),
                         (3, "sweep-scored")):  # fmt: skip
        page.get_by_test_id("run-select").select_option(str(run_id))
        page.locator(f"#run-select option[value='{run_id}']").wait_for(state="attached")
        page.wait_for_function(f"() => state.run && state.run.id === {run_id} && "
                               "document.querySelector('#grid .cand')")  # fmt: skip
        page.wait_for_function(ALL_IMAGES_SHOWN)
        assert page.evaluate(BROKEN) == [], name
        shot(page, name, tmp_path / "shots")
    rows = page.locator("#grid .cand")
    assert rows.first.get_attribute("data-testid") == page.locator(".cand.best").get_attribute(
        "data-testid"
    )  # the best is on top
    line = page.locator(".cand.best .scoreline").inner_text()
    assert "#1" in line and "concept" in line and "prompt" in line and "combined" in line
    assert "±" in line
    assert page.locator("#masks img").count() == 3  # the training photos on top

    page.locator(".cand.best img").first.click()  # picked already: enlarges
    page.get_by_test_id("lightbox").wait_for()
    page.wait_for_function("() => document.getElementById('lightbox-image').naturalWidth > 0")
    shot(page, "enlarged", tmp_path / "shots")
    page.keyboard.press("Escape")
    page.get_by_test_id("lightbox").wait_for(state="hidden")

    page.locator(".cand").nth(1).locator(".stars button").nth(4).click()  # rate 5, breed
    page.get_by_test_id("next-generation").click()
    page.locator("#job[data-state=done]").wait_for(timeout=120_000)
    page.wait_for_function("() => state.run && state.run.kind === 'evolve'")
    page.wait_for_function(ALL_IMAGES_SHOWN)
    assert page.evaluate(BROKEN) == []
    assert page.locator(".cand.best").count() == 1  # scored like its parents
    shot(page, "bred-generation", tmp_path / "shots")

    page.get_by_test_id("run-select").select_option("4")
    page.wait_for_function("() => state.run && state.run.status === 'failed'")
    assert "failed" in page.get_by_test_id("hint").inner_text()
    assert "[failed]" in page.locator("#run-select option[value='4']").inner_text()
    shot(page, "failed-run", tmp_path / "shots")
    page.close()


def test_an_unscored_run_says_what_to_run_and_scores_at_a_press(made, tmp_path,
                                                                 tiny_evaluators):  # fmt: skip
    project = Path(shutil.copytree(made["project"], tmp_path / "proj"))
    with Store.open(project) as store:
        store.conn.execute("DELETE FROM scores")
    drawing = ScoreSettings(images=2, sampling=Sampling(steps=2), clip_model=str(
        tiny_evaluators["clip"]), dino_model=str(tiny_evaluators["dino"]))  # fmt: skip
    client = TestClient(create_app(project, GalleryOptions(drawing=drawing)), base_url=LOCAL)
    run = client.get("/api/runs/3").json()
    assert run["hint"].startswith(f"not scored yet: run `oneword score r3 --project {project}`")
    assert run["can_score"] and not client.get("/api/runs/1").json()["can_score"]
    assert [c["name"] for c in run["candidates"]] == ["c00", "c01", "c02"]
    assert not any(c["best"] or c["score"] for c in run["candidates"])
    job = client.post("/api/runs/3/score").json()
    deadline = time.time() + 120
    while (done := client.get(f"/api/jobs/{job['id']}").json())["state"] not in ("done", "failed"):
        assert time.time() < deadline
        time.sleep(0.1)
    assert done["state"] == "done" and done["run_id"] == 3, done
    scored = client.get("/api/runs/3").json()
    assert scored["hint"] == "" and not scored["can_score"]
    assert [c["rank"] for c in scored["candidates"]] == [1, 2, 3]
    assert all(len(c["images"]) == 2 for c in scored["candidates"])
