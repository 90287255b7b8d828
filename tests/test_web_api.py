"""The HTTP API and the server-rendered page, through FastAPI's test client.

Runs the real search stack (bundled offline encoder, the demo index) behind the app.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from photoseek.web import security
from photoseek.web.app import create_app
from photoseek.web.main import run as serve

BASE = "http://127.0.0.1:8000"
TOKEN = "s3cret-token-for-tests-0123456789"
XSS_NAME = '"><img src=x onerror=alert(1)>.jpg'


def client(app, **kw) -> TestClient:
    return TestClient(app, base_url=BASE, **kw)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, demo_searcher, settings_factory, demo_index):
    """The demo photos behind the app, in each back end: every test using it runs on both."""
    if request.param == "sqlite":
        app = create_app(settings_factory(demo_index), demo_searcher)
        app.state.index_dir = demo_index
        return app
    searcher = request.getfixturevalue("demo_pg_searcher")
    app = create_app(searcher.settings, searcher)
    app.state.index_dir = searcher.files.root
    return app


@pytest.fixture(scope="module")
def api(app):
    with client(app) as c:
        yield c


@pytest.fixture(scope="module")
def ids(api) -> dict[str, int]:
    """Photo name -> id, from a search that returns everything."""
    r = api.get("/api/search", params={"q": "photo", "limit": 200})
    return {h["photo"]["name"]: h["photo"]["id"] for h in r.json()["results"]}


def names(response) -> list[str]:
    return [h["photo"]["name"] for h in response.json()["results"]]


def oriented_jpeg(size=(200, 100), orientation=6) -> bytes:
    img = Image.new("RGB", size, (200, 30, 30))
    img.paste((30, 30, 200), (size[0] // 2, 0, size[0], size[1]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    return out.getvalue()


def build_index(index_dir: Path, folder: Path, encoder, settings_factory) -> None:
    from photoseek.indexer import Indexer

    Indexer(index_dir, settings_factory(index_dir), show_progress=False).run([folder], encoder=encoder)


@pytest.fixture(scope="module")
def small(tmp_path_factory, offline_encoder, settings_factory, samples_dir, edge_dir):
    """A tiny index with awkward members: a rotated photo, a file name full of HTML, a broken file."""
    base = tmp_path_factory.mktemp("small")
    photos = base / "photos"
    photos.mkdir()
    shutil.copy(samples_dir / "rocket.jpg", photos / XSS_NAME)
    shutil.copy(samples_dir / "coffee.png", photos / "coffee.png")
    (photos / "rotated.jpg").write_bytes(oriented_jpeg())
    shutil.copy(edge_dir / "broken.png", photos / "broken.png")
    index = base / "index"
    build_index(index, photos, offline_encoder, settings_factory)
    from photoseek.search import Searcher

    searcher = Searcher(index, settings_factory(index), encoder=offline_encoder)
    app = create_app(settings_factory(index), searcher)
    with client(app) as c:
        found = c.get("/api/search", params={"q": "anything", "limit": 10}).json()["results"]
        c.ids = {h["photo"]["name"]: h["photo"]["id"] for h in found}
        c.index_dir, c.photos = index, photos
        yield c
    searcher.close()


# -- text search --------------------------------------------------------------------------------


@pytest.mark.parametrize("query,expected", [("a cup of coffee", "coffee.png"), ("a rocket", "rocket.jpg"),
                                            ("a sea turtle", "sea_turtle.jpg")])
def test_text_search_puts_the_right_photo_first(api, query, expected):
    r = api.get("/api/search", params={"q": query})
    assert r.status_code == 200
    assert names(r)[0] == expected


def test_text_search_shape_and_paging(api):
    first = api.get("/api/search", params={"q": "a cat", "limit": 5}).json()
    assert first["kind"] == "text" and first["query"] == "a cat"
    assert first["offset"] == 0 and first["limit"] == 5 and first["next_offset"] == 5
    assert [h["rank"] for h in first["results"]] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in first["results"]]
    assert scores == sorted(scores, reverse=True)
    photo = first["results"][0]["photo"]
    assert set(photo) >= {"id", "name", "path", "width", "height", "size_bytes", "taken_at", "camera", "indexed_at",
                          "thumbnail_url", "preview_url", "file_url", "similar_url", "page_url"}
    assert photo["thumbnail_url"].startswith(f"/api/images/{photo['id']}/thumbnail?v=")

    second = api.get("/api/search", params={"q": "a cat", "limit": 5, "offset": 5}).json()
    assert [h["rank"] for h in second["results"]] == [6, 7, 8, 9, 10]
    assert not {h["photo"]["id"] for h in first["results"]} & {h["photo"]["id"] for h in second["results"]}

    everything = api.get("/api/search", params={"q": "a cat", "limit": 200}).json()
    assert len(everything["results"]) == 34 and everything["next_offset"] is None
    past = api.get("/api/search", params={"q": "a cat", "offset": 1000}).json()
    assert past["results"] == [] and past["next_offset"] is None


@pytest.mark.parametrize("params,needle", [
    ({}, "give q"),
    ({"q": "   "}, "empty"),
    ({"q": "x" * 501}, "q: string should have at most 500 characters"),
    ({"q": "cat", "after": "2021-02-30"}, "after"),
    ({"q": "cat", "after": "2022-01-01", "before": "2021-01-01"}, "later than before"),
    ({"q": "cat", "sort": "random"}, "sort"),
    ({"q": "cat", "min_score": "high"}, "min_score"),
    ({"q": "cat", "orientation": "diagonal"}, "orientation"),
    ({"q": "cat -"}, "ends with an operator"),
    ({"q": "0:cat"}, "weight of 0"),
    ({"q": "- cat"}, "positive weight"),
    ({"q": "cat", "limit": 0}, "limit"),
    ({"q": "cat", "limit": 201}, "limit"),
    ({"q": "cat", "limit": "many"}, "limit"),
    ({"q": "cat", "offset": -1}, "offset"),
])
def test_bad_queries_are_400_with_a_message(api, params, needle):
    r = api.get("/api/search", params=params)
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == 400 and body["error"] == "Bad Request"
    assert needle in body["message"].lower()


def test_query_length_limit_comes_from_settings(demo_searcher, settings_factory, demo_index):
    app = create_app(settings_factory(demo_index, max_query_chars=10), demo_searcher)
    with client(app) as c:
        assert c.get("/api/search", params={"q": "a" * 10}).status_code == 200
        r = c.get("/api/search", params={"q": "a" * 11})
        assert r.status_code == 400 and "at most 10 characters" in r.json()["message"]
        assert create_app(settings_factory(demo_index, max_query_chars=10), demo_searcher).openapi()["paths"][
            "/api/search"]["get"]["parameters"][0]["schema"]["anyOf"][0]["maxLength"] == 10  # and the schema says so


# -- POST /api/search: weighted terms, uploaded photos as base64 ------------------------------------


def test_post_search_takes_weighted_terms_photos_and_filters(api, ids, samples_dir):
    import base64

    rocket = base64.b64encode((samples_dir / "rocket.jpg").read_bytes()).decode()
    r = api.post("/api/search", json={"terms": [{"image": rocket}], "limit": 2})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "image" and r.json()["results"][0]["photo"]["name"] == "rocket.jpg"

    cat = ids["black_cat.jpg"]
    body = {"terms": [{"photo_id": cat}, {"text": "a dog", "weight": 2}], "limit": 4}
    r = api.post("/api/search", json=body).json()
    assert r["kind"] == "similar" and r["source"]["id"] == cat and r["results"][0]["photo"]["name"] == "puppy.jpg"
    assert [t["kind"] for t in r["terms"]] == ["photo", "text"] and r["query"] == "2:a dog"
    get = api.get("/api/search", params={"similar": cat, "q": "2:a dog", "limit": 4}).json()
    assert get["results"] == r["results"]  # the same search, asked either way

    pngs = api.post("/api/search", json={"q": "a cat", "filters": {"type": ["png"]}, "limit": 50}).json()
    assert {h["photo"]["file_type"] for h in pngs["results"]} == {"png"} and len(pngs["results"]) == 4


@pytest.mark.parametrize("body, status, needle", [
    ({"terms": []}, 400, "empty"),
    ({"terms": [{"text": "a cat", "weight": 0}]}, 400, "weight of 0"),
    ({"terms": [{"text": "a cat", "photo_id": 1}]}, 400, "exactly one of"),
    ({"terms": [{"text": "a cat", "weight": "heavy"}]}, 400, "weight"),
    ({"terms": [{"image": "not base64!"}]}, 400, "base64"),
    ({"terms": [{"image": "aGVsbG8gd29ybGQ="}]}, 415, "not an image"),
    ({"terms": [{"photo_id": 999999}]}, 404, "no photo has id 999999"),
    ({"q": "a cat", "filters": {"after": "2022-01-01", "before": "2021-01-01"}}, 400, "later than before"),
    ({"q": "a cat", "sort": "random"}, 400, "sort"),
    # Exactly the JSON types the schema declares (the contract fuzzer found true taken for a number):
    ({"q": "a cat", "filters": {"min_pixels": True}}, 400, "min_pixels"),
    ({"q": "a cat", "limit": "5"}, 400, "limit"),
    ({"q": "a cat", "filters": {"after": 0}}, 400, "after"),
])
def test_post_search_bad_requests_say_what_is_wrong(api, body, status, needle):
    r = api.post("/api/search", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]


# -- reverse image search -----------------------------------------------------------------------


def test_image_search_multipart_and_raw(api, samples_dir):
    data = (samples_dir / "sea_turtle.jpg").read_bytes()
    r = api.post("/api/search/image", files={"file": ("turtle.jpg", data, "image/jpeg")}, params={"limit": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "image" and body["query"] is None and len(body["results"]) == 3
    assert names(r)[0] == "sea_turtle.jpg"
    assert body["results"][0]["score"] > 0.99

    raw = api.post("/api/search/image", content=data, headers={"content-type": "image/jpeg"}, params={"limit": 3})
    assert raw.status_code == 200 and names(raw) == names(r)

    page2 = api.post("/api/search/image", files={"file": ("t.jpg", data)}, params={"limit": 3, "offset": 3})
    assert [h["rank"] for h in page2.json()["results"]] == [4, 5, 6]
    assert not set(names(page2)) & set(names(r))


def test_image_search_judges_content_not_name_or_type(api, samples_dir):
    png = (samples_dir / "coffee.png").read_bytes()
    r = api.post("/api/search/image", files={"file": ("notes.txt", png, "text/plain")})
    assert r.status_code == 200 and names(r)[0] == "coffee.png"
    fake = api.post("/api/search/image", files={"file": ("photo.jpg", b"<html>not a photo</html>", "image/jpeg")})
    assert fake.status_code == 415 and "not an image" in fake.json()["message"]


@pytest.mark.parametrize("kwargs,status,needle", [
    ({"files": {"file": ("a.jpg", b"", "image/jpeg")}}, 400, "empty"),
    ({"files": {"note": (None, "hello")}}, 400, "no file"),
    ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "multipart"),
    ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}}, 400, "boundary"),
])
def test_image_search_bad_requests(api, kwargs, status, needle):
    r = api.post("/api/search/image", **kwargs)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]


def test_corrupt_image_is_400(api, samples_dir):
    data = (samples_dir / "rocket.jpg").read_bytes()[:2000]  # a recognisable but truncated JPEG
    r = api.post("/api/search/image", files={"file": ("cut.jpg", data, "image/jpeg")})
    assert r.status_code == 400 and "cannot be read" in r.json()["message"]


def test_decompression_bomb_is_400(api, edge_dir):
    r = api.post("/api/search/image", files={"file": ("bomb.gif", (edge_dir / "decompression_bomb.gif").read_bytes())})
    assert r.status_code == 400 and "too large" in r.json()["message"]


def test_pixel_limit_comes_from_settings(demo_searcher, settings_factory, demo_index, samples_dir):
    from photoseek.search import Searcher

    strict_settings = settings_factory(demo_index, max_image_pixels=10_000)
    strict = Searcher(demo_index, strict_settings, encoder=demo_searcher.encoder)
    try:
        with client(create_app(strict_settings, strict)) as c:
            r = c.post("/api/search/image", files={"file": ("r.jpg", (samples_dir / "rocket.jpg").read_bytes())})
            assert r.status_code == 400 and "too large" in r.json()["message"]
    finally:
        strict.close()


def test_upload_size_limit_is_413(demo_searcher, settings_factory, demo_index, samples_dir):
    app = create_app(settings_factory(demo_index, max_upload_bytes=20_000), demo_searcher)
    small_png = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(small_png, "PNG")
    with client(app) as c:
        assert c.post("/api/search/image", files={"file": ("s.png", small_png.getvalue())}).status_code == 200
        big = (samples_dir / "rocket.jpg").read_bytes()
        assert len(big) > 20_000
        r = c.post("/api/search/image", files={"file": ("big.jpg", big)})
        assert r.status_code == 413 and "too large" in r.json()["message"]
        raw = c.post("/api/search/image", content=big, headers={"content-type": "application/octet-stream"})
        assert raw.status_code == 413


def test_upload_stays_in_memory(api, samples_dir, monkeypatch):
    import tempfile

    def no_disk(*a, **k):
        raise AssertionError("an upload touched the disk")

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "mkstemp", no_disk)
    data = (samples_dir / "guitar.jpg").read_bytes() + b"\0" * (2 << 20)  # past Starlette's 1 MB spooling size
    r = api.post("/api/search/image", files={"file": ("g.jpg", data)})
    assert r.status_code == 200 and names(r)[0] == "guitar.jpg"


# -- photos by id -------------------------------------------------------------------------------


def test_similar_leaves_the_photo_out(api, ids):
    r = api.get(f"/api/images/{ids['chelsea.png']}/similar", params={"limit": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["kind"] == "similar" and body["source"]["name"] == "chelsea.png"
    assert "chelsea.png" not in names(r)
    assert names(r)[0] == "black_cat.jpg"  # the other cat


@pytest.mark.parametrize("path", ["/api/images/{}", "/api/images/{}/similar", "/api/images/{}/thumbnail",
                                  "/api/images/{}/file"])
@pytest.mark.parametrize("bad", ["999999", "0", "abc", "1.5", str(2**70)])
def test_unknown_ids_are_404(api, path, bad):
    r = api.get(path.format(bad))
    assert r.status_code == 404
    assert r.json()["error"] == "Not Found" and "no photo has id" in r.json()["message"]


def test_metadata(api, ids):
    r = api.get(f"/api/images/{ids['rocket.jpg']}")
    assert r.status_code == 200
    photo = r.json()
    assert photo["name"] == "rocket.jpg" and photo["path"].endswith("rocket.jpg")
    assert photo["width"] > 0 and photo["height"] > 0 and photo["size_bytes"] > 0


def test_thumbnail_is_small_webp_and_cached_on_disk(api, ids):
    photo = api.get(f"/api/images/{ids['rocket.jpg']}").json()
    r = api.get(photo["thumbnail_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert "immutable" in r.headers["cache-control"]
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "WEBP" and max(img.size) == min(320, max(photo["width"], photo["height"]))
    assert abs(img.size[0] / img.size[1] - photo["width"] / photo["height"]) < 0.02
    cached = list((api.app.state.index_dir / "thumbnails" / "small").rglob(f"{photo['id']}-*.webp"))
    assert len(cached) == 1 and cached[0].read_bytes() == r.content

    large = api.get(photo["preview_url"])
    assert large.status_code == 200
    assert max(Image.open(io.BytesIO(large.content)).size) == min(1600, max(photo["width"], photo["height"]))
    assert api.get(f"/api/images/{photo['id']}/thumbnail?size=huge").status_code == 400


def test_thumbnail_applies_exif_orientation(small):
    r = small.get(f"/api/images/{small.ids['rotated.jpg']}/thumbnail")
    assert r.status_code == 200
    w, h = Image.open(io.BytesIO(r.content)).size
    assert h > w  # stored 200x100, displayed (orientation 6) 100x200
    meta = small.get(f"/api/images/{small.ids['rotated.jpg']}").json()
    assert (meta["width"], meta["height"]) == (100, 200)


def test_file_is_the_original(api, ids, demo_index, samples_dir):
    r = api.get(f"/api/images/{ids['coffee.png']}/file")
    assert r.status_code == 200
    assert r.content == (samples_dir / "coffee.png").read_bytes()
    assert r.headers["content-type"] == "image/png"
    assert "sandbox" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_paths_from_the_request_are_never_files(api):
    for path in ("/api/images/../../etc/passwd/file", "/api/images/%2e%2e%2fetc%2fpasswd/file",
                 "/static/../app.py", "/static/%2e%2e/app.py", "/docs-assets/../../../etc/passwd"):
        r = api.get(path)
        assert r.status_code in (400, 404), path
        assert b"root:" not in r.content and b"create_app" not in r.content


# -- status ---------------------------------------------------------------------------------


def test_status(api):
    r = api.get("/api/status")
    assert r.status_code == 200
    st = r.json()
    assert st["ready"] is True and st["model"] == "offline:lite0" and st["image_count"] == 34
    assert st["dim"] == 384 and st["last_run"]["status"] == "finished" and st["last_run"]["added"] == 34
    assert st["skipped_count"] == 0 and st["roots"]
    assert st["catalogue"].split(" at ")[0] in ("SQLite", "PostgreSQL")  # both back ends run this test


def test_status_lists_skipped_files(small):
    st = small.get("/api/status").json()
    assert st["image_count"] == 3 and st["skipped_count"] == 1
    assert st["skipped"][0]["path"].endswith("broken.png") and st["skipped"][0]["reason"]


# -- the page -------------------------------------------------------------------------------


def test_page_renders_results_without_javascript(api):
    r = api.get("/", params={"q": "a cup of coffee"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    tiles = re.findall(r'<figure class="tile" data-index="\d+">.*?alt="([^"]+)"', html, re.S)
    assert tiles[0] == "coffee.png"
    assert 'value="a cup of coffee"' in html and "autofocus" in html
    assert "34</strong> photos" in html and "offline:lite0" in html
    initial = json.loads(re.search(r'<script type="application/json" id="initial-data">(.*?)</script>', html, re.S)[1])
    assert initial["kind"] == "text" and initial["results"][0]["photo"]["name"] == "coffee.png"
    assert "<script>" not in html  # no inline script: the CSP would block it


def test_page_paging_link_and_similar(api, ids):
    r = api.get("/", params={"q": "a dog", "limit": 5})
    assert 'href="/?q=a+dog&amp;limit=41"' in r.text
    r = api.get("/", params={"similar": ids["chelsea.png"]})
    assert r.status_code == 200 and "Photos like" in r.text and "black_cat.jpg" in r.text
    assert api.get("/", params={"similar": "999999"}).status_code == 404
    assert api.get("/", params={"similar": "nope"}).status_code == 404
    r = api.get("/", params={"q": "x" * 600})
    assert r.status_code == 400 and "too long" in r.text


def test_page_upload_without_javascript(api, samples_dir):
    data = (samples_dir / "guitar.jpg").read_bytes()
    r = api.post("/", files={"file": ("guitar.jpg", data, "image/jpeg")})
    assert r.status_code == 200
    assert re.search(r'<figure class="tile".*?alt="([^"]+)"', r.text, re.S)[1] == "guitar.jpg"
    bad = api.post("/", files={"file": ("x.jpg", b"nope", "image/jpeg")})
    assert bad.status_code == 415 and "not a photo we can read" in bad.text


def test_home_and_photo_pages(api, ids):
    home = api.get("/")
    assert home.status_code == 200 and "Search 34 photos" in home.text
    page = api.get(f"/photos/{ids['rocket.jpg']}")
    assert page.status_code == 200 and "rocket.jpg" in page.text and "Find similar" in page.text
    # "Find similar" there takes optional words, as the detail view does: a plain form to /?similar=ID&q=...
    assert f'name="similar" value="{ids["rocket.jpg"]}"' in page.text and 'name="q"' in page.text
    refined = api.get("/", params={"similar": ids["black_cat.jpg"], "q": "2:a dog"})
    assert refined.status_code == 200 and "puppy.jpg" in refined.text
    missing = api.get("/photos/999999", headers={"accept": "text/html"})
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]


def test_names_are_escaped_everywhere(small):
    xss_id = small.ids[XSS_NAME]
    for url in (f"/?similar={small.ids['coffee.png']}", "/?q=a+rocket", f"/photos/{xss_id}"):
        html = small.get(url).text
        assert "<img src=x onerror" not in html, url
        assert "&lt;img src=x onerror=alert(1)&gt;" in html or "\\u003cimg src=x" in html, url
    meta = small.get(f"/api/images/{xss_id}").json()
    assert meta["name"] == XSS_NAME  # JSON keeps the real name; the page's JS only uses textContent


def test_security_headers_on_every_response(api, ids):
    for path in ("/", "/?q=cat", "/api/status", "/api/search?q=", "/api/images/1/file", "/nope",
                 "/static/app.js", "/static/style.css", "/docs", f"/api/images/{ids['coffee.png']}/thumbnail"):
        r = api.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp or "sandbox" in csp, path
        assert "unsafe-inline" not in csp.split("style-src")[0], path  # scripts never inline


def test_no_inline_scripts_or_handlers_in_templates():
    templates = Path(__file__).resolve().parent.parent / "web" / "templates"
    for path in templates.glob("*.html"):
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag or 'type="application/json"' in tag, (path.name, tag)
        assert not re.search(r"\son[a-z]+=", text), path.name
        assert " style=" not in text, path.name
    js = (templates.parent / "static" / "app.js").read_text()
    assert not re.search(r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|\beval\(|document\.write", js)


def test_openapi_docs(api):
    spec = api.get("/openapi.json").json()
    assert {"/api/search", "/api/search/image", "/api/images/{image_id}", "/api/images/{image_id}/similar",
            "/api/images/{image_id}/thumbnail", "/api/images/{image_id}/file", "/api/status"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/search/image"]["post"]["requestBody"]["content"]
    docs = api.get("/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    assert api.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_search_runs_off_the_event_loop(demo_searcher, settings_factory, demo_index):
    class Slow:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def __len__(self):
            return len(self._inner)

        def search(self, *args):
            time.sleep(1.0)
            return self._inner.search(*args)

    app = create_app(settings_factory(demo_index), Slow(demo_searcher))

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            slow = asyncio.create_task(c.get("/api/search", params={"q": "a cat"}))
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            quick = await c.get("/api/status")
            quick_seconds = time.perf_counter() - started
            assert quick.status_code == 200 and not slow.done()
            assert (await slow).status_code == 200
            return quick_seconds

    assert asyncio.run(scenario()) < 0.6


# -- no index, and an index that changes under the server -------------------------------------


def test_no_index_then_index_appears_and_changes(tmp_path, offline_encoder, settings_factory, samples_dir, monkeypatch):
    import photoseek.search.engine as engine

    monkeypatch.setattr(engine, "load_encoder", lambda model_id, precision="auto": offline_encoder)
    index, photos = tmp_path / "index", tmp_path / "photos"
    photos.mkdir()
    shutil.copy(samples_dir / "rocket.jpg", photos / "rocket.jpg")
    app = create_app(settings_factory(index), refresh_interval=0)
    with client(app) as c:
        page = c.get("/")
        assert page.status_code == 200 and "No index yet" in page.text and "photoseek index" in page.text
        r = c.get("/api/search", params={"q": "cat"})
        assert r.status_code == 503 and "photoseek index" in r.json()["message"]
        st = c.get("/api/status").json()
        assert st["ready"] is False and "photoseek index" in st["message"]

        build_index(index, photos, offline_encoder, settings_factory)  # while the server runs
        assert names(c.get("/api/search", params={"q": "a rocket"})) == ["rocket.jpg"]
        assert c.get("/api/status").json()["image_count"] == 1

        shutil.copy(samples_dir / "sea_turtle.jpg", photos / "sea_turtle.jpg")
        build_index(index, photos, offline_encoder, settings_factory)  # a re-index
        assert names(c.get("/api/search", params={"q": "a sea turtle"}))[0] == "sea_turtle.jpg"
        assert c.get("/api/status").json()["image_count"] == 2

        turtle = c.get("/api/search", params={"q": "a sea turtle"}).json()["results"][0]["photo"]
        (photos / "sea_turtle.jpg").unlink()  # gone from disk, not yet from the index
        r = c.get(turtle["file_url"])
        assert r.status_code == 404 and "no longer on disk" in r.json()["message"]

        from photoseek.indexer import Indexer

        Indexer(index, settings_factory(index), show_progress=False).run(
            [photos], rebuild=True, encoder=offline_encoder)  # a rebuild replaces the database file
        assert c.get("/api/status").json()["image_count"] == 1
        assert names(c.get("/api/search", params={"q": "a rocket"})) == ["rocket.jpg"]


def test_empty_query_page_says_nothing_matches_gracefully(api):
    r = api.get("/", params={"q": "   "})
    assert r.status_code == 200 and "Search 34 photos" in r.text


# -- access control ---------------------------------------------------------------------------


def test_refuses_to_listen_beyond_loopback_without_token(settings_factory, tmp_path):
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(RuntimeError, match="without an access token"):
            serve(settings_factory(tmp_path, host=host))
    with pytest.raises(RuntimeError, match="too short"):
        serve(settings_factory(tmp_path, host="0.0.0.0", token="short"))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        security.check_bind(host, None)
    security.check_bind("0.0.0.0", TOKEN)


def test_only_loopback_host_names_without_token(api):
    assert api.get("/api/status", headers={"host": "localhost:8000"}).status_code == 200
    r = api.get("/api/status", headers={"host": "evil.example:8000"})
    assert r.status_code == 400 and "Host" in r.json()["message"]


@pytest.fixture(scope="module")
def locked(demo_searcher, settings_factory, demo_index):
    app = create_app(settings_factory(demo_index, token=TOKEN, host="0.0.0.0"), demo_searcher)
    with TestClient(app, base_url="http://photos.example:8000", follow_redirects=False) as c:
        yield c


def test_token_required_for_api(locked):
    r = locked.get("/api/status")
    assert r.status_code == 401 and "Bearer" in r.json()["message"] and r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert locked.get("/api/status", headers={"authorization": "Bearer wrong"}).status_code == 401
    ok = locked.get("/api/status", headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["image_count"] == 34
    for path in ("/api/images/1/file", "/api/images/1/thumbnail", "/openapi.json", "/docs", "/"):
        assert locked.get(path).status_code in (401, 303), path


def test_browser_gets_a_login_page_and_a_cookie(locked):
    r = locked.get("/?q=cat", headers={"accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F%3Fq%3Dcat"  # back here after login
    form = locked.get(r.headers["location"])
    assert form.status_code == 200 and 'type="password"' in form.text
    assert locked.get("/static/style.css").status_code == 200  # the login page needs its styles

    bad = locked.post("/login", data={"token": "nope", "next": "/?q=cat"})
    assert bad.status_code == 303 and "error=1" in bad.headers["location"]
    assert "set-cookie" not in bad.headers

    good = locked.post("/login", data={"token": TOKEN, "next": "/?q=cat"})
    assert good.status_code == 303 and good.headers["location"] == "/?q=cat"
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and TOKEN not in cookie
    assert locked.post("/login", data={"token": TOKEN, "next": "//evil.example/"}).headers["location"] == "/"

    value = cookie.split(";")[0].split("=", 1)[1]
    with_cookie = {"cookie": f"{security.COOKIE_NAME}={value}"}
    assert locked.get("/api/status", headers=with_cookie).status_code == 200
    assert locked.get("/?q=cat", headers=with_cookie).status_code == 200
    assert locked.get("/api/status", headers={"cookie": f"{security.COOKIE_NAME}=forged"}).status_code == 401

    out = locked.post("/logout", headers=with_cookie)
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]


def test_token_in_the_url_becomes_a_cookie(locked):
    r = locked.get(f"/?q=a+cat&token={TOKEN}")
    assert r.status_code == 303 and r.headers["location"] == "/?q=a+cat"  # the token leaves the address bar
    value = r.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    assert value == security.session_value(TOKEN)
    wrong = locked.get("/?token=wrong", headers={"accept": "text/html"})
    assert wrong.status_code == 303 and "error=1" in wrong.headers["location"]


def test_access_log_redacts_tokens():
    import logging

    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:5", "GET", f"/?q=cat&token={TOKEN}", "1.1", 303), None)
    security.RedactTokenFilter().filter(record)
    assert TOKEN not in record.getMessage() and "token=***" in record.getMessage()


def test_the_server_keeps_a_few_worker_threads_per_core(demo_index, offline_encoder, settings_factory):
    """Blocking work (searches, thumbnails) runs in a pool sized to the machine, not anyio's 40."""
    import anyio

    from photoseek.search import Searcher
    from photoseek.web.app import worker_threads

    settings = settings_factory(demo_index)
    assert 8 <= worker_threads(settings) <= 40
    searcher = Searcher(demo_index, settings, encoder=offline_encoder)
    try:
        for wanted in (3, worker_threads(settings)):
            app = create_app(settings.replace(worker_threads=wanted if wanted == 3 else None), searcher)
            with TestClient(app, base_url=BASE) as c:
                assert c.get("/api/search", params={"q": "a cat"}).status_code == 200
                tokens = c.portal.call(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens)
                assert tokens == wanted
    finally:
        searcher.close()


# -- the page's filter bar, without JavaScript ---------------------------------------------------


@pytest.fixture(scope="module")
def cameras(tmp_path_factory, offline_encoder, settings_factory, samples_dir):
    """Photos whose cameras and dates the test writes (the demo photos have none): two JPEGs from a
    Canon and one from a Pixel with EXIF dates, and a PNG dated only by its file."""
    import os
    from datetime import datetime, timezone

    from photoseek.search import Searcher

    base = tmp_path_factory.mktemp("cameras")
    photos = base / "photos"
    photos.mkdir()
    for source, camera, day in (("black_cat.jpg", ("Canon", "Canon EOS 5D"), "2019:05:01"),
                                ("snow.jpg", ("Canon", "Canon EOS 5D"), "2019:05:03"),
                                ("puppy.jpg", ("Google", "Pixel 7"), "2021:07:01"), ("coffee.png", None, None)):
        img = Image.open(samples_dir / source).convert("RGB").resize((320, 240))
        if camera:
            exif = Image.Exif()
            exif[0x010F], exif[0x0110], exif[0x0132] = *camera, f"{day} 12:00:00"
            img.save(photos / source, exif=exif)
        else:
            img.save(photos / source)
            stamp = datetime(2020, 1, 1, 12, tzinfo=timezone.utc).timestamp()
            os.utime(photos / source, (stamp, stamp))
    index = base / "index"
    build_index(index, photos, offline_encoder, settings_factory)
    searcher = Searcher(index, settings_factory(index), encoder=offline_encoder)
    with client(create_app(settings_factory(index), searcher)) as c:
        yield c
    searcher.close()


def tile_names(html: str) -> list[str]:
    return re.findall(r'<figure class="tile" data-index="\d+">.*?alt="([^"]+)"', html, re.S)


def test_page_filters_and_sort_without_javascript(cameras):
    """The URL's filters, sort and cutoff go through the API's search request; the plain form
    carries them back, with how many photos each choice keeps."""
    r = cameras.get("/", params={"q": "a photo", "camera": "Canon EOS 5D", "sort": "newest", "min_score": "-1"})
    assert r.status_code == 200
    html = r.text
    assert tile_names(html) == ["snow.jpg", "black_cat.jpg"]  # the Canon's photos, newest first
    assert re.findall(r'class="tile-date[^"]*">([^<]*)<', html) == ["3 May 2019", "1 May 2019"]
    # The form (the box and the bar, one GET form) holds the values, and the counts.
    assert 'name="q" value="a photo"' in html and 'form="search-form"' in html
    assert '<option value="Canon EOS 5D" selected>Canon EOS 5D (2)</option>' in html
    assert '<option value="Google Pixel 7">Google Pixel 7 (1)</option>' in html
    assert '<option value="newest" selected>Newest first</option>' in html
    assert re.search(r'<input id="f-good" type="checkbox" name="min_score" value="" form="search-form">', html)
    initial = json.loads(re.search(r'id="initial-data">(.*?)</script>', html, re.S)[1])
    assert initial["state"]["camera"] == "Canon EOS 5D" and initial["state"]["min_score"] == "-1"

    # By date, "only good matches" is on by default: the calibrated cutoff. The plain form sends the
    # hidden -1 and then the ticked box's empty value: the last one counts, as in the API.
    good = cameras.get("/?q=a+black+cat&sort=newest")
    ticked = cameras.get("/?q=a+black+cat&after=&camera=&type=&sort=newest&min_score=-1&min_score=")
    assert 'name="min_score" value="" form="search-form" checked>' in good.text
    assert tile_names(ticked.text) == tile_names(good.text) == ["black_cat.jpg"]
    assert re.search(r"1 photo scoring 0\.\d\d or more", good.text)  # the cutoff, shown

    # A file's date stands in for a missing EXIF date, and says so; type and a date range filter.
    r = cameras.get("/", params={"q": "a photo", "sort": "oldest", "min_score": "-1", "after": "2019-12-31",
                                 "before": "2020-12-31"})
    assert tile_names(r.text) == ["coffee.png"]
    assert "file date" in r.text and 'value="2019-12-31"' in r.text
    assert tile_names(cameras.get("/?q=a+photo&type=png,jpeg&orientation=landscape").text) != []
    assert tile_names(cameras.get("/?q=a+photo&type=png").text) == ["coffee.png"]

    # Similar, refined by words, with a filter: the same request as the API's.
    api = cameras.get("/api/search", params={"q": "snow", "camera": "canon", "limit": 5}).json()
    similar = api["results"][0]["photo"]["id"]
    r = cameras.get("/", params={"similar": similar, "q": "in winter", "camera": "canon"})
    assert r.status_code == 200 and "Photos like" in r.text and "in winter" in r.text
    assert f'name="similar" value="{similar}"' in r.text
    assert tile_names(r.text) == [n for n in names(cameras.get("/api/search", params={
        "similar": similar, "q": "in winter", "camera": "canon"})) if n]

    # Bad parameters are the page's error notice, naming the parameter (400), as bad queries are.
    for params, needle in ((dict(after="2021-13-01"), "“after” must be a date as YYYY-MM-DD"),
                           (dict(after="2021-02-01", before="2021-01-01"), "is later than before"),
                           (dict(sort="sideways"), "“sort” must be one of"), (dict(min_score="lots"), "“min_score” must"),
                           (dict(orientation="round"), "“orientation” must be one of")):
        r = cameras.get("/", params={"q": "a photo", **params})
        assert r.status_code == 400 and 'class="notice notice-error"' in r.text and needle in r.text, params
