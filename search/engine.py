"""Answering queries over an index: text, image and "more like this".

A :class:`Searcher` only reads. It loads the encoder that built the index once, searches the
vectors through the catalogue's vector search (the FAISS file in memory for SQLite,
:mod:`photoseek.search.local`; SQL for PostgreSQL, :mod:`photoseek.storage.postgres`), and
notices when an indexer, on this machine or another, has written a new state
(:meth:`Searcher.refresh`), so a long-running server follows re-indexing without a restart.
Results carry their metadata, fetched with one SQL query per page.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from photoseek.errors import BadInput, IndexNotFound, NotFound
from photoseek.files import display_path, is_under, map_path, parse_path_map
from photoseek.keywords import REASONS, SEMANTIC, query_words
from photoseek.settings import Settings
from photoseek.storage import catalogue_exists, open_catalogue, open_reader
from photoseek.times import as_utc
from photoseek.tune import CurrentAdapter
from photoseek.store import EXACT_SEARCH, IndexFiles, VectorStore, load_vectors
from photoseek.search.batching import Coalescer
from photoseek.search.status import IndexStatus, LastRun, Skipped, read_status, status_of  # noqa: F401
from photoseek.search.filters import NO_DATE, FilterColumns
from photoseek.search.fusion import reciprocal_rank_fusion
from photoseek.search.local import LocalVectorSearch
from photoseek.search.query import Filters, SearchRequest, Term, split_tags
from photoseek.search.tag_fusion import merge_tops, tagged_first

if TYPE_CHECKING:
    from photoseek.storage import Catalogue
    from PIL import Image

    from photoseek.encoders import Encoder

TEXT_CACHE_SIZE = 1024
IMAGE_CACHE_SIZE = 32
# Sorting by date keeps only good matches: by default those whose score stands this many standard
# deviations above the query's mean score over the whole collection (see Searcher.cutoff_for).
CUTOFF_SIGMAS = 1.5
TEXT_BATCH_MAX = 16  # queries embedded together when they arrive at once
# Keyword matches fused into a text query's ranking (and the depth of the ranking by meaning they are
# fused with); sorting by date lists up to KEYWORD_MATCHES_BY_DATE of them besides the good matches by meaning.
FUSION_DEPTH = 100
KEYWORD_MATCHES_BY_DATE = 1000
COMMON_WORD_SHARE = 0.5  # a word in more than this share of the photos' text is not matched as a keyword
SEARCH_CONNECTIONS = 40


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
    score: float  # cosine similarity to the query vector, whatever brought the photo here
    # Why it is a match: "semantic" (by meaning) and/or the fields of its text that hold a query word
    # (photoseek.keywords.REASONS: file_name, folder, caption, keyword, ocr_text).
    why: tuple[str, ...] = (SEMANTIC,)


@dataclass(frozen=True)
class Page:
    """One page of a search's answer."""

    request: SearchRequest
    hits: list[Hit]
    next_offset: int | None
    cutoff: float | None  # the score below which photos were left out (None: none were)
    matches: int | None  # how many photos passed the cutoff, when there was one


@dataclass(frozen=True)
class TagSummary:
    photos: int
    untagged: int  # photos not tagged with the current vocabulary (yet)
    vocabulary: str  # "default" or the user's file
    vocabulary_size: int
    counts: list[tuple[str, int, list[str]]]  # (tag, photos, parents), most photos first


def open_index(files: IndexFiles, settings: Settings, *, connections: int = 5, light: bool = False) -> Catalogue:
    """The index's catalogue, read-only; :class:`IndexNotFound` with what to do when there is none.
    ``light``: for a one-shot search, a SQLite catalogue read with sqlite3 alone where it can be
    (:class:`photoseek.storage.sqlite_light.LightReader`: the full one opens on first need)."""
    if not catalogue_exists(files.root, settings.database_url):
        raise IndexNotFound(f"no index at {files.root}; create one with 'photoseek index FOLDER' (or pass --index DIR)")
    if light:
        return open_reader(files.root, settings.database_url, connections=connections)
    return open_catalogue(files.root, settings.database_url, readonly=True, connections=connections)


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


def _photo(row) -> Photo:
    return Photo(
        id=row.id, path=display_path(row.path), width=row.width, height=row.height, size_bytes=row.size_bytes,
        taken_at=row.taken_at, camera_make=row.camera_make, camera_model=row.camera_model,
        indexed_at=as_utc(row.indexed_at), file_type=row.file_type, photo_date=row.photo_date, date_source=row.date_source,
    )


class Searcher:
    """Read-only queries over one index directory. Thread-safe."""

    def __init__(self, index_dir: Path, settings: Settings | None = None, *, encoder: Encoder | None = None,
                 one_shot: bool = False):
        """``one_shot``: for a process that answers a few queries and exits (the command line): the
        columns filters need are loaded by the first query that needs them, not with the vectors
        (a second at a million photos that a search without filters never uses)."""
        self.settings = settings or Settings()
        self._one_shot = one_shot
        self.files = IndexFiles(Path(index_dir).expanduser().resolve())
        # Where the indexed folders are on this machine, when not where they were indexed (checked first:
        # a mistyped setting is one line at start-up, not a 404 per photo).
        self.path_map = parse_path_map(self.settings.path_map)
        # One connection per thread that may query at once (the server's pool: web.app.worker_threads;
        # callers of their own may use more). Read-only: a searcher never writes, so an index on a
        # read-only mount or in another user's folder can be searched (an older schema is upgraded
        # on opening when it can be written; see photoseek.storage.migrations).
        self.catalogue = open_index(self.files, self.settings, connections=SEARCH_CONNECTIONS, light=one_shot)
        with self.catalogue.reading() as conn:
            self.model_id = self.catalogue.get_meta(conn, "model_id")
            self._index_uid = self.catalogue.identity(conn)
        if self.catalogue.identity_per_connection:
            from sqlalchemy import event

            event.listen(self.catalogue.engine, "connect", self._check_same_database)
        self._encoder = encoder
        self._encoder_lock = threading.Lock()  # guards loading/swapping the encoder
        self._inference_lock = threading.Lock()  # one forward pass at a time: two would only fight over the cores
        # Query embeddings already made: a repeated text query, or the next page of an uploaded photo,
        # costs no model call.
        self._text_cache = _Lru(TEXT_CACHE_SIZE)
        self._image_cache = _Lru(IMAGE_CACHE_SIZE)
        self._text_encoder = None  # the encoder's text side alone, when it has one without torch
        self._image_encoder = None  # and its image side alone (clip_image), for a search by an image file
        self._embed_texts = Coalescer(self._encode_texts, max_batch=TEXT_BATCH_MAX)
        self._vocabulary = None  # photoseek.tags.Vocabulary, loaded when first needed, again after a reload
        self._adapter = CurrentAdapter(self.files.root)  # photoseek tune's, applied to text queries
        self._index = None  # LocalVectorSearch or the back end's own (PgVectorSearch); None: nothing indexed yet
        self._loaded_generation = -1
        self._reload_lock = threading.Lock()
        self.refresh()

    # -- state -----------------------------------------------------------------------------

    def _check_same_database(self, dbapi_conn, _record) -> None:
        """Every connection opened later must reach the database we opened first: a rebuild
        replaces the file, and its rows would not match our vectors."""
        if self.catalogue.read_identity(dbapi_conn) != self._index_uid:
            dbapi_conn.close()
            raise IndexReplaced(f"the index at {self.files.root} was rebuilt or replaced; searching it again "
                                "opens the new one")

    def _index_state(self) -> tuple[int, int, str | None]:
        with self.catalogue.reading() as conn:
            return self.catalogue.index_state(conn)

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
            if self.catalogue.uses_vector_file:
                index = self._load_vector_file(generation, dim)
                if index is None:
                    return False  # an indexer is mid-run: keep answering from the state we have
            else:
                index = self.catalogue.vector_search(dim, self.settings)
            if model_id != self.model_id:  # rebuilt with another model
                with self._encoder_lock:
                    self.model_id, self._encoder, self._text_encoder, self._image_encoder = model_id, None, None, None
                    self._text_cache.clear()
                    self._image_cache.clear()
            self._index, self._loaded_generation = index, generation
            self._vocabulary = None  # the index may have been re-tagged with another vocabulary
            return True

    def _load_vector_file(self, generation: int, dim: int) -> LocalVectorSearch | None:
        store = VectorStore.load(self.files.vectors, dim=dim, generation=generation, mapped=True)
        if store is None:
            if self._index is not None and self.catalogue.writer_alive():
                return None
            store = load_vectors(self.files, self.catalogue, dim=dim, generation=generation, persist=False,
                                 exact_up_to=self.settings.exact_search_up_to, pq_above=self.settings.pq_above)
        def columns() -> FilterColumns:
            with self.catalogue.reading() as conn:
                return FilterColumns.load(self.catalogue.filter_columns(conn), self.catalogue.tag_members(conn))

        return LocalVectorSearch(store, columns if self._one_shot else columns())

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
        return len(self._index) if self._index is not None else 0

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

    def adapt_text(self, vector: np.ndarray) -> np.ndarray:
        """A text query's vector through the index's tuned adapter, if any (:mod:`photoseek.tune`)."""
        return self._adapter.apply(vector, self.model_id, len(vector))

    def tuned(self) -> dict | None:
        """The summary of the adapter text queries pass through (``photoseek tune``), or None."""
        adapter = self._adapter.get()
        return adapter.summary if adapter is not None and adapter.summary.get("model_id") == self.model_id else None

    def embed_image(self, image: Image.Image | bytes) -> np.ndarray:
        if not isinstance(image, (bytes, bytearray)):
            return self._encode_images([image])[0]
        key = hashlib.blake2b(image, digest_size=16).digest()
        vector = self._image_cache.get(key)
        if vector is None:
            from photoseek.imaging import open_image  # Pillow and friends: only searches by image need them

            encoder = self._image_side()
            decoded, _ = open_image(bytes(image), draft_size=encoder.input_spec.size,
                                    max_pixels=self.settings.max_image_pixels)
            vector = self._image_cache.put(key, self._encode_images([decoded])[0])
        return vector

    def _image_side(self):
        """The full encoder when it is loaded (a server), else the image tower alone where one was
        exported without torch (:mod:`photoseek.encoders.image_side`: a terminal search by an image),
        else the full encoder, loaded now."""
        if self._encoder is None and self._image_encoder is None and self.model_id:
            from photoseek.encoders.image_side import load_image_encoder

            with self._encoder_lock:
                if self._image_encoder is None and self._encoder is None:
                    self._image_encoder = load_image_encoder(self.model_id)
        return self._encoder or self._image_encoder or self.encoder

    def _encode_images(self, images: list) -> np.ndarray:
        encoder = self._image_side()
        with self._inference_lock:
            return encoder.encode_images(images)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """Text queries through the full encoder when it is loaded (a server), else through its text
        side alone where it has one without torch (:mod:`photoseek.encoders.text_side`): a terminal
        search by words then imports no torch. Both give the same vectors."""
        encoder = self._encoder or self._text_encoder
        if encoder is None:
            from photoseek.encoders.text_side import load_text_encoder

            with self._encoder_lock:
                if self._text_encoder is None and self._encoder is None and self.model_id:
                    self._text_encoder = load_text_encoder(self.model_id)
            encoder = self._encoder or self._text_encoder or self.encoder
        with self._inference_lock:
            return encoder.encode_texts(texts)

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
        index = self._index
        vector = index.vector(image_id) if index is not None else None
        if vector is None:
            with self.catalogue.reading() as conn:
                vector = self.catalogue.embedding(conn, image_id)
        return vector

    # -- the one search ---------------------------------------------------------------------

    def search(self, request: SearchRequest) -> Page:
        """Answer any search: weighted terms, filters, a cutoff, sorted by relevance or by date.

        Filters are part of the search, not applied after it: the page holds the best matches
        among the photos that pass them, exactly as a search over only those photos would.
        A text query also matches photos by the words of their file name, folders, caption,
        keywords and text read in them (:mod:`photoseek.keywords`): by relevance, the two rankings
        are fused (:mod:`photoseek.search.fusion`); by date, keyword matches count as matches
        whatever their score. Raises :class:`~photoseek.errors.BadInput` / :class:`~photoseek.errors.NotFound`."""
        request = replace(request, filters=self.resolve_tags(request.filters))
        index = self._index
        if not request.terms:  # tag:x alone: the photos carrying the tags
            return self._tag_listing(request)
        vector = self.query_vector(request.terms)
        exclude = {t.photo_id for t in request.terms if t.photo_id is not None and t.weight > 0}
        filters = request.filters if request.filters.active else None
        if index is None or not len(index):
            return Page(request, [], None, request.min_score, None)
        relevance = request.sort == "relevance"
        keyword = {i: f for i, f in self.keyword_matches(request, filters,
                                                         FUSION_DEPTH if relevance else KEYWORD_MATCHES_BY_DATE).items()
                   if i not in exclude}
        if relevance:
            cutoff = request.min_score
            want = request.offset + request.limit + 1 + len(exclude) + (8 if filters is None else 0)
            depth = max(want, FUSION_DEPTH) if keyword else want
            scores, ids = index.top(vector, depth, filters)
            scores, ids, tagged = self._fuse_broad_words(request, vector, scores, ids, depth)
            dates = None
        else:
            cutoff = request.min_score if request.min_score is not None else self.cutoff_for(index, vector)
            scores, ids, dates = index.above(vector, cutoff, filters)
            tagged = set()
        ranked = [int(i) for i in ids if i >= 0 and int(i) not in exclude]
        score_of = {int(i): float(s) for i, s in zip(ids, scores)}
        if keyword:
            # Keyword matches the ranking by meaning did not reach: their own scores (and dates).
            missing = np.asarray([i for i in keyword if i not in score_of], dtype=np.int64)
            if len(missing):
                extra_scores, extra_ids, extra_dates = index.scores_of(vector, missing)
                score_of.update((int(i), float(s)) for i, s in zip(extra_ids, extra_scores))
                if dates is not None:
                    ids, dates = np.concatenate([ids, extra_ids]), np.concatenate([dates, extra_dates])
        if relevance:
            order = reciprocal_rank_fusion([ranked, list(keyword)]) if keyword else ranked
        else:
            # By date, then id, so that every page follows the one before without gaps or repeats; photos
            # with no date at all come last either way.
            newest = request.sort == "newest"
            undated = dates == NO_DATE
            order = [int(ids[i]) for i in np.lexsort((-ids if newest else ids, -dates if newest else dates, undated))
                     if int(ids[i]) not in exclude]
        pairs = [(i, score_of[i]) for i in order
                 if i in score_of and (cutoff is None or score_of[i] >= cutoff or i in keyword)]
        matches = len(pairs) if not relevance else None
        window = pairs[request.offset: request.offset + request.limit + 1 + 8]
        photos = self._photos([i for i, _ in window])
        good = self.cutoff_for(index, vector) if any(i in keyword for i, _ in window) else None
        hits = [Hit(photos[i], s, self._why(i in keyword and keyword[i], s, good, i in tagged))
                for i, s in window if i in photos]
        more = len(hits) > request.limit or len(pairs) > request.offset + len(window)
        next_offset = request.offset + request.limit if more else None
        return Page(request, hits[:request.limit], next_offset, cutoff, matches)

    def keyword_matches(self, request: SearchRequest, filters: Filters | None, limit: int) -> dict[int, tuple[str, ...]]:
        """Photos whose text holds a word of the query's text terms with a positive weight and none of
        a subtracted term's ("fish - red" does not find red_fish.jpg by its name), best first, with
        the fields that hold the words; none when the request turns keywords off."""
        if not request.keywords:
            return {}
        wanted = query_words(" ".join(t.text for t in request.terms if t.text is not None and t.weight > 0))
        unwanted = query_words(" ".join(t.text for t in request.terms if t.text is not None and t.weight < 0))
        wanted = [w for w in wanted if w not in unwanted]
        if not wanted:
            return {}
        with self.catalogue.reading() as conn:
            # A word in most photos' text (a folder every photo is in: "camera roll") tells none apart:
            # its matches would only reshuffle the ranking by meaning.
            most = max(1, int(COMMON_WORD_SHARE * len(self)))
            counts = self.catalogue.word_counts(conn, wanted, most + 1)
            wanted = [w for w in wanted if counts[w] <= most]
            if not wanted:
                return {}
            hits = self.catalogue.keyword_search(conn, wanted, filters, limit)
            excluded = {h.id for h in self.catalogue.keyword_search(conn, unwanted, filters, 10 * limit)}
        return {hit.id: hit.fields for hit in hits if hit.id not in excluded}

    @staticmethod
    def _why(fields, score: float, good: float | None, tagged: bool = False) -> tuple[str, ...]:
        """A photo found by meaning is a semantic match; one found by its words is also one when it
        scores as well as sorting by date requires (the query's calibrated cutoff). "tag": it carries a
        tag the query's words name ("an animal")."""
        tag = ("tag",) if tagged else ()
        if not fields:
            return (SEMANTIC, *tag)
        return ((SEMANTIC,) if good is not None and score >= good else ()) + tuple(REASONS[f] for f in fields) + tag

    def facets(self, filters: Filters, *, terms: tuple[Term, ...] = (), min_score: float | None = None,
               year: int | None = None) -> dict[str, list]:
        """Counts for the filter bar (see :meth:`photoseek.storage.Catalogue.facet_counts`). With ``terms``,
        over the photos that match them: those scoring ``min_score`` or more (default: the calibrated
        cutoff that sorting by date uses)."""
        terms, filters = split_tags(terms, filters)
        filters = self.resolve_tags(filters)
        ids = None
        index = self._index
        if terms and index is not None and len(index):
            vector = self.query_vector(terms)
            cutoff = min_score if min_score is not None else self.cutoff_for(index, vector)
            _, ids, _ = index.above(vector, cutoff, None)
            # The same photos a search sorted by date lists: keyword matches count whatever their score.
            words = self.keyword_matches(SearchRequest(terms=tuple(terms)), None, KEYWORD_MATCHES_BY_DATE)
            if words:
                ids = np.union1d(ids, np.fromiter(words, dtype=np.int64))
        with self.catalogue.reading() as conn:
            return self.catalogue.facet_counts(conn, filters, ids=ids, year=year)

    def query_vector(self, terms: tuple[Term, ...] | list[Term]) -> np.ndarray:
        """The normalised weighted sum of the terms' unit embeddings."""
        total = None
        for term in terms:
            if term.text is not None:
                unit = self.adapt_text(self.embed_text(term.text))
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

    def cutoff_for(self, index, vector: np.ndarray) -> float:
        """The default cutoff when sorting by date, from this query's own scores over the whole
        collection: mean + CUTOFF_SIGMAS standard deviations. It adapts to each encoder's score
        scale (CLIP's text-image cosines sit near 0.3, the offline encoder's far higher) and to
        each query, with no constant in cosine units."""
        mean, std = index.score_stats(vector)
        return mean + CUTOFF_SIGMAS * std

    def _photos(self, ids: list[int]) -> dict[int, Photo]:
        if not ids:
            return {}
        with self.catalogue.reading() as conn:
            return {row.id: _photo(row) for row in self.catalogue.photo_rows(conn, ids)}

    # -- tags (photoseek.tags) ----------------------------------------------------------------

    @property
    def vocabulary(self):
        """The vocabulary the index is tagged with (the setting, else the one its catalogue records)."""
        if self._vocabulary is None:
            from photoseek.tags import vocabulary_for

            with self.catalogue.reading() as conn:
                self._vocabulary = vocabulary_for(self.catalogue, conn, self.settings.tag_vocabulary)
        return self._vocabulary

    def resolve_tags(self, filters: Filters) -> Filters:
        """``filters`` with its tags as the vocabulary names them (``golden-retriever``, a synonym,
        a plural -> the tag); :class:`BadInput` for a word that names no tag."""
        if not filters.tags:
            return filters
        names = tuple(dict.fromkeys(self.vocabulary.resolve(t, "tag") for t in filters.tags))
        return filters if names == filters.tags else replace(filters, tags=names)

    def _tag_listing(self, request: SearchRequest) -> Page:
        """A query of tags only: the photos carrying them, best tag score first (or by date)."""
        with self.catalogue.reading() as conn:
            pairs = self.catalogue.photos_with_tags(conn, list(request.filters.tags), request.filters,
                                                    limit=request.limit + 1, offset=request.offset, sort=request.sort,
                                                    min_score=request.min_score)
        photos = self._photos([i for i, _ in pairs])
        hits = [Hit(photos[i], s) for i, s in pairs if i in photos]
        next_offset = request.offset + request.limit if len(pairs) > request.limit else None
        return Page(request, hits[:request.limit], next_offset, request.min_score, None)

    def _fuse_broad_words(self, request: SearchRequest, vector: np.ndarray, scores: np.ndarray, ids: np.ndarray,
                          want: int) -> tuple[np.ndarray, np.ndarray, set[int]]:
        """Words in a plain text query that name tags ("an animal", "a musical instrument"): the photos
        carrying those tags come first, then the rest, each in semantic order (search.tag_fusion).
        Also returns the ids of the photos carrying them."""
        if not self.settings.tag_words or any(t.text is None or t.weight < 0 for t in request.terms):
            return scores, ids, set()  # photos, or words subtracted: the user steers the ranking themselves
        from photoseek.tags import tags_in_query

        tags = tags_in_query(" ".join(t.text for t in request.terms), self.vocabulary)
        if not tags:
            return scores, ids, set()
        with self.catalogue.reading() as conn:
            tagged = {i for i, _ in self.catalogue.photos_with_tags(conn, tags, request.filters if request.filters.active
                                                                    else None, limit=None)}
        if not tagged:
            return scores, ids, set()
        index = self._index
        tops = [index.top(vector, want, replace(request.filters, tags=(tag,))) for tag in tags]
        return (*tagged_first((scores, ids), merge_tops(tops, want), tagged), tagged)

    def photo_tags(self, image_id: int) -> list[tuple[str, float, str | None]]:
        """A photo's tags, (name, score, via), best first."""
        with self.catalogue.reading() as conn:
            return self.catalogue.tags_of(conn, image_id)

    def tag_summary(self) -> TagSummary:
        """What ``photoseek tags`` shows: tags with their counts, and how much of the index is tagged."""
        vocabulary = self.vocabulary
        with self.catalogue.reading() as conn:
            counts = self.catalogue.tag_counts(conn)
            photos = self.catalogue.photo_count(conn)
            untagged = len(self.catalogue.untagged_ids(conn, vocabulary.version()))
        parents = {t: sorted(vocabulary.tags[t].parents) if t in vocabulary else [] for t, _ in counts}
        return TagSummary(photos, untagged, vocabulary.source, len(vocabulary),
                          [(t, n, parents[t]) for t, n in counts])

    # -- lookups ---------------------------------------------------------------------------

    def photo(self, image_id: int) -> Photo | None:
        return self._photos([image_id]).get(image_id)

    def photo_text(self, image_id: int) -> dict[str, str]:
        """The words a photo is found by (:data:`photoseek.keywords.FIELDS`), empty if it has none."""
        with self.catalogue.reading() as conn:
            return self.catalogue.photo_texts(conn, [image_id]).get(image_id, {})

    def photos(self, ids: list[int]) -> dict[int, Photo]:
        """Those of ``ids`` that are indexed, by id (one SQL query)."""
        return self._photos(ids)

    def file_path(self, image_id: int) -> Path | None:
        """The real file of an indexed photo, for serving it; None for anything else."""
        with self.catalogue.reading() as conn:
            path = self.catalogue.photo_path(conn, image_id)
            if path is None:
                return None
            roots = [os.path.realpath(map_path(p, self.path_map)) for p in self.catalogue.root_paths(conn)]
        # The path was inside an indexed folder when it was indexed; since then it may have been
        # replaced by a symbolic link to anywhere (or by a FIFO or device). Serve it only if it
        # still resolves to a regular file inside an indexed folder (both where this machine has them:
        # the path_map setting).
        real = os.path.realpath(map_path(path, self.path_map))
        if not is_under(real, roots):
            return None
        try:
            if not stat.S_ISREG(os.stat(real).st_mode):
                return None
        except OSError:
            return None
        return Path(real)

    def status(self, skipped_limit: int = 100) -> IndexStatus:
        search = self._index.describe() if self._index is not None else EXACT_SEARCH
        return status_of(self.files, self.catalogue, self.model_id, search, skipped_limit)

    def close(self) -> None:
        self.catalogue.close()
