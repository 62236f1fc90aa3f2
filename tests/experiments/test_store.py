"""The experiment store: records, paths, migrations, and runs recorded by commands."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from oneword.errors import Interrupted, OnewordError
from oneword.experiments.recording import recording
from oneword.experiments.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from oneword.experiments.store import DB_NAME, Store


def test_project_folder_comes_from_env_or_option(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEWORD_PROJECT", str(tmp_path / "from-env"))
    with Store.open() as store:
        assert store.folder == tmp_path / "from-env"
    with Store.open(tmp_path / "given") as store:
        assert (store.folder / DB_NAME).is_file()
    monkeypatch.delenv("ONEWORD_PROJECT")
    monkeypatch.chdir(tmp_path)
    with Store.open() as store:
        assert store.folder == tmp_path / "oneword-project"


def test_runs_candidates_files_scores_ratings_lineage(tmp_path):
    with Store.open(tmp_path / "p") as store:
        folder = store.runs_folder / "r1-c"
        run = store.create_run("sweep", folder, "tiny", "<c>", {"steps": 4}, ["photos/a.png"])
        assert run.name == "r1" and run.status == "running" and run.folder == folder
        assert Path(run.photos[0]) == Path.cwd() / "photos" / "a.png"  # absolute
        a = store.add_candidate(run.id, 0, 10, "word", 0.0, 5e-3, folder / "candidates/c00")
        b = store.add_candidate(run.id, 1, 11, "random", 0.0, 1e-2, parents=(a.id,))
        again = store.add_candidate(run.id, 0, 10, "word", 0.0, 1e-3)  # resumed at a lower lr
        assert again.id == a.id and [c.name for c in store.candidates(run.id)] == ["c00", "c01"]
        assert store.candidate(a.id).lr == 1e-3 and store.candidate(a.id).folder is not None
        assert [p.id for p in store.parents(b.id)] == [a.id]
        emb = folder / "candidates/c00/learned_embeds.safetensors"
        store.add_files(run.id, "embedding", [emb], a.id)
        assert store.files(run.id, "embedding", a.id) == [emb]
        ev = store.add_evaluation(run.id, {"images": 2})
        store.add_images(ev, a.id, [("a <c> cat", 0, folder / "x.png")])
        store.add_scores(ev, a.id, {"clip_i": 0.8, "rank": 1})
        store.add_scores(ev, b.id, {"clip_i": 0.7, "rank": 2})
        assert store.scores(ev) == {
            a.id: {"clip_i": 0.8, "rank": 1.0},
            b.id: {"clip_i": 0.7, "rank": 2.0},
        }
        assert store.images(a.id, ev)[0]["path"] == folder / "x.png"
        store.rate(b.id, 4, "sharp")
        assert store.ratings(b.id) == [{"rating": 4, "note": "sharp", "image_id": None}]
        store.update_run(run.id, status="done", step=4)
        assert store.run(run.id).status == "done" and store.run(run.id).step == 4
        # paths inside the project are stored relative to it
        raw = store.conn.execute("SELECT folder FROM runs").fetchone()[0]
        assert raw == "runs/r1-c"
        assert store.find_run("r1").id == store.find_run("1").id == store.find_run("last").id
        assert store.find_run(folder).id == run.id
        assert store.find_candidate(run.id, "c01").id == b.id
        with pytest.raises(OnewordError, match="r9: no such run"):
            store.find_run("r9")
        with pytest.raises(OnewordError, match="candidate c07"):
            store.find_candidate(run.id, "c07")


def test_a_moved_project_folder_keeps_its_paths(tmp_path):
    with Store.open(tmp_path / "p") as store:
        run = store.create_run("learn", store.runs_folder / "x", "tiny", "<c>")
    (tmp_path / "p").rename(tmp_path / "q")
    with Store.open(tmp_path / "q") as store:
        assert store.run(run.id).folder == tmp_path / "q" / "runs" / "x"


def test_migrations_run_once_and_keep_the_data(tmp_path):
    with Store.open(tmp_path / "p") as store:
        store.create_run("learn", None, "tiny", "<c>")
    later = MIGRATIONS + ["ALTER TABLE runs ADD COLUMN tag TEXT DEFAULT 'x'"]
    conn = sqlite3.connect(tmp_path / "p" / DB_NAME, isolation_level=None)
    assert migrate(conn, tmp_path / "p", later) == SCHEMA_VERSION
    assert migrate(conn, tmp_path / "p", later) == SCHEMA_VERSION + 1  # nothing left to do
    assert conn.execute("SELECT token, tag FROM runs").fetchall() == [("<c>", "x")]
    conn.close()
    # this oneword does not know schema 2: it refuses rather than guessing
    with pytest.raises(OnewordError, match="newer oneword"):
        Store.open(tmp_path / "p")


def test_a_failed_migration_changes_nothing(tmp_path):
    with Store.open(tmp_path / "p"):
        pass
    broken = MIGRATIONS + ["ALTER TABLE runs ADD COLUMN a TEXT; THIS IS NOT SQL"]
    conn = sqlite3.connect(tmp_path / "p" / DB_NAME, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, tmp_path / "p", broken)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    assert "a" not in columns
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def test_not_a_store_is_one_clear_error(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OnewordError, match="not a readable oneword store"):
        Store.open(tmp_path / "p")


def test_recording_marks_runs_done_or_failed_and_resumes(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with recording(tmp_path / "p", "learn", folder, "tiny", "<c>", {}, []) as rec:
            raise RuntimeError("out of patience\nmore detail")
    with Store.open(tmp_path / "p") as store:
        failed = store.run(rec.run.id)
    assert failed.status == "failed" and failed.note == "out of patience"
    for stop in (KeyboardInterrupt(), Interrupted("interrupted at step 3; saved it")):
        with pytest.raises(type(stop)):
            with recording(tmp_path / "p", "learn", folder, "tiny", "<c>", {}, [], resume=True):
                raise stop
        with Store.open(tmp_path / "p") as store:
            stopped = store.run(rec.run.id)
        assert stopped.status == "interrupted" and "--resume" in stopped.note
    with recording(tmp_path / "p", "learn", folder, "tiny", "<c>", {}, [], resume=True) as again:
        again.step(7)
    assert again.run.id == rec.run.id
    with recording(tmp_path / "p", "sweep", None, "tiny", "<my cat>", {}, []) as new:
        pass
    with Store.open(tmp_path / "p") as store:
        assert store.run(rec.run.id).status == "done" and store.run(rec.run.id).step == 7
        assert store.run(new.run.id).folder == store.runs_folder / f"r{new.run.id}-my-cat"


def test_a_run_whose_process_is_gone_is_interrupted(tmp_path, capsys):
    import subprocess

    from oneword.cli import main

    ended = subprocess.Popen(["true"])
    ended.wait()
    with Store.open(tmp_path / "p") as store:
        killed = store.create_run("learn", tmp_path / "r1", "tiny", "<k>")
        alive = store.create_run("learn", tmp_path / "r2", "tiny", "<a>")
        reused = store.create_run("learn", tmp_path / "r3", "tiny", "<b>")
        store.conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (ended.pid, killed.id))
        # a process that ended an hour ago, whose id this test's process got since
        store.conn.execute("UPDATE runs SET started = started - 3600 WHERE id = ?", (reused.id,))
    with Store.open(tmp_path / "p") as store:  # opening finds the dead process
        assert store.run(killed.id).status == "interrupted"
        assert store.run(alive.id).status == "running"  # this test's own process
        assert store.run(reused.id).status == "interrupted"
    assert main(["show", "r1", "--project", str(tmp_path / "p")]) == 0
    shown = capsys.readouterr().out
    assert "interrupted" in shown and "--resume" in shown
    with recording(tmp_path / "p", "learn", tmp_path / "r1", "tiny", "<k>", {}, [], resume=True):
        with Store.open(tmp_path / "p") as store:
            assert store.run(killed.id).status == "running"  # resumed by this process
    with Store.open(tmp_path / "p") as store:
        assert store.run(killed.id).status == "done"
