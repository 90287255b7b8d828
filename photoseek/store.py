"""An index on disk: the SQLite database plus the FAISS vector file derived from it.

Layout of an index directory::

    photoseek.db      SQLite: metadata and embeddings (the source of truth)
    vectors.faiss     FAISS index of the same embeddings, stamped with the DB generation
    index.lock        held by the one indexer allowed to write
    thumbnails/       the web service's thumbnail cache

Every committed change to the database bumps ``generation``. The FAISS file carries
the generation it was built from; a reader that finds it missing, stale or corrupt
rebuilds it from the database, so a crash between the two writes costs a rebuild,
never a wrong answer.
"""

from __future__ import annotations

import errno
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from photoseek.errors import NotWritable
from photoseek.files import atomic_write
from photoseek.settings import EXACT_SEARCH_UP_TO
from photoseek.storage.sqlite import lock_held

if TYPE_CHECKING:
    from photoseek.storage import Catalogue

_MAGIC = b"PSKFAISS"
_HEADER = struct.Struct("<8sQQI")  # magic, generation, vector count, dimension
# FAISS's own header of an IVF index (fourcc, d, ntotal, 2 unused, is_trained, metric, nlist), packed:
# what `status` reads instead of loading the whole file.
_IVF_HEADER = struct.Struct("<4siqqqBiQ")


@dataclass(frozen=True)
class IndexFiles:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "photoseek.db"

    @property
    def vectors(self) -> Path:
        return self.root / "vectors.faiss"

    @property
    def lock(self) -> Path:
        return self.root / "index.lock"

    @property
    def thumbnails(self) -> Path:
        return self.root / "thumbnails"

    def exists(self) -> bool:
        return self.database.is_file()

    def writer_alive(self) -> bool:
        """Whether an indexer holds the writer's lock now (see :func:`photoseek.storage.sqlite.lock_held`)."""
        return lock_held(self.lock)

    def writable(self) -> bool:
        try:
            self.ensure_writable()
        except NotWritable:
            return False
        return True

    def ensure_writable(self) -> None:
        """Raise :class:`NotWritable`, naming the path and what to do, unless this index can
        be created or written. Checked before a run starts, so a read-only index is refused in
        one line instead of failing at its first write."""
        existed = self.root.is_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocked = next((p for p in (self.root, *self.root.parents) if p.exists()), self.root)
            raise NotWritable(
                f"cannot create the index at {self.root}: {_reason(exc)} in {blocked}. Choose a folder you can "
                "write to with --index DIR (or PHOTOSEEK_INDEX_DIR)") from None
        for path in (self.lock, self.database):
            if path == self.database and not path.exists():
                continue
            try:
                with open(path, "ab"):
                    pass
            except OSError as exc:
                what = "is read-only" if existed else "cannot be written"
                raise NotWritable(
                    f"the index at {self.root} {what} ({_reason(exc)}: {path.name}): it can be searched but not "
                    "updated. To index, use a copy you can write to (--index DIR) or ask its owner") from None


def _reason(exc: OSError) -> str:
    return {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied"}.get(exc.errno, exc.strerror or str(exc))


EXACT_SEARCH = "exact: every photo is compared with the query"
_MIN_TRAINING_PER_LIST = 39  # FAISS warns below this many training vectors per cluster
_TRAINING_PER_LIST = 64


def _header_count(raw: bytes, *, generation: int, dim: int) -> int | None:
    """The vector count in photoseek's header of a vector file, if it is one built from ``generation``
    with ``dim``-d vectors; else None (the file is rebuilt from the database)."""
    if len(raw) < _HEADER.size:
        return None
    magic, file_generation, count, file_dim = _HEADER.unpack_from(raw)
    if magic != _MAGIC or file_generation != generation or file_dim != dim:
        return None
    return count


def _describe_ivf(nlist: int, nprobe: int) -> str:
    return f"approximate: IVF, {nlist} cluster{'s' if nlist != 1 else ''}, the nearest {nprobe} searched per query"


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


def probes_for(nlist: int) -> int:
    """Lists a query visits: a quarter of them, at least 16. On photo-like vectors that finds
    every exact top result of a "more like this" query and ~91% of a text query's (text
    queries sit far from all photos, which is what makes them hard for any clustering);
    fewer lists lose more: ~72% at 1/16 (bench/run.py)."""
    return min(nlist, max(16, nlist // 4))


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


def _is_current_kind(index: faiss.Index) -> bool:
    if isinstance(index, faiss.IndexIVFScalarQuantizer):
        return (index.sq.qtype == faiss.ScalarQuantizer.QT_fp16 and index.metric_type == faiss.METRIC_INNER_PRODUCT
                and index.direct_map.type == faiss.DirectMap.Hashtable)
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    return (isinstance(inner, faiss.IndexScalarQuantizer) and inner.sq.qtype == faiss.ScalarQuantizer.QT_fp16
            and inner.metric_type == faiss.METRIC_INNER_PRODUCT)


class VectorStore:
    """Inner-product search over unit vectors (= cosine similarity), keyed by image id: exact
    up to :data:`EXACT_SEARCH_UP_TO` photos, then approximate (see :func:`new_ivf_index`)."""

    def __init__(self, dim: int, index: faiss.Index | None = None):
        self.dim = dim
        self.index = index if index is not None else new_flat_index(dim)
        if self.approximate:
            self.index.nprobe = probes_for(self.index.nlist)  # not saved in the file

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def approximate(self) -> bool:
        return isinstance(self.index, faiss.IndexIVF)

    def describe(self) -> str:
        """How a query is answered, for people (``photoseek status``, ``/api/status``)."""
        if not self.approximate:
            return EXACT_SEARCH
        return _describe_ivf(self.index.nlist, self.index.nprobe)

    def fits(self, exact_up_to: int = EXACT_SEARCH_UP_TO) -> bool:
        """Whether this kind of index still suits the number of photos it holds: exact up to
        ``exact_up_to``; above, clusters for about this many photos (within a factor of 4,
        so a growing collection retrains now and then, not on every run)."""
        if len(self) <= exact_up_to:
            return not self.approximate
        if not self.approximate:
            return False
        wanted = clusters_for(len(self))
        return wanted / 2 <= self.index.nlist <= wanted * 2

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Iterable[int]) -> None:
        ids = np.fromiter(ids, dtype=np.int64)
        if len(ids):
            self.index.remove_ids(ids)

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

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, ids) of those of ``ids`` this store holds, in the same order."""
        ids = np.asarray(ids, dtype=np.int64)
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
        try:
            return self.index.reconstruct(int(image_id))
        except RuntimeError:  # faiss raises when the id is unknown
            return None

    # -- persistence -----------------------------------------------------------------

    def save(self, path: Path, generation: int) -> None:
        """Atomically replace ``path``: temp file, fsync, rename, fsync the directory."""
        payload = faiss.serialize_index(self.index)
        header = _HEADER.pack(_MAGIC, generation, len(self), self.dim)
        atomic_write(path, lambda fh: (fh.write(header), fh.write(payload.tobytes())), durable=True)

    @staticmethod
    def describe_file(path: Path, *, generation: int, dim: int) -> str | None:
        """:meth:`describe` for the vector file at ``path``, from its header alone (a few bytes, not the
        whole index); None when it is missing or not built from ``generation`` (searches rebuild it)."""
        try:
            with open(path, "rb") as fh:
                head = fh.read(_HEADER.size + _IVF_HEADER.size + 16)
        except OSError:
            return None
        if len(head) < _HEADER.size + 4 or _header_count(head, generation=generation, dim=dim) is None:
            return None
        fourcc = head[_HEADER.size:_HEADER.size + 4]
        if fourcc == b"IxM2":
            return EXACT_SEARCH
        if fourcc == b"IwSq" and len(head) >= _HEADER.size + _IVF_HEADER.size:
            nlist = _IVF_HEADER.unpack_from(head, _HEADER.size)[-1]
            return _describe_ivf(nlist, probes_for(nlist))
        return None

    @classmethod
    def load(cls, path: Path, *, dim: int, generation: int) -> VectorStore | None:
        """The stored index if it is whole and built from ``generation``; else None."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        count = _header_count(raw, generation=generation, dim=dim)
        if count is None:
            return None
        try:
            index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8, offset=_HEADER.size))
        except RuntimeError:
            return None
        if index.ntotal != count or index.d != dim or not _is_current_kind(index):
            return None  # e.g. the float32 file of an older photoseek: rebuilt from the database
        return cls(dim, index)

    @classmethod
    def from_database(cls, catalogue: Catalogue, dim: int, *, exact_up_to: int = EXACT_SEARCH_UP_TO,
                      batch: int = 20_000) -> VectorStore:
        """The catalogue's vectors in the kind of index that suits their number (see :meth:`fits`).
        Streams them in batches, so memory holds the index and one batch (plus a training
        sample for an IVF index), not every float32 vector at once."""
        with catalogue.engine.connect() as conn:
            ids = catalogue.photo_ids(conn)
            if len(ids) <= exact_up_to:
                store = cls(dim)
            else:
                sample_size = min(len(ids), _TRAINING_PER_LIST * clusters_for(len(ids)))
                sample = np.sort(np.random.default_rng(0).choice(ids, sample_size, replace=False))
                store = cls(dim, new_ivf_index(dim, catalogue.embeddings_of(conn, sample)[1], len(ids)))
            for batch_ids, vectors in catalogue.iter_embeddings(conn, batch):
                store.add(batch_ids, vectors)
        return store

    def refit(self, catalogue: Catalogue, exact_up_to: int = EXACT_SEARCH_UP_TO) -> VectorStore:
        """This store if it suits its size, else the catalogue's vectors in one that does.
        Call it when the catalogue holds what this store holds (after a run's last commit)."""
        return self if self.fits(exact_up_to) else VectorStore.from_database(catalogue, self.dim, exact_up_to=exact_up_to)


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
                 exact_up_to: int = EXACT_SEARCH_UP_TO) -> VectorStore:
    """The vector index for the database's current state, rebuilt from it when needed.

    ``persist``: write a rebuilt index back (only the writer may; readers keep theirs in memory).
    """
    store = VectorStore.load(files.vectors, dim=dim, generation=generation)
    with catalogue.engine.connect() as conn:
        count = catalogue.photo_count(conn)
    if store is not None and len(store) == count:
        return store
    store = VectorStore.from_database(catalogue, dim, exact_up_to=exact_up_to)
    if persist:
        store.save(files.vectors, generation)
    return store
