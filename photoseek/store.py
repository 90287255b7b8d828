"""An index on disk: the SQLite database plus the FAISS vector file derived from it.

Layout of an index directory::

    photoseek.db      SQLite: metadata and embeddings (the source of truth)
    vectors.faiss     FAISS index of the same embeddings, stamped with the DB generation
    vectors.f16       above ``pq_above`` photos only: their float16 vectors, memory-mapped for re-ranking
    index.lock        held by the one indexer allowed to write
    thumbnails/       the web service's thumbnail cache

Every committed change to the database bumps ``generation``. The FAISS file carries
the generation it was built from; a reader that finds it missing, stale or corrupt
rebuilds it from the database, so a crash between the two writes costs a rebuild,
never a wrong answer.

Above ``pq_above`` photos (:data:`photoseek.settings.PQ_ABOVE`) the FAISS file holds product-quantised
codes (IVF-PQ: 64 bytes a 512-d photo, all a search server keeps in memory) and a search re-ranks
its best candidates exactly on float16 vectors read from ``vectors.f16``, which is memory-mapped, not
loaded. That file is written whole (temp file, rename) with a random token in its header before the
FAISS file, which names the token: a crash between the two leaves a FAISS file naming a token the
float16 file no longer has, and a token, row count, dimension or size that does not match means a
rebuild, never a wrong answer.
"""

from __future__ import annotations

import math
import mmap
import os
import secrets
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from photoseek.files import atomic_write
from photoseek.settings import EXACT_SEARCH_UP_TO, PQ_ABOVE
from photoseek.vector_file import (  # noqa: F401 - IndexFiles, EXACT_SEARCH, probes_for: their old home
    _HEADER,
    _IVF_HEADER,
    _MAGIC,
    _PQ_BLOCK,
    _PQ_MARK,
    EXACT_SEARCH,
    RERANK_FACTOR,
    IndexFiles,
    _describe_ivf,
    _describe_pq,
    _half_path,
    _header_count,
    describe_file,
    probes_for,
)

if TYPE_CHECKING:
    from photoseek.storage import Catalogue

# vectors.f16: this header (magic, token, generation it was written at, rows, dimension) padded to
# _F16_DATA bytes, the rows (float16, row-major), then the id of each row (int64).
_F16_MAGIC = b"PSKF16V1"
_F16_HEADER = struct.Struct("<8s16sQQI")
_F16_DATA = 4096
_MIN_TRAINING_PER_LIST = 39  # FAISS warns below this many training vectors per cluster
_TRAINING_PER_LIST = 64


def new_flat_index(dim: int) -> faiss.Index:
    """Brute-force inner product over every vector, stored as float16.

    Exhaustive, so no training and no recall loss: results never depend on when a photo was
    added. A search streams every stored vector through memory once, so it costs what they
    weigh: float16 halves that (100,000 x 512-d: 100 MB, about 5 ms a query here instead
    of 10-12 ms in float32). A score moves by about 1e-5, far below any gap between
    photos a person would rank differently; the database keeps the float32 originals.
    """
    return faiss.IndexIDMap2(faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT))


def clusters_for(count: int) -> int:
    """IVF lists for ``count`` vectors: a power of two near 4 sqrt(count) (FAISS's rule of
    thumb), but never so many that a list has too few vectors to train on."""
    target = 2 ** round(math.log2(4 * math.sqrt(max(count, 1))))
    return max(1, min(target, count // _MIN_TRAINING_PER_LIST))


def new_ivf_index(dim: int, training: np.ndarray, count: int) -> faiss.Index:
    """An inverted-file index for about ``count`` vectors, trained on ``training`` (a sample of
    them), with float16 codes like the flat index and an id map that allows removing photos
    and reading their vectors back."""
    nlist = max(1, min(clusters_for(count), len(training) // _MIN_TRAINING_PER_LIST))
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10  # k-means iterations: more move the lists little and cost seconds at 100,000 photos
    index.cp.seed = 1234
    index.train(np.ascontiguousarray(training, dtype=np.float32))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def pq_code_bytes(dim: int) -> int:
    """Bytes of PQ code a vector: one byte (256 centroids) per 8 dimensions, 64 for 512-d CLIP
    vectors (16x smaller than float16); a divisor of ``dim``, as FAISS requires."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m


def new_pq_index(dim: int, training: np.ndarray, count: int) -> faiss.Index:
    """An inverted-file index with product-quantised codes (:func:`pq_code_bytes`) for about
    ``count`` vectors, trained on ``training`` (a sample of them). Clusters as :func:`new_ivf_index`;
    codes encode each vector's offset from its cluster's centre (FAISS's default), which is
    what makes 8 dimensions a byte good enough for re-ranking to recover the rest."""
    nlist = max(1, min(clusters_for(count), len(training) // _MIN_TRAINING_PER_LIST))
    # 256 centroids a byte; fewer bits only when the sample is smaller than that (a tiny PHOTOSEEK_PQ_ABOVE).
    nbits = int(min(8, max(1, math.floor(math.log2(max(len(training), 2))))))
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_code_bytes(dim), nbits, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.cp.seed = 1234
    index.pq.cp.seed = 1234
    # 64 k-means of 256 centroids in 8 dimensions are slow in FAISS (small d uses BLAS badly): 30 s on
    # its default 65,536 points and 25 iterations here, 11 s on these, for the same recall after re-ranking.
    index.pq.cp.niter = 10
    index.pq.cp.max_points_per_centroid = 64
    index.train(np.ascontiguousarray(training, dtype=np.float32))
    return index  # no direct map: vectors are read back from the float16 file, and removal scans the lists


def _is_current_kind(index: faiss.Index) -> bool:
    if isinstance(index, faiss.IndexIVFPQ):
        return index.metric_type == faiss.METRIC_INNER_PRODUCT and index.pq.nbits <= 8 and index.by_residual
    if isinstance(index, faiss.IndexIVFScalarQuantizer):
        return (index.sq.qtype == faiss.ScalarQuantizer.QT_fp16 and index.metric_type == faiss.METRIC_INNER_PRODUCT
                and index.direct_map.type == faiss.DirectMap.Hashtable)
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    return (isinstance(inner, faiss.IndexScalarQuantizer) and inner.sq.qtype == faiss.ScalarQuantizer.QT_fp16
            and inner.metric_type == faiss.METRIC_INNER_PRODUCT)


class VectorStore:
    """Inner-product search over unit vectors (= cosine similarity), keyed by image id: exact
    up to :data:`EXACT_SEARCH_UP_TO` photos, then approximate (see :func:`new_ivf_index`), and above
    ``pq_above`` approximate on compressed codes with exact re-ranking (see :func:`new_pq_index`)."""

    def __init__(self, dim: int, index: faiss.Index | None = None, half: _HalfVectors | None = None):
        self.dim = dim
        self.index = index if index is not None else new_flat_index(dim)
        self.half: _HalfVectors | None = None  # the float16 vectors of an IVF-PQ store
        self.rerank_factor = RERANK_FACTOR  # 0: PQ scores as they are (bench/million.py compares)
        self._mapping: np.memmap | None = None  # the file a mapped store's index reads from (see load)
        if self.quantized:
            self.half = half if half is not None else _HalfVectors(dim)
            if self.half.live != self.index.ntotal:
                raise ValueError("an IVF-PQ index needs the float16 vectors of the same photos")
        if self.approximate:
            self.index.nprobe = probes_for(self.index.nlist)  # not saved in the file

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def approximate(self) -> bool:
        return isinstance(self.index, faiss.IndexIVF)

    @property
    def quantized(self) -> bool:
        """IVF-PQ: compressed codes in memory, re-ranked on the float16 vectors of ``vectors.f16``."""
        return isinstance(self.index, faiss.IndexIVFPQ)

    def describe(self) -> str:
        """How a query is answered, for people (``photoseek status``, ``/api/status``)."""
        if not self.approximate:
            return EXACT_SEARCH
        if self.quantized:
            return _describe_pq(self.index.nlist, self.index.nprobe, self.index.code_size, self.rerank_factor)
        return _describe_ivf(self.index.nlist, self.index.nprobe)

    def fits(self, exact_up_to: int = EXACT_SEARCH_UP_TO, pq_above: int | None = None) -> bool:
        """Whether this kind of index still suits the number of photos it holds: exact up to
        ``exact_up_to``; above, clusters for about this many photos (within a factor of 4,
        so a growing collection retrains now and then, not on every run), on PQ codes above
        ``pq_above`` (default: the setting, PHOTOSEEK_PQ_ABOVE)."""
        if len(self) <= exact_up_to:
            return not self.approximate
        if not self.approximate or self.quantized != (len(self) > _pq_above(pq_above)):
            return False
        wanted = clusters_for(len(self))
        return wanted / 2 <= self.index.nlist <= wanted * 2

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._check_writable()
        if len(ids):
            ids = np.asarray(ids, dtype=np.int64)
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self.index.add_with_ids(vectors, ids)
            if self.half is not None:
                self.half.add(ids, vectors)

    def _check_writable(self) -> None:
        if self._mapping is not None:
            raise RuntimeError("a vector store loaded with mapped=True is read-only")

    def remove(self, ids: Iterable[int]) -> None:
        self._check_writable()
        ids = np.fromiter(ids, dtype=np.int64)
        if len(ids):
            self.index.remove_ids(ids)
            if self.half is not None:
                self.half.remove(ids)

    def search(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` per query: (scores, ids), ids -1 where fewer exist. ``allowed``: sorted ids
        to search among (FAISS skips the others inside the search, so a filter costs no recall)."""
        available = len(self) if allowed is None else min(len(self), len(allowed))
        k = max(1, min(k, available)) if available else 1
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if not available:
            n = len(queries)
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        selector = _selector(allowed) if allowed is not None else None
        if not self.approximate:
            return self.index.search(queries, k, params=faiss.SearchParameters(sel=selector) if selector else None)
        if not self.quantized or not self.rerank_factor:
            return self._probe(queries, k, allowed, selector)
        # PQ scores only rank roughly: take several times as many candidates, then score them exactly.
        _, candidates = self._probe(queries, min(available, self.rerank_factor * k), allowed, selector)
        return self._rerank(queries, candidates, k)

    def _probe(self, queries: np.ndarray, k: int, allowed: np.ndarray | None,
               selector: faiss.IDSelector | None) -> tuple[np.ndarray, np.ndarray]:
        # The nearest lists may hold fewer than k photos (a deep page of results, a narrow filter): visit more.
        params = faiss.SearchParametersIVF()
        params.nprobe = self.index.nprobe
        if selector is not None:
            params.sel = selector
            # A filter thins every list alike: visit as many more lists as it leaves fewer photos in each,
            # so that a filtered search finds what an unfiltered one would among those photos.
            share = max(len(allowed) / max(len(self), 1), 1e-9)
            params.nprobe = min(self.index.nlist, int(np.ceil(self.index.nprobe / share)))
        while True:
            scores, ids = self.index.search(queries, k, params=params)
            if params.nprobe >= self.index.nlist or (ids >= 0).sum(axis=1).min() >= k:
                return scores, ids
            params.nprobe = min(self.index.nlist, params.nprobe * 4)

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of each query's ``candidates`` by their exact score against the float16 vectors
        (read from the memory-mapped file: only the candidates' pages are touched)."""
        scores = np.full((len(queries), k), -np.finfo(np.float32).max, np.float32)  # as FAISS pads
        ids = np.full((len(queries), k), -1, np.int64)
        for q, (query, found) in enumerate(zip(queries, candidates)):
            found = found[found >= 0]
            rows = self.half.rows_of(found)
            found, rows = found[rows >= 0], rows[rows >= 0]
            exact = np.empty(len(rows), np.float32)
            for start in range(0, len(rows), _GATHER_ROWS):  # bounded memory for a search of every photo
                exact[start:start + _GATHER_ROWS] = self.half.gather(rows[start:start + _GATHER_ROWS]) @ query
            best = np.argpartition(-exact, k - 1)[:k] if len(exact) > k else np.arange(len(exact))
            best = best[np.argsort(-exact[best], kind="stable")]
            scores[q, :len(best)], ids[q, :len(best)] = exact[best], found[best]
        return scores, ids

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, ids) of those of ``ids`` this store holds, in the same order."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.half is not None:
            rows = self.half.rows_of(ids)
            return self.half.gather(rows[rows >= 0]), ids[rows >= 0]
        if not self.approximate:
            held = ids[np.isin(ids, faiss.vector_to_array(self.index.id_map))]
            if not len(held):
                return np.zeros((0, self.dim), np.float32), held
            return self.index.reconstruct_batch(held), held
        found = [(i, v) for i, v in ((int(i), self.vector(i)) for i in ids) if v is not None]
        if not found:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64)
        return np.stack([v for _, v in found]), np.array([i for i, _ in found], dtype=np.int64)

    def vector(self, image_id: int) -> np.ndarray | None:
        if self.half is not None:
            vectors, _ = self.vectors(np.array([image_id], dtype=np.int64))
            return vectors[0] if len(vectors) else None
        try:
            return self.index.reconstruct(int(image_id))
        except RuntimeError:  # faiss raises when the id is unknown
            return None

    # -- persistence -----------------------------------------------------------------

    def save(self, path: Path, generation: int) -> None:
        """Atomically replace ``path``: temp file, fsync, rename, fsync the directory. An IVF-PQ store
        first writes its float16 file beside it (``vectors.f16``; kept as it is when no photo came or
        went since it was written), whose token the vector file then names."""
        payload = faiss.serialize_index(self.index)
        header = _HEADER.pack(_MAGIC, generation, len(self), self.dim)
        if self.half is not None:
            token = self.half.save(_half_path(path), generation)
            header += _PQ_BLOCK.pack(_PQ_MARK, token, self.half.live, self.index.nlist, self.index.code_size)
        atomic_write(path, lambda fh: (fh.write(header), fh.write(payload.tobytes())), durable=True)
        if self.half is None:
            _half_path(path).unlink(missing_ok=True)  # of an IVF-PQ store this one replaces

    @staticmethod
    def describe_file(path: Path, *, generation: int, dim: int) -> str | None:
        """:meth:`describe` for the vector file at ``path``, from its header alone (see
        :func:`photoseek.vector_file.describe_file`)."""
        return describe_file(path, generation=generation, dim=dim)

    @classmethod
    def load(cls, path: Path, *, dim: int, generation: int, mapped: bool = False) -> VectorStore | None:
        """The stored index if it is whole and built from ``generation`` (and, for IVF-PQ, its float16
        file is the one it names, whole); else None.

        ``mapped``: for readers that never change it (a searcher): the exact index's vectors stay in the
        file, memory-mapped (FAISS's in-file codes), instead of being read and copied: it opens in
        milliseconds at any size, and processes searching one index share its pages. Safe because a
        vector file is only ever replaced whole (rename), never written in place."""
        try:
            raw = np.memmap(path, dtype=np.uint8, mode="r")
        except (OSError, ValueError):  # ValueError: an empty file
            return None
        count = _header_count(raw[:_HEADER.size].tobytes(), generation=generation, dim=dim)
        if count is None:
            return None
        offset, half = _HEADER.size, None
        if raw[offset:offset + 4].tobytes() == _PQ_MARK:
            if len(raw) < offset + _PQ_BLOCK.size:
                return None
            _, token, rows, _, _ = _PQ_BLOCK.unpack_from(raw[offset:offset + _PQ_BLOCK.size].tobytes())
            half = _HalfVectors.open(_half_path(path), token=token, rows=rows, dim=dim)
            if half is None or rows != count:
                return None
            offset += _PQ_BLOCK.size
        body = raw[offset:]
        try:
            if mapped:
                index = faiss.read_index(faiss.ZeroCopyIOReader(faiss.swig_ptr(body), body.size), faiss.IO_FLAG_MMAP_IFC)
            else:
                index = faiss.deserialize_index(body)
        except RuntimeError:
            return None
        if index.ntotal != count or index.d != dim or not _is_current_kind(index):
            return None  # e.g. the float32 file of an older photoseek: rebuilt from the database
        if isinstance(index, faiss.IndexIVFPQ) != (half is not None):
            return None
        store = cls(dim, index, half)
        if mapped:
            store._mapping = raw  # the index reads its vectors from it: alive as long as the store
        return store

    @classmethod
    def from_database(cls, catalogue: Catalogue, dim: int, *, exact_up_to: int = EXACT_SEARCH_UP_TO,
                      pq_above: int | None = None, batch: int = 20_000) -> VectorStore:
        """The catalogue's vectors in the kind of index that suits their number (see :meth:`fits`).
        Streams them in batches, so memory holds the index and one batch (plus a training
        sample for an IVF index), not every float32 vector at once; an IVF-PQ store's float16
        vectors go to an unlinked temp file (in the index folder when it is writable) until saved."""
        with catalogue.engine.connect() as conn:
            ids = catalogue.photo_ids(conn)

            def sample(size: int) -> np.ndarray:
                chosen = np.sort(np.random.default_rng(0).choice(ids, min(len(ids), size), replace=False))
                return catalogue.embeddings_of(conn, chosen)[1]

            return cls.build(dim, len(ids), sample, catalogue.iter_embeddings(conn, batch), exact_up_to=exact_up_to,
                             pq_above=pq_above, spill_dir=_spill_dir(catalogue))

    @classmethod
    def build(cls, dim: int, count: int, sample, batches: Iterable[tuple[np.ndarray, np.ndarray]], *,
              exact_up_to: int = EXACT_SEARCH_UP_TO, pq_above: int | None = None,
              spill_dir: Path | None = None) -> VectorStore:
        """``count`` vectors, from ``batches`` of (ids, vectors), in the kind of index that suits their
        number. ``sample(size)``: about ``size`` of the vectors picked at random, to train clusters on."""
        if count <= exact_up_to:
            store = cls(dim)
        else:
            training = sample(_TRAINING_PER_LIST * clusters_for(count))
            quantized = count > _pq_above(pq_above)
            store = cls(dim, (new_pq_index if quantized else new_ivf_index)(dim, training, count))
            del training
            if quantized:
                store.half.spill(spill_dir)
        for batch_ids, vectors in batches:
            store.add(batch_ids, vectors)
        if store.half is not None:
            store.half.seal()
        return store

    def refit(self, catalogue: Catalogue, exact_up_to: int = EXACT_SEARCH_UP_TO,
              pq_above: int | None = None) -> VectorStore:
        """This store if it suits its size, else the catalogue's vectors in one that does.
        Call it when the catalogue holds what this store holds (after a run's last commit)."""
        if self.fits(exact_up_to, pq_above):
            return self
        return VectorStore.from_database(catalogue, self.dim, exact_up_to=exact_up_to, pq_above=pq_above)


class _BitmapSelector(faiss.IDSelectorBitmap):
    """FAISS's bitmap selector, keeping its bitmap alive as long as itself (FAISS only points at it)."""

    def __init__(self, bitmap: np.ndarray):
        super().__init__(len(bitmap) * 8, faiss.swig_ptr(bitmap))
        self.bits = bitmap


def _selector(allowed: np.ndarray) -> faiss.IDSelector:
    """The ids a search may return. A bitmap over the id range costs one bit a photo and no hashing
    (ids are dense: row ids), so building it for 50,000 ids is far cheaper than a hash set."""
    allowed = np.ascontiguousarray(allowed, dtype=np.int64)
    if len(allowed) < 1024:
        return faiss.IDSelectorBatch(allowed)
    mask = np.zeros(int(allowed.max()) + 1, dtype=bool)
    mask[allowed] = True
    return _BitmapSelector(np.packbits(mask, bitorder="little"))


def load_vectors(files: IndexFiles, catalogue: Catalogue, *, dim: int, generation: int, persist: bool,
                 exact_up_to: int = EXACT_SEARCH_UP_TO, pq_above: int | None = None) -> VectorStore:
    """The vector index for the database's current state, rebuilt from it when needed.

    ``persist``: write a rebuilt index back (only the writer may; readers keep theirs in memory).
    """
    store = VectorStore.load(files.vectors, dim=dim, generation=generation)
    with catalogue.engine.connect() as conn:
        count = catalogue.photo_count(conn)
    if store is not None and len(store) == count:
        return store
    store = VectorStore.from_database(catalogue, dim, exact_up_to=exact_up_to, pq_above=pq_above)
    if persist:
        store.save(files.vectors, generation)
    return store


# -- IVF-PQ: the float16 vectors beside the codes ------------------------------------------

_GATHER_ROWS = 65_536  # float16 rows read at once (64 MB of float32 at 512-d)


def _pq_above(value: int | None) -> int:
    """``value``, or the setting (PHOTOSEEK_PQ_ABOVE) when None: callers that predate it pass nothing."""
    if value is not None:
        return value
    try:
        from photoseek.settings import Settings

        return Settings().pq_above
    except Exception:  # noqa: BLE001 -- an invalid setting elsewhere is reported where it is used, not here
        return PQ_ABOVE


def _spill_dir(catalogue: Catalogue) -> Path | None:
    """Where a rebuild keeps float16 vectors until they are saved: the index folder when it can be written
    (the same disk as vectors.f16), else the temp folder."""
    path = getattr(catalogue, "path", None)
    folder = Path(path).parent if path is not None else None
    return folder if folder is not None and os.access(folder, os.W_OK) else None


def _fit(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` with room for ``size`` entries (doubling, new ones -1), so that adding batches costs amortised O(1)."""
    if len(array) >= size:
        return array
    grown = np.full(max(size, 2 * len(array), 1024), -1, dtype=array.dtype)
    grown[:len(array)] = array
    return grown


class _HalfVectors:
    """The float16 vectors of an IVF-PQ store, by row: first the rows of a memory-mapped file (the saved
    ``vectors.f16``, or an unlinked temp file while a rebuild streams them in), then rows added since,
    held in memory until the next save. Reading a few rows pages in only those: the file costs the
    process no memory of its own. ``row_of`` maps an id (a dense database row id) to its row."""

    def __init__(self, dim: int):
        self.dim = dim
        self.mapped = np.zeros((0, dim), np.float16)
        self.pending: list[np.ndarray] = []
        self._pending_rows: np.ndarray | None = None
        self._spill = None
        self._view: mmap.mmap | None = None
        self.row_id = np.zeros(0, np.int64)  # id of each row, -1 when removed
        self.nrows = 0
        self.row_of = np.zeros(0, np.int64)  # row of each id, -1 when absent
        self.live = 0
        self.token: bytes | None = None  # the saved file's, while this holds exactly its rows

    # -- changes ---------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        n = len(ids)
        self.row_id = _fit(self.row_id, self.nrows + n)
        self.row_id[self.nrows:self.nrows + n] = ids
        self.row_of = _fit(self.row_of, int(ids.max()) + 1)
        self.row_of[ids] = np.arange(self.nrows, self.nrows + n)
        half = vectors.astype(np.float16)
        if self._spill is not None:
            self._spill.write(half.tobytes())
        else:
            self.pending.append(half)
            self._pending_rows = None
        self.nrows += n
        self.live += n
        self.token = None

    def remove(self, ids: np.ndarray) -> None:
        rows = self.rows_of(ids)
        rows = rows[rows >= 0]
        if len(rows):
            self.row_of[self.row_id[rows]] = -1
            self.row_id[rows] = -1
            self.live -= len(rows)
            self.token = None

    def spill(self, folder: Path | None) -> None:
        """Rows added from now on go to an unlinked temp file instead of memory (a rebuild: see :meth:`seal`)."""
        assert self.nrows == 0
        self._spill = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 -- closed by seal()

    def seal(self) -> None:
        """Map the rows written to the temp file, which lives as long as the mapping."""
        if self._spill is None:
            return
        spill, self._spill = self._spill, None
        spill.flush()
        if self.nrows:
            self._map(spill, 0, self.nrows)
        spill.close()  # the mapping keeps the file

    # -- reading -----------------------------------------------------------------------

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.full(len(ids), -1, np.int64)
        inside = (ids >= 0) & (ids < len(self.row_of))
        rows[inside] = self.row_of[ids[inside]]
        return rows

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` as float32."""
        mapped = len(self.mapped)
        if not len(rows) or rows.max() < mapped:
            return self.mapped[rows].astype(np.float32)
        if self._pending_rows is None:
            self._pending_rows = np.concatenate(self.pending) if self.pending else np.zeros((0, self.dim), np.float16)
        out = np.empty((len(rows), self.dim), np.float32)
        low = rows < mapped
        out[low] = self.mapped[rows[low]]
        out[~low] = self._pending_rows[rows[~low] - mapped]
        return out

    # -- the file ------------------------------------------------------------------------

    def save(self, path: Path, generation: int) -> bytes:
        """Write the live rows to ``path`` (atomically, durably) unless it already holds exactly them;
        return its token. Afterwards the rows are read from it (the pending ones leave memory)."""
        if self.token is not None and _f16_token(path) == self.token:
            return self.token
        token = secrets.token_bytes(16)
        rows = np.flatnonzero(self.row_id[:self.nrows] >= 0)
        ids = self.row_id[rows]

        def write(fh) -> None:
            fh.write(_F16_HEADER.pack(_F16_MAGIC, token, generation, len(rows), self.dim).ljust(_F16_DATA, b"\0"))
            for start in range(0, len(rows), _GATHER_ROWS):
                fh.write(self.gather(rows[start:start + _GATHER_ROWS]).astype(np.float16).tobytes())
            fh.write(ids.astype("<i8").tobytes())

        atomic_write(path, write, durable=True)
        with open(path, "rb") as fh:
            self._map(fh, _F16_DATA, len(rows))
        self.row_id = ids.copy()
        self.nrows = self.live = len(ids)
        self.row_of = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, np.int64)
        self.row_of[ids] = np.arange(len(ids))
        self.pending, self._pending_rows, self.token = [], None, token
        return token

    def _map(self, fh, offset: int, rows: int) -> None:
        view = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        view.madvise(mmap.MADV_RANDOM)  # a re-ranking reads scattered rows: no read-ahead around each
        self._view = view
        self.mapped = np.frombuffer(view, np.float16, count=rows * self.dim, offset=offset).reshape(rows, self.dim)

    @classmethod
    def open(cls, path: Path, *, token: bytes, rows: int, dim: int) -> _HalfVectors | None:
        """The float16 file at ``path`` if it is the one with ``token``, ``rows`` and ``dim``, and whole; else None."""
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                head = fh.read(_F16_HEADER.size)
                if (size != _F16_DATA + rows * dim * 2 + rows * 8 or len(head) < _F16_HEADER.size):
                    return None
                magic, file_token, _, file_rows, file_dim = _F16_HEADER.unpack(head)
                if magic != _F16_MAGIC or file_token != token or file_rows != rows or file_dim != dim:
                    return None
                half = cls(dim)
                half._map(fh, _F16_DATA, rows)
        except (OSError, ValueError):
            return None
        ids = np.frombuffer(half._view, "<i8", count=rows, offset=_F16_DATA + rows * dim * 2).astype(np.int64)
        if rows and (ids.min() < 0 or len(np.unique(ids)) != rows):
            return None
        half.row_id, half.nrows, half.live, half.token = ids, rows, rows, token
        half.row_of = np.full(int(ids.max()) + 1 if rows else 0, -1, np.int64)
        half.row_of[ids] = np.arange(rows)
        return half


def _f16_token(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(_F16_HEADER.size)
    except OSError:
        return None
    if len(head) < _F16_HEADER.size or head[:8] != _F16_MAGIC:
        return None
    return _F16_HEADER.unpack(head)[1]
