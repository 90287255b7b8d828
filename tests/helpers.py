"""Helpers for the tests that drive `photoseek index` as a separate process and watch its
index from outside (crash safety, concurrency)."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from photoseek import db
from photoseek.store import IndexFiles

# One decode worker and small batches: light on a 2-core machine, and many checkpoints to hit.
SMALL_RUN_ENV = {"PHOTOSEEK_DECODE_WORKERS": "1", "PHOTOSEEK_BATCH_SIZE": "8"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "photoseek", *args]


def make_photos(folder: Path, samples: Path, start: int, count: int, *, seed: int = 0, rotate: bool = False,
                prefix: str = "photo") -> None:
    """``count`` distinct 256 px JPEGs cut from the demo photos, named ``{prefix}_{i:04d}.jpg``."""
    sources = [Image.open(p).convert("RGB") for p in sorted(samples.iterdir())]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        rng = np.random.default_rng(seed + i)
        img = sources[i % len(sources)]
        side = int(min(img.size) * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, img.width - side + 1)), int(rng.integers(0, img.height - side + 1))
        tile = img.crop((x, y, x + side, y + side)).resize((256, 256))
        if rotate:
            tile = tile.rotate(90 * int(rng.integers(0, 4)))
        tile.save(folder / f"{prefix}_{i:04d}.jpg", quality=85)


def query_index(index_dir: Path, sql: str, default=None):
    """The first column of the first row of a read-only query on the index database, or
    ``default`` when there is no such row or no readable database (yet)."""
    try:
        con = sqlite3.connect(f"file:{IndexFiles(index_dir).database}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute(sql).fetchone()
            return row[0] if row else default
        finally:
            con.close()
    except sqlite3.Error:
        return default


def last_run_status(index_dir: Path) -> str | None:
    return query_index(index_dir, "SELECT status FROM runs ORDER BY id DESC LIMIT 1")


def generation(index_dir: Path) -> int:
    """The database's generation: +1 for every committed checkpoint."""
    return int(query_index(index_dir, "SELECT value FROM meta WHERE key = 'generation'", 0))


def runs_count(index_dir: Path) -> int:
    return query_index(index_dir, "SELECT count(*) FROM runs", 0)


def embeddings_by(index_dir: Path, key, other) -> dict:
    """``key -> (other, embedding)`` for every committed photo, e.g.
    ``embeddings_by(index, db.ImageRow.id, db.ImageRow.path)``."""
    engine = db.open_database(IndexFiles(index_dir).database)
    with engine.connect() as conn:
        rows = conn.execute(db.select(key, other, db.ImageRow.embedding)).all()
    engine.dispose()
    return {k: (o, db.blob_to_vector(e)) for k, o, e in rows}
