"""The storage interface: everything photoseek asks of a catalogue, named for what callers do.

A :class:`Catalogue` owns every SQL statement. The statements here are written once in
SQLAlchemy and compile for each back end; a back end module (:mod:`.sqlite`,
:mod:`.postgres`) subclasses it and supplies only what differs: how to connect and migrate,
the writer's lock, a handful of SQL functions, and how vectors are searched.

Writers pass the session they hold: the caller decides what one transaction (one checkpoint)
contains, and a crash loses at most the transaction in flight, never leaves half of one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import LargeBinary, case, delete, func, insert, literal, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from photoseek.errors import PhotoseekError
from photoseek.keywords import FIELDS, KeywordHit, document  # noqa: F401 - KeywordHit: re-exported (its old home)
from photoseek.storage.schema import (FeedbackMark, ImageRow, IndexRun, Meta, PhotoTag, PhotoText, Root, SkippedFile,
                                      TaggedPhoto, photo_date, utcnow)

if TYPE_CHECKING:
    from photoseek.search.query import Filters
    from photoseek.tags import PhotoTags
    from photoseek.settings import Settings

# Catalogue facts kept in ``meta``.
GENERATION, DIM, MODEL_ID, CREATED_AT = "generation", "dim", "model_id", "created_at"
# A random id given to each catalogue when it is created: a reader checks it so that it never
# pairs its vectors with the rows of another catalogue (``photoseek index --rebuild``).
INDEX_UID = "index_uid"
CHUNK = 900  # ids per IN (...): older SQLite builds allow 999 parameters a statement
TAG_FACET_SIZE = 30  # tags the filter bar lists


class SchemaTooNew(PhotoseekError, RuntimeError):
    kind = "schema_too_new"
    status = 503


class IndexLocked(PhotoseekError, RuntimeError):
    """Another writer holds the catalogue."""

    kind = "index_locked"
    status = 409


@dataclass(frozen=True)
class Counts:
    photos: int
    skipped: int
    runs: int
    skipped_files: list[tuple[str, str]]  # (path, reason), by path
    recent_runs: list[IndexRun]  # the last two, newest first
    last_change: IndexRun | None  # the latest run that added, updated, moved or removed anything


# What a result shows: plain columns, read without ORM objects (a page of results is one query;
# in a busy server the Python work per row is what the threads queue for).
PHOTO_COLUMNS = (ImageRow.id, ImageRow.path, ImageRow.width, ImageRow.height, ImageRow.size_bytes,
                 ImageRow.taken_at, ImageRow.camera_make, ImageRow.camera_model, ImageRow.indexed_at,
                 ImageRow.file_type, ImageRow.photo_date, ImageRow.date_source)


class Catalogue:
    """One index's catalogue. Open one with :func:`photoseek.storage.open_catalogue`."""

    backend = "?"
    # Whether searches use a vector file beside the catalogue (built from it, see photoseek.store);
    # False: the back end searches its own vectors (:meth:`vector_search`).
    uses_vector_file = True
    # Whether the catalogue can be replaced under an open reader (a file rebuilt at the same path):
    # then every new connection checks it still reaches the catalogue first opened.
    identity_per_connection = False

    def __init__(self, engine: Engine, *, readonly: bool):
        self.engine = engine
        self.readonly = readonly
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    # -- what differs per back end ---------------------------------------------------------

    def describe(self) -> str:
        """Where the catalogue lives, for people (no password)."""
        raise NotImplementedError

    def writer_lock(self) -> AbstractContextManager:
        """Held by the one writer for a whole run; raises :class:`IndexLocked` when another has it."""
        raise NotImplementedError

    def writer_alive(self) -> bool:
        """Whether a writer holds the lock now (a run marked ``running`` without one died)."""
        raise NotImplementedError

    def read_identity(self, dbapi_conn) -> str | None:
        """The catalogue id that a raw DB-API connection sees (for checks on every new connection)."""
        return None

    def vector_search(self, dim: int, settings: Settings):
        """The back end's own vector search, or None to use a vector file (``uses_vector_file``)."""
        return None

    def prepare_search(self, dim: int, settings: Settings) -> None:
        """After an indexing run: build what the back end's own search needs at this size."""

    def can_write(self) -> bool | None:
        """Whether this user may write the catalogue (None: ask the index folder, see IndexFiles.writable)."""
        return None

    def _ids_clause(self, column, ids: np.ndarray):
        """``column IN ids`` for any number of ids, as one bound value."""
        raise NotImplementedError

    def _year(self, column):
        raise NotImplementedError

    def _month(self, column):
        raise NotImplementedError

    def _find_bytes(self, haystack, needle: bytes):
        """1-based position of ``needle`` in a bytes expression, 0 if absent."""
        raise NotImplementedError

    def keyword_search(self, conn, words: list[str], filters: Filters | None, limit: int) -> list[KeywordHit]:
        """The photos whose keyword document (:class:`~photoseek.storage.schema.PhotoText`) holds any
        of ``words`` (stemmed: "receipts" finds "receipt"), among ``filters``, best first (more of the
        words, rarer words, in weightier fields: :data:`photoseek.keywords.FIELD_WEIGHTS`), each
        with the fields that matched."""
        raise NotImplementedError

    def word_counts(self, conn, words: list[str], cap: int) -> dict[str, int]:
        """How many photos' documents hold each of ``words``, counted up to ``cap`` (a common word
        costs no more than a rare one)."""
        raise NotImplementedError

    def wipe(self) -> None:
        """Empty the catalogue for ``photoseek index --rebuild``: a new id, no rows."""
        raise NotImplementedError

    def close(self) -> None:
        self.engine.dispose()

    # -- whole-catalogue copies (photoseek migrate) -------------------------------------------

    def snapshot(self) -> AbstractContextManager[Connection]:
        """A connection that reads one committed state for as long as it is open (an indexer may
        commit meanwhile: none of its rows half-appear in what is read)."""
        raise NotImplementedError

    def insert_rows(self, conn: Connection, table, rows: list[dict]) -> None:
        """Rows of ``table`` as they are, ids included (one multi-row INSERT)."""
        if rows:
            conn.execute(insert(table.__table__), rows)

    def rows_inserted_with_ids(self, conn: Connection, tables) -> None:
        """After :meth:`insert_rows`: what the back end needs so that new rows get later ids."""

    def drop_search_index(self, conn: Connection) -> None:
        """Drop what :meth:`prepare_search` built (its vectors are about to be replaced)."""

    # -- facts -------------------------------------------------------------------------------

    def reading(self):
        """A connection for reads (a context manager), as searches use one."""
        return self.engine.connect()

    def get_meta(self, conn_or_session, key: str) -> str | None:
        return conn_or_session.execute(select(Meta.value).where(Meta.key == key)).scalar_one_or_none()

    def set_meta(self, session: Session, key: str, value: str) -> None:
        session.merge(Meta(key=key, value=value))

    def generation(self, session) -> int:
        return int(self.get_meta(session, GENERATION) or 0)

    def set_generation(self, session: Session, value: int) -> None:
        self.set_meta(session, GENERATION, str(value))

    def index_state(self, conn) -> tuple[int, int, str | None]:
        """(generation, dimension, model id) of the catalogue as committed now."""
        rows = dict(conn.execute(select(Meta.key, Meta.value).where(Meta.key.in_((GENERATION, DIM, MODEL_ID)))).all())
        return int(rows.get(GENERATION) or 0), int(rows.get(DIM) or 0), rows.get(MODEL_ID)

    def identity(self, conn) -> str | None:
        return self.get_meta(conn, INDEX_UID)

    # -- folders and runs (the writer) -------------------------------------------------------

    def roots(self, session) -> list[Root]:
        return list(session.scalars(select(Root)))

    def add_root(self, session: Session, path: str) -> Root:
        row = Root(path=path)
        session.add(row)
        session.flush()
        return row

    def root_ids(self, session) -> list[tuple[str, int]]:
        return [(p, i) for p, i in session.execute(select(Root.path, Root.id)).all()]

    def root_paths(self, conn) -> list[str]:
        return list(conn.execute(select(Root.path).order_by(Root.path)).scalars())

    def start_run(self, session: Session) -> IndexRun:
        """A new run; any run still marked running died without saying so (its lock is gone)."""
        session.execute(update(IndexRun).where(IndexRun.status == "running").values(status="interrupted"))
        run = IndexRun()
        session.add(run)
        session.flush()
        return run

    def update_run(self, session: Session, run_id: int, **values) -> None:
        session.execute(update(IndexRun).where(IndexRun.id == run_id).values(**values))

    # -- photos (the writer) ----------------------------------------------------------------

    def known_files(self, session) -> dict[str, tuple[int, int, int, str]]:
        """``path -> (id, size, mtime_ns, content_hash)`` of every indexed photo."""
        rows = session.execute(select(ImageRow.id, ImageRow.path, ImageRow.size_bytes, ImageRow.mtime_ns,
                                      ImageRow.content_hash))
        return {path: (row_id, size, mtime, chash) for row_id, path, size, mtime, chash in rows}

    def skipped_signatures(self, session) -> dict[str, tuple[int, int]]:
        """``path -> (size, mtime_ns)`` of every skipped file (retried only when it changes)."""
        return {path: (size, mtime) for path, size, mtime in session.execute(
            select(SkippedFile.path, SkippedFile.size_bytes, SkippedFile.mtime_ns))}

    def skipped_paths(self, session) -> list[str]:
        return list(session.scalars(select(SkippedFile.path)))

    def record_skip(self, session: Session, path: str, size: int, mtime_ns: int, reason: str) -> None:
        existing = session.scalars(select(SkippedFile).where(SkippedFile.path == path)).one_or_none()
        if existing is None:
            session.add(SkippedFile(path=path, size_bytes=size, mtime_ns=mtime_ns, reason=reason[:500]))
        else:
            existing.size_bytes, existing.mtime_ns, existing.reason, existing.seen_at = (
                size, mtime_ns, reason[:500], utcnow())

    def forget_skips(self, session: Session, paths: list[str]) -> None:
        for start in range(0, len(paths), CHUNK):
            session.execute(delete(SkippedFile).where(SkippedFile.path.in_(paths[start:start + CHUNK])))

    def touch(self, session: Session, row_id: int, mtime_ns: int, *, path: str | None = None,
              root_id: int | None = None, root: str | None = None) -> None:
        """A file whose modification time (and, for a move, path) changed but whose content did not: a
        photo dated by its file (no EXIF date) moves with the new time."""
        file_date, _ = photo_date(None, mtime_ns)
        values = dict(mtime_ns=mtime_ns, photo_date=case((ImageRow.date_source == "file", file_date),
                                                         else_=ImageRow.photo_date))
        if path is not None:
            values.update(path=path, root_id=root_id)
            moved = document(path, root)  # a moved photo is found by its new name and folders
            session.execute(update(PhotoText).where(PhotoText.image_id == row_id)
                            .values(name=moved["name"], folders=moved["folders"]))
        session.execute(update(ImageRow).where(ImageRow.id == row_id).values(**values))

    def remove_photos(self, session: Session, ids: list[int]) -> None:
        for start in range(0, len(ids), CHUNK):
            session.execute(delete(ImageRow).where(ImageRow.id.in_(ids[start:start + CHUNK])))

    @staticmethod
    def new_photo(path: str, root_id: int | None, mtime_ns: int, info, size_bytes: int, content_hash: str,
                  vector: np.ndarray, *, root: str | None = None) -> ImageRow:
        """A row for a freshly embedded photo (``info``: :class:`photoseek.imaging.PhotoInfo`), with
        its keyword document (``root``: the indexed folder it is in)."""
        when, source = photo_date(info.taken_at, mtime_ns)
        words = document(path, root, caption=info.caption, keywords=info.keywords, ocr=info.ocr_text)
        return ImageRow(
            path=path, root_id=root_id, size_bytes=size_bytes, mtime_ns=mtime_ns, content_hash=content_hash,
            width=info.width, height=info.height, taken_at=info.taken_at, camera_make=info.camera_make,
            camera_model=info.camera_model, embedding=np.asarray(vector, dtype=np.float32), file_type=info.file_type,
            photo_date=when, date_source=source, text=PhotoText(**words, ocr_error=_reason(info.ocr_error)),
        )

    def write_batch(self, session: Session, rows: list[ImageRow], replaced: list[int]) -> list[int]:
        """A batch of embedded photos in a few statements, not a few per photo: old versions out, new
        rows in (one multi-row INSERT), their "skipped" entries cleared. Returns the new ids."""
        self.remove_photos(session, replaced)
        session.add_all(rows)
        session.flush()
        self.forget_skips(session, [r.path for r in rows])
        return [r.id for r in rows]

    def photos_without_text(self, session) -> list[tuple[int, str]]:
        """(id, path) of the photos no OCR has read: neither read (with or without text found) nor
        failed. What ``photoseek index --ocr`` reads on an index built without it."""
        return [(i, p) for i, p in session.execute(
            select(ImageRow.id, ImageRow.path).join(PhotoText, PhotoText.image_id == ImageRow.id)
            .where(PhotoText.ocr.is_(None), PhotoText.ocr_error.is_(None)).order_by(ImageRow.id))]

    def set_photo_text(self, session: Session, photo_id: int, info) -> None:
        """The caption, keywords and OCR text (or why none) read from a photo
        (``info``: :class:`photoseek.imaging.PhotoInfo`), its file and folder names kept."""
        words = document("", None, caption=info.caption, keywords=info.keywords, ocr=info.ocr_text)
        session.execute(update(PhotoText).where(PhotoText.image_id == photo_id).values(
            caption=words["caption"], keywords=words["keywords"], ocr=words["ocr"], ocr_error=_reason(info.ocr_error)))

    # -- what readers ask --------------------------------------------------------------------

    def photo_count(self, conn) -> int:
        return conn.execute(select(func.count()).select_from(ImageRow)).scalar_one()

    def photo_ids(self, conn) -> np.ndarray:
        return np.fromiter(conn.execute(select(ImageRow.id)).scalars(), dtype=np.int64)

    def has_photo(self, conn, image_id: int) -> bool:
        return conn.execute(select(ImageRow.id).where(ImageRow.id == image_id)).first() is not None

    def embedding(self, conn, image_id: int) -> np.ndarray | None:
        return conn.execute(select(ImageRow.embedding).where(ImageRow.id == image_id)).scalar_one_or_none()

    def iter_embeddings(self, conn, batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (ids, float32 vectors) in id order, ``batch`` rows at a time."""
        result = conn.execute(select(ImageRow.id, ImageRow.embedding).order_by(ImageRow.id)).yield_per(batch)
        for rows in result.partitions(batch):
            yield _stack(rows)

    def embeddings_of(self, conn, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those of ``ids`` that exist, in no particular order."""
        parts = [_stack(conn.execute(select(ImageRow.id, ImageRow.embedding)
                                     .where(ImageRow.id.in_([int(i) for i in ids[start:start + CHUNK]]))).all())
                 for start in range(0, len(ids), CHUNK)]
        if not parts:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def photo_rows(self, conn, ids: list[int]) -> list:
        """The rows of PHOTO_COLUMNS for ``ids`` (any order; unknown ids are left out)."""
        return conn.execute(select(*PHOTO_COLUMNS).where(ImageRow.id.in_(ids))).all() if ids else []

    def photo_texts(self, conn, ids: list[int]) -> dict[int, dict[str, str]]:
        """The keyword documents of ``ids`` (those that have one), field by field."""
        columns = [getattr(PhotoText, f) for f in FIELDS]
        rows = conn.execute(select(PhotoText.image_id, *columns).where(PhotoText.image_id.in_(ids))).all() if ids else []
        return {r[0]: dict(zip(FIELDS, r[1:])) for r in rows}

    def photo_path(self, conn, image_id: int) -> str | None:
        return conn.execute(select(ImageRow.path).where(ImageRow.id == image_id)).scalar_one_or_none()

    def ids_of_paths(self, conn, paths: list[str]) -> dict[str, int]:
        """The photo id of each of ``paths`` that is indexed (exact stored path)."""
        found: dict[str, int] = {}
        for start in range(0, len(paths), CHUNK):
            found.update((p, i) for i, p in conn.execute(
                select(ImageRow.id, ImageRow.path).where(ImageRow.path.in_(paths[start:start + CHUNK]))))
        return found

    def photo_words(self, conn) -> list[tuple[int, str, str, str, str]]:
        """(id, path, caption, keywords, folders) of every photo: what ``photoseek tune`` learns from."""
        return [tuple(r) for r in conn.execute(
            select(ImageRow.id, ImageRow.path, PhotoText.caption, PhotoText.keywords, PhotoText.folders)
            .join(PhotoText, PhotoText.image_id == ImageRow.id).order_by(ImageRow.id))]

    def filter_columns(self, conn) -> list:
        """(id, photo_date, width, height, file_type, camera_make, camera_model, path) of every photo:
        what :class:`photoseek.search.filters.FilterColumns` keeps in memory."""
        return conn.execute(select(ImageRow.id, ImageRow.photo_date, ImageRow.width, ImageRow.height,
                                   ImageRow.file_type, ImageRow.camera_make, ImageRow.camera_model,
                                   ImageRow.path)).all()

    def skipped_files(self, conn) -> list[tuple[str, str]]:
        return [tuple(r) for r in conn.execute(select(SkippedFile.path, SkippedFile.reason).order_by(SkippedFile.path))]

    def counts(self, session, skipped_limit: int) -> Counts:
        """What ``photoseek status`` shows, read in one transaction."""
        changed = (IndexRun.added + IndexRun.updated + IndexRun.moved + IndexRun.removed) > 0
        return Counts(
            photos=session.execute(select(func.count()).select_from(ImageRow)).scalar_one(),
            skipped=session.execute(select(func.count()).select_from(SkippedFile)).scalar_one(),
            runs=session.execute(select(func.count()).select_from(IndexRun)).scalar_one(),
            skipped_files=[(r.display_path, r.reason) for r in session.scalars(
                select(SkippedFile).order_by(SkippedFile.path).limit(skipped_limit))],
            recent_runs=list(session.scalars(select(IndexRun).order_by(IndexRun.id.desc()).limit(2))),
            last_change=session.scalars(select(IndexRun).where(changed).order_by(IndexRun.id.desc())
                                        .limit(1)).one_or_none(),
        )

    # -- filters and facets ------------------------------------------------------------------

    def filter_ids(self, conn, filters: Filters) -> np.ndarray:
        """Ids of the photos that pass ``filters`` (see :class:`photoseek.search.query.Filters`), sorted.
        Every value goes in as a bound parameter. Searches over a vector file use the same filter in
        memory (:mod:`photoseek.search.filters`), which a test holds equal to this one."""
        ids = conn.execute(select(ImageRow.id).where(*self.filter_clauses(filters)).order_by(ImageRow.id)).scalars()
        return np.fromiter(ids, dtype=np.int64)

    def filter_clauses(self, filters: Filters | None) -> list:
        img = ImageRow
        where = []
        if filters is None:
            return where
        if filters.after is not None:
            where.append(img.photo_date >= datetime.combine(filters.after, datetime.min.time()))
        if filters.before is not None:
            where.append(img.photo_date < datetime.combine(filters.before + timedelta(days=1), datetime.min.time()))
        if filters.camera:
            label = func.lower(func.coalesce(img.camera_make, "") + " " + func.coalesce(img.camera_model, ""))
            where.append(label.like("%" + _like_escape(filters.camera.lower().strip()) + "%", escape="\\"))
        if filters.folder:
            prefix = os.fsencode(filters.folder.rstrip(os.sep) + os.sep)
            where.append(func.substr(img.path, 1, len(prefix)) == literal(prefix, LargeBinary))
        if filters.types:
            where.append(img.file_type.in_(list(filters.types)))
        if filters.orientation == "landscape":
            where.append(img.width > img.height)
        elif filters.orientation == "portrait":
            where.append(img.height > img.width)
        elif filters.orientation == "square":
            where.append(img.width == img.height)
        if filters.min_pixels:
            where.append(img.width * img.height >= filters.min_pixels)
        for tag in filters.tags:  # every tag: photos carrying it, directly or through a descendant
            where.append(img.id.in_(select(PhotoTag.image_id).where(PhotoTag.tag == tag)))
        return where

    def facet_counts(self, conn: Connection, filters: Filters, *, ids: np.ndarray | None = None,
                     year: int | None = None) -> dict[str, list[tuple[Any, int]]]:
        """How many photos each choice of a filter would keep, for the filter bar: per camera
        (make, model), per year (per month of ``year`` when given), per top-level folder of each
        indexed folder, per file type, per orientation. Each facet counts with every other filter
        applied but not its own, so the bar shows the alternatives to what is chosen. ``ids``: only
        these photos (the matches of a query with a cutoff)."""
        img = ImageRow
        restrict = [] if ids is None else [self._ids_clause(img.id, ids)]

        def count(group, dropped: dict) -> list[tuple[Any, int]]:
            where = self.filter_clauses(replace(filters, **dropped)) + restrict
            rows = conn.execute(select(*group, func.count()).where(*where).group_by(*group)
                                .order_by(func.count().desc(), *group))
            return [(tuple(r[:-1]) if len(group) > 1 else r[0], r[-1]) for r in rows]

        dates = replace(filters, after=None, before=None)
        shape = case((img.width > img.height, "landscape"), (img.height > img.width, "portrait"), else_="square")
        out = {
            "camera": count((img.camera_make, img.camera_model), dict(camera=None)),
            "type": count((img.file_type,), dict(types=())),
            "orientation": count((shape,), dict(orientation=None)),
        }
        if year is None:
            out["year"] = count((self._year(img.photo_date),), dict(after=None, before=None))
        else:
            month = self._month(img.photo_date)
            in_year = [img.photo_date >= datetime(year, 1, 1)]
            if year < datetime.max.year:
                in_year.append(img.photo_date < datetime(year + 1, 1, 1))
            rows = conn.execute(select(month, func.count()).where(*self.filter_clauses(dates), *restrict, *in_year)
                                .group_by(month).order_by(month))
            out["month"] = [(r[0], r[1]) for r in rows]
        # Top-level folder: the first path component below the photo's indexed folder ("" = the folder itself).
        rest = func.substr(img.path, func.length(Root.path) + 2)
        slash = self._find_bytes(rest, os.fsencode(os.sep))
        top = case((slash > 0, func.substr(rest, 1, slash - 1)), else_=literal(b"", LargeBinary))
        where = self.filter_clauses(replace(filters, folder=None)) + restrict
        rows = conn.execute(select(Root.path, top, func.count()).join(Root, img.root_id == Root.id).where(*where)
                            .group_by(Root.path, top).order_by(func.count().desc(), Root.path, top))
        out["folder"] = [(os.path.join(root, os.fsdecode(bytes(sub))).rstrip(os.sep), n) for root, sub, n in rows]
        out["tag"] = self.tag_counts(conn, replace(filters, tags=()), ids=ids, limit=TAG_FACET_SIZE)
        return out

    # -- tags (photoseek.tags) ---------------------------------------------------------------

    def write_tags(self, session: Session, tagged: list[PhotoTags], vocabulary: str) -> None:
        """Photos' tags, replacing what they had, and the vocabulary version they were tagged with: in
        the caller's transaction, so a photo is either tagged under ``vocabulary`` or marked as not."""
        ids = [t.image_id for t in tagged]
        for start in range(0, len(ids), CHUNK):
            part = ids[start:start + CHUNK]
            session.execute(delete(PhotoTag).where(PhotoTag.image_id.in_(part)))
            session.execute(delete(TaggedPhoto).where(TaggedPhoto.image_id.in_(part)))
        rows = [dict(image_id=t.image_id, tag=name, score=score, via=via) for t in tagged for name, score, via in t.tags]
        if rows:
            session.execute(insert(PhotoTag), rows)
        if ids:
            session.execute(insert(TaggedPhoto), [dict(image_id=i, vocabulary=vocabulary) for i in ids])

    def untagged_ids(self, conn, vocabulary: str) -> np.ndarray:
        """Ids of the photos not tagged under ``vocabulary`` (never tagged, or under another one), sorted."""
        done = select(TaggedPhoto.image_id).where(TaggedPhoto.vocabulary == vocabulary)
        ids = conn.execute(select(ImageRow.id).where(ImageRow.id.not_in(done)).order_by(ImageRow.id)).scalars()
        return np.fromiter(ids, dtype=np.int64)

    def tag_counts(self, conn, filters: Filters | None = None, *, ids: np.ndarray | None = None,
                   limit: int | None = None) -> list[tuple[str, int]]:
        """(tag, photos) for the photos passing ``filters`` (and among ``ids``), most photos first."""
        where = self.filter_clauses(filters)
        if ids is not None:
            where.append(self._ids_clause(ImageRow.id, ids))
        query = (select(PhotoTag.tag, func.count()).select_from(PhotoTag).join(ImageRow, PhotoTag.image_id == ImageRow.id)
                 .where(*where).group_by(PhotoTag.tag).order_by(func.count().desc(), PhotoTag.tag))
        return [(t, n) for t, n in conn.execute(query.limit(limit) if limit else query)]

    def tags_of(self, conn, image_id: int) -> list[tuple[str, float, str | None]]:
        """A photo's (tag, score, via), best score first, a scored tag before those derived from it."""
        rows = conn.execute(select(PhotoTag.tag, PhotoTag.score, PhotoTag.via).where(PhotoTag.image_id == image_id)
                            .order_by(PhotoTag.score.desc(), PhotoTag.via.is_not(None), PhotoTag.tag))
        return [(t, float(s), v) for t, s, v in rows]

    def tag_members(self, conn) -> dict[str, np.ndarray]:
        """tag -> sorted ids of the photos carrying it: what in-memory filters need (search.filters)."""
        from photoseek.search.filters import tag_members_from

        return tag_members_from(conn.execute(select(PhotoTag.tag, PhotoTag.image_id)
                                             .order_by(PhotoTag.tag, PhotoTag.image_id)))

    def photos_with_tags(self, conn, tags: list[str], filters: Filters | None = None, *, limit: int | None = 1000,
                         offset: int = 0, sort: str = "relevance", min_score: float | None = None
                         ) -> list[tuple[int, float]]:
        """(id, score) of the photos carrying any of ``tags`` and passing ``filters``: best score first
        (a photo's best over those tags), or by date (``sort`` newest / oldest, undated last), then by
        id. Ancestors are stored with each photo, so a broad tag ("animal") finds the photos of all its
        descendants."""
        if not tags:
            return []
        best = func.max(PhotoTag.score)
        if sort == "relevance":
            order = (best.desc(), PhotoTag.image_id)
        else:
            newest = sort == "newest"
            date = ImageRow.photo_date
            order = (date.is_(None), date.desc() if newest else date, PhotoTag.image_id.desc() if newest else PhotoTag.image_id)
        query = (select(PhotoTag.image_id, best).join(ImageRow, PhotoTag.image_id == ImageRow.id)
                 .where(PhotoTag.tag.in_(list(tags)), *self.filter_clauses(filters))
                 .group_by(PhotoTag.image_id, ImageRow.photo_date))
        if min_score is not None:
            query = query.having(best >= min_score)
        return [(int(i), float(s)) for i, s in conn.execute(query.order_by(*order).offset(offset).limit(limit))]

    # -- feedback marks (photoseek.feedback) ---------------------------------------------------

    def set_feedback(self, session: Session, query: str, image_id: int, mark: str | None) -> FeedbackMark | None:
        """The mark on (``query``, photo): replaced by ``mark`` ("right" / "wrong"), or cleared (None).
        ``query`` is already normalised. Returns the stored row (None when cleared)."""
        session.execute(delete(FeedbackMark).where(FeedbackMark.query == query, FeedbackMark.image_id == image_id))
        if mark is None:
            return None
        row = FeedbackMark(query=query, image_id=image_id, mark=mark, created_at=utcnow())
        session.add(row)
        session.flush()
        return row

    def feedback_marks(self, conn, query: str | None = None) -> list[tuple[str, int, str, str, datetime]]:
        """(query, photo id, photo path, mark, created_at) of every mark, or of one normalised ``query``'s,
        by query then newest first."""
        where = [] if query is None else [FeedbackMark.query == query]
        rows = conn.execute(select(FeedbackMark.query, FeedbackMark.image_id, ImageRow.path, FeedbackMark.mark,
                                   FeedbackMark.created_at).join(ImageRow, ImageRow.id == FeedbackMark.image_id)
                            .where(*where).order_by(FeedbackMark.query, FeedbackMark.created_at.desc(),
                                                    FeedbackMark.image_id))
        return [tuple(r) for r in rows]

    def feedback_count(self, conn) -> int:
        return conn.execute(select(func.count()).select_from(FeedbackMark)).scalar_one()

    def clear_feedback(self, session: Session, query: str | None = None) -> int:
        """Remove every mark, or one normalised ``query``'s; how many went."""
        where = [] if query is None else [FeedbackMark.query == query]
        return session.execute(delete(FeedbackMark).where(*where)).rowcount or 0


def _reason(text: str | None) -> str | None:
    return None if text is None else text[:500]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _stack(rows) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    if not len(rows):
        return ids, np.zeros((0, 0), np.float32)
    return ids, np.stack([r[1] for r in rows]).astype(np.float32, copy=False)
