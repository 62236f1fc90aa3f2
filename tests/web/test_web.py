"""The gallery (`oneword serve`): its API in-process, and the page in headless Chromium."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from oneword.core.embeddings import load_embeddings
from oneword.core.generate import Sampling
from oneword.errors import OnewordError
from oneword.experiments.scoring import ScoreSettings
from oneword.experiments.store import Store
from oneword.search.embedding_ops import Breeding
from oneword.search.evolve import render

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from oneword.web.app import GalleryOptions, create_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL = "http://127.0.0.1:8765"  # the gallery answers to loopback names only
DRAWING = ScoreSettings(images=2, sampling=Sampling(steps=2))


def options() -> GalleryOptions:
    return GalleryOptions(population=3, breeding=Breeding(elites=1), drawing=DRAWING)


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_model_dir) -> Path:
    """A project with r1: a sweep of 3 candidates of <c>, each drawn twice (no scores)."""
    from PIL import Image

    from oneword.api import ModelChoice
    from oneword.core.train import Candidate, TrainConfig
    from oneword.experiments.sweep import sweep

    root = tmp_path_factory.mktemp("gallery")
    (root / "photos").mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (60 * i, 90, 200 - 50 * i)).save(root / "photos" / f"{i}.png")
    config = TrainConfig(
        token="<c>",
        init_word="cat",
        steps=2,
        grad_accum=1,
        candidates=(Candidate(0), Candidate(1), Candidate(2, init="random")),
    )
    sweep([str(root / "photos")], config, ModelChoice(str(tiny_model_dir)), root / "proj")
    render("r1", DRAWING, root / "proj")
    return root / "proj"


@pytest.fixture
def project(template, tmp_path) -> Path:
    """A copy of the template project (the store keeps paths relative to its folder)."""
    return Path(shutil.copytree(template, tmp_path / "proj"))


def wait_for_job(client, job_id: int, limit: float = 120) -> dict:
    deadline = time.time() + limit
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_gallery_api_rates_breeds_and_mixes(project):
    client = TestClient(create_app(project, options()), base_url=LOCAL)
    runs = client.get("/api/runs").json()
    assert [r["name"] for r in runs] == ["r1"]
    run = client.get("/api/runs/1").json()
    c0, c1, c2 = run["candidates"]
    assert len(c0["images"]) == 2 and c0["rating"] is None
    page = client.get("/")
    assert page.status_code == 200 and "oneword gallery" in page.text
    assert client.get("/static/app.js").status_code == 200
    png = client.get(f"/api/images/{c0['images'][0]['id']}")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert client.post("/api/runs/1/next").status_code == 400  # nothing rated yet

    image = c1["images"][1]["id"]
    assert (
        client.post(
            f"/api/candidates/{c1['id']}/rating", json={"rating": 4, "image_id": image}
        ).json()["rating"]
        == 4
    )
    assert client.post(f"/api/candidates/{c1['id']}/rating", json={"rating": 7}).status_code == 422
    wrong = client.post(f"/api/candidates/{c0['id']}/rating", json={"rating": 3, "image_id": image})
    assert wrong.status_code == 400
    fav = client.post(f"/api/candidates/{c2['id']}/rating", json={"rating": 5, "favourite": True})
    assert fav.json()["favourite"] is True

    job = client.post("/api/runs/1/next").json()
    done = wait_for_job(client, job["id"])
    assert done["state"] == "done", done
    child = client.get(f"/api/runs/{done['run_id']}").json()
    assert child["kind"] == "evolve" and child["generation"] == 1
    assert len(child["candidates"]) == 3 and all(len(c["images"]) == 2 for c in child["candidates"])
    assert child["candidates"][0]["relation"] == "elite"
    tree = client.get(f"/api/candidates/{child['candidates'][1]['id']}/lineage").json()
    assert tree["parents"] and all(p["name"].startswith("r1/") for p in tree["parents"])

    again = wait_for_job(client, client.post("/api/runs/1/next").json()["id"])
    with Store.open(project) as store:  # breeding again from r1 draws other children
        first, second = (
            store.files(r, "embedding", store.candidates(r)[1].id)[0]
            for r in (done["run_id"], again["run_id"])
        )
        assert not torch.equal(
            load_embeddings(first)[0].vectors, load_embeddings(second)[0].vectors
        )

    job = client.post("/api/mix", json={"candidates": [c0["id"], c1["id"]], "method": "slerp"})
    done = wait_for_job(client, job.json()["id"])
    mixed = client.get(f"/api/runs/{done['run_id']}").json()
    assert mixed["kind"] == "mix" and mixed["candidates"][0]["relation"] == "mix-slerp"
    assert client.post("/api/mix", json={"candidates": [c0["id"]]}).status_code == 422


def test_only_images_the_store_records_are_served(project, tmp_path):
    client = TestClient(create_app(project, options()), base_url=LOCAL)
    assert client.get("/api/images/999").status_code == 404
    assert client.get("/api/images/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG secret")
    link = project / "runs" / "link.png"
    link.symlink_to(outside)
    with Store.open(project) as store:
        cand = store.candidates(1)[0].id
        store.add_images(
            None, cand, [("p", 0, outside), ("p", 1, Path("../../etc/passwd")), ("p", 2, link)]
        )
        ids = [i["id"] for i in store.images(cand)][-3:]
    for image_id in ids:
        assert client.get(f"/api/images/{image_id}").status_code == 404


def test_a_masked_runs_photos_are_shown_only_as_images_the_store_records(project, tmp_path):
    from PIL import Image

    inside = project / "runs" / "masked" / "masks" / "shown" / "cat1.png"
    inside.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(inside)
    outside = tmp_path / "elsewhere" / "cat2.png"
    outside.parent.mkdir()
    Image.new("RGB", (8, 8)).save(outside)
    fake = tmp_path / "elsewhere" / "cat3.png"
    fake.write_bytes(b"\x89PNG not an image")
    with Store.open(project) as store:
        run = store.create_run("learn", project / "runs" / "masked", "tiny", "<m>", {}, [])
        store.add_files(run.id, "mask_view", [inside, outside, fake])
    client = TestClient(create_app(project, options()), base_url=LOCAL)
    shown = client.get(f"/api/runs/{run.id}").json()["masks"]
    assert shown == [{"index": k, "name": f"cat{k + 1}"} for k in range(3)]
    got = client.get(f"/api/runs/{run.id}/masks/0")
    assert got.status_code == 200 and got.content == inside.read_bytes()
    got = client.get(f"/api/runs/{run.id}/masks/1")  # a run folder outside the project
    assert got.status_code == 200 and got.content == outside.read_bytes()
    assert client.get(f"/api/runs/{run.id}/masks/2").status_code == 404  # not an image
    assert client.get(f"/api/runs/{run.id}/masks/3").status_code == 404
    assert client.get(f"/api/runs/{run.id}/masks/-1").status_code == 422
    assert client.get("/api/runs/1").json()["masks"] == []  # a run without masks


def test_concurrent_ratings_survive_a_restart(project):
    client = TestClient(create_app(project, options()), base_url=LOCAL)
    cands = client.get("/api/runs/1").json()["candidates"]

    def rate(i):
        c = cands[i % 3]
        r = client.post(f"/api/candidates/{c['id']}/rating", json={"rating": 1 + i % 5})
        g = client.get("/api/runs/1")
        return r.status_code, g.status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(rate, range(30)))
    assert all(c == (200, 200) for c in codes)
    with Store.open(project) as store:
        stored = {c["name"]: store.ratings(c["id"]) for c in cands}
    assert sum(len(r) for r in stored.values()) == 30
    again = TestClient(create_app(project, options()), base_url=LOCAL)  # a restarted server
    latest = {c["name"]: c["rating"] for c in again.get("/api/runs/1").json()["candidates"]}
    assert latest == {name: float(r[-1]["rating"]) for name, r in stored.items()}


def test_progress_streams_and_a_lost_job_resumes_after_a_restart(project):
    import json
    import subprocess

    client = TestClient(create_app(project, options()), base_url=LOCAL)
    cands = client.get("/api/runs/1").json()["candidates"]
    client.post(f"/api/candidates/{cands[1]['id']}/rating", json={"rating": 5})
    job = client.post("/api/runs/1/next").json()
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(x[6:]) for x in response.iter_lines() if x.startswith("data: ")]
    assert events[-1]["state"] == "done" and events[-1]["run_id"] == 2
    assert len(events) >= 2 and len({json.dumps(e) for e in events}) == len(events)
    ended = subprocess.Popen(["true"])  # a server process that is gone
    ended.wait()
    with Store.open(project) as store:
        store.conn.execute(
            "UPDATE jobs SET state = 'running', run_id = NULL, pid = ? WHERE id = ?",
            (ended.pid, job["id"]),
        )
    again = TestClient(create_app(project, options()), base_url=LOCAL)  # the restarted server
    assert again.get("/api/jobs").json()[0]["state"] == "interrupted"
    with again.stream("GET", f"/api/jobs/{job['id']}/events") as response:
        (line,) = [x for x in response.iter_lines() if x.startswith("data: ")]
    assert json.loads(line[6:])["state"] == "interrupted"
    assert again.post(f"/api/jobs/{job['id']}/resume").json()["state"] in ("queued", "running")
    done = wait_for_job(again, job["id"])
    assert done["state"] == "done" and done["run_id"] == 3  # bred again from r1
    assert again.post(f"/api/jobs/{job['id']}/resume").status_code == 400
    assert again.get("/api/jobs/999/events").status_code == 404


def test_the_gallery_trains_bred_children_before_it_draws_them(
    project, children_stopped_at_step_one
):
    """serve --train-steps: a rated run's children train on from their bred rows through
    `evolve --train-steps`'s training before they are drawn; the breeding request's number
    overrides the gallery's (0: drawn as bred); a stopped trained generation resumes."""
    from dataclasses import replace

    from oneword.search import trained

    client = TestClient(create_app(project, replace(options(), train_steps=1)), base_url=LOCAL)
    cands = client.get("/api/runs/1").json()["candidates"]
    client.post(f"/api/candidates/{cands[1]['id']}/rating", json={"rating": 5})
    done = wait_for_job(client, client.post("/api/runs/1/next").json()["id"])
    assert done["state"] == "done" and "trained 1 steps" in done["what"], done
    child = client.get(f"/api/runs/{done['run_id']}").json()
    assert [c["relation"] for c in child["candidates"]][0] == "elite+trained"
    assert all(len(c["images"]) == 2 for c in child["candidates"])  # drawn after training
    with Store.open(project) as store:
        bred = store.run(done["run_id"])
        assert bred.settings["evolve"]["train_steps"] == 1 and bred.step == 1
        assert bred.settings["start_rows"] == trained.BRED_ROWS
    as_bred = client.post("/api/runs/1/next", json={"train_steps": 0}).json()
    plain = client.get(f"/api/runs/{wait_for_job(client, as_bred['id'])['run_id']}").json()
    assert plain["candidates"][0]["relation"] == "elite"
    assert client.post("/api/runs/1/next", json={"train_steps": -1}).status_code == 422
    with pytest.raises(OnewordError, match="--train-steps -1"):
        GalleryOptions(train_steps=-1)

    with children_stopped_at_step_one("interrupted at step 1"):
        job = client.post("/api/runs/1/next", json={"train_steps": 2}).json()
        assert wait_for_job(client, job["id"])["state"] == "failed"
    with Store.open(project) as store:
        stopped = store.runs("evolve")[-1]
        assert stopped.status == "interrupted" and stopped.step == 1
        store.conn.execute("UPDATE jobs SET state = 'interrupted' WHERE id = ?", (job["id"],))
    client.post(f"/api/jobs/{job['id']}/resume")
    done = wait_for_job(client, job["id"])
    assert done["state"] == "done" and done["run_id"] == stopped.id  # the same run went on
    with Store.open(project) as store:
        assert store.run(stopped.id).status == "done" and store.run(stopped.id).step == 2


# -- the page in a real browser --------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app):
    """The gallery app served on a free local port, for a browser: its address."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(project):
    with serving(create_app(project, options())) as address:
        yield address


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=BROWSER_ARGS,
        )
        yield b
        b.close()


def test_gallery_in_headless_chromium(server, browser, project):
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(server)
    page.get_by_test_id("candidate-c02").wait_for()
    first = page.get_by_test_id("candidate-c00").locator("img").first
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=first.element_handle()
    )

    page.get_by_test_id("star-c01-5").click()  # mouse: the whole candidate
    page.get_by_test_id("rating-c01").filter(has_text="rating 5").wait_for()
    page.get_by_test_id("candidate-c00").locator("img").nth(1).click()  # keyboard: one image
    page.keyboard.press("4")
    page.get_by_test_id("rating-c00").filter(has_text="rating 4").wait_for()
    page.keyboard.press("j")  # next candidate, then favourite it
    page.keyboard.press("f")
    page.locator("[data-testid=favourite-c01].on").wait_for()
    page.locator("#lineage-tree li").first.wait_for()

    page.get_by_test_id("next-generation").click()
    page.locator("#job[data-state=done]").wait_for(timeout=120_000)
    assert page.get_by_test_id("run-select").input_value() == "2"
    page.get_by_test_id("candidate-c02").wait_for()
    kid = page.get_by_test_id("candidate-c01").locator("img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=kid.element_handle())
    kid.click()
    page.locator("#lineage-tree", has_text="r1/").wait_for()
    page.keyboard.press("x")  # select c01 and c02 of the new generation, mix them
    page.keyboard.press("j")
    page.keyboard.press("x")
    assert page.get_by_test_id("mix").is_enabled()
    page.keyboard.press("m")
    page.locator("#job[data-state=done]").filter(has_text="mix").wait_for(timeout=120_000)
    assert page.get_by_test_id("run-select").input_value() == "3"
    page.get_by_test_id("candidate-c00").locator("img").first.wait_for()
    page.close()
    with Store.open(project) as store:
        r2 = store.run(2)
        assert r2.kind == "evolve" and r2.settings["evolve"]["fitness"] == "rating"
        elite = store.candidates(2)[0]
        assert [p.name for p in store.parents(elite.id)] == ["c01"]  # rated 5 and favourite
        assert [r["rating"] for r in store.ratings(store.candidates(1)[0].id)] == [4]
        mixed = store.run(3)
        assert mixed.kind == "mix" and mixed.settings["mix"]["method"] == "slerp"
        (child,) = store.candidates(3)
        assert [p.name for p in store.parents(child.id)] == ["c01", "c02"]
        assert all(p.run_id == 2 for p in store.parents(child.id))
