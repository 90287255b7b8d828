"""Filters, sorting by date, a cutoff and query arithmetic, on a small collection whose EXIF dates,
cameras, folders, file types and shapes this test writes itself."""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photoseek.errors import BadInput, NotFound
from photoseek.storage import migrations
from photoseek.search.query import Filters, SearchRequest, Term, parse_query


@dataclass(frozen=True)
class Made:
    folder: str
    type: str
    camera: str
    day: date
    shape: str
    pixels: int


# (source demo photo, folder, file type, (make, model) or None, date, (width, height))
PLAN = [
    ("puppy.jpg", "trips/2021", "jpeg", ("Google", "Pixel 7"), date(2021, 7, 1), (320, 240)),
    ("island.jpg", "trips/2021", "jpeg", ("Google", "Pixel 7"), date(2021, 7, 2), (320, 240)),
    ("sea_turtle.jpg", "trips/2021", "jpeg", ("Google", "Pixel 7"), date(2021, 7, 3), (320, 240)),
    ("tent.jpg", "trips/2021", "jpeg", ("Google", "Pixel 7"), date(2021, 7, 4), (320, 240)),
    ("black_cat.jpg", "trips/2019", "jpeg", ("Canon", "Canon EOS 5D"), date(2019, 5, 1), (240, 320)),
    ("mountain.jpg", "trips/2019", "jpeg", ("Canon", "Canon EOS 5D"), date(2019, 5, 2), (240, 320)),
    ("snow.jpg", "trips/2019", "jpeg", ("Canon", "Canon EOS 5D"), date(2019, 5, 3), (240, 320)),
    ("coffee.png", "home", "png", None, date(2020, 1, 1), (256, 256)),
    ("guitar.jpg", "home", "png", None, date(2020, 1, 2), (256, 256)),
    ("chelsea.png", "home", "png", None, date(2020, 1, 3), (256, 256)),
    ("rocket.jpg", "home", "jpeg", None, date(2018, 3, 1), (300, 200)),
]


def _shape(width: int, height: int) -> str:
    return "landscape" if width > height else "portrait" if height > width else "square"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def collection(request, tmp_path_factory, samples_dir, offline_encoder, settings_factory):
    """(searcher, {path: Made}) over the photos of PLAN; dates in EXIF for photos with a camera,
    else only in the file's modification time. Every test using it runs on both back ends."""
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher

    base = tmp_path_factory.mktemp("filters")
    photos, made = base / "photos", {}
    for source, folder, kind, camera, day, size in PLAN:
        img = Image.open(samples_dir / source).convert("RGB").resize(size)
        target = photos / folder / f"{Path(source).stem}.{'jpg' if kind == 'jpeg' else 'png'}"
        target.parent.mkdir(parents=True, exist_ok=True)
        exif = Image.Exif()
        if camera:
            exif[0x010F], exif[0x0110] = camera
            exif[0x0132] = day.strftime("%Y:%m:%d 12:00:00")
        img.save(target, exif=exif) if camera else img.save(target)
        if not camera:  # dated by the file alone
            stamp = datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp()
            os.utime(target, (stamp, stamp))
        made[str(target)] = Made(folder, kind, " ".join(camera) if camera else "", day, _shape(*size),
                                 size[0] * size[1])
    index = base / "index"
    database = request.getfixturevalue("new_database")() if request.param == "postgresql" else None
    settings = settings_factory(index, database_url=database)
    Indexer(index, settings, show_progress=False).run([photos], encoder=offline_encoder)
    searcher = Searcher(index, settings, encoder=offline_encoder)
    yield searcher, made, photos
    searcher.close()


def _search(searcher, text: str = "a photo", **kwargs):
    return searcher.search(SearchRequest(terms=tuple(parse_query(text)), **{"limit": 100, **kwargs}))


def _paths(page) -> list[str]:
    return [h.photo.path for h in page.hits]


FILTER_CASES = [
    (dict(after=date(2020, 1, 1)), lambda m: m.day >= date(2020, 1, 1)),
    (dict(after=date(2019, 5, 2), before=date(2020, 1, 2)), lambda m: date(2019, 5, 2) <= m.day <= date(2020, 1, 2)),
    (dict(camera="pixel 7"), lambda m: "Pixel 7" in m.camera),
    (dict(camera="CANON"), lambda m: "Canon" in m.camera),
    (dict(types=("png",)), lambda m: m.type == "png"),
    (dict(orientation="portrait"), lambda m: m.shape == "portrait"),
    (dict(orientation="square"), lambda m: m.shape == "square"),
    (dict(min_pixels=70_000), lambda m: m.pixels >= 70_000),
    (dict(before=date(2018, 12, 31)), lambda m: m.day <= date(2018, 12, 31)),  # one photo of eleven
    (dict(camera="pixel", orientation="portrait"), lambda m: False),
]


@pytest.mark.parametrize("direct_share", [0.0, 1.0], ids=["faiss-selector", "direct-scoring"])
@pytest.mark.parametrize("kwargs, keep", FILTER_CASES, ids=lambda c: str(c) if isinstance(c, dict) else "")
def test_a_filtered_search_is_the_ranking_restricted_to_the_filtered_photos(collection, kwargs, keep, direct_share,
                                                                            monkeypatch):
    import photoseek.search.local as local

    searcher, made, _ = collection
    if direct_share and not searcher.catalogue.uses_vector_file:
        pytest.skip("one way of searching a subset in SQL")
    monkeypatch.setattr(local, "DIRECT_SCORING_SHARE", direct_share)  # both ways of searching a subset
    for text in ("a dog on a beach", "snow in the mountains", "a cup of coffee"):
        everything = _search(searcher, text)
        expected = [(h.photo.path, h.score) for h in everything.hits if keep(made[h.photo.path])]
        filtered = _search(searcher, text, filters=Filters(**kwargs))
        got = [(h.photo.path, h.score) for h in filtered.hits]
        assert [p for p, _ in got] == [p for p, _ in expected], (text, kwargs)
        assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)
        # A page of two holds the best two of the filtered photos, not what is left of a page of all photos.
        first = _search(searcher, text, filters=Filters(**kwargs), limit=2)
        assert _paths(first) == [p for p, _ in expected[:2]]
        assert first.next_offset == (2 if len(expected) > 2 else None)


def test_the_folder_filter_is_a_recursive_path_prefix(collection):
    searcher, made, photos = collection
    for folder, keep in ((photos / "trips", lambda m: m.folder.startswith("trips/")),
                         (photos / "trips" / "2019", lambda m: m.folder == "trips/2019"),
                         (photos / "trip", lambda m: False)):  # a prefix of a name is not a folder
        got = _paths(_search(searcher, "a photo", filters=Filters(folder=str(folder))))
        assert sorted(got) == sorted(p for p, m in made.items() if keep(m)), folder


def test_results_say_where_their_date_comes_from(collection):
    searcher, made, _ = collection
    for hit in _search(searcher).hits:
        m = made[hit.photo.path]
        assert hit.photo.photo_date.date() == m.day
        assert hit.photo.date_source == ("exif" if m.camera else "file")
        assert hit.photo.file_type == m.type


def test_sort_by_date_pages_without_gaps_or_repeats(collection):
    searcher, made, _ = collection
    for sort, newest in (("newest", True), ("oldest", False)):
        whole = _search(searcher, "a photo", sort=sort, min_score=-1.0)
        days = [made[p].day for p in _paths(whole)]
        assert len(days) == len(made) and days == sorted(days, reverse=newest)
        pages, offset = [], 0
        while offset is not None:
            page = _search(searcher, "a photo", sort=sort, min_score=-1.0, limit=3, offset=offset)
            pages += _paths(page)
            offset = page.next_offset
        assert pages == _paths(whole)


def test_sorting_by_date_keeps_only_good_matches_by_default(collection):
    searcher, made, _ = collection
    page = _search(searcher, "a cat", sort="newest")
    # The default cutoff comes from the query's own scores over the collection: the cat is in, most are out.
    assert page.cutoff is not None and page.matches == len(page.hits) < len(made) / 2
    assert any(p.endswith(("black_cat.jpg", "chelsea.png")) for p in _paths(page))
    assert all(h.score >= page.cutoff for h in page.hits)
    explicit = _search(searcher, "a cat", min_score=0.3)
    assert explicit.cutoff == 0.3 and all(h.score >= 0.3 for h in explicit.hits)
    assert len(explicit.hits) < len(_search(searcher, "a cat").hits)


# -- query arithmetic on the demo photos: what a person expects -----------------------------------


def _names(page) -> list[str]:
    return [h.photo.name for h in page.hits]


def _photo(searcher, name: str):
    return next(h.photo for h in _search(searcher, "a photo").hits if h.photo.name == name)


def test_a_cat_photo_plus_a_dog_brings_dogs_above_the_other_cat(demo_searcher):
    cat = _photo(demo_searcher, "black_cat.jpg")
    like_cat = _names(demo_searcher.search(SearchRequest(terms=(Term(photo_id=cat.id),), limit=4)))
    assert like_cat[0] == "chelsea.png" and not {"puppy.jpg", "puppies.jpg"} & set(like_cat)
    plus_dog = _names(demo_searcher.search(SearchRequest(terms=(Term(photo_id=cat.id), Term(weight=2, text="a dog")),
                                                         limit=4)))
    assert plus_dog[0] == "puppy.jpg" and plus_dog.index("puppy.jpg") < plus_dog.index("chelsea.png")
    assert "black_cat.jpg" not in plus_dog  # the photo searched by is left out


def test_subtracting_a_word_pushes_its_photos_down(demo_searcher):
    # By meaning alone (the demo files' names say what they show: keyword matches would mix in).
    fish = _names(demo_searcher.search(SearchRequest(terms=tuple(parse_query("a fish")), limit=4, keywords=False)))
    assert fish[0] == "red_fish.jpg"
    not_red = _names(demo_searcher.search(SearchRequest(terms=tuple(parse_query("a fish - 2:red")), limit=4,
                                                        keywords=False)))
    assert not_red.index("red_fish.jpg") > not_red.index("blue_tang.jpg")
    assert set(not_red) <= {"red_fish.jpg", "gold_fish.jpg", "blue_tang.jpg", "green_fish.jpg", "fighter_fish.jpg"}


def test_arithmetic_errors(demo_searcher):
    with pytest.raises(NotFound, match="no photo has id 999999"):
        demo_searcher.search(SearchRequest(terms=(Term(photo_id=999999),)))
    with pytest.raises(BadInput, match="cancel each other out"):
        demo_searcher.search(SearchRequest(terms=(Term(text="a cat"), Term(weight=-1, text="a cat"))))


# -- an index from before filters ------------------------------------------------------------------


def test_an_index_from_before_filters_upgrades_in_place_without_re_embedding(demo_index, offline_encoder,
                                                                            settings_factory, tmp_path):
    from photoseek.search import Searcher

    old = tmp_path / "old"
    shutil.copytree(demo_index, old, ignore=shutil.ignore_patterns("thumbnails"))
    con = sqlite3.connect(old / "photoseek.db")
    with con:  # back to schema 1 as photoseek wrote it before Alembic: the columns and indexes filters added
        for statement in ("DROP TABLE feedback",  # schema 5 (feedback marks)
                          "DROP TABLE photo_tags", "DROP TABLE tagged_photos",  # schema 3 (tags)
                          "DROP TABLE alembic_version", "DROP TABLE photo_text_fts", "DROP TABLE photo_text",
                          "DROP INDEX ix_images_file_type", "DROP INDEX ix_images_photo_date",
                          "ALTER TABLE images DROP COLUMN file_type", "ALTER TABLE images DROP COLUMN photo_date",
                          "ALTER TABLE images DROP COLUMN date_source", "PRAGMA user_version = 1"):
            con.execute(statement)
    before = dict(con.execute("SELECT id, embedding FROM images"))
    con.close()

    searcher = Searcher(old, settings_factory(old), encoder=offline_encoder)
    try:
        pngs = _names(searcher.search(SearchRequest(terms=(Term(text="a cat"),), filters=Filters(types=("png",)),
                                                    limit=50)))
    finally:
        searcher.close()
    assert pngs[0] == "chelsea.png" and all(n.endswith(".png") for n in pngs) and len(pngs) == 4
    con = sqlite3.connect(old / "photoseek.db")
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrations.HEAD
    assert dict(con.execute("SELECT id, embedding FROM images")) == before  # nothing embedded again
    con.close()


# -- facets: what each choice of the filter bar keeps -----------------------------------------------


def test_facets_count_each_choice_with_the_other_filters_applied(collection):
    searcher, made, photos = collection
    counts = searcher.facets(Filters())
    assert dict(counts["camera"]) == {("Google", "Pixel 7"): 4, ("Canon", "Canon EOS 5D"): 3, (None, None): 4}
    assert dict(counts["year"]) == {"2021": 4, "2019": 3, "2020": 3, "2018": 1}
    assert dict(counts["folder"]) == {str(photos / "trips"): 7, str(photos / "home"): 4}
    assert dict(counts["type"]) == {"jpeg": 8, "png": 3}
    assert dict(counts["orientation"]) == {"landscape": 5, "portrait": 3, "square": 3}

    # A camera is chosen: the camera facet still offers the others; every other facet narrows to it.
    pixel = searcher.facets(Filters(camera="pixel 7"))
    assert dict(pixel["camera"]) == dict(counts["camera"])
    assert dict(pixel["year"]) == {"2021": 4} and dict(pixel["type"]) == {"jpeg": 4}
    # Within a year, per month.
    months = searcher.facets(Filters(), year=2019)
    assert dict(months["month"]) == {"05": 3} and "year" not in months
    # Each count is what the filter would keep: choosing it finds that many photos.
    for (make, model), n in counts["camera"]:
        if make:
            assert len(_search(searcher, filters=Filters(camera=f"{model}")).hits) == n


def test_facets_of_a_query_count_only_its_matches(collection):
    searcher, made, _ = collection
    terms = tuple(parse_query("a cat"))
    everything = searcher.facets(Filters())
    matching = searcher.facets(Filters(), terms=terms)
    assert sum(n for _, n in matching["type"]) < sum(n for _, n in everything["type"])
    strict = searcher.facets(Filters(), terms=terms, min_score=-1.0)
    assert dict(strict["type"]) == dict(everything["type"])


def test_the_api_takes_filters_sort_and_cutoff_and_says_what_it_applied(collection, settings_factory):
    from fastapi.testclient import TestClient

    from photoseek.web.app import create_app

    searcher, made, photos = collection
    app = create_app(settings_factory(searcher.files.root), searcher)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.get("/api/search", params={"q": "a photo", "camera": "canon", "sort": "oldest", "min_score": -1,
                                         "after": "2019-05-02", "limit": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["filters"]["camera"] == "canon" and body["filters"]["after"] == "2019-05-02"
        assert body["sort"] == "oldest" and body["cutoff"] == -1 and body["matches"] == 2
        assert [h["photo"]["name"] for h in body["results"]] == ["mountain.jpg", "snow.jpg"]
        assert all(h["photo"]["date_source"] == "exif" and h["photo"]["date"].endswith("Z") for h in body["results"])

        folder = c.get("/api/search", params={"q": "a photo", "folder": str(photos / "home"), "type": ["png"]}).json()
        assert {h["photo"]["name"] for h in folder["results"]} == {"coffee.png", "guitar.png", "chelsea.png"}
        assert all(h["photo"]["date_source"] == "file" for h in folder["results"])

        facets = c.get("/api/facets", params={"camera": "canon"}).json()
        assert {f["label"]: f["count"] for f in facets["camera"]} == {
            "Google Pixel 7": 4, "Canon EOS 5D": 3, "unknown camera": 4}
        assert facets["year"] == [{"value": "2019", "label": "2019", "count": 3}]
        bad = c.get("/api/facets", params={"year": "soon"})
        assert bad.status_code == 400 and "year" in bad.json()["message"]


def test_filters_in_memory_select_exactly_what_the_sql_filter_selects(collection):
    from photoseek.search.filters import FilterColumns

    searcher, made, photos = collection
    db = searcher.catalogue
    with searcher.catalogue.reading() as conn:
        columns = FilterColumns.load(db.filter_columns(conn))
        cases = [Filters(**kwargs) for kwargs, _ in FILTER_CASES] + [
            Filters(folder=str(photos / "trips")), Filters(folder=str(photos / "trips" / "2019")),
            Filters(folder=str(photos / "trip")), Filters(camera="canon eos", types=("jpeg", "png")), Filters()]
        for f in cases:
            assert list(columns.select(f)) == list(db.filter_ids(conn, f)), f
