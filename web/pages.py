"""The web page: the search page (which works without JavaScript too), a page per photo,
sign-in for token mode, and the API docs page. Thin routes over :mod:`.service`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import QueryParams

from photoseek.times import as_utc
from photoseek.errors import BadInput, NotFound, PhotoseekError
from photoseek.search import Searcher
from photoseek.search.query import SORTS, Filters, SearchRequest, Term, parse_date
from photoseek.settings import Settings

from . import security
from .api import ImageId, root_path
from .schemas import FacetsResponse, FacetValue, facets_out, hits_out, language_hint_out, photo_detail_out, photo_out
from .service import Service, answer, run, search_request
from .uploads import UploadError, read_body, read_upload

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 36
LANGUAGE_HINT_TITLE = "This index’s encoder may not understand these words"
SUGGESTIONS = ("a cat", "coffee", "the sea", "mountains", "a guitar", "snow")
SORT_LABELS = (("relevance", "Best match"), ("newest", "Newest first"), ("oldest", "Oldest first"))
SHAPES = (("", "Any shape"), ("landscape", "Landscape"), ("portrait", "Portrait"), ("square", "Square"))
MAX_CAMERA_CHARS, MAX_FOLDER_CHARS, MAX_TYPES = 100, 4096, 16  # as GET /api/search declares them
PARAMETERS = ("q", "similar", "after", "before", "camera", "folder", "type", "orientation", "min_pixels", "sort",
              "min_score")
ErrorPage = Callable[[Request, int, str], Awaitable[HTMLResponse]]


def pages_router(settings: Settings, service: Service, *, page_size: int = PAGE_SIZE,
                 openapi_url: str = "/openapi.json") -> tuple[APIRouter, ErrorPage]:
    """The page routes, and the function that renders an error as a page (for browsers)."""
    static_versions = _static_versions()
    docs_assets = docs_assets_dir()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["human_size"] = human_size
    env.filters["when"] = when
    env.filters["day"] = day
    env.filters["why_label"] = why_label
    templates = Jinja2Templates(env=env)
    router = APIRouter(include_in_schema=False)

    def base_context(request: Request, searcher: Searcher | None) -> dict[str, Any]:
        root = root_path(request)
        index = {"exists": searcher is not None, "ready": False, "count": 0, "model": None, "updated": None}
        if searcher is not None:
            st = searcher.status(skipped_limit=0)
            index.update(ready=bool(st.model_id) and st.image_count > 0, count=st.image_count, model=st.model_id,
                         updated=ago(st.last_run.finished_at or st.last_run.started_at) if st.last_run else None)
            index["tuned"] = searcher.tuned()  # photoseek tune's adapter, shown in the footer
        return {
            "request": request, "root": root, "index": index, "page_size": page_size,
            "max_upload_bytes": settings.max_upload_bytes, "max_query_chars": settings.max_query_chars,
            "token_mode": bool(settings.token),
            "static": lambda name: f"{root}/static/{name}?v={static_versions.get(name, '0')}",
        }

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        response = templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        return response

    def notice(level: str, title: str, text: str, code: str | None = None) -> dict[str, str | None]:
        return {"level": level, "title": title, "text": text, "code": code}

    def index_notice(searcher: Searcher | None) -> dict | None:
        if searcher is None:
            return notice("info", "No index yet",
                          "photoseek has no photos to search yet. Index a folder of photos, then reload this page:",
                          "photoseek index ~/Pictures")
        if not searcher.model_id or len(searcher) == 0:
            return notice("info", "Your index is empty",
                          "There are no photos in the index yet. Add a folder, then reload this page:",
                          "photoseek index ~/Pictures")
        return None

    async def search_page(request: Request, *, asked: Asked | None = None,
                          upload: tuple[bytes, str | None] | None = None,
                          upload_error: UploadError | None = None) -> HTMLResponse:
        """The search page for the URL's state (q, similar, filters, sort, min_score: the API's names),
        answered through the same search request as ``GET /api/search``; or an upload's results."""
        searcher = await service.current()
        context = await run(base_context, request, searcher)
        root = context["root"]
        asked = asked or Asked()
        shown = max(1, min(int(asked.limit), 500)) if asked.limit.isdigit() else page_size
        kind, page, source, facets, message, status = None, None, None, None, None, 200
        upload_name, hits, next_offset, hint = None, [], None, None
        try:
            if upload_error is not None:
                kind = "image"
                raise upload_error
            if upload is not None:
                kind, upload_name = "image", upload[1]
                search = SearchRequest(terms=(Term(image=upload[0]),), limit=shown)
                page, _ = await run(answer, service.need(searcher), search, settings)
                hits = page.hits  # a plain-HTML upload cannot be paged; the JS page re-sends the image
            else:
                if asked.similar or asked.q:
                    kind = "similar" if asked.similar else "text"
                filters, sort, min_score = asked.parsed()
                if kind is not None:
                    similar_id = asked.similar_id()
                    search = search_request(settings, q=asked.q or None, similar=similar_id, filters=filters,
                                            sort=sort, min_score=min_score, limit=shown, offset=0)
                    ready = service.need(searcher)
                    page, found = await run(answer, ready, search, settings)
                    if similar_id is not None and found is None:
                        raise NotFound(f"no photo has id {similar_id}")
                    hits, next_offset = page.hits, page.next_offset
                    hint = language_hint_out(ready.model_id, search.texts)
                    source = photo_out(found, root) if found is not None else None
                    facets = await run(_facets, ready, search)
        except PhotoseekError as exc:
            status = exc.status
            message = index_notice(searcher) if status == 503 else None
            if message is None:
                titles = {404: "That photo is not in the index", 413: "That file is too large",
                          415: "That is not a photo we can read"}
                title = titles.get(status, "That did not work" if kind != "image" else "Could not search by that image")
                message = notice("error", title, _sentence(exc.message))
        else:
            if kind is None:
                message = index_notice(searcher)
            elif not hits:
                message = index_notice(searcher) or notice("info", *_nothing_found(kind, asked))
            elif hint is not None:
                message = notice("info", LANGUAGE_HINT_TITLE, hint.message)
        results = hits_out(hits, 0, root)
        more_url = None
        if next_offset is not None:
            more_url = f"{root}/?" + urlencode([*asked.params(), ("limit", shown + page_size)])
        state = asked.state()
        initial = {
            "kind": kind, "query": asked.q if kind in ("text", "similar") else None,
            "similar": int(asked.similar) if kind == "similar" and source else None,
            "source": source.model_dump(mode="json") if source else None,
            "results": [h.model_dump(mode="json") for h in results], "next_offset": next_offset,
            "cutoff": None if page is None or page.cutoff is None else round(page.cutoff, 6),
            "matches": page.matches if page is not None else None,
            "facets": facets.model_dump(mode="json") if facets is not None else None, "state": state,
            "upload_name": upload_name, "error": message if message and message["level"] == "error" else None,
            "language_hint": hint.model_dump(mode="json") if hint is not None else None,
        }
        context.update(q=asked.q, kind=kind, hits=results, source=source, message=message, more_url=more_url,
                       suggestions=SUGGESTIONS, initial=initial, upload_name=upload_name, state=state,
                       bar=filter_bar(asked, facets, root), show_bar=kind in ("text", "similar"),
                       by_date=kind != "image" and asked.sort in ("newest", "oldest"),
                       cutoff=initial["cutoff"], matches=initial["matches"])
        return render(request, "index.html", context, status)

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home(request: Request):
        return await search_page(request, asked=Asked.of(request.query_params))

    @router.post("/", response_class=HTMLResponse, include_in_schema=False)
    async def home_upload(request: Request):
        """The page's file form, for browsers without JavaScript."""
        try:
            upload = await read_upload(request, settings.max_upload_bytes)
        except UploadError as exc:
            return await search_page(request, upload_error=exc)
        return await search_page(request, upload=(upload.data, upload.filename))

    @router.get("/photos/{image_id}", response_class=HTMLResponse, include_in_schema=False)
    async def photo_page(request: Request, image_id: ImageId):
        searcher = service.need(await service.current())
        photo = await run(searcher.photo, image_id)
        if photo is None:
            raise NotFound(f"no photo has id {image_id}")
        context = await run(base_context, request, searcher)
        context["photo"] = photo_detail_out(photo, await run(searcher.photo_text, image_id), context["root"])
        context["tags"] = [{"tag": t, "score": sc, "via": v, "href": f"{context['root']}/?" + urlencode({"q": tag_token(t)})}
                           for t, sc, v in await run(searcher.photo_tags, image_id)]
        return render(request, "photo.html", context)

    @router.get("/duplicates", response_class=HTMLResponse, include_in_schema=False)
    async def duplicates_page(request: Request, threshold: str | None = None):
        """Groups of near-duplicates side by side, with the suggested keeper, a threshold control and exports."""
        from photoseek.search.duplicates import MAX_THRESHOLD, MIN_THRESHOLD, find_duplicates
        from .schemas import duplicates_out

        searcher = await service.current()
        context = await run(base_context, request, searcher)
        context.update(min_threshold=MIN_THRESHOLD, max_threshold=MAX_THRESHOLD, report=None,
                       notice=index_notice(searcher))
        if context["notice"] is None:
            value = _number(threshold, "threshold", float) if threshold not in (None, "") else None
            report = await run(find_duplicates, searcher, value)
            context["report"] = duplicates_out(report, context["root"])
        return render(request, "duplicates.html", context)

    @router.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request, next: str | None = None, error: str | None = None):
        root = root_path(request)
        if not settings.token:
            return RedirectResponse(security.safe_next(next, root), status_code=303)
        context = await run(base_context, request, None)
        context.update(next=security.safe_next(next, root), error="That token is not right." if error else None)
        return render(request, "login.html", context, 401 if error else 200)

    @router.post("/login", include_in_schema=False)
    async def login(request: Request):
        root = root_path(request)
        if not settings.token:
            return RedirectResponse(f"{root}/", status_code=303)
        fields = dict(parse_qsl((await read_body(request, 4096, what="form")).decode("utf-8", "replace")))
        target = security.safe_next(fields.get("next"), root)
        if not security.token_matches(fields.get("token", "").strip(), settings.token):
            await asyncio.sleep(0.5)  # slows guessing; a real token is long and random anyway
            return RedirectResponse(f"{root}/login?" + urlencode({"next": target, "error": "1"}), status_code=303)
        response = RedirectResponse(target, status_code=303)
        response.headers["Set-Cookie"] = security.session_cookie(
            settings.token, secure=request.url.scheme == "https", root_path=root)
        return response

    @router.post("/logout", include_in_schema=False)
    async def logout(request: Request):
        root = root_path(request)
        response = RedirectResponse(f"{root}/login" if settings.token else f"{root}/", status_code=303)
        response.headers["Set-Cookie"] = security.clear_cookie(root)
        return response

    @router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs(request: Request):
        root = root_path(request)
        context = {"static": lambda name: f"{root}/static/{name}?v={static_versions.get(name, '0')}",
                   "assets": f"{root}/docs-assets" if docs_assets else None, "openapi_url": f"{root}{openapi_url}"}
        response = render(request, "docs.html", context)
        response.headers["Content-Security-Policy"] = security.DOCS_CSP
        return response


    async def error_page(request: Request, status: int, message: str) -> HTMLResponse:
        context = await run(base_context, request, service.searcher)
        titles = {404: "Not found", 503: "No index yet"}
        context.update(title=titles.get(status, "Something went wrong"), text=message[:1].upper() + message[1:] + ".")
        return render(request, "error.html", context, status)

    return router, error_page


# -- the page's state: what its URL asks for ---------------------------------------------------


@dataclass(frozen=True)
class Asked:
    """What the search page's URL asks for, as given (text): the parameter names of ``GET /api/search``,
    so a page URL and an API URL hold a search the same way (the page's script reads and writes them too)."""

    q: str = ""
    similar: str = ""
    after: str = ""
    before: str = ""
    camera: str = ""
    folder: str = ""
    types: tuple[str, ...] = ()
    orientation: str = ""
    min_pixels: str = ""
    sort: str = "relevance"
    min_score: str = ""
    limit: str = ""

    @classmethod
    def of(cls, params: QueryParams) -> Asked:
        def last(name: str) -> str:
            # The plain form sends min_score twice when "only good matches" is ticked (the hidden -1,
            # then the box's value): the last one counts, as FastAPI reads the API's parameters.
            values = params.getlist(name)
            return values[-1].strip() if values else ""

        types: list[str] = []
        for value in params.getlist("type"):  # repeatable, as in the API; the plain form's "jpeg,png" too
            for kind in value.split(","):
                kind = kind.strip().lower()
                if kind and kind not in types:
                    types.append(kind)
        return cls(q=" ".join(last("q").split()), similar=last("similar"), after=last("after"),
                   before=last("before"), camera=last("camera"), folder=last("folder"), types=tuple(types),
                   orientation=last("orientation").lower(), min_pixels=last("min_pixels"),
                   sort=last("sort").lower() or "relevance", min_score=last("min_score"), limit=last("limit"))

    def similar_id(self) -> int | None:
        if not self.similar:
            return None
        if not self.similar.isdigit() or not 1 <= int(self.similar) < 2**63:
            raise NotFound(f"no photo has id {self.similar[:40]!r}")
        return int(self.similar)

    def parsed(self) -> tuple[Filters, str, float | None]:
        """Filters, sort and cutoff; :class:`BadInput` (400) naming the parameter when one is wrong."""
        for name, value, most in (("camera", self.camera, MAX_CAMERA_CHARS), ("folder", self.folder, MAX_FOLDER_CHARS)):
            if len(value) > most:
                raise BadInput(f"{name} is too long ({len(value)} characters; at most {most})")
        if len(self.types) > MAX_TYPES:
            raise BadInput(f"type: at most {MAX_TYPES} file types")
        if self.sort not in SORTS:
            raise BadInput(f"sort must be one of {', '.join(SORTS)}, not {self.sort[:40]!r}")
        min_score = _number(self.min_score, "min_score", float)
        if min_score is not None and not -1 <= min_score <= 1:
            raise BadInput(f"min_score is a cosine similarity, between -1 and 1, not {self.min_score[:40]!r}")
        min_pixels = _number(self.min_pixels, "min_pixels", int)
        filters = Filters(after=parse_date(self.after, "after"), before=parse_date(self.before, "before"),
                          camera=self.camera or None, folder=self.folder or None, types=self.types,
                          orientation=self.orientation or None, min_pixels=min_pixels)  # type: ignore[arg-type]
        return filters, self.sort, min_score

    def params(self, **changes: str | tuple[str, ...]) -> list[tuple[str, str]]:
        """The state as URL parameters, in one order, leaving out what is not set (the script writes
        the same)."""
        values = {**self.state(), **changes}
        out = [(name, values[name]) for name in ("q", "similar", "after", "before", "camera", "folder") if values[name]]
        out += [("type", kind) for kind in values["types"]]
        out += [(name, values[name]) for name in ("orientation", "min_pixels") if values[name]]
        if values["sort"] != "relevance":
            out.append(("sort", values["sort"]))
        if values["min_score"]:
            out.append(("min_score", values["min_score"]))
        return out

    def state(self) -> dict[str, Any]:
        return {"q": self.q, "similar": self.similar, "after": self.after, "before": self.before,
                "camera": self.camera, "folder": self.folder, "types": self.types, "orientation": self.orientation,
                "min_pixels": self.min_pixels, "sort": self.sort, "min_score": self.min_score}

    @property
    def filtered(self) -> bool:
        return any((self.after, self.before, self.camera, self.folder, self.types, self.orientation, self.min_pixels))



# Why a result matched, in words (the same as web/static/app.js's WHY).
WHY_LABELS = {"semantic": "by meaning", "file_name": "file name", "folder": "folder", "caption": "caption",
              "keyword": "keyword", "ocr_text": "text in photo", "tag": "tag"}


def why_label(reason: str) -> str:
    return WHY_LABELS.get(reason, reason)

def _number(value: str, name: str, kind: type) -> Any:
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise BadInput(f"{name} must be {what}, not {value[:40]!r}") from None


def _facets(searcher: Searcher, search: SearchRequest) -> FacetsResponse | None:
    """Counts for the filter bar, of the photos the results can hold. Sorted by relevance without a
    min_score every photo that passes the filters is a result (best first), so the counts are of
    photos; with a cutoff (sorting by date, or min_score) only the matches above it count."""
    cut = search.sort != "relevance" or search.min_score is not None
    try:
        counts = searcher.facets(search.filters, terms=search.terms if cut else (), min_score=search.min_score)
    except PhotoseekError:
        return None  # the bar is a help: the results stand without its counts
    return facets_out(counts)


def filter_bar(asked: Asked, facets: FacetsResponse | None, root: str) -> dict[str, Any]:
    """The filter bar's choices with their counts and the current values, for the plain form (the
    script builds the same from ``/api/facets``)."""

    def choices(values: list[FacetValue], current: str, label=lambda v: v.label, title=lambda v: None) -> list[dict]:
        out = [{"value": v.value, "label": label(v), "count": v.count, "title": title(v),
                "selected": v.value == current} for v in values if v.value]
        if current and not any(c["selected"] for c in out):  # e.g. camera=canon from a bookmark
            out.insert(0, {"value": current, "label": current, "count": None, "title": None, "selected": True})
        return out

    folders = facets.folder if facets else []
    names = [os.path.basename(f.value or "") for f in folders]
    folder_label = (lambda v: os.path.basename(v.value) or v.value) if len(set(names)) == len(names) else (
        lambda v: v.value)
    types = [t for t in facets.type] if facets else []
    current_type = ",".join(asked.types)
    if len(asked.types) > 1:
        type_label = ", ".join(t.upper() for t in asked.types)
        type_choices = [{"value": current_type, "label": type_label, "count": None, "title": None, "selected": True},
                        *choices(types, "")]
    else:
        type_choices = choices(types, current_type)
    shape_counts = {v.value: v.count for v in (facets.orientation if facets else [])}
    years = []
    dated = sorted((v for v in (facets.year if facets else []) if v.value), key=lambda v: v.value, reverse=True)
    for y in dated if len(dated) > 1 else []:  # one year alone says nothing worth the room
        start, end = f"{y.value}-01-01", f"{y.value}-12-31"
        active = asked.after == start and asked.before == end
        params = asked.params(after="" if active else start, before="" if active else end)
        years.append({"label": y.label, "count": y.count, "active": active, "after": start, "before": end,
                      "href": f"{root}/?" + urlencode(params)})
    tags = []
    for t in (facets.tag if facets else [])[:BAR_TAGS]:
        q, on = toggle_tag(asked.q, t.value or "")
        tags.append({"label": t.label, "count": t.count, "active": on, "q": q,
                     "href": f"{root}/?" + urlencode(asked.params(q=q))})
    return {
        "tags": tags,
        "camera": choices(facets.camera if facets else [], asked.camera),
        "folder": choices(folders, asked.folder, label=folder_label, title=lambda v: v.value),
        "type": type_choices,
        "years": years,
        "shapes": [{"value": v, "label": f"{label} ({shape_counts[v]})" if v in shape_counts else label,
                    "selected": v == asked.orientation} for v, label in SHAPES],
        "sorts": [{"value": v, "label": label, "selected": v == asked.sort} for v, label in SORT_LABELS],
        "good": asked.min_score != "-1",
        "good_value": asked.min_score if asked.min_score not in ("", "-1") else "",
        "clear_href": f"{root}/?" + urlencode(asked.params(after="", before="", camera="", folder="", types=(),
                                                          orientation="", min_pixels="")),
        "filtered": asked.filtered,
    }


BAR_TAGS = 12  # the most common tags the filter bar shows (web/static/app.js shows as many)


def tag_token(name: str) -> str:
    """A tag as it is written in a query: ``tag:golden-retriever``."""
    return "tag:" + name.replace(" ", "-")


def toggle_tag(q: str, name: str) -> tuple[str, bool]:
    """``q`` with the tag added (at the end), or taken out when it is there; and whether it was there."""
    token = tag_token(name)
    words = q.split()
    if any(w.lower() == token for w in words):
        return " ".join(w for w in words if w.lower() != token), True
    return " ".join(words + [token]), False


def _sentence(message: str) -> str:
    """An error message as a sentence; one about a URL parameter names it as written ("“after” must be ...")."""
    first, _, rest = message.partition(" ")
    if first.rstrip(":") in PARAMETERS:
        return f"“{first.rstrip(':')}”{first[len(first.rstrip(':')):]} {rest}."
    return message[:1].upper() + message[1:] + "."


def _nothing_found(kind: str, asked: Asked) -> tuple[str, str]:
    what = f"No photos match “{asked.q}”" if kind == "text" else "No similar photos found"
    if asked.sort != "relevance" and asked.min_score != "-1":
        return (what.replace("No photos match", "No good matches for") if kind == "text" else what,
                "Untick “only good matches” to see every photo by date, or try other words.")
    if asked.filtered:
        return what + " with these filters", "Try fewer filters, or other words."
    return what, "Try other words, or search by a photo: drop one on the page, paste it, or pick a file."


def day(value: datetime | None) -> str:
    return f"{value.day} {value:%b %Y}" if value else "—"


def human_size(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


def when(value: datetime | None) -> str:
    return f"{value.day} {value:%B %Y, %H:%M}" if value else "—"


def ago(value: datetime | None) -> str | None:
    if value is None:
        return None
    seconds = max(0.0, (datetime.now(timezone.utc) - as_utc(value)).total_seconds())
    for span, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= span:
            n = int(seconds // span)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def _static_versions() -> dict[str, str]:
    versions = {}
    for path in (HERE / "static").iterdir():
        if path.is_file():
            versions[path.name] = hashlib.blake2b(path.read_bytes(), digest_size=5).hexdigest()
    return versions


def docs_assets_dir() -> Path | None:
    try:
        import fastapi_offline
    except ImportError:
        return None
    path = Path(fastapi_offline.__file__).resolve().parent / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None
