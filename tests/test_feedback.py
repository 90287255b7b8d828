"""Feedback marks (issue 13): a person marks results of a text query right or wrong, and the next tune
learns from them.

The marks are kept in the catalogue of either back end (one per query and photo, replaced, cleared, gone
with their photo, copied by ``photoseek migrate``); the API refuses bad input naming the parameter, a
read-only index, and writes from another site; the command line answers mistakes with exit 2; and the
story runs in a real browser: search "Gus" (a made-up name for the fish) on the demo photos, mark the
fish right and the photos above them wrong, do the same for "our trip", press Tune, and the fish come
first for "Gus" while the photos marked wrong sink.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from helpers import cli, free_port, read_only_mount, run_cli
from photoseek import feedback
from photoseek.errors import BadInput
from photoseek.search import Searcher
from photoseek.settings import Settings
from photoseek.storage import migrations, open_catalogue
from photoseek.tune import load_adapter
from photoseek.tuning import HardNegatives, _batch_negatives, info_nce

BASE = "http://127.0.0.1:8000"
FISH = ("blue_tang.jpg", "fighter_fish.jpg", "gold_fish.jpg", "green_fish.jpg", "red_fish.jpg")
# The story's marks: for each query, the photos marked right and those marked wrong (the top results
# before tuning that are not what the person meant).
STORY = {
    "Gus": (FISH, ("motorcycle_left.png", "coffee.png", "beverages.jpg")),
    "our trip": (("island.jpg", "mountain.jpg", "tent.jpg", "snow.jpg"), ("night.jpg",)),
}


def copy_index(demo_index: Path, folder: Path) -> Path:
    """A writable copy of the session's demo index (its photos stay where they are)."""
    shutil.copytree(demo_index, folder, ignore=shutil.ignore_patterns("thumbnails", "adapter.npz"))
    for leftover in ("photoseek.db-wal", "photoseek.db-shm"):
        (folder / leftover).unlink(missing_ok=True)
    return folder


def ids_by_name(catalogue) -> dict[str, int]:
    with catalogue.engine.connect() as conn:
        return {os.path.basename(p): i for i, p, *_ in catalogue.photo_words(conn)}


# -- pure logic --------------------------------------------------------------------------------


def test_queries_and_marks_are_normalised_or_refused_naming_the_parameter():
    assert feedback.normalise_query("  a   dog\ton the  beach ") == "a dog on the beach"
    assert feedback.check_mark(" Right") == "right" and feedback.check_mark("none") is None
    with pytest.raises(BadInput, match="^--right: the query is empty"):
        feedback.normalise_query("   ", name="--right")
    with pytest.raises(BadInput, match="^mark: 'maybe' is not a mark; use right, wrong or none"):
        feedback.check_mark("maybe")
    with pytest.raises(BadInput, match="^query: the query is 1001 characters long"):
        feedback.normalise_query("x" * 1001)


def test_a_wrong_mark_is_a_negative_on_both_sides_of_the_loss():
    torch = pytest.importorskip("torch")
    import math

    # Which hard negatives a batch uses: the photo's own row (image->text) and the query's rows (text->image).
    hard = HardNegatives(np.array([7, 9]), np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32), ["Gus", "trip"])
    assert _batch_negatives(hard, np.array([3, 7, 5]), ["gus", "our dog", "Gus"]) == ([0], [1], [0, 0], [0, 2])

    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    words = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    e = math.exp
    # A wrong image [0.6, 0.8] for text 0 adds the logit <t0, x> = 0.6 to text 0's text->image row only.
    image_to_text = -math.log(e(1) / (e(1) + e(0.6))) - math.log(e(0.8) / (e(0) + e(0.8)))
    text_to_image = -math.log(e(1) / (e(1) + e(0) + e(0.6))) - math.log(e(0.8) / (e(0.6) + e(0.8)))
    expected = (image_to_text / 2 + text_to_image / 2) / 2
    got = info_nce(image, words, torch.tensor(0.0), hard_images=torch.tensor([[0.6, 0.8]]),
                   hard_image_owner=torch.tensor([0]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_marks_join_the_captions_in_a_fixed_order_and_a_wrong_mark_overrules_a_caption():
    from photoseek.tune import Pair, marks_for_tuning

    class Marks:  # what marks_for_tuning reads of a catalogue
        def feedback_marks(self, conn):
            return [("Gus", 3, "/p/3.jpg", "right", None), ("Gus", 1, "/p/1.jpg", "right", None),
                    ("a dog", 2, "/p/2.jpg", "right", None), ("Gus", 9, "/p/9.jpg", "wrong", None)]

    captions = [Pair(1, "gus"), Pair(9, "Gus"), Pair(9, "goldfish")]
    pairs, wrong, right = marks_for_tuning(Marks(), None, captions)
    # Photo 1 already has the caption; photo 9's "Gus" is overruled by the wrong mark; the marks come sorted.
    assert pairs == [Pair(1, "gus"), Pair(9, "goldfish"), Pair(3, "Gus"), Pair(2, "a dog")]
    assert wrong == [Pair(9, "Gus")] and right == 3


# -- storage, both back ends -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_marks_are_kept_replaced_cleared_and_go_with_their_photo(backend, demo_index, tmp_path, new_database):
    index = copy_index(demo_index, tmp_path / "index")
    url = None
    if backend == "postgresql":
        # A mark made in SQLite travels with 'photoseek migrate' (and its time with it).
        with feedback.writer(index, None) as catalogue:
            fish = ids_by_name(catalogue)["red_fish.jpg"]
            carried = feedback.set_mark(catalogue, "Gus", fish, "right")
        from photoseek.storage.copy import migrate

        url = new_database()
        migrate(index, None, index, url, settings=Settings())
        with feedback.writer(index, url) as catalogue:
            assert feedback.marks(catalogue) == [carried]
            feedback.clear(catalogue)

    with feedback.writer(index, url) as catalogue:
        ids = ids_by_name(catalogue)
        first = feedback.set_mark(catalogue, feedback.normalise_query(" a  dog "), ids["puppy.jpg"], "right")
        assert (first.query, first.mark, first.path.endswith("puppy.jpg")) == ("a dog", "right", True)
        assert first.created_at.utcoffset() is not None
        again = feedback.set_mark(catalogue, "a dog", ids["puppy.jpg"], "wrong")  # marking again replaces
        feedback.set_mark(catalogue, "a dog", ids["puppies.jpg"], "right")
        feedback.set_mark(catalogue, "a cat", ids["black_cat.jpg"], "right")
        assert [(m.image_id, m.mark) for m in feedback.marks(catalogue, "a dog")] == [
            (ids["puppies.jpg"], "right"), (ids["puppy.jpg"], "wrong")]  # newest first
        assert again.mark == "wrong" and len(feedback.marks(catalogue)) == 3
        assert feedback.set_mark(catalogue, "a dog", ids["puppies.jpg"], None) is None  # "none" clears it
        with pytest.raises(feedback.UnknownPhoto, match="image_id: no photo has id 999999"):
            feedback.set_mark(catalogue, "a dog", 999999, "right")

        with catalogue.sessions.begin() as session:  # the photo leaves the index (deleted, or re-indexed)
            catalogue.remove_photos(session, [ids["puppy.jpg"]])
        assert [m.query for m in feedback.marks(catalogue)] == ["a cat"]
        assert feedback.clear(catalogue, "a cat") == 1 and feedback.marks(catalogue) == []

    # A server's read-only connection sees what was written.
    with feedback.writer(index, url) as catalogue:
        feedback.set_mark(catalogue, "a cat", ids["black_cat.jpg"], "wrong")
    reader = open_catalogue(index, url, readonly=True)
    try:
        assert [(m.query, m.mark) for m in feedback.marks(reader)] == [("a cat", "wrong")]
    finally:
        reader.close()


def test_an_index_from_before_feedback_is_upgraded_in_place(demo_index, tmp_path, offline_encoder, settings_factory):
    import sqlite3

    old = copy_index(demo_index, tmp_path / "old")
    con = sqlite3.connect(old / "photoseek.db")
    with con:  # back to revision 0004: no feedback table
        for statement in ("DROP TABLE feedback", "UPDATE alembic_version SET version_num = '0004'"):
            con.execute(statement)
    before = dict(con.execute("SELECT id, embedding FROM images"))
    con.close()
    searcher = Searcher(old, settings_factory(old), encoder=offline_encoder)  # a server starting up upgrades it
    try:
        assert searcher.search_text("a dog", limit=1)
        with searcher.catalogue.engine.connect() as conn:
            assert "feedback" in inspect(conn).get_table_names()
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == migrations.HEAD == "0005"
    finally:
        searcher.close()
    with feedback.writer(old, None) as catalogue:
        assert feedback.set_mark(catalogue, "a dog", ids_by_name(catalogue)["puppy.jpg"], "right").mark == "right"
    con = sqlite3.connect(old / "photoseek.db")
    assert dict(con.execute("SELECT id, embedding FROM images")) == before  # nothing embedded again
    con.close()


# -- the command line --------------------------------------------------------------------------


def test_the_command_line_marks_lists_and_clears_and_answers_mistakes_with_exit_2(demo_index, tmp_path):
    from typer.testing import CliRunner

    from photoseek.cli import app

    def photoseek(*args: str):  # in-process (a few seconds saved per command); one real process below
        return CliRunner().invoke(app, [*args, "--index", str(index)], env={"PHOTOSEEK_DATABASE_URL": ""})

    index = copy_index(demo_index, tmp_path / "index")
    red_fish = Path(demo_index).parent / "photos" / "red_fish.jpg"
    marked = run_cli("feedback", "--right", "  Gus ", str(red_fish), "--index", str(index))
    assert marked.stdout.strip() == f"marked {red_fish} right for 'Gus'"
    assert photoseek("feedback", "--wrong", "Gus", "5").exit_code == 0  # by id
    listed = json.loads(photoseek("feedback", "--json").stdout)
    assert listed["total"] == 2 and listed["writable"] is True
    assert {(m["query"], Path(m["path"]).name, m["mark"]) for m in listed["marks"]} == {
        ("Gus", "red_fish.jpg", "right"), ("Gus", "black_cat.jpg", "wrong")}
    assert all(m["created_at"].endswith("+00:00") for m in listed["marks"])
    plain = photoseek("feedback")
    assert "right  " in plain.stdout and "red_fish.jpg  'Gus'" in plain.stdout and "2 marks" in plain.stderr

    mistake = run_cli("feedback", "--right", "Gus", str(tmp_path / "nope.jpg"), "--index", str(index), check=False)
    assert mistake.returncode == 2 and "Traceback" not in mistake.stderr
    assert mistake.stderr.strip() == f"error: {tmp_path / 'nope.jpg'} is not an indexed photo (give its path as " \
        "indexed, or its id from 'photoseek search')"
    for args, message in (
            (("--right", "   ", "5"), "--right: the query is empty"),
            (("--wrong", "Gus", "999999"), "no photo has id 999999"),
            (("--right", "Gus"), "say which photo"),
            (("--right", "Gus", "5", "--clear"), "give one of")):
        result = photoseek("feedback", *args)
        assert result.exit_code == 2 and message in result.stderr, args

    # Too few pairs: the message counts the marks; --no-feedback leaves them out.
    refused = photoseek("tune")
    assert refused.exit_code == 2
    assert "too few captioned photos to learn from: 1 in the captions and keywords stored in the photos and 1 " \
           "'right' mark" in refused.stderr
    refused = photoseek("tune", "--no-feedback")
    assert refused.exit_code == 2 and "0 in the captions and keywords stored in the photos (feedback marks left out" \
        in refused.stderr
    assert photoseek("feedback", "--clear", "--query", "Gus").stdout.strip() == "removed 2 marks of 'Gus'"
    assert not (index / "adapter.npz").exists()


# -- the API -----------------------------------------------------------------------------------


@contextmanager
def serving_api(index: Path, url: str | None, encoder, settings_factory):
    """A client of the app over ``index`` (or the catalogue at ``url``)."""
    from photoseek.web.app import create_app

    settings = settings_factory(index, database_url=url)
    searcher = Searcher(index, settings, encoder=encoder)
    try:
        with TestClient(create_app(settings, searcher), base_url=BASE) as client:
            yield client
    finally:
        searcher.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request, demo_index, tmp_path, offline_encoder, settings_factory, new_database):
    """A client of the app over a writable copy of the demo index, in each back end."""
    from photoseek.storage.copy import migrate

    index = copy_index(demo_index, tmp_path / "index")
    url = None
    if request.param == "postgresql":
        url = new_database()
        migrate(index, None, index, url, settings=Settings())
    with serving_api(index, url, offline_encoder, settings_factory) as client:
        yield client


def test_the_api_validates_marks_and_refuses_other_sites(api):
    client = api
    hit = client.get("/api/search", params={"q": "Gus", "limit": 1}).json()["results"][0]["photo"]

    stored = client.post("/api/feedback", json={"query": " Gus  ", "image_id": hit["id"], "mark": "wrong"})
    assert stored.status_code == 200
    assert stored.json()["mark"]["query"] == "Gus" and stored.json()["total"] == 1
    assert stored.json()["mark"]["created_at"].endswith("Z")

    for body, status, message in (
            ({"query": "Gus", "image_id": hit["id"], "mark": "maybe"}, 400, "mark: "),
            ({"query": "Gus", "image_id": 999999, "mark": "right"}, 404, "image_id: no photo has id 999999"),
            ({"query": "   ", "image_id": hit["id"], "mark": "right"}, 400, "query: "),
            ({"query": "Gus", "image_id": 0, "mark": "right"}, 400, "image_id: "),
            ({"query": "Gus", "mark": "right"}, 400, "image_id: ")):
        answer = client.post("/api/feedback", json=body)
        assert answer.status_code == status and answer.json()["message"].startswith(message), (body, answer.json())

    # Another site's page (the browser says so in Origin / Sec-Fetch-Site) cannot mark or tune; nothing changes.
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site", "Origin": "https://evil.127.0.0.1.nip.io"}):
        for path, body in (("/api/feedback", {"query": "Gus", "image_id": hit["id"], "mark": "right"}),
                           ("/api/tune", {})):
            refused = client.post(path, json=body, headers=headers)
            assert refused.status_code == 403 and "another site" in refused.json()["message"], (path, headers)
    same_site = client.post("/api/feedback", headers={"Origin": BASE},
                            json={"query": "Gus", "image_id": hit["id"], "mark": "none"})
    assert same_site.status_code == 200 and same_site.json() == {"mark": None, "total": 0}
    # Behind a reverse proxy that rewrites Host, the browser's own page still passes.
    for headers in ({"Sec-Fetch-Site": "same-origin", "Origin": "https://photos.example"},
                    {"Origin": "https://photos.example", "X-Forwarded-Host": "photos.example"}):
        behind = client.post("/api/feedback", headers=headers, json={"query": "Gus", "image_id": hit["id"], "mark": "none"})
        assert behind.status_code == 200, headers
    assert client.get("/api/feedback").json() == {"marks": [], "total": 0, "writable": True}
    few = client.post("/api/tune", json={})  # a state of the index, not a bad request: 409, counting the marks
    assert few.status_code == 409 and "too few captioned photos to learn from: 0 in" in few.json()["message"]
    assert "and 0 'right' marks" in few.json()["message"]

    # The schema declares the routes with their constraints.
    schema = client.get("/openapi.json").json()
    body = schema["components"]["schemas"]["FeedbackIn"]
    assert body["properties"]["mark"]["enum"] == ["right", "wrong", "none"]
    assert body["properties"]["image_id"]["minimum"] == 1 and body["properties"]["query"]["maxLength"] == 1000
    assert {"403", "404", "409"} <= set(schema["paths"]["/api/feedback"]["post"]["responses"])
    assert {"get", "post"} <= set(schema["paths"]["/api/tune"])


def test_with_a_token_a_mark_needs_it_as_every_request_does(demo_index, tmp_path, offline_encoder, settings_factory):
    from photoseek.web.app import create_app

    token = "s3cret-token-for-tests-0123456789"
    index = copy_index(demo_index, tmp_path / "index")
    searcher = Searcher(index, settings_factory(index), encoder=offline_encoder)
    try:
        app = create_app(settings_factory(index, token=token), searcher)
        with TestClient(app, base_url="http://photos.example:8000") as client:
            body = {"query": "Gus", "image_id": 1, "mark": "right"}
            # A cross-site form or fetch carries no cookie (SameSite=Lax) and no token: refused.
            assert client.post("/api/feedback", json=body, headers={"Origin": "https://evil.example"}).status_code == 401
            assert client.post("/api/feedback", json=body).status_code == 401
            auth = {"Authorization": f"Bearer {token}"}
            assert client.post("/api/feedback", json=body, headers={**auth, "Origin": "https://evil.example"}
                               ).status_code == 403
            assert client.post("/api/feedback", json=body, headers=auth).status_code == 200
    finally:
        searcher.close()


def test_one_tune_at_a_time(demo_index, tmp_path, offline_encoder, settings_factory, monkeypatch):
    import photoseek.tune

    started, release = threading.Event(), threading.Event()

    def slow_tune(*args, **kwargs):
        started.set()
        release.wait(30)
        raise photoseek.tune.NotApplied("the adapter did not improve held-out recall; nothing changed")

    monkeypatch.setattr(photoseek.tune, "tune", slow_tune)
    index = copy_index(demo_index, tmp_path / "index")
    with serving_api(index, None, offline_encoder, settings_factory) as client:
        first: list = []
        worker = threading.Thread(target=lambda: first.append(client.post("/api/tune", json={})))
        worker.start()
        try:
            assert started.wait(30)
            second = client.post("/api/tune", json={})
            assert second.status_code == 409 and "already running" in second.json()["message"]
        finally:
            release.set()
            worker.join(30)
        assert first[0].status_code == 409 and "did not improve" in first[0].json()["message"]
        assert client.post("/api/tune", json={"force": "yes please"}).status_code == 400  # declared: a boolean


def test_a_read_only_index_refuses_marks_and_tunes_and_says_so(demo_index, tmp_path):
    ro = copy_index(demo_index, tmp_path / "ro")
    prefix = read_only_mount(ro)
    if prefix is None:
        pytest.skip("needs root and unshare to mount a folder read-only")
    port = free_port()
    server = subprocess.Popen([*prefix, *cli("serve", "--index", str(ro), "--port", str(port))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"

    def call(path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, marks = call("/api/feedback")
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert (status, marks["writable"]) == (200, False)  # the page hides the buttons
        status, refused = call("/api/feedback", {"query": "Gus", "image_id": 1, "mark": "right"})
        assert status == 409 and refused["message"].startswith("this index is read-only: ")
        status, refused = call("/api/tune", {})
        assert status == 409 and refused["message"].startswith("this index is read-only: ")
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- the story, in a real browser ---------------------------------------------------------------


def ranks(searcher: Searcher, query: str) -> dict[str, int]:
    return {h.photo.name: r for r, h in enumerate(searcher.search_text(query, limit=100), 1)}


@pytest.mark.browser
def test_marking_results_in_the_browser_and_tuning_changes_the_ranking(demo_index, tmp_path, offline_encoder,
                                                                       settings_factory):
    """The story: search, mark right and wrong on the page, press Tune; the page's next answer for the
    query has the marked-right photos higher and the marked-wrong ones lower."""
    pytest.importorskip("playwright.sync_api")
    from test_browser import CHROMIUM, open_page, serving

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    index = copy_index(demo_index, tmp_path / "index")
    searcher = Searcher(index, settings_factory(index), encoder=offline_encoder)
    before = {q: ranks(searcher, q) for q in STORY}

    def names_on_page(pg) -> list[str]:
        return pg.locator("#grid .tile .tile-name").all_text_contents()

    with serving(searcher, settings_factory, index, page_size=40) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            pages = open_page(browser, url)
            pg = next(pages)
            for query, (right, wrong) in STORY.items():
                pg.goto(f"/?q={query.replace(' ', '+')}")
                expect(pg.locator("#grid .tile")).to_have_count(34)
                assert names_on_page(pg) == sorted(before[query], key=before[query].get)  # the page ranks as the engine
                for names, mark in ((right, "right"), (wrong, "wrong")):
                    for name in names:
                        tile = pg.locator("#grid .tile", has=pg.locator(".tile-name", has_text=name))
                        tile.hover()
                        tile.locator(f".mark-{mark}").click()
                        expect(tile.locator(f".mark-{mark}")).to_have_attribute("aria-pressed", "true")
            # A click on a pressed button takes the mark back; another marks it again (toggle).
            tile = pg.locator("#grid .tile", has=pg.locator(".tile-name", has_text="night.jpg"))
            tile.hover()
            tile.locator(".mark-wrong").click()
            expect(tile.locator(".mark-wrong")).to_have_attribute("aria-pressed", "false")
            tile.locator(".mark-wrong").click()
            expect(tile.locator(".mark-wrong")).to_have_attribute("aria-pressed", "true")

            # The marks are in the index: a reload shows them.
            pg.goto("/?q=Gus")
            expect(pg.locator("#grid .mark-right[aria-pressed=true]")).to_have_count(len(FISH))
            expect(pg.locator("#grid .mark-wrong[aria-pressed=true]")).to_have_count(3)
            tune = pg.locator("#tune")
            expect(tune).to_have_text("Tune with 13 marks")
            tune.click()
            expect(pg.locator("#tune-outcome")).to_contain_text("tuned: adapter v1", timeout=60_000)
            expect(pg.locator("#tune-outcome")).to_contain_text("9 right and 4 wrong marks")
            # The page asks again after a tune: the fish first.
            expect(pg.locator("#grid .tile .tile-name").first).to_have_text(re.compile("|".join(FISH)), timeout=10_000)
            after_page = names_on_page(pg)
            assert pg.problems == []
            next(pages, None)
        finally:
            browser.close()

    after = {q: ranks(searcher, q) for q in STORY}
    searcher.close()
    assert after_page == sorted(after["Gus"], key=after["Gus"].get)
    for query, (right, wrong) in STORY.items():
        moved = {n: (before[query][n], after[query][n]) for n in right + wrong}
        print(query, moved)  # the ranks the README reports (pytest -s)
    gus_before, gus_after = before["Gus"], after["Gus"]
    assert set(sorted(gus_after, key=gus_after.get)[:len(FISH)]) == set(FISH)  # the five fish lead
    assert all(gus_after[n] < gus_before[n] for n in FISH if gus_before[n] > len(FISH))
    assert all(gus_after[n] > gus_before[n] for n in STORY["Gus"][1])  # those marked wrong went down
    trip_before, trip_after = before["our trip"], after["our trip"]
    assert np.mean([trip_after[n] for n in STORY["our trip"][0]]) < np.mean([trip_before[n] for n in STORY["our trip"][0]])
    assert trip_after["night.jpg"] > trip_before["night.jpg"]
    summary = load_adapter(index).summary  # what 'photoseek tune --report' shows
    assert (summary["marks_right"], summary["marks_wrong"], summary["source"]) == (9, 4, "catalogue+feedback")
