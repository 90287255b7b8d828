"""Automatic tags: the vocabulary and its hierarchy, words in queries, tagging at index time, tag:
in queries, the facet, the detail view, re-tagging from stored embeddings, both back ends."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from helpers import run_cli
from photoseek.errors import BadInput
from photoseek.search.filters import FilterColumns
from photoseek.search.query import Filters, SearchRequest, parse_query
from photoseek.search.tag_fusion import merge_tops, tagged_first
from photoseek.tags import (DEFAULT_VOCABULARY, Tag, Vocabulary, choose_tags, load_vocabulary, parse_user_vocabulary,
                            tags_in_query)

WORDNET = Path("/usr/share/wordnet")


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return load_vocabulary()


def names_of(page) -> list[str]:
    return [h.photo.name for h in page.hits]


def request(q: str, **kw) -> SearchRequest:
    return SearchRequest(terms=tuple(parse_query(q)), **kw)


# -- the vocabulary ------------------------------------------------------------------------------


@pytest.mark.skipif(not (WORDNET / "data.noun").is_file(), reason="WordNet (Debian's wordnet-base) is not installed")
def test_the_shipped_vocabulary_is_what_the_build_script_makes_from_wordnet():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import build_vocabulary

    assert build_vocabulary.render(build_vocabulary.build(WORDNET)) == DEFAULT_VOCABULARY.read_text(encoding="utf-8")


def test_a_golden_retriever_is_a_dog_and_an_animal(vocabulary):
    assert vocabulary.tags["golden retriever"].parents == ("dog",)
    assert {"dog", "mammal", "animal"} <= vocabulary.ancestors("golden retriever")
    assert "golden retriever" in vocabulary.descendants("animal")
    assert "tabby cat" in vocabulary.descendants("cat") and "cat" not in vocabulary.descendants("dog")
    assert "electric guitar" in vocabulary.descendants("musical instrument")
    assert "christmas stocking" in vocabulary.descendants("christmas")  # everyday events beside WordNet's nouns
    assert len(vocabulary) > 1000 and DEFAULT_VOCABULARY.stat().st_size < 200_000


def test_words_people_type_find_their_tags(vocabulary):
    assert tags_in_query("an animal", vocabulary) == ["animal"]
    assert tags_in_query("Animals", vocabulary) == ["animal"]
    assert tags_in_query("puppies", vocabulary) == ["dog"]  # a synonym, in the plural
    assert tags_in_query("a musical instrument on a beach", vocabulary) == ["musical instrument", "beach"]
    assert tags_in_query("christmas", vocabulary) == ["christmas"]
    assert tags_in_query("a vehicle", vocabulary) == ["vehicle"]
    assert tags_in_query("a photo of my", vocabulary) == []


def test_tag_names_resolve_with_hyphens_synonyms_and_say_what_is_wrong(vocabulary):
    assert vocabulary.resolve("musical-instrument") == "musical instrument"
    assert vocabulary.resolve("puppies") == "dog"
    assert vocabulary.resolve("band-aid") == "band-aid"
    with pytest.raises(BadInput, match=r"tag: 'animl' is not a tag; did you mean animal\?"):
        vocabulary.resolve("animl")


def test_a_users_vocabulary_file_adds_tags_and_mistakes_name_their_line(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my tags\nsailing boat > boat = sailboat, yacht\ndog = pooch\n", encoding="utf-8")
    mine = load_vocabulary(path)
    assert mine.tags["sailing boat"].parents == ("boat",) and "vehicle" in mine.ancestors("sailing boat")
    assert "pooch" in mine.tags["dog"].synonyms and mine.tags["dog"].parents == load_vocabulary().tags["dog"].parents
    assert mine.version() != load_vocabulary().version() and mine.source == str(path.resolve())
    with pytest.raises(BadInput, match="line 2"):
        parse_user_vocabulary("ok\n> no name\n")
    with pytest.raises(BadInput, match="'kite' names a parent 'toys' that is not a tag"):
        Vocabulary([Tag("kite", parents=("toys",))])
    with pytest.raises(BadInput, match="cycle"):
        Vocabulary([Tag("a", parents=("b",)), Tag("b", parents=("a",))])
    with pytest.raises(BadInput, match="PHOTOSEEK_TAG_VOCABULARY: cannot read"):
        load_vocabulary(tmp_path / "missing.txt")


def test_a_photo_keeps_its_standout_tags_and_their_ancestors():
    vocab = Vocabulary([Tag("animal"), Tag("dog", parents=("animal",)), Tag("golden retriever", parents=("dog",)),
                        *(Tag(f"thing {i}") for i in range(40))])
    scores = np.full(len(vocab), 0.2, np.float32) + np.linspace(0, 0.01, len(vocab), dtype=np.float32)
    scores[vocab.names.index("golden retriever")] = 0.9
    tags = choose_tags(scores, vocab.names, vocab)
    assert tags == [("golden retriever", pytest.approx(0.9), None), ("animal", pytest.approx(0.9), "golden retriever"),
                    ("dog", pytest.approx(0.9), "golden retriever")]
    assert choose_tags(np.full(len(vocab), 0.5, np.float32), vocab.names, vocab) == []  # nothing stands out


def test_tagged_photos_come_first_each_group_in_semantic_order():
    semantic = (np.array([0.9, 0.8, 0.7, 0.6], np.float32), np.array([1, 2, 3, 4]))
    top = merge_tops([(np.array([0.8, 0.6], np.float32), np.array([2, 4])),
                      (np.array([0.65, 0.6, 0.0], np.float32), np.array([9, 4, -1]))], k=3)
    assert list(top[1]) == [2, 9, 4]  # the best of both tags' lists, each photo once
    scores, ids = tagged_first(semantic, top, tagged={2, 4, 9})
    assert list(ids) == [2, 9, 4, 1, 3] and list(scores) == pytest.approx([0.8, 0.65, 0.6, 0.9, 0.7])


def test_tag_in_a_query_becomes_a_filter():
    only = request("tag:dog")
    assert only.terms == () and only.filters.tags == ("dog",)
    mixed = request("a beach tag:golden-retriever + snow")
    assert [t.text for t in mixed.terms] == ["a beach", "snow"] and mixed.filters.tags == ("golden-retriever",)
    with pytest.raises(BadInput, match="tag:dog cannot be weighed or subtracted"):
        request("cat - tag:dog")


# -- an index: tagged at index time ----------------------------------------------------------------


def test_photoseek_tags_lists_the_dogs_with_the_puppies(demo_index):
    out = json.loads(run_cli("tags", "--index", str(demo_index), "--json").stdout)
    counts = {t["tag"]: t["count"] for t in out["tags"]}
    assert counts["dog"] == 2 and counts["golden retriever"] == 1 and counts["animal"] >= 10
    assert out["photos"] == 34 and out["untagged"] == 0 and out["vocabulary"] == "default"
    text = run_cli("tags", "--index", str(demo_index)).stdout
    assert "     2  dog  (mammal)" in text.splitlines()


def test_tag_query_lists_the_photos_carrying_it_best_first(demo_searcher):
    assert names_of(demo_searcher.search(request("tag:dog"))) == ["puppy.jpg", "puppies.jpg"]
    assert names_of(demo_searcher.search(request("tag:puppies"))) == ["puppy.jpg", "puppies.jpg"]
    animals = names_of(demo_searcher.search(request("tag:animal", limit=50)))
    assert {"puppy.jpg", "black_cat.jpg", "chelsea.png", "jellyfish.jpg", "sea_turtle.jpg"} <= set(animals)
    assert not {"laptop.jpg", "guitar.jpg", "mountain.jpg"} & set(animals)
    # With words: the semantic ranking, among the tagged photos only.
    assert set(names_of(demo_searcher.search(request("a cat tag:dog")))) == {"puppy.jpg", "puppies.jpg"}
    with pytest.raises(BadInput, match="tag: 'dgo' is not a tag"):
        demo_searcher.search(request("tag:dgo"))


def test_broad_words_pages_neither_overlap_nor_skip(demo_searcher):
    whole = [h.photo.id for h in demo_searcher.search(request("an animal", limit=34)).hits]
    pages = [h.photo.id for offset in range(0, 34, 5)
             for h in demo_searcher.search(request("an animal", limit=5, offset=offset)).hits]
    assert pages == whole and len(set(whole)) == 34
    tagged = {h.photo.id for h in demo_searcher.search(request("tag:animal", limit=34)).hits}
    assert set(whole[:len(tagged)]) == tagged  # the animals first
    # ... and each says why: it carries the tag the query's word names.
    hits = demo_searcher.search(request("an animal", limit=34)).hits
    assert all(("tag" in h.why) == (h.photo.id in tagged) for h in hits)


def test_broad_words_bring_tagged_photos_up(demo_searcher):
    # "a reptile": the sea turtle is tagged turtle (a reptile in the hierarchy); the words' embedding alone ranks it low.
    plain = demo_searcher.settings.replace(tag_words=False)
    folded = names_of(demo_searcher.search(request("a reptile", limit=3)))
    demo_searcher.settings, keep = plain, demo_searcher.settings
    try:
        alone = names_of(demo_searcher.search(request("a reptile", limit=3)))
    finally:
        demo_searcher.settings = keep
    assert folded[0] == "sea_turtle.jpg" and "sea_turtle.jpg" not in alone


def test_the_tag_facet_counts_and_filters_agree_in_memory_and_in_sql(demo_searcher):
    counts = dict(demo_searcher.facets(Filters())["tag"])
    assert counts["dog"] == 2 and counts["fish"] >= 4
    dogs = demo_searcher.facets(Filters(tags=("dog",)))
    assert sum(n for _, n in dogs["type"]) == 2 and dict(dogs["tag"])["dog"] == 2  # the tag facet drops its own filter
    db = demo_searcher.catalogue
    with db.engine.connect() as conn:
        columns = FilterColumns.load(db.filter_columns(conn), db.tag_members(conn))
        for f in (Filters(tags=("animal",)), Filters(tags=("animal", "dog")), Filters(tags=("fish",), types=("png",)),
                  Filters(tags=("no such tag",))):
            assert list(columns.select(f)) == list(db.filter_ids(conn, f)), f


def test_the_detail_view_shows_a_photos_tags(demo_searcher, demo_index, settings_factory):
    from photoseek.web.app import create_app

    app = create_app(settings_factory(demo_index), demo_searcher)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        puppy = c.get("/api/search", params={"q": "tag:golden-retriever"}).json()["results"][0]["photo"]
        assert puppy["name"] == "puppy.jpg" and puppy["tags"] is None  # results stay light
        tags = {t["tag"]: t for t in c.get(f"/api/images/{puppy['id']}").json()["tags"]}
        assert tags["golden retriever"]["via"] is None and tags["dog"]["via"] == "golden retriever"
        page = c.get(f"/photos/{puppy['id']}").text
        assert "golden retriever" in page and "/?q=tag%3Adog" in page
        listing = c.get("/api/tags").json()
        assert {"tag": "dog", "count": 2, "parents": ["mammal"]} in listing["tags"]
        bar = c.get("/", params={"q": "a dog"}).text
        assert 'class="year tag"' in bar and "tag%3Aanimal" in bar  # the filter bar's tag facet
        bad = c.get("/api/search", params={"q": "tag:dgo"})
        assert bad.status_code == 400 and "tag: 'dgo' is not a tag" in bad.json()["message"]
        assert c.get("/api/search", params={"q": "a photo", "tag": "dog"}).json()["filters"]["tag"] == ["dog"]


def test_a_new_vocabulary_retags_from_stored_embeddings_without_reading_a_photo(
        tmp_path, samples_dir, offline_encoder, settings_factory):
    from photoseek.indexer import Indexer

    photos = tmp_path / "photos"
    shutil.copytree(samples_dir, photos, ignore=lambda d, names: [n for n in names if not n.startswith(("p", "b"))])
    index = tmp_path / "index"
    summary = Indexer(index, settings_factory(index), show_progress=False).run([photos], encoder=offline_encoder)
    assert summary.tagged == summary.added > 0
    shutil.rmtree(photos)  # nothing can be decoded now
    mine = tmp_path / "mine.txt"
    mine.write_text("pet > animal = pets\ndog > pet\ncat > pet\n", encoding="utf-8")
    con = sqlite3.connect(index / "photoseek.db")
    before = dict(con.execute("SELECT id, embedding FROM images"))
    result = run_cli("tags", "--index", str(index), "--vocabulary", str(mine), "--json")
    assert f"tagged {len(before)} photos from their stored embeddings" in result.stderr
    tags = {t["tag"]: t for t in json.loads(result.stdout)["tags"]}
    assert tags["pet"]["parents"] == ["animal"] and tags["dog"]["parents"] == ["mammal", "pet"]
    assert tags["pet"]["count"] == len(set(_carrying(index, "dog")) | set(_carrying(index, "cat"))) >= 2
    assert dict(con.execute("SELECT id, embedding FROM images")) == before
    assert con.execute("SELECT value FROM meta WHERE key = 'tag_vocabulary_file'").fetchone()[0] == str(mine.resolve())
    assert con.execute("SELECT count(DISTINCT vocabulary), count(*) FROM tagged_photos").fetchone() == (1, len(before))
    con.close()
    # The index remembers its vocabulary: listing (and indexing) use it without being told again.
    again = json.loads(run_cli("tags", "--index", str(index), "--json").stdout)
    assert again["untagged"] == 0 and again["vocabulary"] == str(mine.resolve())


def _carrying(index: Path, tag: str) -> list[int]:
    con = sqlite3.connect(index / "photoseek.db")
    try:
        return [r[0] for r in con.execute("SELECT image_id FROM photo_tags WHERE tag = ?", (tag,))]
    finally:
        con.close()


def test_a_crash_between_batches_leaves_the_rest_marked_untagged(tmp_path, demo_index, offline_encoder):
    from photoseek.storage import open_catalogue
    from photoseek.tags import tag_pending

    copy = tmp_path / "index"
    shutil.copytree(demo_index, copy, ignore=shutil.ignore_patterns("thumbnails"))
    con = sqlite3.connect(copy / "photoseek.db")
    with con:  # as if the run died after its first batch: the other photos' tags and marks never committed
        con.execute("DELETE FROM photo_tags WHERE image_id > 10")
        con.execute("DELETE FROM tagged_photos WHERE image_id > 10")
    con.close()
    catalogue = open_catalogue(copy)
    vocabulary = load_vocabulary()
    loads = []

    def texts():
        loads.append(1)
        return offline_encoder

    try:
        with catalogue.engine.connect() as conn:
            assert len(catalogue.untagged_ids(conn, vocabulary.version())) == 24
        done, generation = tag_pending(catalogue, vocabulary, texts, model_id=offline_encoder.model_id, generation=100)
        assert done == 24 and generation == 101 and loads == [1]
        with catalogue.engine.connect() as conn:
            assert len(catalogue.untagged_ids(conn, vocabulary.version())) == 0
            assert catalogue.tag_counts(conn, Filters(tags=("dog",))) [0] == ("animal", 2)
        # Nothing left to tag: no model is loaded, nothing is written.
        assert tag_pending(catalogue, vocabulary, texts, model_id=offline_encoder.model_id, generation=101) == (0, 101)
        assert loads == [1]
    finally:
        catalogue.close()


def test_an_index_from_before_tags_upgrades_and_is_tagged_without_embedding_again(
        tmp_path, demo_index, settings_factory, offline_encoder):
    from photoseek.indexer import Indexer
    from photoseek.storage import migrations

    old = tmp_path / "old"
    shutil.copytree(demo_index, old, ignore=shutil.ignore_patterns("thumbnails"))
    con = sqlite3.connect(old / "photoseek.db")
    with con:  # back to revision 0002
        for statement in ("DROP TABLE feedback", "DROP TABLE photo_tags", "DROP TABLE tagged_photos", "DROP TABLE photo_text_fts",
                          "DROP TABLE photo_text", "UPDATE alembic_version SET version_num = '0002'",
                          "DELETE FROM meta WHERE key LIKE 'tag_%'"):
            con.execute(statement)
    before = dict(con.execute("SELECT id, embedding FROM images"))
    con.close()
    summary = Indexer(old, settings_factory(old), show_progress=False).run(encoder=offline_encoder)
    assert summary.embedded == 0 and summary.tagged == len(before)
    con = sqlite3.connect(old / "photoseek.db")
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrations.HEAD
    assert dict(con.execute("SELECT id, embedding FROM images")) == before
    assert con.execute("SELECT count(*) FROM photo_tags WHERE tag = 'dog'").fetchone()[0] == 2
    con.close()


def test_postgresql_tags_the_same_way(demo_pg_searcher, demo_searcher):
    for q in ("tag:dog", "tag:fish", "a cat tag:animal", "an animal"):
        assert names_of(demo_pg_searcher.search(request(q, limit=40))) == names_of(
            demo_searcher.search(request(q, limit=40))), q
    assert demo_pg_searcher.facets(Filters())["tag"] == demo_searcher.facets(Filters())["tag"]
    assert demo_pg_searcher.tag_summary().counts == demo_searcher.tag_summary().counts
    ids = {h.photo.name: h.photo.id for h in demo_pg_searcher.search(request("tag:dog")).hits}
    assert ("dog", pytest.approx(0.98, abs=0.02), "golden retriever") in demo_pg_searcher.photo_tags(ids["puppy.jpg"])


def test_xmp_sidecars_carry_the_tags_and_leave_originals_and_foreign_sidecars_alone(tmp_path, demo_index, samples_dir):
    import hashlib
    import xml.etree.ElementTree as ET

    from photoseek.storage import open_catalogue

    photos = tmp_path / "photos"
    shutil.copytree(samples_dir, photos)
    index = tmp_path / "index"
    shutil.copytree(demo_index, index, ignore=shutil.ignore_patterns("thumbnails"))
    catalogue = open_catalogue(index)
    with catalogue.sessions.begin() as session:  # the copy's photos, not the demo index's
        from sqlalchemy import update

        from photoseek.storage.schema import ImageRow
        for image_id, path in session.execute(ImageRow.__table__.select().with_only_columns(ImageRow.id, ImageRow.path)).all():
            session.execute(update(ImageRow).where(ImageRow.id == image_id).values(path=str(photos / Path(path).name)))
    catalogue.close()
    (photos / "bear.jpg.xmp").write_text("<x:xmpmeta>my own keywords</x:xmpmeta>", encoding="utf-8")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in photos.iterdir()}

    first = run_cli("tags", "--index", str(index), "--xmp")
    written = int(first.stderr.split("XMP sidecars: ")[1].split(" written")[0])
    assert written == len(list(photos.glob("*.xmp"))) - 1 >= 30 and "1 not photoseek's (left alone)" in first.stderr
    assert (photos / "bear.jpg.xmp").read_text(encoding="utf-8") == "<x:xmpmeta>my own keywords</x:xmpmeta>"
    assert {n: h for n, h in ((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in photos.iterdir())
            if not n.endswith(".xmp")} == {n: h for n, h in before.items() if not n.endswith(".xmp")}
    ns = {"rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "dc": "http://purl.org/dc/elements/1.1/",
          "lr": "http://ns.adobe.com/lightroom/1.0/"}
    root = ET.parse(photos / "puppy.jpg.xmp").getroot()
    subjects = [li.text for li in root.findall(".//dc:subject/rdf:Bag/rdf:li", ns)]
    paths = [li.text for li in root.findall(".//lr:hierarchicalSubject/rdf:Bag/rdf:li", ns)]
    assert {"golden retriever", "dog", "animal"} <= set(subjects)
    assert "animal|mammal|dog|golden retriever" in paths
    again = run_cli("tags", "--index", str(index), "--xmp")
    assert "0 written" in again.stderr and "already up to date" in again.stderr
