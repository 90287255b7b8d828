"""Near-duplicates: a user with edited copies of their photos asks which photos are the same picture.

The story: the demo photos plus four edited copies of each (crop keeping 70%, half size at JPEG quality
20, mirrored and brighter, rotated 5 degrees; tests/helpers.make_edited_copies), indexed once with the
bundled offline encoder. Every copy must land in its original's group, and no two different demo photos
in one group, on the command line, in the JSON API, on the page and on PostgreSQL. The grouping rules
themselves (components, the keeper and its reason, the threshold) are tested as pure functions.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from photoseek.search.duplicates import (
    MIN_MATCHED_POINTS, BadThreshold, candidate_pairs, check_threshold, connected_components, default_threshold,
    find_duplicates, fingerprint_file, matched_points, suggest_keeper,
)
from photoseek.search.engine import Photo
from photoseek.web.schemas import DuplicatesResponse

from helpers import EDITS, make_edited_copies, run_cli


# -- pure logic ---------------------------------------------------------------------------------

def photo(id: int, w: int = 100, h: int = 100, taken: datetime | None = None, file_date: datetime | None = None) -> Photo:
    return Photo(id=id, path=f"/p/{id}.jpg", width=w, height=h, size_bytes=1000, taken_at=taken, camera_make=None,
                 camera_model=None, indexed_at=datetime(2024, 1, 1), photo_date=taken or file_date,
                 date_source="exif" if taken else ("file" if file_date else None))


def test_a_chain_of_copies_is_one_group_and_separate_pairs_stay_apart():
    assert connected_components([(1, 2), (3, 4), (2, 5), (7, 6)]) == [[1, 2, 5], [3, 4], [6, 7]]
    assert connected_components([]) == []
    assert connected_components([(9, 8), (8, 7), (1, 9)]) == [[1, 7, 8, 9]]


def test_the_keeper_is_the_largest_then_the_earliest_taken_then_the_first_indexed():
    big = photo(3, 4000, 3000)
    keeper = suggest_keeper([photo(1, 2000, 1500), big, photo(2, 4000, 2000)])
    assert (keeper.photo_id, keeper.reason) == (3, "largest_resolution")
    assert "4000 x 3000" in keeper.reason_text

    early, late = datetime(2020, 5, 1, 10), datetime(2021, 1, 1)
    keeper = suggest_keeper([photo(1, taken=late), photo(2, taken=early), photo(3, 50, 50, taken=datetime(2000, 1, 1))])
    assert (keeper.photo_id, keeper.reason) == (2, "earliest_taken")
    assert "2020-05-01 10:00:00" in keeper.reason_text and "EXIF" in keeper.reason_text

    # Without EXIF the file's date counts, and says so; a photo with no date at all does not win on date.
    keeper = suggest_keeper([photo(5), photo(6, file_date=early), photo(4, file_date=late)])
    assert (keeper.photo_id, keeper.reason) == (6, "earliest_taken") and "file date" in keeper.reason_text

    keeper = suggest_keeper([photo(8), photo(7)])
    assert (keeper.photo_id, keeper.reason) == (7, "first_indexed")


@pytest.mark.parametrize("bad", [0.2, 1.5, -1.0, float("nan"), float("inf")])
def test_a_threshold_out_of_range_is_refused_naming_the_parameter(bad):
    with pytest.raises(BadThreshold) as err:
        check_threshold(bad, "--threshold")
    assert err.value.kind == "bad_threshold" and err.value.status == 400 and err.value.exit_code == 2
    assert "--threshold" in err.value.message and "0.5" in err.value.message


def test_each_encoder_has_its_default_threshold():
    assert check_threshold(None) is None and check_threshold(0.5) == 0.5 and check_threshold(1) == 1.0
    assert default_threshold("offline:lite0") < default_threshold("ViT-B-32:laion2b_s34b_b79k")


@pytest.mark.parametrize("exact_up_to", [10**9, 100], ids=["exact", "ivf"])
def test_candidates_are_the_close_neighbours_only_never_all_pairs(exact_up_to):
    rng = np.random.default_rng(1)
    n, dim, k = 3_000, 64, 4
    base = rng.normal(size=(n, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    copies = base[:50] + 0.02 * rng.normal(size=(50, dim)).astype(np.float32)  # 50 near copies
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    vectors = np.concatenate([base, copies])
    ids = np.arange(1, len(vectors) + 1) * 10
    pairs, cosines = candidate_pairs(ids, vectors, threshold=0.9, k=k, exact_up_to=exact_up_to)
    found = {tuple(p) for p in pairs.tolist()}
    assert {(int(ids[i]), int(ids[n + i])) for i in range(50)} <= found
    assert len(found) <= len(vectors) * k and (cosines >= 0.9).all() and (pairs[:, 0] < pairs[:, 1]).all()


# -- the demo photos and their edited copies -------------------------------------------------------

@pytest.fixture(scope="module")
def copies_index(tmp_path_factory, samples_dir, offline_encoder, settings_factory):
    from photoseek.indexer import Indexer

    base = tmp_path_factory.mktemp("dups")
    copies = make_edited_copies(samples_dir, base / "photos")
    index_dir = base / "index"
    Indexer(index_dir, settings_factory(index_dir), show_progress=False).run([base / "photos"], encoder=offline_encoder)
    return index_dir, copies


@pytest.fixture(scope="module")
def copies_searcher(copies_index, offline_encoder, settings_factory):
    from photoseek.search import Searcher

    searcher = Searcher(copies_index[0], settings_factory(copies_index[0]), encoder=offline_encoder)
    yield searcher
    searcher.close()


# Look-alikes: three fish, two game controllers, a puppy and puppies (the offline encoder puts them close).
LOOKALIKES = ["blue_tang.jpg", "green_fish.jpg", "red_fish.jpg", "controller.jpg", "green_controller.jpg", "puppy.jpg",
              "puppies.jpg"]


@pytest.fixture(scope="module")
def lookalikes(tmp_path_factory, samples_dir) -> tuple[Path, dict[str, list[str]]]:
    """A smaller folder for the slower paths (a separate process, PostgreSQL): the look-alikes and their copies."""
    folder = tmp_path_factory.mktemp("lookalikes") / "photos"
    return folder, make_edited_copies(samples_dir, folder, names=LOOKALIKES)


def expected_groups(copies: dict[str, list[str]]) -> list[set[str]]:
    return sorted(({original, *edited} for original, edited in copies.items()), key=sorted)


def assert_grouped_exactly(groups_by_name: list[set[str]], copies: dict[str, list[str]]) -> None:
    """Every copy with its original, no two originals together (and nothing else grouped)."""
    assert sorted(groups_by_name, key=sorted) == expected_groups(copies)


def test_every_edited_copy_lands_in_its_originals_group(copies_searcher, copies_index):
    report = find_duplicates(copies_searcher)
    assert report.threshold == default_threshold("offline:lite0") and not report.unreadable
    assert_grouped_exactly([{Path(p.path).name for p in g.photos} for g in report.groups], copies_index[1])
    for group in report.groups:
        keeper = group.photos[0]
        assert keeper.id == group.keeper.photo_id and "__" not in Path(keeper.path).name  # an original: largest
        assert keeper.width * keeper.height == max(p.width * p.height for p in group.photos)
    # Asked again at a lower threshold, more pairs are compared but the groups are the same.
    lower = find_duplicates(copies_searcher, 0.5)
    assert lower.candidate_pairs >= report.candidate_pairs and len(lower.groups) == len(report.groups)


def test_the_visual_check_sees_through_each_edit(copies_index):
    photos = copies_index[0].parent / "photos"
    original = fingerprint_file(photos / "puppy.jpg")
    for edit in EDITS:
        assert matched_points(original, fingerprint_file(photos / f"puppy__{edit}.jpg")) >= MIN_MATCHED_POINTS, edit
    # Two different photos of a similar subject are not the same picture.
    assert matched_points(original, fingerprint_file(photos / "puppies.jpg")) < MIN_MATCHED_POINTS
    assert matched_points(fingerprint_file(photos / "controller.jpg"),
                          fingerprint_file(photos / "green_controller.jpg")) < MIN_MATCHED_POINTS


def test_the_command_line_lists_groups_and_exports_json_and_csv(lookalikes, offline_encoder, settings_factory,
                                                                 tmp_path):
    from photoseek.indexer import Indexer

    folder, copies = lookalikes
    index_dir = tmp_path / "index"
    Indexer(index_dir, settings_factory(index_dir), show_progress=False).run([folder], encoder=offline_encoder)
    out = tmp_path / "dups.csv"
    result = run_cli("duplicates", "--index", str(index_dir), "--json", "--csv", str(out))
    body = DuplicatesResponse.model_validate_json(result.stdout)
    assert_grouped_exactly([{m.photo.name for m in g.photos} for g in body.groups], copies)
    assert body.duplicates == 4 * len(copies) and all(g.photos[0].keep for g in body.groups)

    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 5 * len(copies)
    assert sum(r["keep"] == "yes" for r in rows) == len(copies) and all(r["reason"] for r in rows if r["keep"] == "yes")
    assert all(datetime.fromisoformat(r["date"]).tzinfo is not None for r in rows)

    text = run_cli("duplicates", "--index", str(index_dir), "--threshold", "0.7").stdout
    assert f"{len(copies)} groups" in text and text.count("keep") >= len(copies)

    bad = run_cli("duplicates", "--index", str(index_dir), "--threshold", "0.1", check=False)
    assert bad.returncode == 2 and "--threshold" in bad.stderr and "Traceback" not in bad.stderr


def test_the_api_and_the_page_show_the_groups(copies_searcher, copies_index, settings_factory):
    from photoseek.web.app import create_app

    index_dir, copies = copies_index
    app = create_app(settings_factory(index_dir), copies_searcher)
    with TestClient(app, base_url="http://127.0.0.1:8000") as api:
        r = api.get("/api/duplicates", params={"threshold": 0.6})
        assert r.status_code == 200
        body = DuplicatesResponse.model_validate(r.json())
        assert_grouped_exactly([{m.photo.name for m in g.photos} for g in body.groups], copies)
        keeper = body.groups[0].photos[0].photo
        assert api.get(keeper.thumbnail_url).headers["content-type"] == "image/webp"
        assert datetime.fromisoformat(r.json()["groups"][0]["photos"][0]["photo"]["indexed_at"]).tzinfo is not None

        csv_response = api.get(body.csv_url)
        assert csv_response.status_code == 200 and csv_response.headers["content-type"].startswith("text/csv")
        assert csv_response.text.splitlines()[0].startswith("group,keep,photo_id")

        bad = api.get("/api/duplicates", params={"threshold": 0.1})
        assert bad.status_code == 400 and "threshold" in bad.json()["message"]
        schema = app.openapi()["paths"]["/api/duplicates"]["get"]["parameters"][0]["schema"]
        assert "0.5" in json.dumps(schema) and "1.0" in json.dumps(schema)

        page = api.get("/duplicates", params={"threshold": "0.6"}, headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert page.text.count('class="dups-group"') == len(copies)
        assert page.text.count('class="dups-photo keep"') == len(copies)
        assert 'id="dups-threshold"' in page.text and 'id="dups-csv"' in page.text
        assert 'href="/duplicates"' in api.get("/", headers={"Accept": "text/html"}).text  # linked from the header
        bad_page = api.get("/duplicates", params={"threshold": "lots"}, headers={"Accept": "text/html"})
        assert bad_page.status_code == 400 and "threshold must be a number" in bad_page.text.lower()


def test_postgresql_groups_the_same_way(lookalikes, tmp_path, offline_encoder, settings_factory, new_database):
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher

    folder, copies = lookalikes
    settings = settings_factory(tmp_path / "index", database_url=new_database())
    Indexer(settings.index_dir, settings, show_progress=False).run([folder], encoder=offline_encoder)
    searcher = Searcher(settings.index_dir, settings, encoder=offline_encoder)
    try:
        assert searcher.catalogue.engine.dialect.name == "postgresql"
        report = find_duplicates(searcher)
        assert_grouped_exactly([{Path(p.path).name for p in g.photos} for g in report.groups], copies)

        # A copy deleted since indexing cannot be checked: it is reported, and the rest still group.
        gone = next(p for g in report.groups for p in g.photos if Path(p.path).name == "puppy__rotate5.jpg")
        Path(gone.path).unlink()
        later = find_duplicates(searcher, 0.61)
        assert gone.id in later.unreadable
        puppy = next(g for g in later.groups if any(Path(p.path).name == "puppy.jpg" for p in g.photos))
        assert {Path(p.path).name for p in puppy.photos} == {"puppy.jpg", *copies["puppy.jpg"]} - {"puppy__rotate5.jpg"}
    finally:
        searcher.close()
