"""A synthetic index for the query benchmark: N rows of plausible metadata and random unit vectors.

Written straight through :mod:`photoseek.db` and :mod:`photoseek.store`, so the
:class:`~photoseek.search.Searcher` and ``photoseek serve`` read it like any index.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from photoseek import db
from photoseek.store import IndexFiles, VectorStore


def random_unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def build_index(index_dir: Path, n: int, *, model_id: str, dim: int, seed: int = 0) -> float:
    """Create a fresh index of ``n`` images at ``index_dir``; returns the seconds it took."""
    started = time.perf_counter()
    files = IndexFiles(Path(index_dir))
    files.root.mkdir(parents=True, exist_ok=True)
    for path in (files.database, files.vectors):
        path.unlink(missing_ok=True)
    engine = db.open_database(files.database)
    generation = 1
    vectors = random_unit_vectors(n, dim, seed)
    base_time = datetime(2015, 1, 1)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
            root_id = conn.execute(insert(db.Root).values(path="/synthetic")).inserted_primary_key[0]
            chunk = 10_000
            for start in range(0, n, chunk):
                rows = []
                for i in range(start, min(n, start + chunk)):
                    rows.append(dict(
                        id=i + 1, path=f"/synthetic/{i // 1000:03d}/IMG_{i:06d}.jpg", root_id=root_id,
                        size_bytes=3_000_000 + i % 1_000_000, mtime_ns=1_600_000_000_000_000_000 + i,
                        content_hash=f"{i:032x}", width=4000, height=3000,
                        taken_at=base_time + timedelta(minutes=i), camera_make="Synthetic", camera_model="Bench 1",
                        indexed_at=datetime(2024, 1, 1), embedding=db.vector_to_blob(vectors[i]),
                    ))
                conn.execute(insert(db.ImageRow), rows)
            for key, value in (("model_id", model_id), ("dim", str(dim)), ("generation", str(generation)),
                               ("created_at", datetime(2024, 1, 1).isoformat())):
                conn.execute(insert(db.Meta).values(key=key, value=value))
    finally:
        engine.dispose()
    store = VectorStore(dim)
    store.add(np.arange(1, n + 1, dtype=np.int64), vectors)
    store.save(files.vectors, generation)
    return time.perf_counter() - started
