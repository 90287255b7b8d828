"""A terminal search reads a SQLite catalogue with sqlite3 alone (photoseek.storage.sqlite_light.LightReader):
SQLAlchemy's import was a third of a second of every `photoseek search`. Its answers are the catalogue's."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np

from photoseek.search.query import Filters
from photoseek.storage import open_catalogue, sqlite_path
from photoseek.storage.sqlite_light import LightReader


def _both(index):
    def full():
        return open_catalogue(index, None, readonly=True)

    return LightReader.open(sqlite_path(index, None), full), full()


def test_the_light_reader_answers_as_the_catalogue_does(demo_index):
    light, full = _both(demo_index)
    try:
        with light.reading() as ours, full.reading() as theirs:
            for key in ("model_id", "dim", "generation", "no such key"):
                assert light.get_meta(ours, key) == full.get_meta(theirs, key)
            assert light.index_state(ours) == full.index_state(theirs)
            assert light.identity(ours) == full.identity(theirs) is not None
            assert light.photo_count(ours) == full.photo_count(theirs) > 10
            ids = list(range(0, light.photo_count(ours) + 3))  # and ids that are not there
            assert sorted(map(tuple, light.photo_rows(ours, ids))) == sorted(map(tuple, full.photo_rows(theirs, ids)))
            assert light.photo_rows(ours, []) == []
            assert [light.has_photo(ours, i) for i in ids] == [full.has_photo(theirs, i) for i in ids]
            words = ["coffee", "dog", "jpg", "samples", "zzzz", "sea"]
            assert light.word_counts(ours, words, 5) == full.word_counts(theirs, words, 5)
            for query in (["coffee"], ["dog", "sea"], ["samples"], ["zzzz"], []):
                assert light.keyword_search(ours, query, None, 7) == full.keyword_search(theirs, query, None, 7), query
            tags = [t for t, _ in full.tag_counts(theirs)][:6]
            assert tags
            for chosen in (tags[:1], tags, []):
                for limit in (None, 3):
                    assert (light.photos_with_tags(ours, chosen, None, limit=limit)
                            == full.photos_with_tags(theirs, chosen, None, limit=limit)), (chosen, limit)
            # What filters in memory need: a search whose words name a tag narrows to that tag's photos.
            assert light.filter_columns(ours) == full.filter_columns(theirs)
            members, theirs_members = light.tag_members(ours), full.tag_members(theirs)
            assert members.keys() == theirs_members.keys() and members
            assert all(np.array_equal(members[t], theirs_members[t]) for t in members)
            assert light._full is None  # every answer above came from sqlite3 alone
        with light.reading() as outer, light.reading() as inner:  # a read inside another's, as searches nest them
            assert light.get_meta(inner, "model_id") == light.get_meta(outer, "model_id") is not None
        assert light.writer_alive() is full.writer_alive() is False
        assert light.describe() == full.describe()
    finally:
        light.close()
        full.close()


def test_what_the_light_reader_does_not_answer_goes_to_the_full_catalogue(demo_index):
    light, full = _both(demo_index)
    try:
        with light.reading() as ours, full.reading() as theirs:
            filters = Filters(types=("jpeg",))
            assert light.keyword_search(ours, ["dog"], filters, 5) == full.keyword_search(theirs, ["dog"], filters, 5)
            assert light._full is not None
    finally:
        light.close()
        full.close()


def test_another_schema_is_left_to_the_full_catalogue(demo_index, tmp_path):
    """An index of an older (or newer) schema is opened by the full catalogue, which upgrades or refuses it."""
    copy = tmp_path / "index"
    shutil.copytree(demo_index, copy)
    con = sqlite3.connect(sqlite_path(copy, None))
    con.execute("UPDATE alembic_version SET version_num = '0001'")
    con.commit()
    con.close()
    assert LightReader.open(sqlite_path(copy, None), lambda: None) is None
    assert LightReader.open(sqlite_path(demo_index, None), lambda: None) is not None
