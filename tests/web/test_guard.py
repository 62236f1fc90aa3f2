"""The gallery answers only its own host and changes nothing for other sites' pages; bad
numbers in paths and JSON are one 4xx line. Through the real server, and in a browser."""

from __future__ import annotations

import http.server
import json
import logging
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from oneword.checks import MAX_ID
from oneword.experiments.store import Store

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from oneword.web.app import create_app  # noqa: E402
from oneword.web.guard import served_hosts  # noqa: E402

HUGE = MAX_ID + 1


@pytest.fixture
def project(tmp_path) -> Path:
    """A store with run r1 and its candidate c00 (id 1), rated once; no files needed."""
    with Store.open(tmp_path / "proj") as store:
        run = store.create_run("sweep", tmp_path / "proj" / "runs" / "r1", "tiny", "<c>")
        cand = store.add_candidate(run.id, 0, 0, "word", 0.0, 0.01)
        store.rate(cand.id, 4)
    return tmp_path / "proj"


def ratings(project: Path) -> int:
    with Store.open(project) as store:
        return len(store.ratings(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gallery(project):
    """The gallery served by uvicorn on a free port, answering only 127.0.0.1:port."""
    import uvicorn

    port = free_port()
    app = create_app(project, hosts=served_hosts("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield app, port
    server.should_exit = True
    thread.join(timeout=10)


def send(port: int, method: str, path: str, body=None, **headers) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers
    )
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_the_real_server_refuses_other_origins_and_hosts(gallery, project):
    app, port = gallery
    rating = {"rating": 5}
    evil = {"Origin": "http://evil.example"}
    code, body = send(port, "POST", "/api/candidates/1/rating", rating, **evil)
    assert code == 403 and "evil.example" in body["detail"]
    other_port = {"Origin": f"http://127.0.0.1:{port + 1}"}  # another site on this machine
    assert send(port, "POST", "/api/candidates/1/rating", rating, **other_port)[0] == 403
    assert send(port, "POST", "/api/runs/1/next", **evil)[0] == 403
    mix = {"candidates": [1, 1]}
    assert send(port, "POST", "/api/mix", mix, **evil)[0] == 403
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert send(port, "POST", "/api/candidates/1/rating", rating, **cross)[0] == 403
    rebound = {"Host": f"evil.example:{port}"}  # DNS rebinding: another name, this address
    code, body = send(port, "GET", "/api/runs", **rebound)
    assert code == 403 and f"127.0.0.1:{port}" in body["detail"]
    assert ratings(project) == 1 and app.state.jobs.recent() == []  # nothing changed
    same = {"Origin": f"http://127.0.0.1:{port}"}
    assert send(port, "POST", "/api/candidates/1/rating", rating, **same)[0] == 200
    assert send(port, "POST", "/api/candidates/1/rating", rating)[0] == 200  # a script
    assert send(port, "GET", "/api/runs")[0] == 200
    assert ratings(project) == 3


BAD = [
    ("GET", f"/api/runs/{HUGE}", None),
    ("GET", f"/api/images/{HUGE}", None),
    ("GET", f"/api/candidates/{HUGE}/lineage", None),
    ("POST", f"/api/runs/{HUGE}/next", None),
    ("POST", f"/api/candidates/{HUGE}/rating", {"rating": 3}),
    ("POST", "/api/candidates/1/rating", {"rating": 3, "image_id": HUGE}),
    ("POST", "/api/candidates/1/rating", {"rating": 99}),
    ("POST", "/api/candidates/1/rating", {"rating": -5}),
    ("POST", "/api/candidates/1/rating", "NaN"),
    ("POST", "/api/mix", {"candidates": [1, HUGE]}),
    ("POST", "/api/mix", {"candidates": [1, 1], "weights": "NaN"}),
    ("POST", "/api/mix", {"candidates": [1, 1], "weights": "Infinity"}),
    ("POST", "/api/mix", {"candidates": [1, 1], "weights": [0, 0]}),
    ("GET", f"/api/jobs/{HUGE}", None),
]


@pytest.mark.parametrize("method,path,body", BAD, ids=[f"{m} {p} {b}" for m, p, b in BAD])
def test_bad_numbers_are_one_4xx_line(project, caplog, method, path, body):
    client = TestClient(create_app(project), base_url="http://127.0.0.1:8765")
    if isinstance(body, str):  # JSON's NaN/Infinity, which Python's parser reads
        text = (
            '{"rating": NaN}'
            if "rating" in path
            else f'{{"candidates": [1, 1], "weights": [{body}, 1]}}'
        )
        kwargs = {"content": text, "headers": {"Content-Type": "application/json"}}
    else:
        kwargs = {} if body is None else {"json": body}
    with caplog.at_level(logging.INFO):
        response = client.request(method, path, **kwargs)
    assert 400 <= response.status_code < 500
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    mine = [r for r in caplog.records if r.name.startswith("oneword")]
    assert len(mine) <= 1 and all(r.exc_info is None for r in caplog.records)
    assert ratings(project) == 1


# -- a page of another site in a real browser ----------------------------------------------
EVIL_PAGE = """<!doctype html><title>evil</title><script>
const target = "http://127.0.0.1:%d";
Promise.allSettled([
  fetch(target + "/api/runs/1/next", {method: "POST", mode: "no-cors"}),
  fetch(target + "/api/candidates/1/rating", {method: "POST", mode: "no-cors",
        headers: {"Content-Type": "text/plain"}, body: '{"rating": 1}'}),
]).then(() => { document.title = "sent"; });
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_another_sites_page_in_a_browser_changes_nothing(gallery, project, caplog):
    if chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    app, port = gallery
    page_html = (EVIL_PAGE % port).encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page_html)

        def log_message(self, *args):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        with caplog.at_level(logging.WARNING), sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium(),
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--host-resolver-rules=MAP rebound.test 127.0.0.1",
                ],
            )
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
            page.wait_for_function("document.title === 'sent'", timeout=30_000)
            rebound = page.goto(f"http://rebound.test:{port}/api/runs")  # DNS rebinding
            assert rebound.status == 403
            browser.close()
    finally:
        evil.shutdown()
    refused = [r.getMessage() for r in caplog.records if "refused POST" in r.getMessage()]
    assert len(refused) == 2 and all("may not change" in m for m in refused)  # both arrived
    assert ratings(project) == 1 and app.state.jobs.recent() == []
