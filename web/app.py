"""The FastAPI application: the search page (Jinja2, plain JS) and the JSON API.

``create_app(settings, searcher=None)`` builds it. Given a :class:`Searcher` (tests, or
``photoseek serve`` which loads the model before listening) it serves that one; else
it opens the index in its lifespan and loads the encoder before the first request.

Every search runs in the thread pool, so the event loop keeps answering while a
query is embedded. At most once a second a request checks whether an indexer has
finished writing a new state (``Searcher.refresh``) or replaced the database
(``--rebuild``), so a running server follows re-indexing without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode

import anyio
import jinja2
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from photoseek.encoders import EncoderUnavailable
from photoseek.imaging import DecodeError, photo_formats
from photoseek.search import Hit, IndexNotFound, Photo, Searcher
from photoseek.settings import Settings, usable_cores
from photoseek.store import IndexFiles

from . import security
from .schemas import (
    ErrorResponse, PhotoOut, SearchResponse, StatusResponse, hits_out, photo_out, photo_version, status_out,
)
from .thumbnails import ThumbnailCache, ThumbnailError, thumbnail_dir
from .uploads import UploadError, read_upload

log = logging.getLogger("photoseek.web")

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 36
DEFAULT_LIMIT = 24
MAX_LIMIT = 200
MAX_OFFSET = 100_000
REFRESH_INTERVAL = 1.0
IMAGE_CACHE_SIZE = 32
SUGGESTIONS = ("a cat", "coffee", "the sea", "mountains", "a guitar", "snow")
NO_INDEX = "no index yet: run 'photoseek index FOLDER' to create one, then search again"
EMPTY_INDEX = "the index is empty: run 'photoseek index FOLDER' to add photos"
MIME = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
        "BMP": "image/bmp", "TIFF": "image/tiff", "HEIF": "image/heif", "AVIF": "image/avif"}
ImageId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="A photo's id, as returned by a search.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many results.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="How many results to skip (paging).")]
T = TypeVar("T")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# -- the index, kept fresh ---------------------------------------------------------------------


class Service:
    """The searcher behind the app, swapped or refreshed as the index on disk changes."""

    def __init__(self, settings: Settings, searcher: Searcher | None, refresh_interval: float):
        self.settings = settings
        self.files = IndexFiles(settings.resolved_index_dir if searcher is None else searcher.files.root)
        self.searcher = searcher
        self.owned: list[Searcher] = []
        self.refresh_interval = refresh_interval
        self.thumbs = ThumbnailCache(thumbnail_dir(self.files), max_pixels=settings.max_image_pixels)
        self._db_id = self._db_identity()
        self._checked = time.monotonic()
        self._lock = asyncio.Lock()
        self._vectors: OrderedDict[tuple[str | None, str], np.ndarray] = OrderedDict()
        self._vectors_lock = threading.Lock()

    def _db_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.files.database)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def open(self) -> None:
        """At start-up: open the index if there is one and load its model (blocking)."""
        if self.searcher is None and self.files.exists():
            try:
                self.searcher = self._new_searcher()
            except IndexNotFound:
                pass
        self._db_id = self._db_identity()
        self.warm()

    def warm(self) -> None:
        searcher = self.searcher
        if searcher is not None and searcher.model_id:
            searcher.encoder.warm_up()  # now, rather than on the first search

    def _new_searcher(self) -> Searcher:
        searcher = Searcher(self.files.root, self.settings)
        self.owned.append(searcher)
        return searcher

    async def current(self) -> Searcher | None:
        """The searcher to use, after checking (at most every ``refresh_interval`` s) for a new index state."""
        now = time.monotonic()
        if now - self._checked >= self.refresh_interval and not self._lock.locked():
            async with self._lock:
                self._checked = now
                try:
                    await run_in_threadpool(self._refresh)
                except Exception:  # never let a refresh failure take the service down
                    log.exception("could not reload the index; still answering from the state already loaded")
        return self.searcher

    def _refresh(self) -> None:
        identity = self._db_identity()
        if identity is None:  # no database (yet, or being rebuilt): keep what we have
            return
        old = self.searcher
        if old is None or identity != self._db_id:
            # First index, or the database was replaced (photoseek index --rebuild): open the new one.
            try:
                self.searcher = self._new_searcher()
            except IndexNotFound:
                return
            self._db_id = identity
            log.info("opened the index at %s (%d photos)", self.files.root, len(self.searcher))
            if old is not None and old in self.owned:
                self.owned.remove(old)
                old.close()
            self.warm()
        else:
            model = old.model_id
            if old.refresh():
                log.info("reloaded the index: %d photos", len(old))
                if old.model_id != model:
                    self.warm()

    def need(self, searcher: Searcher | None) -> Searcher:
        if searcher is None:
            raise ApiError(503, NO_INDEX)
        if not searcher.model_id:
            raise ApiError(503, EMPTY_INDEX)
        return searcher

    def image_vector(self, searcher: Searcher, data: bytes) -> np.ndarray:
        """Embed an uploaded image; the same bytes again (its next page) cost nothing."""
        key = (searcher.model_id, hashlib.blake2b(data, digest_size=16).hexdigest())
        with self._vectors_lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
                return vector
        vector = searcher.embed_image(data)
        with self._vectors_lock:
            self._vectors[key] = vector
            while len(self._vectors) > IMAGE_CACHE_SIZE:
                self._vectors.popitem(last=False)
        return vector

    def close(self) -> None:
        for searcher in self.owned:
            searcher.close()
        self.owned.clear()


async def run(fn: Callable[..., T], *args: Any) -> T:
    return await run_in_threadpool(fn, *args)


def worker_threads(settings: Settings) -> int:
    """Threads for blocking work (searches, thumbnails, pages): four per core, 8 to 40.

    anyio's default is 40 whatever the machine. On 2 cores most of them only queue for the
    GIL and the cores, each holding its request's buffers: under 32 mixed clients
    (bench/load.py) text searches' p99 was 500 ms with 40 threads, 223 ms with 8. Fewer hurt:
    concurrent new text queries wait in their threads to share one text-tower pass, and with
    4 threads 8 clients' new queries took 165 ms (p50) instead of 130-140.
    """
    if settings.worker_threads:
        return settings.worker_threads
    return min(40, max(8, 4 * usable_cores()))


# -- searching (shared by the page and the API) ------------------------------------------------


def _page(hits: list[Hit], limit: int, offset: int) -> tuple[list[Hit], int | None]:
    """Searches ask for one extra hit to learn whether there is a next page."""
    return hits[:limit], (offset + limit if len(hits) > limit else None)


def _check_query(q: str, settings: Settings) -> str:
    if len(q) > settings.max_query_chars:
        raise ApiError(400, f"the query is too long ({len(q)} characters; the limit is {settings.max_query_chars})")
    if not q.strip():
        raise ApiError(400, "the query is empty: say what to look for, e.g. ?q=a+dog+on+the+beach")
    return q


def _text_search(searcher: Searcher, q: str, limit: int, offset: int) -> tuple[list[Hit], int | None]:
    try:
        return _page(searcher.search_text(q, limit + 1, offset), limit, offset)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _image_search(service: Service, searcher: Searcher, data: bytes, limit: int, offset: int):
    try:
        vector = service.image_vector(searcher, data)
    except DecodeError as exc:
        raise _decode_error(exc) from None
    return _page(searcher.search_vector(vector, limit + 1, offset), limit, offset)


def _similar(searcher: Searcher, image_id: int, limit: int, offset: int) -> tuple[Photo, list[Hit], int | None]:
    photo = searcher.photo(image_id)
    hits = searcher.similar(image_id, limit + 1, offset) if photo is not None else None
    if photo is None or hits is None:
        raise ApiError(404, f"no photo has id {image_id}")
    return (photo, *_page(hits, limit, offset))


def _decode_error(exc: DecodeError) -> ApiError:
    reason = exc.reason
    if reason.startswith("not an image"):
        return ApiError(415, "that file is not an image we can read (try JPEG, PNG, WebP, GIF, HEIC or TIFF)")
    if reason.startswith("image too large"):
        return ApiError(400, f"that image is too large to process ({reason})")
    return ApiError(400, f"that image cannot be read: {reason}")


def _upload_error(exc: UploadError) -> ApiError:
    return ApiError(exc.status, exc.message)


# -- presentation helpers ----------------------------------------------------------------------


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
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # the index stores UTC
    seconds = max(0.0, (datetime.now(timezone.utc) - value).total_seconds())
    for span, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= span:
            n = int(seconds // span)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _static_versions() -> dict[str, str]:
    versions = {}
    for path in (HERE / "static").iterdir():
        if path.is_file():
            versions[path.name] = hashlib.blake2b(path.read_bytes(), digest_size=5).hexdigest()
    return versions


def _docs_assets() -> Path | None:
    try:
        import fastapi_offline
    except ImportError:
        return None
    path = Path(fastapi_offline.__file__).resolve().parent / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None


# -- the app -----------------------------------------------------------------------------------


def create_app(
    settings: Settings | None = None,
    searcher: Searcher | None = None,
    *,
    refresh_interval: float = REFRESH_INTERVAL,
    page_size: int = PAGE_SIZE,
) -> FastAPI:
    """The web app over ``settings.index_dir`` (or over ``searcher``, which stays the caller's to close)."""
    settings = settings or Settings()
    service = Service(settings, searcher, refresh_interval)
    static_versions = _static_versions()
    docs_assets = _docs_assets()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        anyio.to_thread.current_default_thread_limiter().total_tokens = worker_threads(settings)
        try:
            await run(service.open)
        except EncoderUnavailable as exc:
            raise RuntimeError(f"cannot load the model that built the index: {exc}") from None
        yield
        service.close()

    app = FastAPI(
        title="photoseek",
        version="0.1.0",
        summary="Find your photos by what is in them.",
        description=(
            "Text search, reverse image search and 'more like this' over a photoseek index.\n\n"
            "Results are ordered best first; `score` is the cosine similarity to the query. Photos are addressed "
            "by `id` only. Errors are JSON: `{\"status\", \"error\", \"message\"}`.\n\n"
            "When the server runs with an access token, send `Authorization: Bearer TOKEN` "
            "(or sign in once in the browser)."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings

    allowed_hosts = None if settings.token else {"localhost", "127.0.0.1", "::1", settings.host.strip("[]").lower()}
    app.add_middleware(security.SecurityMiddleware, token=settings.token, allowed_hosts=allowed_hosts)

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["human_size"] = human_size
    env.filters["when"] = when
    templates = Jinja2Templates(env=env)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    if docs_assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=docs_assets), name="docs-assets")

    def base_context(request: Request, searcher: Searcher | None) -> dict[str, Any]:
        root = _root(request)
        index = {"exists": searcher is not None, "ready": False, "count": 0, "model": None, "updated": None}
        if searcher is not None:
            st = searcher.status(skipped_limit=0)
            index.update(ready=bool(st.model_id) and st.image_count > 0, count=st.image_count, model=st.model_id,
                         updated=ago(st.last_run.finished_at or st.last_run.started_at) if st.last_run else None)
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

    async def search_page(request: Request, *, q: str | None = None, similar: str | None = None,
                          limit: str | None = None, upload: tuple[bytes, str | None] | None = None,
                          upload_error: UploadError | None = None) -> HTMLResponse:
        searcher = await service.current()
        context = await run(base_context, request, searcher)
        root = context["root"]
        try:
            shown = max(1, min(int(limit), 500)) if limit and limit.isdigit() else page_size
        except ValueError:
            shown = page_size
        kind, hits, next_offset, source, message, status = None, [], None, None, None, 200
        q = (q or "").strip()
        upload_name = None
        try:
            if upload_error is not None:
                kind = "image"
                raise _upload_error(upload_error)
            if upload is not None:
                kind, upload_name = "image", upload[1]
                hits, next_offset = await run(_image_search, service, service.need(searcher), upload[0], shown, 0)
                next_offset = None  # a plain-HTML upload cannot be paged; the JS page re-sends the image
            elif similar:
                kind = "similar"
                if not similar.isdigit() or not 1 <= int(similar) < 2**63:
                    raise ApiError(404, f"no photo has id {similar[:40]!r}")
                photo, hits, next_offset = await run(_similar, service.need(searcher), int(similar), shown, 0)
                source = photo_out(photo, root)
            elif q:
                kind = "text"
                _check_query(q, settings)
                hits, next_offset = await run(_text_search, service.need(searcher), q, shown, 0)
        except ApiError as exc:
            status = exc.status
            message = index_notice(searcher) if status == 503 else None
            if message is None:
                titles = {404: "That photo is not in the index", 413: "That file is too large",
                          415: "That is not a photo we can read"}
                title = titles.get(status, "That did not work" if kind != "image" else "Could not search by that image")
                message = notice("error", title, exc.message[:1].upper() + exc.message[1:] + ".")
        else:
            if kind is None:
                message = index_notice(searcher)
            elif not hits:
                message = index_notice(searcher) or notice(
                    "info", f"No photos match “{q}”" if kind == "text" else "No similar photos found",
                    "Try other words, or search by a photo: drop one on the page, paste it, or pick a file.")
        results = hits_out(hits, 0, root)
        more_url = None
        if next_offset is not None:
            params = {"q": q} if kind == "text" else {"similar": similar}
            more_url = f"{root}/?" + urlencode({**params, "limit": shown + page_size})
        initial = {
            "kind": kind, "query": q if kind == "text" else None,
            "similar": int(similar) if kind == "similar" and source else None,
            "source": source.model_dump(mode="json") if source else None,
            "results": [h.model_dump(mode="json") for h in results], "next_offset": next_offset,
            "upload_name": upload_name, "error": message if message and message["level"] == "error" else None,
        }
        context.update(q=q, kind=kind, hits=results, source=source, message=message, more_url=more_url,
                       suggestions=SUGGESTIONS, initial=initial, upload_name=upload_name)
        return render(request, "index.html", context, status)

    # -- pages ---------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home(request: Request, q: str | None = None, similar: str | None = None, limit: str | None = None):
        return await search_page(request, q=q, similar=similar, limit=limit)

    @app.post("/", response_class=HTMLResponse, include_in_schema=False)
    async def home_upload(request: Request):
        """The page's file form, for browsers without JavaScript."""
        try:
            upload = await read_upload(request, settings.max_upload_bytes)
        except UploadError as exc:
            return await search_page(request, upload_error=exc)
        return await search_page(request, upload=(upload.data, upload.filename))

    @app.get("/photos/{image_id}", response_class=HTMLResponse, include_in_schema=False)
    async def photo_page(request: Request, image_id: ImageId):
        searcher = service.need(await service.current())
        photo = await run(searcher.photo, image_id)
        if photo is None:
            raise ApiError(404, f"no photo has id {image_id}")
        context = await run(base_context, request, searcher)
        context["photo"] = photo_out(photo, context["root"])
        return render(request, "photo.html", context)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request, next: str | None = None, error: str | None = None):
        root = _root(request)
        if not settings.token:
            return RedirectResponse(security.safe_next(next, root), status_code=303)
        context = await run(base_context, request, None)
        context.update(next=security.safe_next(next, root), error="That token is not right." if error else None)
        return render(request, "login.html", context, 401 if error else 200)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request):
        root = _root(request)
        if not settings.token:
            return RedirectResponse(f"{root}/", status_code=303)
        fields = dict(parse_qsl((await _small_body(request)).decode("utf-8", "replace")))
        target = security.safe_next(fields.get("next"), root)
        if not security.token_matches(fields.get("token", "").strip(), settings.token):
            await asyncio.sleep(0.5)  # slows guessing; a real token is long and random anyway
            return RedirectResponse(f"{root}/login?" + urlencode({"next": target, "error": "1"}), status_code=303)
        response = RedirectResponse(target, status_code=303)
        response.headers["Set-Cookie"] = security.session_cookie(
            settings.token, secure=request.url.scheme == "https", root_path=root)
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request):
        root = _root(request)
        response = RedirectResponse(f"{root}/login" if settings.token else f"{root}/", status_code=303)
        response.headers["Set-Cookie"] = security.clear_cookie(root)
        return response

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs(request: Request):
        root = _root(request)
        context = {"static": lambda name: f"{root}/static/{name}?v={static_versions.get(name, '0')}",
                   "assets": f"{root}/docs-assets" if docs_assets else None, "openapi_url": f"{root}{app.openapi_url}"}
        response = render(request, "docs.html", context)
        response.headers["Content-Security-Policy"] = security.DOCS_CSP
        return response

    # -- API -----------------------------------------------------------------------------------

    def no_store(response: Response) -> None:
        response.headers["Cache-Control"] = "no-store"

    errors = {
        400: {"model": ErrorResponse, "description": "Bad request (e.g. an empty or too long query)"},
        404: {"model": ErrorResponse, "description": "No photo with this id"},
        503: {"model": ErrorResponse, "description": "No index yet"},
    }
    api = APIRouter(prefix="/api", dependencies=[Depends(no_store)], responses={400: errors[400], 503: errors[503]})

    @api.get("/search", response_model=SearchResponse, tags=["search"], summary="Search by text")
    async def search_text(request: Request, q: Annotated[str, Query(description="What to look for, in words.")],
                          limit: Limit = DEFAULT_LIMIT, offset: Offset = 0) -> SearchResponse:
        _check_query(q, settings)
        searcher = service.need(await service.current())
        hits, next_offset = await run(_text_search, searcher, q, limit, offset)
        return SearchResponse(kind="text", query=q, offset=offset, limit=limit, next_offset=next_offset,
                              results=hits_out(hits, offset, _root(request)))

    @api.post(
        "/search/image", response_model=SearchResponse, tags=["search"], summary="Search by an image (reverse image search)",
        responses={413: {"model": ErrorResponse, "description": "Upload too large"},
                   415: {"model": ErrorResponse, "description": "Not an image"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary", "description": "The query image."}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        }}},
    )
    async def search_image(request: Request, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0) -> SearchResponse:
        """Upload a photo (multipart field `file`, or the raw image as the body); get the indexed photos most like
        it. The upload is kept in memory only, up to `max_upload_bytes`."""
        searcher = service.need(await service.current())
        try:
            upload = await read_upload(request, settings.max_upload_bytes)
        except UploadError as exc:
            raise _upload_error(exc) from None
        hits, next_offset = await run(_image_search, service, searcher, upload.data, limit, offset)
        return SearchResponse(kind="image", query=None, offset=offset, limit=limit, next_offset=next_offset,
                              results=hits_out(hits, offset, _root(request)))

    @api.get("/images/{image_id}/similar", response_model=SearchResponse, tags=["images"],
             summary="Photos like an indexed one", responses={404: errors[404]})
    async def similar(request: Request, image_id: ImageId, limit: Limit = DEFAULT_LIMIT,
                      offset: Offset = 0) -> SearchResponse:
        """The photo itself is left out."""
        searcher = service.need(await service.current())
        photo, hits, next_offset = await run(_similar, searcher, image_id, limit, offset)
        root = _root(request)
        return SearchResponse(kind="similar", query=None, source=photo_out(photo, root), offset=offset, limit=limit,
                              next_offset=next_offset, results=hits_out(hits, offset, root))

    async def _photo(image_id: int) -> tuple[Searcher, Photo]:
        searcher = service.need(await service.current())
        photo = await run(searcher.photo, image_id)
        if photo is None:
            raise ApiError(404, f"no photo has id {image_id}")
        return searcher, photo

    @api.get("/images/{image_id}", response_model=PhotoOut, tags=["images"], summary="A photo's metadata",
             responses={404: errors[404]})
    async def image(request: Request, image_id: ImageId) -> PhotoOut:
        _, photo = await _photo(image_id)
        return photo_out(photo, _root(request))

    @api.get("/images/{image_id}/thumbnail", tags=["images"], summary="A photo's thumbnail (WebP)",
             response_class=FileResponse, responses={
                 200: {"content": {"image/webp": {}}, "description": "The thumbnail"}, 404: errors[404]})
    async def thumbnail(image_id: ImageId,
                        size: Annotated[Literal["small", "large"], Query(
                            description="small: about 320 px on the long side; large: about 1600 px")] = "small",
                        v: Annotated[str | None, Query(description="Version from the photo's URLs (for caching)")] = None):
        searcher, photo = await _photo(image_id)
        source = await run(searcher.file_path, image_id)
        if source is None:
            raise ApiError(404, f"the file of photo {image_id} is no longer where it was indexed; "
                                "run 'photoseek index' to bring the index up to date")
        try:
            path = await run(service.thumbs.get, photo, source, size)
        except ThumbnailError as exc:
            raise ApiError(exc.status, exc.message) from None
        cache = "private, max-age=31536000, immutable" if v == photo_version(photo) else "private, max-age=300"
        return FileResponse(path, media_type="image/webp",
                            headers={"Cache-Control": cache, "Content-Security-Policy": security.FILE_CSP})

    @api.get("/images/{image_id}/file", tags=["images"], summary="A photo's original file",
             response_class=FileResponse, responses={
                 200: {"content": {"image/*": {}}, "description": "The original file"}, 404: errors[404]})
    async def original(image_id: ImageId):
        """Only files in the index are served, and only while they still are images."""
        searcher, photo = await _photo(image_id)
        source = await run(searcher.file_path, image_id)
        fmt = await run(_image_format, source) if source is not None else None
        if fmt is None:
            raise ApiError(404, f"the file of photo {image_id} is no longer on disk (or no longer an image); "
                                "run 'photoseek index' to bring the index up to date")
        return FileResponse(source, media_type=MIME.get(fmt, "application/octet-stream"), filename=photo.name,
                            content_disposition_type="inline",
                            headers={"Cache-Control": "private, max-age=300",
                                     "Content-Security-Policy": security.FILE_CSP})

    @api.get("/status", response_model=StatusResponse, tags=["index"], summary="What the index holds")
    async def status(skipped: Annotated[int, Query(ge=0, le=10_000, description="List up to this many skipped files.")] = 100
                     ) -> StatusResponse:
        searcher = await service.current()
        if searcher is None:
            return StatusResponse(ready=False, message=NO_INDEX, index_dir=str(service.files.root), model=None)
        return status_out(await run(searcher.status, skipped))

    app.include_router(api)

    # -- errors --------------------------------------------------------------------------------

    def wants_html(request: Request) -> bool:
        path = request.url.path[len(_root(request)):]
        return not path.startswith("/api/") and "text/html" in request.headers.get("accept", "")

    async def error_response(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
        if wants_html(request):
            context = await run(base_context, request, service.searcher)
            titles = {404: "Not found", 503: "No index yet"}
            context.update(title=titles.get(status, "Something went wrong"), text=message[:1].upper() + message[1:] + ".")
            return render(request, "error.html", context, status)
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        return JSONResponse({"status": status, "error": phrase, "message": message}, status_code=status,
                            headers={"Cache-Control": "no-store", **(headers or {})})

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return await error_response(request, exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"nothing here: {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed here"
        return await error_response(request, exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            loc = err.get("loc", ())
            if loc and loc[0] == "path":
                return await error_response(request, 404, f"no photo has id {str(err.get('input'))[:40]!r}")
            name = ".".join(str(x) for x in loc[1:]) or "request"
            problems.append(f"{name}: {err.get('msg', 'invalid')}")
        return await error_response(request, 400, "; ".join(problems) or "bad request")

    @app.exception_handler(EncoderUnavailable)
    async def encoder_unavailable(request: Request, exc: EncoderUnavailable):
        return await error_response(request, 503, f"the model that built the index cannot be loaded: {exc}")

    @app.exception_handler(IndexNotFound)
    async def index_not_found(request: Request, exc: IndexNotFound):
        return await error_response(request, 503, str(exc))

    return app


def _image_format(path: Path) -> str | None:
    """The Pillow format of a file on disk, if it is still a supported image (header only)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path, formats=photo_formats()) as img:
                return img.format
    except Exception:
        return None


async def _small_body(request: Request, limit: int = 4096) -> bytes:
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, "form too large")
    except ClientDisconnect:
        raise ApiError(400, "the request was interrupted") from None
    return bytes(body)
