"""Answering queries over an index: text, image and "more like this".

A :class:`Searcher` only reads. It loads the encoder that built the index once,
keeps the vectors in memory, and notices when an indexer has written a new state
(:meth:`Searcher.refresh`), so a long-running server follows re-indexing without a
restart. Results carry their metadata, fetched with one SQL query per page.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np
from PIL import Image
from sqlalchemy import event

from photoseek import db
from photoseek.errors import BadInput, NotFound, Unavailable
from photoseek.files import is_under
from photoseek.imaging import open_image
from photoseek.settings import Settings
from photoseek.store import EXACT_SEARCH, IndexFiles, VectorStore, load_vectors
from photoseek.search.batching import Coalescer
from photoseek.search.filters import NO_DATE, FilterColumns
from photoseek.search.query import Filters, SearchRequest, Term

if TYPE_CHECKING:
    from photoseek.encoders import Encoder

TEXT_CACHE_SIZE = 1024
IMAGE_CACHE_SIZE = 32
# A filter that keeps at most this share of the photos is answered by scoring just those photos
# (one matrix product over their vectors) instead of a FAISS search that skips the others.
DIRECT_SCORING_SHARE = 0.01
# Sorting by date keeps only good matches: by default those whose score stands this many standard
# deviations above the query's mean score over the whole collection (see Searcher.cutoff_for).
CUTOFF_SIGMAS = 1.5
TEXT_BATCH_MAX = 16  # queries embedded together when they arrive at once
SEARCH_CONNECTIONS = 40


class IndexNotFound(Unavailable, RuntimeError):
    kind = "no_index"


class IndexReplaced(IndexNotFound):
    """The database at the index's path is no longer the one this searcher opened
    (``photoseek index --rebuild``): open a new :class:`Searcher`."""


@dataclass(frozen=True)
class Photo:
    """An indexed photo as shown to people (the path is display text)."""

    id: int
    path: str
    width: int
    height: int
    size_bytes: int
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    indexed_at: datetime
    file_type: str | None = None
    photo_date: datetime | None = None  # taken (EXIF), else the file's modification time: see date_source
    date_source: str | None = None  # "exif" or "file"

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class Hit:
    photo: Photo
    score: float


@dataclass(frozen=True)
class Page:
    """One page of a search's answer."""

    request: SearchRequest
    hits: list[Hit]
    next_offset: int | None
    cutoff: float | None  # the score below which photos were left out (None: none were)
    matches: int | None  # how many photos passed the cutoff, when there was one


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class LastRun:
    started_at: datetime
    finished_at: datetime | None
    status: str
    added: int
    updated: int
    moved: int
    removed: int
    skipped: int
    seconds: float


@dataclass(frozen=True)
class IndexStatus:
    index_dir: str
    model_id: str | None
    dim: int
    image_count: int
    skipped_count: int
    skipped: list[Skipped]
    roots: list[str]
    last_run: LastRun | None
    previous_run: LastRun | None  # the run before the last one
    last_change: LastRun | None  # the latest run that added, updated, moved or removed anything
    runs: int
    generation: int
    search: str  # exact or approximate (see VectorStore.describe)
    writable: bool  # False: a read-only index (searchable, not updatable here)


def read_status(index_dir: Path, skipped_limit: int = 100) -> IndexStatus:
    """What ``photoseek status`` shows, read without a :class:`Searcher`: no vectors loaded, no model,
    so it answers at once at any size (the kind of vector index is read from the file's header)."""
    files = IndexFiles(Path(index_dir).expanduser().resolve())
    if not files.exists():
        raise IndexNotFound(f"no index at {files.root}; create one with 'photoseek index FOLDER' (or pass --index DIR)")
    engine = db.open_database(files.database, readonly=True)
    try:
        with engine.connect() as conn:
            generation, dim, model_id = db.index_state(conn)
        search = VectorStore.describe_file(files.vectors, generation=generation, dim=dim) or EXACT_SEARCH
        return _status(files, db.make_session_factory(engine), model_id, search, skipped_limit)
    finally:
        engine.dispose()


def _status(files: IndexFiles, sessions, model_id: str | None, search: str, skipped_limit: int) -> IndexStatus:
    with sessions() as session:
        counts = db.counts(session, skipped_limit)
        generation, dim, _ = db.index_state(session)
        roots = [db.display_path(p) for p in db.root_paths(session)]
    run, previous = (counts.recent_runs + [None, None])[:2]
    writer_alive = files.writer_alive()

    def last(row: db.IndexRun | None) -> LastRun | None:
        if row is None:
            return None
        status = row.status
        if status == "running" and not writer_alive:
            status = "interrupted"  # its process is gone (the lock dies with it); the next run marks it so too
        return LastRun(db.as_utc(row.started_at), db.as_utc(row.finished_at), status, row.added, row.updated, row.moved,
                       row.removed, row.skipped, row.seconds)

    return IndexStatus(str(files.root), model_id, dim, counts.photos, counts.skipped,
                       [Skipped(p, r) for p, r in counts.skipped_files], roots, last(run), last(previous),
                       last(counts.last_change), counts.runs, generation, search, files.writable())


def load_encoder(model_id: str, precision: str = "auto") -> Encoder:
    """:func:`photoseek.encoders.load_encoder`, imported when a model is first needed (it brings torch:
    seconds that a status or a filter-only answer need not pay)."""
    from photoseek.encoders import load_encoder as load

    return load(model_id, precision=precision)


class _Lru:
    """A small thread-safe least-recently-used map of query embeddings."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@contextmanager
def _single_threaded_openmp():
    """One thread per search: FAISS's OpenMP threads only spin against each other and against
    concurrent requests (10-20 ms instead of 0.5 ms for 10,000 photos on 2 busy cores);
    requests run side by side in the server's thread pool instead.

    The setting belongs to the calling thread and torch shares it (one OpenMP runtime), so it
    is put back afterwards: left at 1, the next model call in this thread would run on one
    core (a text query 15 -> 19 ms, an uploaded photo twice as slow)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _photo(row) -> Photo:
    return Photo(
        id=row.id, path=db.display_path(row.path), width=row.width, height=row.height, size_bytes=row.size_bytes,
        taken_at=row.taken_at, camera_make=row.camera_make, camera_model=row.camera_model,
        indexed_at=db.as_utc(row.indexed_at), file_type=row.file_type, photo_date=row.photo_date, date_source=row.date_source,
    )


class Searcher:
    """Read-only queries over one index directory. Thread-safe."""

    def __init__(self, index_dir: Path, settings: Settings | None = None, *, encoder: Encoder | None = None):
        self.settings = settings or Settings()
        self.files = IndexFiles(Path(index_dir).expanduser().resolve())
        if not self.files.exists():
            raise IndexNotFound(
                f"no index at {self.files.root}; create one with 'photoseek index FOLDER' (or pass --index DIR)"
            )
        # One connection per thread that may query at once (the server's pool: web.app.worker_threads;
        # callers of their own may use more). Read-only: a searcher never writes, so an index on a
        # read-only mount or in another user's folder can be searched (an older schema is upgraded
        # on opening when the file can be written; see db.open_database).
        self._engine = db.open_database(self.files.database, readonly=True, connections=SEARCH_CONNECTIONS)
        self._sessions = db.make_session_factory(self._engine)
        with self._engine.connect() as conn:
            self.model_id = db.get_meta(conn, "model_id")
            self._index_uid = db.get_meta(conn, db.INDEX_UID)
        event.listen(self._engine, "connect", self._check_same_database)
        self._encoder = encoder
        self._encoder_lock = threading.Lock()  # guards loading/swapping the encoder
        self._inference_lock = threading.Lock()  # one forward pass at a time: two would only fight over the cores
        # Query embeddings already made: a repeated text query, or the next page of an uploaded photo,
        # costs no model call.
        self._text_cache = _Lru(TEXT_CACHE_SIZE)
        self._image_cache = _Lru(IMAGE_CACHE_SIZE)
        self._embed_texts = Coalescer(lambda texts: self._encode(lambda enc: enc.encode_texts(texts)),
                                      max_batch=TEXT_BATCH_MAX)
        self._vectors: VectorStore | None = None
        self._filters: FilterColumns | None = None  # loaded with the vectors: they describe the same photos
        self._loaded_generation = -1
        self._reload_lock = threading.Lock()
        self.refresh()

    # -- state -----------------------------------------------------------------------------

    def _check_same_database(self, dbapi_conn, _record) -> None:
        """Every connection opened later must reach the database we opened first: a rebuild
        replaces the file, and its rows would not match our vectors."""
        if db.read_index_uid(dbapi_conn) != self._index_uid:
            dbapi_conn.close()
            raise IndexReplaced(f"the index at {self.files.root} was rebuilt or replaced; searching it again "
                                "opens the new one")

    def _index_state(self) -> tuple[int, int, str | None]:
        with self._engine.connect() as conn:
            return db.index_state(conn)

    def refresh(self) -> bool:
        """Load the newest state an indexer has finished writing. True if it changed.

        While an indexer is mid-run the database moves ahead of ``vectors.faiss``; the
        vectors we have stay in use until a whole new file lands (rows of photos added
        since are simply not found yet; rows removed since are dropped from results).
        """
        with self._reload_lock:
            generation, dim, model_id = self._index_state()
            if generation == self._loaded_generation or not dim:
                return False
            store = VectorStore.load(self.files.vectors, dim=dim, generation=generation)
            if store is None:
                if self._vectors is not None and self.files.writer_alive():
                    return False  # an indexer is mid-run: keep answering from the state we have
                store = load_vectors(self.files, self._engine, dim=dim, generation=generation, persist=False,
                                     exact_up_to=self.settings.exact_search_up_to)
            if model_id != self.model_id:  # rebuilt with another model
                with self._encoder_lock:
                    self.model_id, self._encoder = model_id, None
                    self._text_cache.clear()
                    self._image_cache.clear()
            with self._engine.connect() as conn:
                columns = FilterColumns.load(conn)
            self._vectors, self._filters, self._loaded_generation = store, columns, generation
            return True

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    if not self.model_id:
                        raise IndexNotFound(f"the index at {self.files.root} is empty; run 'photoseek index FOLDER' first")
                    self._encoder = load_encoder(self.model_id, precision=self.settings.precision)
        return self._encoder

    def __len__(self) -> int:
        return len(self._vectors) if self._vectors is not None else 0

    # -- queries ---------------------------------------------------------------------------

    def embed_text(self, query: str) -> np.ndarray:
        query = " ".join(query.split())
        if not query:
            raise BadInput("the query is empty: say what to look for")
        if len(query) > self.settings.max_query_chars:
            raise BadInput(f"the query is too long (over {self.settings.max_query_chars} characters)")
        vector = self._text_cache.get(query)
        if vector is None:
            vector = self._text_cache.put(query, self._embed_texts(query))
        return vector

    def embed_image(self, image: Image.Image | bytes) -> np.ndarray:
        if not isinstance(image, (bytes, bytearray)):
            return self._encode(lambda enc: enc.encode_images([image]))[0]
        key = hashlib.blake2b(image, digest_size=16).digest()
        vector = self._image_cache.get(key)
        if vector is None:
            decoded, _ = open_image(bytes(image), draft_size=self.encoder.input_spec.size,
                                    max_pixels=self.settings.max_image_pixels)
            vector = self._image_cache.put(key, self._encode(lambda enc: enc.encode_images([decoded]))[0])
        return vector

    def _encode(self, fn) -> np.ndarray:
        encoder = self.encoder
        with self._inference_lock:
            return fn(encoder)

    # Shorthands for one-term searches (scripts, tests, the benchmark): each is a search() like any other.

    def search_text(self, query: str, limit: int = 20, offset: int = 0) -> list[Hit]:
        return self.search(SearchRequest(terms=(Term(text=query),), limit=limit, offset=offset)).hits

    def search_image(self, image: bytes, limit: int = 20, offset: int = 0) -> list[Hit]:
        return self.search(SearchRequest(terms=(Term(image=bytes(image)),), limit=limit, offset=offset)).hits

    def similar(self, image_id: int, limit: int = 20, offset: int = 0) -> list[Hit] | None:
        """Photos like an indexed one, itself left out; None if the id is unknown."""
        if self.vector(image_id) is None:
            return None
        return self.search(SearchRequest(terms=(Term(photo_id=image_id),), limit=limit, offset=offset)).hits

    def vector(self, image_id: int) -> np.ndarray | None:
        store = self._vectors
        vector = store.vector(image_id) if store is not None else None
        if vector is None:
            with self._engine.connect() as conn:
                vector = db.embedding(conn, image_id)
        return vector

    # -- the one search ---------------------------------------------------------------------

    def search(self, request: SearchRequest) -> Page:
        """Answer any search: weighted terms, filters, a cutoff, sorted by relevance or by date.

        Filters are part of the search, not applied after it: the page holds the best matches
        among the photos that pass them, exactly as a search over only those photos would.
        Raises :class:`~photoseek.errors.BadInput` / :class:`~photoseek.errors.NotFound`."""
        store, columns = self._vectors, self._filters
        vector = self.query_vector(request.terms)
        exclude = {t.photo_id for t in request.terms if t.photo_id is not None and t.weight > 0}
        allowed = None
        if request.filters.active and columns is not None:
            allowed = columns.select(request.filters)
        if store is None or not len(store):
            return Page(request, [], None, request.min_score, None)
        if request.sort == "relevance":
            cutoff = request.min_score
            want = request.offset + request.limit + 1 + len(exclude) + (8 if allowed is None else 0)
            scores, ids = self._rank(store, vector, want, allowed)
        else:
            cutoff = request.min_score if request.min_score is not None else self.cutoff_for(store, vector)
            scores, ids = self._above(store, vector, cutoff, allowed)
            # By date, then id, so that every page follows the one before without gaps or repeats; photos
            # with no date at all come last either way.
            dates = columns.dates_of(ids)
            newest = request.sort == "newest"
            undated = dates == NO_DATE
            order = np.lexsort((-ids if newest else ids, -dates if newest else dates, undated))
            scores, ids = scores[order], ids[order]
        pairs = [(int(i), float(s)) for i, s in zip(ids, scores)
                 if i >= 0 and int(i) not in exclude and (cutoff is None or s >= cutoff)]
        matches = len(pairs) if request.sort != "relevance" else None
        window = pairs[request.offset: request.offset + request.limit + 1 + 8]
        photos = self._photos([i for i, _ in window])
        hits = [Hit(photos[i], s) for i, s in window if i in photos]
        more = len(hits) > request.limit or len(pairs) > request.offset + len(window)
        next_offset = request.offset + request.limit if more else None
        return Page(request, hits[:request.limit], next_offset, cutoff, matches)

    def facets(self, filters: Filters, *, terms: tuple[Term, ...] = (), min_score: float | None = None,
               year: int | None = None) -> dict[str, list]:
        """Counts for the filter bar (see :func:`photoseek.db.facet_counts`). With ``terms``, over
        the photos that match them: those scoring ``min_score`` or more (default: the calibrated
        cutoff that sorting by date uses)."""
        ids = None
        store = self._vectors
        if terms and store is not None and len(store):
            vector = self.query_vector(terms)
            cutoff = min_score if min_score is not None else self.cutoff_for(store, vector)
            _, ids = self._above(store, vector, cutoff, None)
        with self._engine.connect() as conn:
            return db.facet_counts(conn, filters, ids=ids, year=year)

    def query_vector(self, terms: tuple[Term, ...] | list[Term]) -> np.ndarray:
        """The normalised weighted sum of the terms' unit embeddings."""
        total = None
        for term in terms:
            if term.text is not None:
                unit = self.embed_text(term.text)
            elif term.image is not None:
                unit = self.embed_image(term.image)
            else:
                unit = self.vector(term.photo_id)
                if unit is None:
                    raise NotFound(f"no photo has id {term.photo_id}")
            part = term.weight * np.asarray(unit, dtype=np.float32)
            total = part if total is None else total + part
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise BadInput("the terms cancel each other out: nothing is left to search for")
        return (total / norm).astype(np.float32)

    def cutoff_for(self, store: VectorStore, vector: np.ndarray) -> float:
        """The default cutoff when sorting by date, from this query's own scores over the whole
        collection: mean + CUTOFF_SIGMAS standard deviations. It adapts to each encoder's score
        scale (CLIP's text-image cosines sit near 0.3, the offline encoder's far higher) and to
        each query, with no constant in cosine units."""
        all_scores, _ = self._rank(store, vector, len(store), None)
        all_scores = all_scores[np.isfinite(all_scores)]
        return float(all_scores.mean() + CUTOFF_SIGMAS * all_scores.std())

    def _rank(self, store: VectorStore, vector: np.ndarray, k: int, allowed: np.ndarray | None):
        """Best ``k`` (scores, ids) among ``allowed`` (None: every photo)."""
        if allowed is not None and len(allowed) <= max(1, DIRECT_SCORING_SHARE * len(store)):
            scores, ids = self._score_ids(store, vector, allowed)
            top = np.argsort(-scores, kind="stable")[:k]
            return scores[top], ids[top]
        with _single_threaded_openmp():
            scores, ids = store.search(vector, k, allowed=allowed)
        return scores[0], ids[0]

    def _above(self, store: VectorStore, vector: np.ndarray, cutoff: float, allowed: np.ndarray | None):
        """Every (score, id) at or above ``cutoff`` among ``allowed``, best first."""
        if allowed is not None:
            scores, ids = self._score_ids(store, vector, allowed)
        else:
            with _single_threaded_openmp():
                scores, ids = store.search(vector, len(store))
            scores, ids = scores[0], ids[0]
        keep = (ids >= 0) & (scores >= cutoff)
        scores, ids = scores[keep], ids[keep]
        order = np.argsort(-scores, kind="stable")
        return scores[order], ids[order]

    def _score_ids(self, store: VectorStore, vector: np.ndarray, ids: np.ndarray):
        vectors, found = store.vectors(ids)
        return vectors @ vector, found

    def _photos(self, ids: list[int]) -> dict[int, Photo]:
        if not ids:
            return {}
        with self._engine.connect() as conn:
            return {row.id: _photo(row) for row in db.photo_rows(conn, ids)}

    # -- lookups ---------------------------------------------------------------------------

    def photo(self, image_id: int) -> Photo | None:
        return self._photos([image_id]).get(image_id)

    def file_path(self, image_id: int) -> Path | None:
        """The real file of an indexed photo, for serving it; None for anything else."""
        with self._engine.connect() as conn:
            path = db.photo_path(conn, image_id)
            if path is None:
                return None
            roots = [os.path.realpath(p) for p in db.root_paths(conn)]
        # The path was inside an indexed folder when it was indexed; since then it may have been
        # replaced by a symbolic link to anywhere (or by a FIFO or device). Serve it only if it
        # still resolves to a regular file inside an indexed folder.
        real = os.path.realpath(path)
        if not is_under(real, roots):
            return None
        try:
            if not stat.S_ISREG(os.stat(real).st_mode):
                return None
        except OSError:
            return None
        return Path(real)

    def status(self, skipped_limit: int = 100) -> IndexStatus:
        search = self._vectors.describe() if self._vectors is not None else EXACT_SEARCH
        return _status(self.files, self._sessions, self.model_id, search, skipped_limit)

    def close(self) -> None:
        self._engine.dispose()
