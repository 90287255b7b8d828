"""The path_map setting (PHOTOSEEK_PATH_MAP): a server finds indexed folders mounted elsewhere on
its machine, and serves their photos and thumbnails from there."""

from __future__ import annotations

import io
import shutil

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from photoseek.errors import BadInput
from photoseek.files import map_path, parse_path_map

NAMES = ("puppy.jpg", "coffee.png", "snow.jpg")


def test_longest_prefix_wins_on_whole_components():
    mapping = parse_path_map("/mnt/a=/x; /mnt/a/b=/y/ ;")
    assert map_path("/mnt/a/c.jpg", mapping) == "/x/c.jpg"
    assert map_path("/mnt/a/b/c.jpg", mapping) == "/y/c.jpg"  # the longer prefix
    assert map_path("/mnt/a", mapping) == "/x"
    assert map_path("/mnt/ab/c.jpg", mapping) == "/mnt/ab/c.jpg"  # not a component of /mnt/a
    assert map_path("/elsewhere/c.jpg", mapping) == "/elsewhere/c.jpg"
    assert parse_path_map(None) == parse_path_map("") == ()


@pytest.mark.parametrize("bad", ["photos=/x", "/a", "/a=/b=/c", "=/x", "/a=relative"])
def test_bad_path_map_is_bad_input_naming_the_setting(bad):
    with pytest.raises(BadInput) as caught:
        parse_path_map(f"/ok=/fine;{bad}")
    assert "PHOTOSEEK_PATH_MAP" in caught.value.message and "INDEXED=HERE" in caught.value.message
    assert repr(bad) in caught.value.message


@pytest.fixture(scope="module")
def moved(tmp_path_factory, samples_dir, offline_encoder, settings_factory):
    """A folder indexed at one path, then moved to another (as if mounted elsewhere on a server):
    (index folder, path it was indexed at, where it is now)."""
    from photoseek.indexer import Indexer

    base = tmp_path_factory.mktemp("pathmap")
    indexed = base / "mnt" / "archive"
    indexed.mkdir(parents=True)
    for name in NAMES:
        shutil.copy(samples_dir / name, indexed / name)
    index_dir = base / "index"
    Indexer(index_dir, settings_factory(index_dir), show_progress=False).run([indexed], encoder=offline_encoder)
    here = base / "Volumes" / "archive"
    here.parent.mkdir()
    indexed.rename(here)
    return index_dir, indexed, here


def serve(index_dir, settings, encoder) -> TestClient:
    from photoseek.search import Searcher
    from photoseek.web.app import create_app

    searcher = Searcher(index_dir, settings, encoder=encoder)
    return TestClient(create_app(settings, searcher), base_url="http://127.0.0.1:8000")


def test_server_serves_files_and_thumbnails_from_the_mapped_folder(moved, settings_factory, offline_encoder):
    index_dir, indexed, here = moved
    settings = settings_factory(index_dir, path_map=f"/nowhere={here.parent};{indexed}={here}")
    with serve(index_dir, settings, offline_encoder) as api:
        hits = api.get("/api/search", params={"q": "photo", "limit": 10}).json()["results"]
        assert sorted(h["photo"]["name"] for h in hits) == sorted(NAMES)
        for hit in hits:
            photo = hit["photo"]
            # Results show the path as indexed: the catalogue's, the same on every machine.
            assert photo["path"] == str(indexed / photo["name"])
            original = api.get(f"/api/images/{photo['id']}/file")
            assert original.status_code == 200
            assert original.content == (here / photo["name"]).read_bytes()
            thumb = api.get(photo["thumbnail_url"])
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
            assert max(Image.open(io.BytesIO(thumb.content)).size) <= 320


def test_without_the_map_the_moved_files_are_not_found(moved, settings_factory, offline_encoder):
    index_dir, indexed, here = moved
    settings = settings_factory(index_dir)
    with serve(index_dir, settings, offline_encoder) as api:
        photo = api.get("/api/search", params={"q": "photo", "limit": 1}).json()["results"][0]["photo"]
        assert api.get(f"/api/images/{photo['id']}/file").status_code == 404
        assert api.get(f"/api/images/{photo['id']}/thumbnail", params={"size": "large"}).status_code == 404


def test_the_map_does_not_widen_what_is_served(moved, settings_factory, offline_encoder, tmp_path):
    """A file reached through the map must still lie inside a (mapped) indexed folder: a symbolic
    link planted in the mounted copy that points outside it is not served."""
    index_dir, indexed, here = moved
    secret = tmp_path / "secret.jpg"
    shutil.copy(here / "puppy.jpg", secret)
    link = here / "puppy.jpg"
    kept = here.parent / "puppy.keep"
    link.rename(kept)
    link.symlink_to(secret)
    try:
        settings = settings_factory(index_dir, path_map=f"{indexed}={here}")
        with serve(index_dir, settings, offline_encoder) as api:
            hits = api.get("/api/search", params={"q": "photo", "limit": 10}).json()["results"]
            puppy = next(h["photo"] for h in hits if h["photo"]["name"] == "puppy.jpg")
            assert api.get(f"/api/images/{puppy['id']}/file").status_code == 404
    finally:
        link.unlink()
        kept.rename(link)


def test_bad_path_map_is_one_line_from_serve_and_searcher(moved, settings_factory):
    from photoseek.cli import app
    from photoseek.search import Searcher

    index_dir, _, _ = moved
    with pytest.raises(BadInput, match="PHOTOSEEK_PATH_MAP"):
        Searcher(index_dir, settings_factory(index_dir, path_map="archive=/Volumes/archive"))
    result = CliRunner().invoke(app, ["serve", "--index", str(index_dir)],
                                env={"PHOTOSEEK_PATH_MAP": "archive=/Volumes/archive", "PHOTOSEEK_DATABASE_URL": ""})
    assert result.exit_code == 2
    assert result.output.startswith("error: PHOTOSEEK_PATH_MAP: 'archive=/Volumes/archive' is not INDEXED=HERE")
    assert len(result.output.strip().splitlines()) == 1
