"""A synthetic index for the query benchmark: N rows of plausible metadata and photo-like vectors.

Written straight through :mod:`photoseek.storage` and :mod:`photoseek.store`, so the
:class:`~photoseek.search.Searcher` and ``photoseek serve`` read it like any index.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from photoseek.keywords import document
from photoseek.storage import schema as db
from photoseek.storage.sqlite import SqliteCatalogue
from photoseek.store import IndexFiles, VectorStore


PHOTOS_PER_GROUP = 50
# Shares of each vector's squared length (they sum to 1): a direction every photo shares (CLIP's
# image embeddings sit in a narrow cone: two unrelated photos have cosine ~0.45), its group's
# direction (a burst, an event, a subject: photos of one group have cosine ~0.8), its own noise.
SHARED, GROUP, OWN = 0.45, 0.35, 0.20


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _directions(dim: int, seed: int, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return _unit(rng.standard_normal(dim)), _unit(rng.standard_normal((n_groups, dim)))


def photo_like_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors with the coarse geometry of photo embeddings (see SHARED, GROUP, OWN).
    Uniformly random vectors would be no test of an approximate index: they have no
    neighbourhoods at all, and real photo collections are made of them."""
    n_groups = max(1, n // PHOTOS_PER_GROUP)
    shared, groups = _directions(dim, seed, n_groups)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 20_000):
        m = min(n, start + 20_000) - start
        own = _unit(rng.standard_normal((m, dim)))
        out[start:start + m] = _unit(np.sqrt(SHARED) * shared + np.sqrt(GROUP) * groups[rng.integers(0, n_groups, m)]
                                     + np.sqrt(OWN) * own)
    return out


def text_like_queries(n_queries: int, n: int, dim: int, seed: int = 0, match: float = 0.3) -> np.ndarray:
    """Queries that point weakly at one group each (a text query's cosine with the photos it
    should find is ~0.3 in CLIP), plus a direction of their own."""
    shared, groups = _directions(dim, seed, max(1, n // PHOTOS_PER_GROUP))
    rng = np.random.default_rng(seed + 2)
    picked = groups[rng.integers(0, len(groups), n_queries)]
    return _unit(match * picked + np.sqrt(1 - match**2) * _unit(rng.standard_normal((n_queries, dim))))


# File types spread so that a filter on one keeps a known share of the photos (bench/queries.py):
# png 0.5%, heif 5%, the rest jpeg. Photo i is taken i minutes after SYNTHETIC_START.
SYNTHETIC_START = datetime(2015, 1, 1)


def synthetic_type(i: int) -> str:
    return "png" if i % 200 == 0 else "heif" if i % 20 == 1 else "jpeg"


def build_index(index_dir: Path, n: int, *, model_id: str, dim: int, seed: int = 0) -> float:
    """Create a fresh index of ``n`` images at ``index_dir``; returns the seconds it took."""
    started = time.perf_counter()
    files = IndexFiles(Path(index_dir))
    files.root.mkdir(parents=True, exist_ok=True)
    for path in (files.database, files.vectors):
        path.unlink(missing_ok=True)
    catalogue = SqliteCatalogue(files.database)
    engine = catalogue.engine
    generation = 1
    vectors = photo_like_vectors(n, dim, seed)
    base_time = SYNTHETIC_START
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
                        indexed_at=datetime(2024, 1, 1), embedding=vectors[i],
                        file_type=synthetic_type(i), photo_date=base_time + timedelta(minutes=i), date_source="exif",
                    ))
                conn.execute(insert(db.ImageRow), rows)
                # Each photo's keyword document, as the indexer writes it (the full-text index is kept by triggers).
                conn.execute(insert(db.PhotoText), [dict(image_id=r["id"], **document(r["path"], "/synthetic"))
                                                    for r in rows])
            for key, value in (("model_id", model_id), ("dim", str(dim)), ("generation", str(generation)),
                               ("created_at", datetime(2024, 1, 1).isoformat())):
                conn.execute(insert(db.Meta).values(key=key, value=value))
        # the kind photoseek index would write
        VectorStore.from_database(catalogue, dim).save(files.vectors, generation)
    finally:
        catalogue.close()
    return time.perf_counter() - started
