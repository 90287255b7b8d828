"""A catalogue in PostgreSQL shared by several machines: servers that follow another machine's
indexing without a restart, one writer at a time, HNSW for large collections, and a killed run.

Every test uses the real PostgreSQL (with pgvector) that the suite starts (conftest: pg_server);
search behaviour itself (filters, sorting, cutoff, facets, the API) is covered on both back ends
by the parametrised tests in test_filters.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
from fastapi.testclient import TestClient

import helpers
from photoseek.indexer import Indexer, IndexLocked
from photoseek.search import Searcher
from photoseek.search.query import SearchRequest, Term
from photoseek.storage import open_catalogue
from photoseek.web.app import create_app


def _split_demo(samples_dir, tmp_path):
    """The demo photos in two folders: the first half, and the rest."""
    names = sorted(p.name for p in samples_dir.iterdir())
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, part in ((first, names[: len(names) // 2]), (second, names[len(names) // 2:])):
        folder.mkdir()
        for name in part:
            shutil.copy2(samples_dir / name, folder / name)
    return first, second


def test_servers_on_two_machines_follow_a_third_machines_indexing(tmp_path, samples_dir, offline_encoder,
                                                                    settings_factory, new_database):
    url = new_database()
    first, second = _split_demo(samples_dir, tmp_path)
    # Each "machine" has its own index folder (thumbnails); the catalogue is shared.
    machines = [settings_factory(tmp_path / f"machine{i}", database_url=url) for i in range(3)]
    Indexer(machines[2].index_dir, machines[2], show_progress=False).run([first], encoder=offline_encoder)

    servers = []
    for settings in machines[:2]:
        searcher = Searcher(settings.index_dir, settings, encoder=offline_encoder)
        servers.append((searcher, TestClient(create_app(settings, searcher, refresh_interval=0),
                                             base_url="http://127.0.0.1")))
    try:
        def found(client) -> set[str]:
            r = client.get("/api/search", params={"q": "a photo", "limit": 100})
            assert r.status_code == 200, r.text
            return {h["photo"]["name"] for h in r.json()["results"]}

        assert all(found(c) == {p.name for p in first.iterdir()} for _, c in servers)

        # The third machine indexes the rest while both servers keep answering.
        errors, answers = [], []
        done = threading.Event()

        def keep_asking():
            while not done.is_set():
                for _, client in servers:
                    r = client.get("/api/search", params={"q": "a dog", "limit": 5})
                    (answers if r.status_code == 200 else errors).append(r.status_code)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            summary = Indexer(machines[2].index_dir, machines[2], show_progress=False).run(
                [second], encoder=offline_encoder)
        finally:
            done.set()
            asker.join()
        assert summary.added == len(list(second.iterdir()))
        assert not errors and answers
        everything = {p.name for p in samples_dir.iterdir()}
        assert all(found(c) == everything for _, c in servers)  # no restart
        # Photo ids mean the same on every server: a photo's page and file come from any of them.
        ids = {h["photo"]["name"]: h["photo"]["id"] for h in servers[0][1].get(
            "/api/search", params={"q": "a dog", "limit": 3}).json()["results"]}
        for name, image_id in ids.items():
            meta = servers[1][1].get(f"/api/images/{image_id}")
            assert meta.status_code == 200 and meta.json()["name"] == name
            assert servers[1][1].get(f"/api/images/{image_id}/file").status_code == 200
        status = servers[1][1].get("/api/status").json()
        assert status["image_count"] == len(everything) and status["last_run"]["status"] == "finished"
        assert status["catalogue"].startswith("PostgreSQL at") and "password" not in status["catalogue"]
    finally:
        for searcher, client in servers:
            client.close()
            searcher.close()


def test_one_writer_at_a_time(tmp_path, samples_dir, offline_encoder, settings_factory, new_database):
    url = new_database()
    first, _ = _split_demo(samples_dir, tmp_path)
    settings = settings_factory(tmp_path / "a", database_url=url)
    other = open_catalogue(tmp_path / "b", url)
    try:
        with other.writer_lock():  # another machine's indexer holds the catalogue
            assert other.writer_alive()
            with pytest.raises(IndexLocked, match="already writing"):
                Indexer(settings.index_dir, settings, show_progress=False).run([first], encoder=offline_encoder)
        assert not other.writer_alive()  # the lock goes with its holder
        summary = Indexer(settings.index_dir, settings, show_progress=False).run([first], encoder=offline_encoder)
        assert summary.added == len(list(first.iterdir()))
    finally:
        other.close()


def test_a_large_collection_is_searched_through_hnsw_with_the_same_answers(demo_index, tmp_path, samples_dir,
                                                                           offline_encoder, settings_factory,
                                                                           new_database, demo_searcher):
    url = new_database()
    photos = tmp_path / "photos"
    shutil.copytree(samples_dir, photos)
    # "Large" from 10 photos on: the run builds an HNSW index and searches go through it.
    settings = settings_factory(tmp_path / "index", database_url=url, hnsw_above=10)
    Indexer(settings.index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
    searcher = Searcher(settings.index_dir, settings, encoder=offline_encoder)
    try:
        assert searcher.status().search.startswith("approximate: PostgreSQL HNSW")
        for query in ("a dog", "a cup of coffee", "the sea", "a red car"):
            got = searcher.search(SearchRequest(terms=(Term(text=query),), limit=5)).hits
            want = demo_searcher.search(SearchRequest(terms=(Term(text=query),), limit=5)).hits
            assert [h.photo.name for h in got] == [h.photo.name for h in want], query
            assert all(abs(a.score - b.score) < 2e-3 for a, b in zip(got, want))  # float16 query in HNSW
    finally:
        searcher.close()


@pytest.mark.slow
def test_a_killed_run_leaves_a_consistent_catalogue_and_the_next_run_resumes(tmp_path, samples_dir, new_database):
    url = new_database()
    photos = tmp_path / "photos"
    helpers.make_photos(photos, samples_dir, 0, 96)
    index = tmp_path / "index"
    env = {**os.environ, **helpers.SMALL_RUN_ENV, "PHOTOSEEK_DATABASE_URL": url}
    proc = subprocess.Popen(helpers.cli("index", str(photos), "--index", str(index), "--model", "offline",
                                        "--no-progress"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    catalogue = None
    committed = 0
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None and committed < 16:
            time.sleep(0.05)
            try:
                catalogue = catalogue or open_catalogue(index, url, readonly=True)
                with catalogue.engine.connect() as conn:
                    committed = catalogue.photo_count(conn)
            except Exception:  # not created yet
                continue
        assert proc.poll() is None, "the indexer finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # PostgreSQL lets go of the dead run's lock once its backend sees the closed socket: at once
        # on a quiet machine, a moment later while the orphaned decode workers still use both cores.
        let_go = time.monotonic() + 30
        while catalogue.writer_alive() and time.monotonic() < let_go:
            time.sleep(0.1)
        assert catalogue.writer_alive() is False
        status = json.loads(helpers.run_cli("status", "--index", str(index), "--json", env_extra={
            "PHOTOSEEK_DATABASE_URL": url}).stdout)
        assert status["last_run"]["status"] == "interrupted" and 16 <= status["image_count"] < 96
    finally:
        if proc.poll() is None:
            proc.kill()
        if catalogue is not None:
            catalogue.close()

    resumed = helpers.run_cli("index", "--index", str(index), "--no-progress",
                              env_extra={**helpers.SMALL_RUN_ENV, "PHOTOSEEK_DATABASE_URL": url})
    added = int(resumed.stdout.split("added ")[1].split(",")[0])
    assert added <= 96 - 16  # what was committed before the kill was kept
    status = json.loads(helpers.run_cli("status", "--index", str(index), "--json",
                                        env_extra={"PHOTOSEEK_DATABASE_URL": url}).stdout)
    assert status["image_count"] == 96 and status["last_run"]["status"] == "finished"
    catalogue = open_catalogue(index, url, readonly=True)
    try:
        with catalogue.engine.connect() as conn:
            paths = [p for p, _ in catalogue.known_files(conn).items()]
    finally:
        catalogue.close()
    assert sorted(paths) == sorted(str(p) for p in photos.iterdir())  # each photo once


def test_a_wrong_database_url_is_one_clear_line(tmp_path):
    result = helpers.run_cli("status", "--index", str(tmp_path), "--database", "mysql://x@y/z", check=False)
    assert result.returncode == 2 and "is not a catalogue photoseek knows" in result.stderr
    assert "Traceback" not in result.stderr
    result = helpers.run_cli("search", "a dog", "--index", str(tmp_path), "--database",
                             f"postgresql://nobody@/none?host={tmp_path}", check=False)
    assert result.returncode == 1 and "cannot reach the catalogue" in result.stderr
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


def test_an_older_postgresql_catalogue_is_upgraded_by_alembic_without_re_embedding(tmp_path, samples_dir,
                                                                                   offline_encoder,
                                                                                   settings_factory, new_database):
    from sqlalchemy import create_engine, text

    from photoseek.search.query import Filters
    from photoseek.storage import migrations

    url = new_database()
    first, _ = _split_demo(samples_dir, tmp_path)
    settings = settings_factory(tmp_path / "index", database_url=url)
    Indexer(settings.index_dir, settings, show_progress=False).run([first], encoder=offline_encoder)
    engine = create_engine(url)
    with engine.begin() as conn:  # back to revision 0001: without the columns filters use
        for statement in ("DROP TABLE feedback", "DROP TABLE photo_tags", "DROP TABLE tagged_photos", "DROP TABLE photo_text",
                          "DROP INDEX ix_images_file_type", "DROP INDEX ix_images_photo_date",
                          "ALTER TABLE images DROP COLUMN file_type", "ALTER TABLE images DROP COLUMN photo_date",
                          "ALTER TABLE images DROP COLUMN date_source", "UPDATE alembic_version SET version_num = '0001'"):
            conn.execute(text(statement))
        before = dict(conn.execute(text("SELECT id, embedding::text FROM images")).all())

    searcher = Searcher(settings.index_dir, settings, encoder=offline_encoder)  # a server starting up upgrades it
    try:
        pngs = searcher.search(SearchRequest(terms=(Term(text="a photo"),), filters=Filters(types=("png",)),
                                             limit=50)).hits
        assert pngs and all(h.photo.file_type == "png" for h in pngs)
    finally:
        searcher.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == migrations.HEAD
        assert dict(conn.execute(text("SELECT id, embedding::text FROM images")).all()) == before
    engine.dispose()


def test_rebuild_empties_the_catalogue_and_servers_follow(tmp_path, samples_dir, offline_encoder, settings_factory,
                                                          new_database):
    url = new_database()
    first, second = _split_demo(samples_dir, tmp_path)
    settings = settings_factory(tmp_path / "index", database_url=url)
    Indexer(settings.index_dir, settings, show_progress=False).run([first], encoder=offline_encoder)
    server = Searcher(settings.index_dir, settings, encoder=offline_encoder)
    try:
        old_ids = {h.photo.id for h in server.search_text("a photo", limit=100)}
        Indexer(settings.index_dir, settings, show_progress=False).run([second], rebuild=True,
                                                                       encoder=offline_encoder)
        assert server.refresh()
        hits = server.search_text("a photo", limit=100)
        assert {h.photo.name for h in hits} == {p.name for p in second.iterdir()}
        assert not old_ids & {h.photo.id for h in hits}  # ids are never reused: old links cannot show another photo
        assert server.status().roots == [str(second)]
    finally:
        server.close()
