"""The FastAPI application: a thin factory that wires the service, the page and the API together.

``create_app(settings, searcher=None)`` builds it. Given a :class:`Searcher` (tests, or
``photoseek serve`` which loads the model before listening) it serves that one; else
it opens the index in its lifespan and loads the encoder before the first request.

Every search runs in the thread pool, so the event loop keeps answering while a
query is embedded. At most once a second a request checks whether an indexer has
finished writing a new state (``Searcher.refresh``) or replaced the database
(``--rebuild``), so a running server follows re-indexing without a restart.

Errors: every :class:`~photoseek.errors.PhotoseekError` carries its HTTP status; it becomes
JSON ``{status, error, message}`` for the API and an error page for browsers, here only.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from http import HTTPStatus

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from photoseek import __version__
from photoseek.encoders import EncoderUnavailable
from photoseek.errors import PhotoseekError
from photoseek.search import Searcher
from photoseek.settings import Settings

from . import security
from .api import api_router, root_path
from .feedback import feedback_router
from .pages import HERE, PAGE_SIZE, docs_assets_dir, pages_router
from .service import REFRESH_INTERVAL, Service, run, worker_threads

log = logging.getLogger("photoseek.web")

__all__ = ["create_app", "worker_threads"]


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
    docs_assets = docs_assets_dir()

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
        version=__version__,
        summary="Find your photos by what is in them.",
        description=(
            "Text search, reverse image search and 'more like this' over a photoseek index, with filters, "
            "sorting by date and query arithmetic.\n\n"
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

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    if docs_assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=docs_assets), name="docs-assets")

    pages, error_page = pages_router(settings, service, page_size=page_size, openapi_url=app.openapi_url)
    app.include_router(pages)
    app.include_router(api_router(settings, service))
    app.include_router(feedback_router(settings, service))  # issue 13: marks and tuning

    # -- errors --------------------------------------------------------------------------------

    def wants_html(request: Request) -> bool:
        path = request.url.path[len(root_path(request)):]
        return not path.startswith("/api/") and "text/html" in request.headers.get("accept", "")

    async def error_response(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
        if wants_html(request):
            return await error_page(request, status, message)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        return JSONResponse({"status": status, "error": phrase, "message": message}, status_code=status,
                            headers={"Cache-Control": "no-store", **(headers or {})})

    @app.exception_handler(PhotoseekError)
    async def photoseek_error(request: Request, exc: PhotoseekError):
        message = exc.message
        if isinstance(exc, EncoderUnavailable):
            message = f"the model that built the index cannot be loaded: {message}"
        return await error_response(request, exc.status, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"nothing here: {request.url.path}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            message = f"{request.method} is not allowed here"
            # Every method the API documents for the path, not only the first route's (GET and POST
            # /api/search are two routes).
            path = request.url.path[len(root_path(request)):]
            documented = app.openapi()["paths"].get(path)
            if documented:
                headers["Allow"] = ", ".join(sorted(m.upper() for m in documented))
        return await error_response(request, exc.status_code, message, headers)

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

    return app
