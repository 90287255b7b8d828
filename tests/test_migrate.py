"""``photoseek migrate``: a SQLite index copied into PostgreSQL (and back), embeddings and all.

The demo index is copied into fresh PostgreSQL databases of the session's server; the copy must
answer searches as the original does, show the same counts, keep photo ids, need no re-embedding,
and refuse (changing nothing) a target that already holds an index.
"""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from helpers import run_cli
from photoseek.cli import app
from photoseek.settings import Settings
from photoseek.storage import open_catalogue
from photoseek.storage.copy import migrate
from photoseek.storage.schema import ImageRow, IndexRun, Root, SkippedFile

QUERIES = ["a dog", "snow on a mountain", "a cup of coffee", "a red car"]


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env={"PHOTOSEEK_DATABASE_URL": "", **(env or {})})


def copy_demo(demo_index, new_database) -> str:
    """A fresh database holding a copy of the demo index (in-process: the CLI story is tested once)."""
    url = new_database()
    migrate(demo_index, None, demo_index, url, settings=Settings())
    return url


def snapshot(url: str, index_dir) -> dict:
    """Everything a refused migrate must leave as it was."""
    catalogue = open_catalogue(index_dir, url, readonly=True)
    try:
        with catalogue.engine.connect() as conn:
            return dict(
                state=catalogue.index_state(conn), uid=catalogue.identity(conn),
                counts=[conn.execute(select(func.count()).select_from(t)).scalar_one()
                        for t in (ImageRow, SkippedFile, IndexRun, Root)],
                photos=sorted(conn.execute(select(ImageRow.id, ImageRow.path)).all()),
            )
    finally:
        catalogue.close()


@pytest.fixture(scope="module")
def migrated(demo_index, new_database):
    """The demo index migrated by the command line, as a user runs it: (database URL, its JSON report)."""
    url = new_database()
    result = run_cli("migrate", "--from", str(demo_index), "--database", url, "--json")
    return url, json.loads(result.stdout)


@pytest.fixture(scope="module")
def pg_searcher(migrated, tmp_path_factory, settings_factory, offline_encoder):
    from photoseek.search import Searcher

    index_dir = tmp_path_factory.mktemp("pg_index")  # thumbnails only: the catalogue is the database
    searcher = Searcher(index_dir, settings_factory(index_dir, database_url=migrated[0]), encoder=offline_encoder)
    yield searcher
    searcher.close()


def same_hits(a, b) -> None:
    assert [h.photo.id for h in a] == [h.photo.id for h in b]
    assert [h.photo.path for h in a] == [h.photo.path for h in b]
    for x, y in zip(a, b):
        assert abs(x.score - y.score) < 1e-3, (x, y)


def test_the_report_says_what_was_copied(migrated, demo_searcher):
    url, report = migrated
    status = demo_searcher.status()
    assert report["photos"] == status.image_count == len(demo_searcher) > 0
    assert (report["skipped"], report["runs"], report["folders"]) == (status.skipped_count, status.runs,
                                                                        len(status.roots))
    assert report["model_id"] == demo_searcher.model_id and report["dim"] > 0
    assert report["source"].startswith("SQLite at") and report["target"].startswith("PostgreSQL at")
    assert "password" not in report["target"] and report["replaced"] is False


def test_postgresql_answers_searches_as_sqlite_did(pg_searcher, demo_searcher):
    assert len(pg_searcher) == len(demo_searcher)
    for query in QUERIES:
        same_hits(pg_searcher.search_text(query, limit=10), demo_searcher.search_text(query, limit=10))
    some = demo_searcher.search_text("a dog", limit=1)[0].photo.id
    same_hits(pg_searcher.similar(some, limit=10), demo_searcher.similar(some, limit=10))
    assert pg_searcher.photo(some) == demo_searcher.photo(some)  # same id, same metadata


def test_status_shows_the_same_counts(migrated, demo_index):
    pg = invoke("status", "--database", migrated[0], "--json")
    lite = invoke("status", "--index", str(demo_index), "--json")
    assert pg.exit_code == 0 and lite.exit_code == 0, (pg.output, lite.output)
    pg, lite = json.loads(pg.stdout), json.loads(lite.stdout)
    for key in ("model", "dim", "image_count", "skipped_count", "skipped", "runs", "roots", "last_run"):
        assert pg[key] == lite[key], key
    assert pg["image_count"] > 0 and pg["ready"]


def test_a_second_migrate_refuses_and_changes_nothing(migrated, demo_index, tmp_path):
    url = migrated[0]
    before = snapshot(url, tmp_path)
    result = invoke("migrate", "--from", str(demo_index), "--database", url)
    assert result.exit_code == 1
    assert "already holds an index" in result.output and "--replace" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot(url, tmp_path) == before


def test_replace_overwrites_another_index(demo_index, new_database, tmp_path, samples_dir, offline_encoder,
                                          settings_factory):
    from photoseek.indexer import Indexer

    url = new_database()
    other = tmp_path / "other"
    other.mkdir()
    for name in ("puppy.jpg", "coffee.png"):
        shutil.copy(samples_dir / name, other / name)
    Indexer(tmp_path / "i", settings_factory(tmp_path / "i", database_url=url), show_progress=False).run(
        [other], encoder=offline_encoder)
    before = snapshot(url, tmp_path)
    assert invoke("migrate", "--from", str(demo_index), "--database", url).exit_code == 1
    assert snapshot(url, tmp_path) == before

    result = invoke("migrate", "--from", str(demo_index), "--database", url, "--replace")
    assert result.exit_code == 0, result.output
    after, demo = snapshot(url, tmp_path), snapshot(None, demo_index)
    assert after["photos"] == demo["photos"] and after["counts"] == demo["counts"]
    assert after["uid"] != before["uid"] and after["state"][0] > before["state"][0]  # servers reload
    assert "replaced" in result.output


def test_indexing_the_copy_embeds_nothing_and_new_ids_follow(demo_index, new_database, tmp_path, samples_dir,
                                                           offline_encoder, settings_factory):
    from photoseek.indexer import Indexer

    url = copy_demo(demo_index, new_database)
    settings = settings_factory(tmp_path / "i", database_url=url)
    summary = Indexer(settings.index_dir, settings, show_progress=False).run(
        [demo_index.parent / "photos"], encoder=offline_encoder)
    count = snapshot(None, demo_index)["counts"][0]
    assert (summary.added, summary.updated, summary.removed, summary.unchanged) == (0, 0, 0, count)
    assert f"added 0, updated 0, moved 0, removed 0, skipped 0, unchanged {count}" in summary.line()

    # The id sequences were moved past the copied ids: a new photo gets a new id.
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(samples_dir / "puppy.jpg", extra / "again.jpg")
    summary = Indexer(settings.index_dir, settings, show_progress=False).run([extra], encoder=offline_encoder)
    assert summary.added == 1
    ids = [i for i, _ in snapshot(url, tmp_path)["photos"]]
    assert max(ids) > max(i for i, _ in snapshot(None, demo_index)["photos"]) and len(ids) == count + 1


def test_postgresql_back_into_sqlite(migrated, demo_searcher, tmp_path, settings_factory, offline_encoder):
    from photoseek.search import Searcher

    result = invoke("migrate", "--from-database", migrated[0], "--index", str(tmp_path / "back"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "back" / "vectors.faiss").is_file()
    back = Searcher(tmp_path / "back", settings_factory(tmp_path / "back"), encoder=offline_encoder)
    try:
        for query in QUERIES[:2]:
            same_hits(back.search_text(query, limit=10), demo_searcher.search_text(query, limit=10))
    finally:
        back.close()


def test_refusals_say_what_to_do(migrated, demo_index, tmp_path):
    url = migrated[0]
    cases = [
        (["--from", str(tmp_path / "nowhere"), "--database", url], 1, "no photoseek index at"),
        (["--from", str(tmp_path), "--database", url], 1, "no photoseek.db in it"),
        (["--from", str(demo_index)], 2, "PHOTOSEEK_DATABASE_URL"),
        (["--from-database", url, "--database", url], 2, "same catalogue"),
        (["--from", str(demo_index), "--index", str(demo_index), "--from-database", url], 2, "--from DIR"),
    ]
    for args, code, words in cases:
        result = invoke("migrate", *args)
        assert result.exit_code == code, (args, result.output)
        assert words in result.output and "Traceback" not in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "photoseek.db").exists()  # a refused source is not created
