"""Copying a whole catalogue into another, with its embeddings: ``photoseek migrate``.

The usual case is a SQLite index folder moving into PostgreSQL; the copy is written in
SQLAlchemy Core against the shared models, so any back end copies into any other.

What is copied: indexed folders, photos (ids kept, so photo ids and URLs stay valid; embeddings
as they are, nothing is re-embedded), their words, tags and feedback marks, skipped files, runs, and the facts (model, dimension,
created_at). The target gets a later generation (servers reload) and a new index id.

How: the source is read in one snapshot, read-only, ``BATCH`` rows at a time (memory stays
bounded at any size); the target is written under its writer's lock in one transaction, so a
failure or a crash leaves it as it was. ``replace``: the target's old content goes in that same
transaction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace as with_values
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from photoseek.errors import BadInput, IndexNotFound, PhotoseekError
from photoseek.storage import catalogue_exists, open_catalogue, sqlite_path
from photoseek.storage.catalogue import CREATED_AT, DIM, GENERATION, INDEX_UID, MODEL_ID, Catalogue
from photoseek.storage.schema import (FeedbackMark, ImageRow, IndexRun, Meta, PhotoTag, PhotoText, Root, SkippedFile,
                                      TaggedPhoto)

if TYPE_CHECKING:
    from photoseek.settings import Settings

BATCH = 2000  # photos read and written at a time (with 512-d embeddings, about 4 MB)
# Parents before children (images point at roots); deleted in the reverse order.
TABLES = (Root, IndexRun, SkippedFile, ImageRow)
# Keyed by their photo (no ids of their own): copied after it, as they are (nothing is tagged or read again;
# feedback marks keep their times).
PHOTO_TABLES = (PhotoText, PhotoTag, TaggedPhoto, FeedbackMark)


class TargetNotEmpty(PhotoseekError):
    kind = "target_not_empty"
    status = 409


@dataclass(frozen=True)
class CopySummary:
    source: str  # where from and where to, for people (no passwords)
    target: str
    model_id: str
    dim: int
    photos: int
    skipped: int
    runs: int
    folders: int
    replaced: bool
    seconds: float


def migrate(source_dir: Path | None, source_url: str | None, target_dir: Path, target_url: str | None, *,
            replace: bool = False, settings: Settings, batch: int = BATCH,
            progress: Callable[[int], None] | None = None) -> CopySummary:
    """Copy the catalogue of the index at ``source_dir`` (SQLite), or at ``source_url``, into the
    catalogue ``target_url`` (or SQLite in ``target_dir``). Refuses, changing nothing, when the
    source is not an index, when both are the same catalogue, and when the target already holds an
    index (unless ``replace``). ``progress``: called with the number of photos copied so far."""
    started = time.perf_counter()
    if source_url is None:
        if source_dir is None:
            raise BadInput("say which index to copy: --from DIR (or --from-database URL)")
        source_dir = Path(source_dir).expanduser().resolve()
        if not catalogue_exists(source_dir, None):
            what = "no such folder" if not source_dir.is_dir() else "no photoseek.db in it"
            raise IndexNotFound(f"no photoseek index at {source_dir} ({what}); --from takes an index folder, "
                                "the one 'photoseek status' shows as 'index:'")
    if source_url is None and target_url is None and sqlite_path(target_dir, None) == sqlite_path(source_dir, None):
        raise BadInput(f"the source and the target are the same index ({source_dir}); name another target")
    source = open_catalogue(source_dir or target_dir, source_url, readonly=True)
    try:
        target = open_catalogue(target_dir, target_url)
        try:
            with target.writer_lock():
                summary = _copy(source, target, replace=replace, batch=batch, progress=progress)
            # Outside the transaction: an HNSW index on a large PostgreSQL catalogue (minutes), or the
            # vector file beside a SQLite one. Neither changes what the catalogue holds.
            target.prepare_search(summary.dim, settings)
            if target.uses_vector_file:
                _write_vector_file(target, target_dir, summary.dim, settings)
        finally:
            target.close()
    finally:
        source.close()
    return with_values(summary, seconds=time.perf_counter() - started)


def _copy(source: Catalogue, target: Catalogue, *, replace: bool, batch: int,
          progress: Callable[[int], None] | None) -> CopySummary:
    with source.engine.connect() as probe:
        source_uid = source.identity(probe)
    with target.engine.connect() as probe:
        if source_uid is not None and target.identity(probe) == source_uid:
            raise BadInput(f"the source and the target are the same catalogue ({target.describe()}); "
                           "name another target")
    if source.writer_alive():
        raise PhotoseekError(f"'photoseek index' is writing the source ({source.describe()}) now; wait for it "
                             "to finish, then migrate", kind="index_locked", status=409)
    with source.snapshot() as src:
        facts = {key: value for key, value in src.execute(select(Meta.key, Meta.value)).all()
                 if key not in (GENERATION, INDEX_UID)}
        if not facts.get(MODEL_ID):
            raise IndexNotFound(f"the index at {source.describe()} is empty (no model, no photos): nothing to copy")
        counts = {table: src.execute(select(func.count()).select_from(table)).scalar_one() for table in TABLES}
        with target.engine.begin() as dst:
            held = {table: dst.execute(select(func.count()).select_from(table)).scalar_one() for table in TABLES}
            old_model = target.get_meta(dst, MODEL_ID)
            if (any(held.values()) or old_model) and not replace:
                raise TargetNotEmpty(
                    f"{target.describe()} already holds an index ({held[ImageRow]} photos, model {old_model or '-'}); "
                    "nothing was copied. Pass --replace to overwrite it with the copy, or name an empty database")
            generation = target.generation(dst)
            if replace:
                for table in reversed(TABLES):
                    dst.execute(delete(table))
                dst.execute(delete(Meta).where(Meta.key.in_((MODEL_ID, DIM, CREATED_AT))))
                target.drop_search_index(dst)  # built for the old vectors (maybe another dimension)
            for key, value in facts.items():
                dst.execute(delete(Meta).where(Meta.key == key))
                dst.execute(insert(Meta).values(key=key, value=value))
            for table in (Root, IndexRun, SkippedFile):
                for rows in _batches(src, table, batch):
                    target.insert_rows(dst, table, rows)
            copied = 0
            for rows in _batches(src, ImageRow, batch):
                target.insert_rows(dst, ImageRow, rows)
                copied += len(rows)
                if progress is not None:
                    progress(copied)
            for table in PHOTO_TABLES:
                for rows in _batches(src, table, batch):
                    target.insert_rows(dst, table, rows)
            target.rows_inserted_with_ids(dst, TABLES)
            # A new id and a later generation: a server holding the target's old state drops it.
            for key, value in ((INDEX_UID, uuid.uuid4().hex), (GENERATION, str(generation + 1))):
                dst.execute(delete(Meta).where(Meta.key == key))
                dst.execute(insert(Meta).values(key=key, value=value))
    return CopySummary(source=source.describe(), target=target.describe(), model_id=facts[MODEL_ID],
                       dim=int(facts.get(DIM) or 0), photos=copied, skipped=counts[SkippedFile],
                       runs=counts[IndexRun], folders=counts[Root], replaced=replace and any(held.values()),
                       seconds=0.0)


def _batches(conn: Connection, table, size: int) -> Iterator[list[dict]]:
    """Every row of ``table`` as dicts of column values, in key order, ``size`` at a time."""
    key = list(table.__table__.primary_key.columns)
    result = conn.execution_options(yield_per=size).execute(select(table.__table__).order_by(*key))
    for part in result.mappings().partitions(size):
        yield [dict(row) for row in part]


def _write_vector_file(target: Catalogue, index_dir: Path, dim: int, settings: Settings) -> None:
    """A SQLite target's vector file, for its current generation (searches would rebuild it
    themselves, in memory, every time a server starts)."""
    from photoseek.store import IndexFiles, load_vectors

    files = IndexFiles(Path(index_dir).expanduser().resolve())
    with target.engine.connect() as conn:
        generation = target.generation(conn)
    load_vectors(files, target, dim=dim, generation=generation, persist=True,
                 exact_up_to=settings.exact_search_up_to, pq_above=settings.pq_above)
