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

import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from photoseek import db

_MAGIC = b"PSKFAISS"
_HEADER = struct.Struct("<8sQQI")  # magic, generation, vector count, dimension


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


def new_flat_index(dim: int) -> faiss.Index:
    """Brute-force inner product over every vector, stored as float16.

    Exhaustive, so no training and no recall loss: results never depend on when a photo was
    added. A search streams every stored vector through memory once, so it costs what they
    weigh: float16 halves that (100,000 x 512-d: 100 MB, about 5 ms a query here instead
    of 10-12 ms in float32). A score moves by about 1e-5, far below any gap between
    photos a person would rank differently; the database keeps the float32 originals.
    """
    return faiss.IndexIDMap2(faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT))


def _is_current_kind(index: faiss.Index) -> bool:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    return (isinstance(inner, faiss.IndexScalarQuantizer) and inner.sq.qtype == faiss.ScalarQuantizer.QT_fp16
            and inner.metric_type == faiss.METRIC_INNER_PRODUCT)


class VectorStore:
    """Exact inner-product search over unit vectors (= cosine similarity), keyed by image id
    (see :func:`new_flat_index`)."""

    def __init__(self, dim: int, index: faiss.Index | None = None):
        self.dim = dim
        self.index = index if index is not None else new_flat_index(dim)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Iterable[int]) -> None:
        ids = np.fromiter(ids, dtype=np.int64)
        if len(ids):
            self.index.remove_ids(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` per query: (scores, ids), ids -1 where fewer exist."""
        k = max(1, min(k, len(self))) if len(self) else 1
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if not len(self):
            n = len(queries)
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        return self.index.search(queries, k)

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
        fd, tmp = tempfile.mkstemp(prefix=".vectors-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(header)
                fh.write(payload.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path, *, dim: int, generation: int) -> VectorStore | None:
        """The stored index if it is whole and built from ``generation``; else None."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        if len(raw) < _HEADER.size:
            return None
        magic, file_generation, count, file_dim = _HEADER.unpack_from(raw)
        if magic != _MAGIC or file_generation != generation or file_dim != dim:
            return None
        try:
            index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8, offset=_HEADER.size))
        except RuntimeError:
            return None
        if index.ntotal != count or index.d != dim or not _is_current_kind(index):
            return None  # e.g. the float32 file of an older photoseek: rebuilt from the database
        return cls(dim, index)

    @classmethod
    def from_database(cls, engine: Engine, dim: int, batch: int = 20_000) -> VectorStore:
        store = cls(dim)
        with engine.connect() as conn:
            result = conn.execute(select(db.ImageRow.id, db.ImageRow.embedding).order_by(db.ImageRow.id)).yield_per(batch)
            for rows in result.partitions(batch):
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
                store.add(ids, vectors)
        return store


def load_vectors(files: IndexFiles, engine: Engine, *, dim: int, generation: int, persist: bool) -> VectorStore:
    """The vector index for the database's current state, rebuilt from it when needed.

    ``persist``: write a rebuilt index back (only the writer may; readers keep theirs in memory).
    """
    store = VectorStore.load(files.vectors, dim=dim, generation=generation)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(db.ImageRow)).scalar_one()
    if store is not None and len(store) == count:
        return store
    store = VectorStore.from_database(engine, dim)
    if persist:
        store.save(files.vectors, generation)
    return store


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
