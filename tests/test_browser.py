"""End to end in a real headless browser: Debian's Chromium driven by Playwright.

The real server (uvicorn, in a thread) on a free loopback port, over the demo index.
A screenshot of the results page is saved to ``test-artifacts/results.png``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import free_port

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PAGE_SIZE = 12  # small pages, so that 34 photos need scrolling for "more"


@contextmanager
def serving(searcher, settings_factory, index: Path, **options):
    """The real server (uvicorn, in a thread) over ``searcher``, on a free loopback port: its base URL."""
    import uvicorn

    from photoseek.web.app import create_app

    port = free_port()
    app = create_app(settings_factory(index, port=port), searcher, **options)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(demo_searcher, demo_index, settings_factory):
    with serving(demo_searcher, settings_factory, demo_index, page_size=PAGE_SIZE) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-gpu",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def open_page(browser, base_url: str, **context_options):
    """A page in a fresh browser context that collects page errors and console errors in ``.problems``;
    yields it, then closes the context (for fixtures)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=base_url, **context_options)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    pg.problems = []
    pg.on("pageerror", lambda exc: pg.problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: pg.problems.append(msg.text) if msg.type == "error" else None)
    yield pg
    context.close()


@pytest.fixture()
def page(browser, server):
    yield from open_page(browser, server)


def first_name(pg) -> str:
    return pg.locator("#grid .tile .tile-name").first.text_content()


def until(pg, js: str, arg=None, timeout: float = 10.0):
    """Poll a JS function until it returns something truthy.

    (Not ``page.wait_for_function``: its in-page polling evaluates strings, which the
    page's Content-Security-Policy rightly forbids.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = pg.evaluate(js, arg)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for: {js}"
        time.sleep(0.05)


def wait_first(pg, name: str) -> None:
    expect(pg.locator("#grid .tile .tile-name").first).to_have_text(name)


def csp_violations(pg) -> list[str]:
    return [p for p in pg.problems if "Content Security Policy" in p or "page error" in p]


def test_type_a_query_and_see_the_right_photo_first(page):
    page.goto("/")
    assert page.evaluate("document.activeElement.id") == "q"  # focus on load
    assert "34 photos" in page.locator("#index-status").text_content()
    assert "offline:lite0" in page.locator("#index-status").text_content()

    page.keyboard.type("a cup of coffee")
    page.keyboard.press("Enter")
    wait_first(page, "coffee.png")
    assert re.search(r"/\?q=a\+cup\+of\+coffee$", page.url)  # bookmarkable
    # A whole page at least: the next pages load by themselves while the end of the grid is
    # near the viewport, so on a fast machine more may be there already.
    assert page.locator("#grid .tile").count() >= PAGE_SIZE
    page.wait_for_load_state("networkidle")
    until(page, "() => [...document.querySelectorAll('#grid img')].slice(0, 8).every(i => i.complete && i.naturalWidth > 0)")

    tile = page.locator("#grid .tile").first
    tile.hover()
    score = tile.locator(".score")
    until(page, "el => getComputedStyle(el.parentElement).opacity === '1'", score.element_handle())
    assert re.fullmatch(r"0\.\d{3}", score.text_content())

    ARTIFACTS.mkdir(exist_ok=True)
    page.mouse.move(5, 500)
    page.wait_for_timeout(250)
    page.screenshot(path=str(ARTIFACTS / "results.png"))
    assert (ARTIFACTS / "results.png").stat().st_size > 50_000

    # More results on scroll, then none left.
    page.mouse.wheel(0, 20_000)
    expect(page.locator("#grid .tile").nth(PAGE_SIZE)).to_be_attached()
    for _ in range(10):
        if page.locator("#grid .tile").count() == 34:
            break
        page.mouse.wheel(0, 20_000)
        page.wait_for_timeout(200)
    assert page.locator("#grid .tile").count() == 34
    assert page.locator("#more-wrap").is_hidden()
    names = page.locator("#grid .tile .tile-name").all_text_contents()
    assert len(set(names)) == 34

    # A fresh visit to the bookmarked URL shows the same results, rendered by the server.
    page.goto("/?q=a+rocket")
    wait_first(page, "rocket.jpg")
    assert page.input_value("#q") == "a rocket"
    assert not csp_violations(page), page.problems


def test_detail_view_keys_and_similar_and_back(page):
    page.goto("/?q=a+cat")
    wait_first(page, "black_cat.jpg")
    second = page.locator("#grid .tile .tile-name").nth(1).text_content()

    page.locator("#grid .tile-link").first.click()
    dialog = page.locator("#detail")
    assert dialog.is_visible()
    assert page.locator("#detail-name").text_content() == "black_cat.jpg"
    assert page.locator("#detail-path").text_content().endswith("black_cat.jpg")
    assert re.fullmatch(r"\d+ × \d+", page.locator("#detail-dims").text_content())
    assert "KB" in page.locator("#detail-size").text_content()
    until(page, "() => document.getElementById('detail-img').src.includes('size=large')")

    page.keyboard.press("ArrowRight")
    assert page.locator("#detail-name").text_content() == second
    page.keyboard.press("ArrowLeft")
    assert page.locator("#detail-name").text_content() == "black_cat.jpg"
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert page.url.endswith("/?q=a+cat")

    # The back button closes the detail view too.
    page.locator("#grid .tile-link").nth(1).click()
    assert dialog.is_visible()
    page.go_back()
    expect(dialog).to_be_hidden()
    assert page.url.endswith("/?q=a+cat")

    # "Find similar" from the detail view.
    page.locator("#grid .tile-link").nth(1).click()
    page.locator("#detail-similar").click()
    page.wait_for_url(re.compile(r"/\?similar=\d+$"))
    expect(page.locator("#summary .chip")).to_have_text("chelsea.png")
    assert "chelsea.png" not in page.locator("#grid .tile .tile-name").all_text_contents()
    assert not dialog.is_visible()
    assert page.input_value("#q") == ""  # the box no longer shows "a cat": this search is by a photo, its chip says which

    # "Similar" on a tile, then back twice to where we started.
    page.locator("#grid .tile").first.hover()
    page.locator("#grid .tile .tile-similar").first.click()
    expect(page.locator("#summary .chip")).not_to_have_text("chelsea.png")
    page.go_back()
    expect(page.locator("#summary .chip")).to_have_text("chelsea.png")
    assert page.input_value("#q") == ""
    page.go_back()
    wait_first(page, "black_cat.jpg")
    assert page.url.endswith("/?q=a+cat") and page.input_value("#q") == "a cat"
    assert not csp_violations(page), page.problems


def _dispatch_file(page, kind: str, url: str, name: str) -> None:
    """Paste or drop a real image file (fetched from the server) the way a browser delivers it."""
    page.evaluate("""async ([kind, url, name]) => {
        const blob = await (await fetch(url)).blob();
        const dt = new DataTransfer();
        dt.items.add(new File([blob], name, { type: blob.type }));
        if (kind === 'paste') {
            document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
        } else {
            window.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true, cancelable: true }));
            window.__dropShown = !document.getElementById('drop').hidden;
            window.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
        }
    }""", [kind, url, name])


def test_reverse_image_search_pick_paste_drop(page, samples_dir, tmp_path):
    page.goto("/")
    page.set_input_files("#file", str(samples_dir / "sea_turtle.jpg"))
    wait_first(page, "sea_turtle.jpg")
    assert "sea_turtle.jpg" in page.locator("#summary").text_content()
    assert page.url.endswith("/")

    ids = page.evaluate("fetch('/api/search?q=a+guitar&limit=1').then(r => r.json()).then(d => d.results[0].photo)")
    _dispatch_file(page, "paste", ids["file_url"], "clip.jpg")
    wait_first(page, "guitar.jpg")

    rocket = page.evaluate("fetch('/api/search?q=a+rocket&limit=1').then(r => r.json()).then(d => d.results[0].photo)")
    _dispatch_file(page, "drop", rocket["file_url"], "dropped.jpg")
    wait_first(page, "rocket.jpg")
    assert page.evaluate("window.__dropShown") is True
    assert page.locator("#drop").is_hidden()

    # Back goes through the earlier uploads' results, kept in the history.
    page.go_back()
    wait_first(page, "guitar.jpg")

    # A file that is not a photo: a friendly message, and the results stay.
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("this is not a photo")
    page.set_input_files("#file", str(bogus))
    notice = page.locator("#notice .notice-error")
    notice.wait_for()
    assert "not a photo we can read" in notice.text_content()
    assert first_name(page) == "guitar.jpg"
    assert not csp_violations(page), page.problems


def test_names_with_html_stay_text(page):
    """Whatever a file is called, the page shows it as text: the API's answer is doctored to prove it."""
    evil = '<img src=x onerror="window.__pwned=1">.jpg'

    def doctor(route):
        response = route.fetch()
        data = response.json()
        for hit in data["results"]:
            hit["photo"]["name"] = evil
            hit["photo"]["path"] = "/photos/" + evil
            hit["photo"]["camera"] = "<b>cam</b>"
        route.fulfill(response=response, json=data)

    page.route(re.compile(r".*/api/search\?.*"), doctor)
    page.goto("/")
    page.fill("#q", "a dog")
    page.press("#q", "Enter")
    page.wait_for_selector("#grid .tile")
    assert first_name(page) == evil
    page.locator("#grid .tile-link").first.click()
    assert page.locator("#detail-name").text_content() == evil
    assert page.locator("#detail-camera").text_content() == "<b>cam</b>"
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('#grid img[src=x], #detail b').length") == 0


def test_real_hostile_file_name_and_exif_stay_text(browser, tmp_path, samples_dir, offline_encoder, settings_factory):
    """Issue #5: a photo really named ``<img src=x onerror=alert(1)>.jpg`` with script in its EXIF,
    indexed for real: the server-rendered page, the script-rendered results and the photo page
    all show it as text, and nothing runs."""
    import io
    import shutil

    import uvicorn
    from PIL import Image

    from photoseek.indexer import Indexer
    from photoseek.search import Searcher
    from photoseek.web.app import create_app

    name = "<img src=x onerror=alert(1)>.jpg"
    photos, index = tmp_path / "photos", tmp_path / "index"
    photos.mkdir()
    shutil.copy(samples_dir / "rocket.jpg", photos / name)
    shutil.copy(samples_dir / "coffee.png", photos / "coffee.png")
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "</script><script>alert(2)</script>", '"><svg onload=alert(3)>'
    out = io.BytesIO()
    Image.open(samples_dir / "guitar.jpg").save(out, "JPEG", exif=exif)
    (photos / "exif.jpg").write_bytes(out.getvalue())
    Indexer(index, settings_factory(index), show_progress=False).run([photos], encoder=offline_encoder)
    searcher = Searcher(index, settings_factory(index), encoder=offline_encoder)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings_factory(index), searcher), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    context = browser.new_context(base_url=f"http://127.0.0.1:{port}")
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    dialogs = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        pg.goto("/?q=a+rocket")  # rendered by the server
        expect(pg.locator("#grid .tile .tile-name").first).to_have_text(name)
        pg.goto("/")
        pg.fill("#q", "a guitar")  # rendered by the page's script
        pg.press("#q", "Enter")
        expect(pg.locator("#grid .tile .tile-name").first).to_have_text("exif.jpg")
        pg.locator("#grid .tile-link").first.click()
        expect(pg.locator("#detail-camera")).to_contain_text("</script><script>alert(2)</script>")
        ids = {h["photo"]["name"]: h["photo"]["id"] for h in pg.request.get("/api/search?q=x&limit=10").json()["results"]}
        pg.goto(f"/photos/{ids[name]}")
        expect(pg.locator("body")).to_contain_text(name)
        pg.goto(f"/photos/{ids['exif.jpg']}")
        expect(pg.locator("body")).to_contain_text('"><svg onload=alert(3)>')
        pg.wait_for_timeout(300)
        assert dialogs == []
        assert pg.evaluate("document.querySelectorAll('img[src=x], svg[onload], script:not([src]):not([type])').length") == 0
    finally:
        context.close()
        srv.should_exit = True
        thread.join(timeout=10)
        searcher.close()


# -- filters, sort, the URL as the whole state ----------------------------------------------------

# (demo photo, folder, (make, model) in EXIF or None: dated by the file alone, date, size)
DATED = [
    ("black_cat.jpg", "trips/2019", ("Canon", "Canon EOS 5D"), (2019, 5, 1), (360, 240)),
    ("mountain.jpg", "trips/2019", ("Canon", "Canon EOS 5D"), (2019, 5, 2), (240, 360)),
    ("snow.jpg", "trips/2019", ("Canon", "Canon EOS 5D"), (2019, 5, 3), (360, 240)),
    ("puppy.jpg", "trips/2021", ("Google", "Pixel 7"), (2021, 7, 1), (360, 240)),
    ("island.jpg", "trips/2021", ("Google", "Pixel 7"), (2021, 7, 2), (360, 240)),
    ("chelsea.png", "home", None, (2020, 1, 3), (300, 300)),
    ("coffee.png", "home", None, (2020, 1, 1), (300, 300)),
    ("guitar.jpg", "home", None, (2018, 3, 1), (240, 320)),
]


@pytest.fixture(scope="module")
def dated_server(tmp_path_factory, samples_dir, offline_encoder, settings_factory):
    """A small index of photos whose cameras and dates this test writes: JPEGs with EXIF make, model
    and date, PNGs dated only by their file's modification time. The demo photos have neither."""
    from PIL import Image

    from photoseek.indexer import Indexer
    from photoseek.search import Searcher

    base = tmp_path_factory.mktemp("dated")
    for source, folder, camera, day, size in DATED:
        img = Image.open(samples_dir / source).convert("RGB").resize(size)
        target = base / "photos" / folder / (Path(source).stem + (".jpg" if camera else ".png"))
        target.parent.mkdir(parents=True, exist_ok=True)
        if camera:
            exif = Image.Exif()
            exif[0x010F], exif[0x0110] = camera
            exif[0x0132] = "{:04d}:{:02d}:{:02d} 12:00:00".format(*day)
            img.save(target, exif=exif)
        else:
            img.save(target)
            stamp = datetime(*day, 12, tzinfo=timezone.utc).timestamp()
            os.utime(target, (stamp, stamp))
    index = base / "index"
    Indexer(index, settings_factory(index), show_progress=False).run([base / "photos"], encoder=offline_encoder)
    searcher = Searcher(index, settings_factory(index), encoder=offline_encoder)
    with serving(searcher, settings_factory, index) as url:
        yield url
    searcher.close()


@pytest.fixture()
def dated_page(browser, dated_server):
    yield from open_page(browser, dated_server, locale="en-US", timezone_id="UTC")


def names_shown(pg) -> list[str]:
    return pg.locator("#grid .tile .tile-name").all_text_contents()


def score_of(pg, name: str) -> float:
    return float(pg.locator("#grid .tile", has_text=name).locator(".score").text_content())


def bar_values(pg) -> dict:
    return pg.evaluate("""() => ({after: document.getElementById('f-after').value,
        before: document.getElementById('f-before').value, camera: document.getElementById('f-camera').value,
        sort: document.getElementById('f-sort').value, good: document.getElementById('f-good').checked})""")


def test_filters_sort_and_the_url_hold_the_whole_search(dated_page):
    page = dated_page
    page.goto("/")
    page.keyboard.type("a photo")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/\?q=a\+photo$"))
    expect(page.locator("#grid .tile")).to_have_count(len(DATED))  # by relevance: every photo, best first
    assert page.locator("#filters").is_visible()

    # A date range, then a camera: each choice in the bar says how many photos it keeps.
    page.fill("#f-after", "2019-01-01")
    page.wait_for_url(re.compile(r"after=2019-01-01"))
    page.fill("#f-before", "2021-12-31")
    page.wait_for_url(re.compile(r"after=2019-01-01&before=2021-12-31$"))
    expect(page.locator("#grid .tile")).to_have_count(7)  # not the guitar of 2018
    expect(page.locator("#f-camera option", has_text="Canon EOS 5D")).to_have_text("Canon EOS 5D (3)")
    expect(page.locator("#f-camera option", has_text="Pixel 7")).to_have_text("Google Pixel 7 (2)")
    expect(page.locator("#f-years .year")).to_have_text(["2021 2", "2020 2", "2019 3", "2018 1"])
    page.select_option("#f-camera", "Canon EOS 5D")
    page.wait_for_url(re.compile(r"camera=Canon\+EOS\+5D$"))
    expect(page.locator("#grid .tile")).to_have_count(3)
    assert sorted(names_shown(page)) == ["black_cat.jpg", "mountain.jpg", "snow.jpg"]

    # Newest first: "only good matches" comes on by default; unticked, every photo comes, by date.
    assert page.locator("#f-good-wrap").is_hidden()  # by relevance the best come first anyway
    page.select_option("#f-sort", "newest")
    page.wait_for_url(re.compile(r"&sort=newest$"))
    expect(page.locator("#f-good")).to_be_checked()
    page.uncheck("#f-good")
    page.wait_for_url(re.compile(r"&sort=newest&min_score=-1$"))
    expect(page.locator("#grid .tile .tile-name")).to_have_text(["snow.jpg", "mountain.jpg", "black_cat.jpg"])
    expect(page.locator("#grid .tile .tile-date")).to_have_text(["May 3, 2019", "May 2, 2019", "May 1, 2019"])
    assert all(re.fullmatch(r"0\.\d{3}", s) for s in page.locator("#grid .score").all_text_contents())
    state_url, state_names = page.url, names_shown(page)
    state_bar = {"after": "2019-01-01", "before": "2021-12-31", "camera": "Canon EOS 5D", "sort": "newest",
                 "good": False}
    assert bar_values(page) == state_bar

    # A reload shows the same search: the same controls, the same results.
    page.reload()
    wait_first(page, "snow.jpg")
    assert page.url == state_url and names_shown(page) == state_names and bar_values(page) == state_bar
    expect(page.locator("#f-camera option:checked")).to_have_text("Canon EOS 5D (3)")
    cat_score = score_of(page, "black_cat.jpg")

    # Terms subtract with a "-" standing alone; the URL keeps it, and the filters stay.
    page.fill("#q", "a photo - cat")
    page.press("#q", "Enter")
    page.wait_for_url(re.compile(r"\?q=a\+photo\+-\+cat&after=2019-01-01&before=2021-12-31&camera=Canon\+EOS\+5D"
                                 r"&sort=newest&min_score=-1$"))
    expect(page.locator("#summary")).to_contain_text("a photo - cat")
    until(page, "() => document.querySelectorAll('#grid .tile').length === 3")
    assert score_of(page, "black_cat.jpg") < cat_score - 0.05  # the cat was taken away

    # Back: the previous search, its controls and its results; once more: before "all matches".
    page.go_back()
    page.wait_for_url(state_url)
    expect(page.locator("#q")).to_have_value("a photo")
    expect(page.locator("#grid .tile", has_text="black_cat.jpg").locator(".score")).to_have_text(f"{cat_score:.3f}")
    assert names_shown(page) == state_names and bar_values(page) == state_bar
    page.go_back()
    page.wait_for_url(re.compile(r"&sort=newest$"))
    expect(page.locator("#f-good")).to_be_checked()
    assert bar_values(page) == {**state_bar, "good": True}
    assert not csp_violations(page), page.problems


def test_similar_refined_by_words_and_file_dates(dated_page):
    page = dated_page
    page.goto("/?q=a+cat&sort=oldest&min_score=-1")  # every photo, oldest first
    wait_first(page, "guitar.png")
    # Without a date in the photo, its file's date stands in, and the result says so.
    expect(page.locator("#grid .tile").first.locator(".tile-date")).to_have_text("Mar 1, 2018 · file date")
    expect(page.locator("#grid .tile", has_text="black_cat.jpg").locator(".tile-date")).to_have_text("May 1, 2019")

    # "Similar" from the detail view, refined by words: similar=ID&q=WORDS, the sort kept.
    page.locator("#grid .tile-link", has=page.locator("img[alt='black_cat.jpg']")).click()
    expect(page.locator("#detail-name")).to_have_text("black_cat.jpg")
    page.fill("#detail-refine", "in the snow")
    page.locator("#detail-similar").click()
    page.wait_for_url(re.compile(r"/\?q=in\+the\+snow&similar=\d+&sort=oldest&min_score=-1$"))
    expect(page.locator("#detail")).to_be_hidden()
    expect(page.locator("#summary .chip")).to_have_text("black_cat.jpg")
    expect(page.locator("#summary")).to_contain_text("and in the snow")
    assert page.input_value("#q") == "in the snow"
    until(page, "() => document.querySelectorAll('#grid .tile').length === 7")  # all but the photo itself
    assert "black_cat.jpg" not in names_shown(page)
    refined = names_shown(page)

    # Bookmarkable like any other search.
    page.reload()
    expect(page.locator("#summary .chip")).to_have_text("black_cat.jpg")
    assert names_shown(page) == refined and page.input_value("#q") == "in the snow"

    # A bad date in the URL is the page's error notice (the server's 400), not a broken page.
    page.goto("/?q=a+cat&after=2021-13-01")
    expect(page.locator("#notice .notice-error")).to_contain_text("YYYY-MM-DD")
    assert not csp_violations(page), page.problems
