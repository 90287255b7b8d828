"""Finding photos by their words: file names, folder names, captions, keywords (and text read in
them, see test_ocr), fused with the search by meaning, each result saying why it matched."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from photoseek.keywords import document, query_words
from photoseek.search.fusion import reciprocal_rank_fusion
from photoseek.search.query import Filters, SearchRequest, Term, parse_query

from helpers import run_cli


# -- the pure parts ---------------------------------------------------------------------------------


def test_query_words_drop_what_every_description_says():
    assert query_words("a photo of Lisbon") == ["lisbon"]
    assert query_words("Invoice 2023, invoice!") == ["invoice", "2023"]
    assert query_words("the 5 of us") == ["5", "us"]
    assert query_words("a the of") == []
    assert query_words("ünïcode café") == ["ünïcode", "café"]
    assert len(query_words(" ".join(f"word{i}" for i in range(40)))) == 12


def test_a_photo_document_names_its_file_and_folders():
    doc = document("/home/me/Pictures/Trips/2019-05 Lisbon/IMG_2023-invoice.jpg", "/home/me/Pictures/Trips",
                   caption="Tram 28", keywords=("tram", "", "Alfama"), ocr=None)
    assert doc == {"name": "IMG 2023 invoice", "folders": "Trips / 2019 05 Lisbon", "caption": "Tram 28",
                   "keywords": "tram, Alfama", "ocr": None}  # None: no OCR read it
    # Undecodable bytes in a file name cannot break the text index; NULs and runs of spaces go.
    odd = document(os.fsdecode(b"/p/caf\xe9.jpg"), "/p", caption="a\x00b   c")
    assert odd["name"] == "caf\ufffd" and odd["caption"] == "a b c"


def test_reciprocal_rank_fusion_adds_one_over_k_plus_rank():
    # b: 1/62 + 1/61 beats a: 1/61 alone; c (1/63) and d (1/62): d first.
    assert reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]]) == ["b", "a", "d", "c"]
    # Ties go to the first ranking's order.
    assert reciprocal_rank_fusion([["x", "y"], ["y", "x"]]) == ["x", "y"]
    assert reciprocal_rank_fusion([[], []]) == []


# -- a trip, found by its words -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def trip(request, tmp_path_factory, samples_dir, offline_encoder, settings_factory):
    """Photos with camera names (IMG_0001.jpg ...) in a folder named for a place, one scanned
    document named for what it is, and a few more photos elsewhere."""
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher

    base = tmp_path_factory.mktemp(f"trip_{request.param}")
    photos = base / "holiday snaps"
    lisbon = photos / "2019-05 Lisbon"
    lisbon.mkdir(parents=True)
    for i, name in enumerate(["bear.jpg", "mountain.jpg", "island.jpg"], start=1):
        shutil.copy(samples_dir / name, lisbon / f"IMG_{i:04d}.jpg")
    shutil.copy(samples_dir / "laptop.jpg", photos / "invoice_2023_scan.jpg")
    for name in ["puppy.jpg", "coffee.png", "guitar.jpg", "red_fish.jpg"]:
        shutil.copy(samples_dir / name, photos / name)
    overrides = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("new_database")()
    settings = settings_factory(base / "index", **overrides)
    Indexer(settings.index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
    searcher = Searcher(settings.index_dir, settings, encoder=offline_encoder)
    yield searcher, photos, settings
    searcher.close()


def _search(searcher, query: str, **options):
    return searcher.search(SearchRequest(terms=tuple(parse_query(query)), **options))


def _names(page) -> list[str]:
    return [h.photo.name for h in page.hits]


def test_a_place_in_a_folder_name_finds_its_photos_first(trip):
    searcher, photos, _ = trip
    page = _search(searcher, "Lisbon", limit=5)
    assert set(_names(page)[:3]) == {"IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg"}
    assert all("folder" in h.why for h in page.hits[:3])
    assert all(h.why == ("semantic",) for h in page.hits[3:])
    # By meaning alone, the encoder knows no Lisbon: the folder's photos are not the first three.
    alone = _search(searcher, "Lisbon", limit=3, keywords=False)
    assert set(_names(alone)) != {"IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg"}


def test_a_document_is_found_by_the_words_of_its_file_name(trip):
    searcher, *_ = trip
    page = _search(searcher, "invoice 2023", limit=3)
    assert page.hits[0].photo.name == "invoice_2023_scan.jpg" and "file_name" in page.hits[0].why
    # Stemming: a plural finds the singular.
    assert _names(_search(searcher, "invoices", limit=1)) == ["invoice_2023_scan.jpg"]


def test_filters_apply_to_keyword_matches(trip):
    searcher, photos, _ = trip
    elsewhere = _search(searcher, "Lisbon", limit=10, filters=Filters(types=("png",)))
    assert _names(elsewhere) == ["coffee.png"] and elsewhere.hits[0].why == ("semantic",)
    inside = _search(searcher, "invoice", limit=10, filters=Filters(folder=str(photos / "2019-05 Lisbon")))
    assert "invoice_2023_scan.jpg" not in _names(inside)


def test_a_word_in_every_photos_folder_tells_none_apart_and_changes_nothing(trip):
    searcher, *_ = trip
    page = _search(searcher, "snaps of a dog", limit=8)
    assert all(set(h.why) <= {"semantic", "tag"} for h in page.hits)  # no keyword matched
    assert _names(page) == _names(_search(searcher, "snaps of a dog", limit=8, keywords=False))


def test_a_subtracted_word_finds_nothing_by_its_name(trip):
    searcher, *_ = trip
    page = _search(searcher, "Lisbon - IMG", limit=8)
    assert all("folder" not in h.why for h in page.hits)


def test_sorted_by_date_keyword_matches_are_matches_whatever_their_score(trip):
    searcher, *_ = trip
    page = _search(searcher, "invoice", sort="newest", limit=10)
    assert "invoice_2023_scan.jpg" in _names(page)
    assert page.matches == len(page.hits)


def test_the_api_says_why_each_result_matched(trip, tmp_path):
    from fastapi.testclient import TestClient

    from photoseek.web.app import create_app

    searcher, photos, settings = trip
    # The server checks the Host header: the test client says it is the address the server listens on.
    with TestClient(create_app(settings, searcher), base_url=f"http://{settings.host}:{settings.port}") as client:
        body = client.get("/api/search", params={"q": "Lisbon", "limit": 4}).json()
        assert all("folder" in r["why"] for r in body["results"][:3])
        assert body["results"][3]["why"] == ["semantic"]
        off = client.get("/api/search", params={"q": "Lisbon", "limit": 4, "keywords": "false"}).json()
        assert all(r["why"] == ["semantic"] for r in off["results"])
        posted = client.post("/api/search", json={"q": "invoice", "limit": 1}).json()
        assert posted["results"][0]["photo"]["name"] == "invoice_2023_scan.jpg"
        assert posted["results"][0]["why"][-1] == "file_name"
        assert client.get("/api/search", params={"q": "x", "keywords": "maybe"}).status_code == 400
        page = client.get("/", params={"q": "Lisbon"}).text
        assert page.count('class="tile-why"') == 3 and "folder" in page


def test_a_moved_photo_is_found_by_its_new_name(tmp_path, samples_dir, offline_encoder, settings_factory):
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(samples_dir / "bear.jpg", photos / "IMG_0001.jpg")
    shutil.copy(samples_dir / "puppy.jpg", photos / "IMG_0002.jpg")
    settings = settings_factory(tmp_path / "index")
    Indexer(settings.index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
    (photos / "Yellowstone").mkdir()
    os.rename(photos / "IMG_0001.jpg", photos / "Yellowstone" / "grizzly.jpg")
    summary = Indexer(settings.index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
    assert summary.moved == 1 and summary.embedded == 0
    searcher = Searcher(settings.index_dir, settings, encoder=offline_encoder)
    try:
        for query, why in (("grizzly", "file_name"), ("yellowstone", "folder")):
            hit = _search(searcher, query, limit=1).hits[0]
            assert hit.photo.name == "grizzly.jpg" and why in hit.why
        assert all(h.why == ("semantic",) for h in _search(searcher, "IMG 0001", limit=2).hits
                   if h.photo.name == "grizzly.jpg")
        # Removed photos leave the text index with their rows.
        os.remove(photos / "IMG_0002.jpg")
        Indexer(settings.index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
        searcher.refresh()
        assert _search(searcher, "IMG 0002", limit=5).hits[0].why == ("semantic",)
        con = sqlite3.connect(settings.index_dir / "photoseek.db")
        assert con.execute("SELECT count(*) FROM photo_text").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM photo_text_fts WHERE photo_text_fts MATCH 'img'").fetchone()[0] == 0
        con.close()
    finally:
        searcher.close()


def test_an_index_from_before_keywords_upgrades_and_finds_by_file_names(demo_index, offline_encoder,
                                                                       settings_factory, tmp_path):
    from photoseek.search import Searcher
    from photoseek.storage import migrations

    old = tmp_path / "old"
    shutil.copytree(demo_index, old, ignore=shutil.ignore_patterns("thumbnails"))
    con = sqlite3.connect(old / "photoseek.db")
    with con:  # back to revision 0002: no words table, no text index
        for statement in ("DROP TABLE feedback", "DROP TABLE photo_text_fts", "DROP TABLE photo_text",
                          "UPDATE alembic_version SET version_num = '0003'"):
            con.execute(statement)
    con.close()
    searcher = Searcher(old, settings_factory(old), encoder=offline_encoder)
    try:
        hit = searcher.search(SearchRequest(terms=(Term(text="chelsea"),), limit=1)).hits[0]
    finally:
        searcher.close()
    assert hit.photo.name == "chelsea.png" and "file_name" in hit.why
    con = sqlite3.connect(old / "photoseek.db")
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrations.HEAD
    con.close()


def test_the_command_line_says_why_in_brackets(trip):
    searcher, photos, settings = trip
    if settings.database_url:
        pytest.skip("the command line is the same on both back ends; once is enough")
    out = run_cli("search", "invoice", "--index", str(settings.index_dir), "-k", "2").stdout.splitlines()
    assert out[0].endswith("invoice_2023_scan.jpg  [file name]")
    off = run_cli("search", "invoice", "--index", str(settings.index_dir), "-k", "2", "--no-keywords").stdout
    assert "[" not in off
