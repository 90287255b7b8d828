"""Vector search over a vector file held in memory (the embedded SQLite back end).

The same four questions any back end's vector search answers (see
:class:`photoseek.storage.postgres.PgVectorSearch` for the SQL one): the best ``k`` among the
photos a filter keeps, every photo above a score, the spread of a query's scores, and one photo's
vector. Filters are evaluated in memory (:mod:`photoseek.search.filters`) and handed to FAISS as
the ids it may return, so a filter costs no recall.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager

import faiss
import numpy as np

from photoseek.search.filters import FilterColumns
from photoseek.search.query import Filters
from photoseek.store import VectorStore

# A filter that keeps at most this share of the photos is answered by scoring just those photos
# (one matrix product over their vectors) instead of a FAISS search that skips the others.
DIRECT_SCORING_SHARE = 0.01


class LocalVectorSearch:
    def __init__(self, store: VectorStore, columns: FilterColumns | Callable[[], FilterColumns]):
        """``columns``: loaded with the vectors (they then describe the same photos), or a function that
        loads them when a query first needs them (a one-shot process: the catalogue may have moved on
        by then, which costs the photos removed since, as results are checked against it anyway)."""
        self.store = store
        self._columns, self._load_columns = (None, columns) if callable(columns) else (columns, None)
        self._columns_lock = threading.Lock()

    @property
    def columns(self) -> FilterColumns:
        if self._columns is None:
            with self._columns_lock:
                if self._columns is None:
                    self._columns = self._load_columns()
        return self._columns

    def __len__(self) -> int:
        return len(self.store)

    def describe(self) -> str:
        return self.store.describe()

    def vector(self, image_id: int) -> np.ndarray | None:
        return self.store.vector(image_id)

    def _allowed(self, filters: Filters | None) -> np.ndarray | None:
        return self.columns.select(filters) if filters is not None and filters.active else None

    def top(self, vector: np.ndarray, k: int, filters: Filters | None) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` (scores, ids) among the photos that pass ``filters``, best first."""
        allowed = self._allowed(filters)
        if allowed is not None and len(allowed) <= max(1, DIRECT_SCORING_SHARE * len(self.store)):
            scores, ids = self._score_ids(vector, allowed)
            top = np.argsort(-scores, kind="stable")[:k]
            return scores[top], ids[top]
        with single_threaded_openmp():
            scores, ids = self.store.search(vector, k, allowed=allowed)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def above(self, vector: np.ndarray, cutoff: float, filters: Filters | None):
        """Every (score, id, date in seconds) at or above ``cutoff`` among ``filters``, best first."""
        allowed = self._allowed(filters)
        if allowed is not None:
            scores, ids = self._score_ids(vector, allowed)
        else:
            with single_threaded_openmp():
                scores, ids = self.store.search(vector, len(self.store))
            scores, ids = scores[0], ids[0]
        keep = (ids >= 0) & (scores >= cutoff)
        scores, ids = scores[keep], ids[keep]
        order = np.argsort(-scores, kind="stable")
        return scores[order], ids[order], self.columns.dates_of(ids[order])

    def scores_of(self, vector: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score, id, date in seconds) of those of ``ids`` that are in the vector file, best first."""
        scores, found = self._score_ids(vector, np.asarray(ids, dtype=np.int64))
        order = np.argsort(-scores, kind="stable")
        return scores[order], found[order], self.columns.dates_of(found[order])

    def score_stats(self, vector: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation of the query's score over every photo."""
        with single_threaded_openmp():
            scores, _ = self.store.search(vector, len(self.store))
        scores = scores[0][np.isfinite(scores[0])]
        return float(scores.mean()), float(scores.std())

    def _score_ids(self, vector: np.ndarray, ids: np.ndarray):
        vectors, found = self.store.vectors(ids)
        return vectors @ vector, found


@contextmanager
def single_threaded_openmp():
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
