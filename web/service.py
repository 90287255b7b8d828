"""The service behind the web app: the searcher it answers from, kept fresh as the index on
disk changes, and the searches the page and the API share.

Routes (:mod:`.api`, :mod:`.pages`) stay thin: they translate HTTP into calls here and
results into responses. Every error here is a :class:`~photoseek.errors.PhotoseekError` with
the HTTP status it answers with; the app turns it into JSON or an error page in one place.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import asyncio
from starlette.concurrency import run_in_threadpool

from photoseek.errors import BadInput, PhotoseekError, Unavailable
from photoseek.imaging import DecodeError
from photoseek.search import IndexNotFound, Photo, Searcher
from photoseek.search.engine import Page
from photoseek.search.query import Filters, SearchRequest, Term, parse_query
from photoseek.settings import Settings, usable_cores
from photoseek.storage import backend_of, catalogue_exists
from photoseek.store import IndexFiles

from .thumbnails import ThumbnailCache, thumbnail_dir

log = logging.getLogger("photoseek.web")

REFRESH_INTERVAL = 1.0
NO_INDEX = "no index yet: run 'photoseek index FOLDER' to create one, then search again"
EMPTY_INDEX = "the index is empty: run 'photoseek index FOLDER' to add photos"
T = TypeVar("T")


class Service:
    """The searcher behind the app, swapped or refreshed as the index on disk changes."""

    def __init__(self, settings: Settings, searcher: Searcher | None, refresh_interval: float):
        self.settings = settings
        self.files = IndexFiles(settings.resolved_index_dir if searcher is None else searcher.files.root)
        self.searcher = searcher
        self.catalogue_is_file = backend_of(settings.database_url) == "sqlite"
        self.owned: list[Searcher] = []
        self.refresh_interval = refresh_interval
        self.thumbs = ThumbnailCache(thumbnail_dir(self.files), max_pixels=settings.max_image_pixels)
        self._db_id = self._db_identity()
        self._checked = time.monotonic()
        self._lock = asyncio.Lock()

    def _db_identity(self) -> tuple | None:
        """What changes when the catalogue is replaced: the SQLite file (``--rebuild`` writes a new one).
        A database server's catalogue is never replaced under us; its generation says what changed."""
        if not self.catalogue_is_file:
            return ("server", self.settings.database_url)
        try:
            st = os.stat(self.files.database)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def open(self) -> None:
        """At start-up: open the index if there is one and load its model (blocking)."""
        if self.searcher is None and catalogue_exists(self.files.root, self.settings.database_url):
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
            raise Unavailable(NO_INDEX, kind="no_index")
        if not searcher.model_id:
            raise Unavailable(EMPTY_INDEX, kind="empty_index")
        return searcher

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


def search_request(settings: Settings, *, q: str | None, similar: int | None, filters: Filters, **rest) -> SearchRequest:
    """The API's parameters as a search request. Raises BadInput (400) with the parameter's name."""
    terms: list[Term] = [Term(photo_id=similar)] if similar is not None else []
    if q is not None and q.strip():
        terms += parse_query(q, max_chars=settings.max_query_chars)
    elif similar is None:
        raise BadInput("the query is empty: give q (what to look for, e.g. ?q=a+dog+on+the+beach) or similar (a "
                       "photo id)")
    return SearchRequest(terms=tuple(terms), filters=filters, **rest)


def answer(searcher: Searcher, search_request: SearchRequest, settings: Settings) -> tuple[Page, Photo | None]:
    """The page for a search (every kind: the page, the API and uploads come through here), and the
    indexed photo it is about, if any. A photo sent to search by must be an image we read (415
    otherwise), of at most ``max_upload_bytes``; it is embedded once however many pages are asked."""
    from .uploads import sniff

    for term in search_request.terms:
        if term.image is not None:
            if len(term.image) > settings.max_upload_bytes:
                raise PhotoseekError(f"an image term is too large: the limit is {settings.max_upload_bytes} bytes",
                                     status=413, kind="too_large")
            sniff(term.image)
    try:
        page = searcher.search(search_request)
    except DecodeError as exc:
        raise decode_error(exc) from None
    similar = search_request.similar_to
    return page, searcher.photo(similar) if similar is not None else None


def decode_error(exc: DecodeError) -> PhotoseekError:
    """A query image that cannot be read, as people should hear it (415 for what is not an image)."""
    if exc.kind == "not_image":
        message = "that file is not an image we can read (try JPEG, PNG, WebP, GIF, HEIC or TIFF)"
    elif exc.kind == "too_large":
        message = f"that image is too large to process ({exc.reason})"
    else:
        message = f"that image cannot be read: {exc.reason}"
    return PhotoseekError(message, kind=exc.kind, status=exc.status)
