"""The SQLite side of an index: schema, version and step migrations.

SQLite is the source of truth. It holds every image's metadata *and* its embedding,
so the FAISS file next to it is a derived, rebuildable cache: whatever a crash
leaves behind, the database is consistent (one transaction per checkpoint) and the
vector index can always be made to match it again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    create_engine,
    delete,
    event,
    case,
    func,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from photoseek.errors import PhotoseekError

if TYPE_CHECKING:
    from photoseek.search.query import Filters

SCHEMA_VERSION = 2


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def as_utc(value):
    """A time as the index stores it (UTC, no offset) with its offset, for people and clients; anything
    else (None, an aware time, a value that is not a time) as it is."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class FsPath(TypeDecorator):
    """A file system path, stored as its raw bytes.

    File names need not be valid UTF-8 (Linux allows any bytes); SQLite text must be.
    Bytes round-trip exactly through ``os.fsencode``/``os.fsdecode``.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else os.fsencode(value)

    def process_result_value(self, value, dialect):
        return None if value is None else os.fsdecode(bytes(value))


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the index: schema version, model, dimension, generation."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(4096))


class Root(Base):
    __tablename__ = "roots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ImageRow(Base):
    """One indexed photo. Its ``id`` is also its vector id in FAISS; ids are never reused."""

    __tablename__ = "images"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    root_id: Mapped[int | None] = mapped_column(ForeignKey("roots.id", ondelete="SET NULL"), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime)
    camera_make: Mapped[str | None] = mapped_column(String(100))
    camera_model: Mapped[str | None] = mapped_column(String(100))
    indexed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    embedding: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    # Schema 2, for filters and sorting by date:
    file_type: Mapped[str | None] = mapped_column(String(8), index=True)  # jpeg, png, heif, ... (what the bytes are)
    # When the photo was taken (EXIF), else when the file was last modified (UTC): what date filters and
    # "newest first" use. ``date_source`` says which: "exif" or "file".
    photo_date: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    date_source: Mapped[str | None] = mapped_column(String(4))

    @property
    def display_path(self) -> str:
        """The path as text for people: undecodable bytes shown as U+FFFD."""
        return display_path(self.path)


class SkippedFile(Base):
    """A file that could not be indexed, and why. Retried only when it changes."""

    __tablename__ = "skipped"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(500))
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    @property
    def display_path(self) -> str:
        return display_path(self.path)


class IndexRun(Base):
    """One ``photoseek index`` run; a run that never finished stays ``running``."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")
    added: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    moved: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)


def display_path(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def vector_to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def blob_to_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def photo_date(taken_at: datetime | None, mtime_ns: int) -> tuple[datetime, str]:
    """The date a photo is filtered and sorted by, and where it came from."""
    if taken_at is not None:
        return taken_at, "exif"
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).replace(tzinfo=None), "file"


def _add_filter_columns(conn: Connection) -> None:
    """1 -> 2: file type, photo date and its source, filled in from what each row already holds
    (no photo is decoded or embedded again)."""
    from photoseek.imaging import EXTENSION_TYPES

    conn.execute(text("ALTER TABLE images ADD COLUMN file_type VARCHAR(8)"))
    conn.execute(text("ALTER TABLE images ADD COLUMN photo_date DATETIME"))
    conn.execute(text("ALTER TABLE images ADD COLUMN date_source VARCHAR(4)"))
    rows = conn.execute(text("SELECT id, path, taken_at, mtime_ns FROM images")).all()
    for row_id, path, taken_at, mtime_ns in rows:
        taken = datetime.fromisoformat(taken_at) if isinstance(taken_at, str) else taken_at
        when, source = photo_date(taken, mtime_ns)
        kind = EXTENSION_TYPES.get(os.path.splitext(os.fsdecode(bytes(path)))[1].lower())
        conn.execute(text("UPDATE images SET file_type = :t, photo_date = :d, date_source = :s WHERE id = :id"),
                     {"t": kind, "d": when.isoformat(sep=" "), "s": source, "id": row_id})
    conn.execute(text("CREATE INDEX ix_images_file_type ON images (file_type)"))
    conn.execute(text("CREATE INDEX ix_images_photo_date ON images (photo_date)"))


# Step migrations: MIGRATIONS[n] takes a database from version n to n + 1. Append, never edit.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _add_filter_columns}


class SchemaTooNew(PhotoseekError, RuntimeError):
    kind = "schema_too_new"
    status = 503


def open_database(path: Path, *, readonly: bool = False, connections: int = 5) -> Engine:
    """Open (creating if needed) and migrate the index database at ``path``.

    ``connections``: how many connections to keep open for threads that query at once (a
    server's request threads). Beyond that a connection is opened per query and closed after,
    and a fresh SQLite connection re-reads the schema and starts with a cold page cache.
    """
    if readonly:
        url = f"sqlite:///file:{path}?{_readonly_mode(path)}&uri=true"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           pool_size=connections, max_overflow=64)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # noqa: ANN001
        cur = dbapi_conn.cursor()
        # WAL: readers (the web server) never block the indexer's writes and see whole transactions only.
        if not readonly:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    if readonly:
        _check_readable_schema(engine, path)
    else:
        migrate(engine)
        ensure_index_uid(engine)
    return engine


def _check_readable_schema(engine: Engine, path: Path) -> None:
    """A reader takes the schema as it finds it: newer is refused; older is upgraded in place
    when the file can be written (as any open for writing would), else refused with what to do."""
    with engine.connect() as conn:
        version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(_too_new(version))
    if 0 < version < SCHEMA_VERSION:
        try:
            open_database(path).dispose()
        except OperationalError:
            raise PhotoseekError(
                f"the index at {path.parent} was written by an older photoseek (schema {version}) and cannot be "
                "upgraded here because it is read-only; run 'photoseek index' once where it can be written",
                kind="schema_too_old", status=503) from None


def _readonly_mode(path: Path) -> str:
    """URI parameters to read ``path`` without writing anything.

    ``mode=ro`` still needs the WAL's shared-memory file, which SQLite creates next to the
    database: on a read-only mount, or in another user's folder, it cannot. Then the
    database is opened ``immutable``: SQLite takes no locks and assumes nobody changes the
    file, which holds for a backup or a read-only mount; a writer we could not coordinate
    with anyway is the one case it does not cover."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return "mode=ro"
        finally:
            con.close()
    except sqlite3.OperationalError:
        return "mode=ro&immutable=1"


# A random id given to each database when it is created. `photoseek index --rebuild` makes a
# new database at the same path, whose photo ids start again from 1: a reader checks this id
# on every connection it opens, so it can never pair its vectors with another database's rows.
INDEX_UID = "index_uid"


def ensure_index_uid(engine: Engine) -> None:
    """Give the database its id if it has none yet (new, or written before ids existed).

    Read first: every open (each search, the server) comes through here, and a write would
    wait for a running indexer's transaction."""
    with engine.connect() as conn:
        if get_meta(conn, INDEX_UID) is not None:
            return
    try:
        with engine.begin() as conn:  # OR IGNORE: another process may have given it one meanwhile
            conn.execute(text("INSERT OR IGNORE INTO meta (key, value) VALUES (:key, :value)"),
                         {"key": INDEX_UID, "value": uuid.uuid4().hex})
    except OperationalError:  # a read-only database: readers then compare "no id" with "no id"
        pass


def read_index_uid(dbapi_conn: sqlite3.Connection) -> str | None:
    """The id of the database a raw sqlite3 connection has open (None: none, or not an index)."""
    try:
        row = dbapi_conn.execute("SELECT value FROM meta WHERE key = ?", (INDEX_UID,)).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def schema_version(conn: Connection) -> int:
    return int(conn.execute(text("PRAGMA user_version")).scalar_one())


def migrate(engine: Engine) -> None:
    with engine.begin() as conn:
        version = schema_version(conn)
        has_tables = conn.execute(text("SELECT count(*) FROM sqlite_master WHERE type='table'")).scalar_one() > 0
        if version == 0 and not has_tables:
            Base.metadata.create_all(conn)
            conn.execute(text(f"PRAGMA user_version = {SCHEMA_VERSION}"))
            return
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(_too_new(version))
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](conn)
            version += 1
            conn.execute(text(f"PRAGMA user_version = {version}"))


def _too_new(version: int) -> str:
    return f"this index was written by a newer photoseek (schema {version}, this one knows {SCHEMA_VERSION}); upgrade photoseek"


def filter_ids(conn: Connection, filters: Filters) -> np.ndarray:
    """Ids of the photos that pass ``filters`` (see :class:`photoseek.search.query.Filters`), sorted.
    Every value goes in as a bound parameter. Searches use the same filter in memory
    (:mod:`photoseek.search.filters`), which a test holds equal to this one."""
    ids = conn.execute(select(ImageRow.id).where(*_filter_clauses(filters)).order_by(ImageRow.id)).scalars()
    return np.fromiter(ids, dtype=np.int64)


def _filter_clauses(filters: Filters) -> list:
    img = ImageRow
    where = []
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
    return where


def facet_counts(conn: Connection, filters: Filters, *, ids: np.ndarray | None = None,
                 year: int | None = None) -> dict[str, list[tuple[Any, int]]]:
    """How many photos each choice of a filter would keep, for the filter bar: per camera
    (make, model), per year (per month of ``year`` when given), per top-level folder of each
    indexed folder, per file type, per orientation. Each facet counts with every other filter applied but not its
    own, so the bar shows the alternatives to what is chosen. ``ids``: only these photos (the
    matches of a query with a cutoff)."""
    img = ImageRow
    restrict = []
    if ids is not None:
        restrict.append(img.id.in_(select(literal_column("value")).select_from(
            func.json_each(literal(json.dumps([int(i) for i in ids]))))))

    def count(group, dropped: dict) -> list[tuple[Any, int]]:
        where = _filter_clauses(replace(filters, **dropped)) + restrict
        rows = conn.execute(select(*group, func.count()).where(*where).group_by(*group).order_by(func.count().desc()))
        return [(tuple(r[:-1]) if len(group) > 1 else r[0], r[-1]) for r in rows]

    when = func.strftime("%Y", img.photo_date) if year is None else func.strftime("%m", img.photo_date)
    dates = replace(filters, after=None, before=None)
    shape = case((img.width > img.height, "landscape"), (img.height > img.width, "portrait"), else_="square")
    out = {
        "camera": count((img.camera_make, img.camera_model), dict(camera=None)),
        "type": count((img.file_type,), dict(types=())),
        "orientation": count((shape,), dict(orientation=None)),
    }
    if year is None:
        out["year"] = count((when,), dict(after=None, before=None))
    else:
        in_year = [img.photo_date >= datetime(year, 1, 1)]
        if year < datetime.max.year:
            in_year.append(img.photo_date < datetime(year + 1, 1, 1))
        rows = conn.execute(select(when, func.count()).where(*_filter_clauses(dates), *restrict, *in_year)
                            .group_by(when))
        out["month"] = [(r[0], r[1]) for r in rows]
    # Top-level folder: the first path component below the photo's indexed folder ("" = the folder itself).
    rest = func.substr(img.path, func.length(Root.path) + 2)
    slash = func.instr(rest, literal(os.fsencode(os.sep), LargeBinary))
    top = case((slash > 0, func.substr(rest, 1, slash - 1)), else_=literal(b"", LargeBinary))
    where = _filter_clauses(replace(filters, folder=None)) + restrict
    rows = conn.execute(select(Root.path, top, func.count()).join(Root, img.root_id == Root.id).where(*where)
                        .group_by(Root.path, top).order_by(func.count().desc()))
    out["folder"] = [(os.path.join(root, os.fsdecode(bytes(sub))).rstrip(os.sep), n)
                     for root, sub, n in rows]
    return out


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- what the writer does (indexer.pipeline); named for what callers do ------------------------
# Each takes the caller's session: the caller decides what one transaction (one checkpoint) holds.


def generation(session) -> int:
    return int(get_meta(session, "generation") or 0)


def set_generation(session, value: int) -> None:
    set_meta(session, "generation", str(value))


def roots(session) -> list[Root]:
    return list(session.scalars(select(Root)))


def add_root(session, path: str) -> Root:
    row = Root(path=path)
    session.add(row)
    session.flush()
    return row


def root_ids(session) -> list[tuple[str, int]]:
    return [(p, i) for p, i in session.execute(select(Root.path, Root.id)).all()]


def start_run(session) -> IndexRun:
    """A new run; any run still marked running died without saying so (its lock is gone)."""
    session.execute(update(IndexRun).where(IndexRun.status == "running").values(status="interrupted"))
    run = IndexRun()
    session.add(run)
    return run


def update_run(session, run_id: int, **values) -> None:
    session.execute(update(IndexRun).where(IndexRun.id == run_id).values(**values))


def known_files(session) -> dict[str, tuple[int, int, int, str]]:
    """``path -> (id, size, mtime_ns, content_hash)`` of every indexed photo."""
    rows = session.execute(select(ImageRow.id, ImageRow.path, ImageRow.size_bytes, ImageRow.mtime_ns,
                                  ImageRow.content_hash))
    return {path: (row_id, size, mtime, chash) for row_id, path, size, mtime, chash in rows}


def skipped_signatures(session) -> dict[str, tuple[int, int]]:
    """``path -> (size, mtime_ns)`` of every skipped file (retried only when it changes)."""
    return {path: (size, mtime) for path, size, mtime in session.execute(
        select(SkippedFile.path, SkippedFile.size_bytes, SkippedFile.mtime_ns))}


def skipped_paths(session) -> list[str]:
    return list(session.scalars(select(SkippedFile.path)))


def record_skip(session, path: str, size: int, mtime_ns: int, reason: str) -> None:
    existing = session.scalars(select(SkippedFile).where(SkippedFile.path == path)).one_or_none()
    if existing is None:
        session.add(SkippedFile(path=path, size_bytes=size, mtime_ns=mtime_ns, reason=reason[:500]))
    else:
        existing.size_bytes, existing.mtime_ns, existing.reason, existing.seen_at = size, mtime_ns, reason[:500], utcnow()


def forget_skips(session, paths: list[str], chunk: int = 900) -> None:
    for start in range(0, len(paths), chunk):  # older SQLite builds allow 999 parameters a statement
        session.execute(delete(SkippedFile).where(SkippedFile.path.in_(paths[start:start + chunk])))


def touch(session, row_id: int, mtime_ns: int, *, path: str | None = None, root_id: int | None = None) -> None:
    """A file whose modification time (and, for a move, path) changed but whose content did not: a
    photo dated by its file (no EXIF date) moves with the new time."""
    file_date, _ = photo_date(None, mtime_ns)
    values = dict(mtime_ns=mtime_ns, photo_date=case((ImageRow.date_source == "file", file_date),
                                                     else_=ImageRow.photo_date))
    if path is not None:
        values.update(path=path, root_id=root_id)
    session.execute(update(ImageRow).where(ImageRow.id == row_id).values(**values))


def remove_photos(session, ids: list[int], chunk: int = 900) -> None:
    for start in range(0, len(ids), chunk):
        session.execute(delete(ImageRow).where(ImageRow.id.in_(ids[start:start + chunk])))


def new_photo(path: str, root_id: int | None, mtime_ns: int, info, size_bytes: int, content_hash: str,
              vector: np.ndarray) -> ImageRow:
    """A row for a freshly embedded photo (``info``: :class:`photoseek.imaging.PhotoInfo`)."""
    when, source = photo_date(info.taken_at, mtime_ns)
    return ImageRow(
        path=path, root_id=root_id, size_bytes=size_bytes, mtime_ns=mtime_ns, content_hash=content_hash,
        width=info.width, height=info.height, taken_at=info.taken_at, camera_make=info.camera_make,
        camera_model=info.camera_model, embedding=vector_to_blob(vector), file_type=info.file_type,
        photo_date=when, date_source=source,
    )


def write_batch(session, rows: list[ImageRow], replaced: list[int]) -> list[int]:
    """A batch of embedded photos in a few statements, not a few per photo: old versions out, new
    rows in (one multi-row INSERT), their "skipped" entries cleared. Returns the new ids."""
    remove_photos(session, replaced)
    session.add_all(rows)
    session.flush()
    forget_skips(session, [r.path for r in rows])
    return [r.id for r in rows]


def photo_count(conn) -> int:
    return conn.execute(select(func.count()).select_from(ImageRow)).scalar_one()


# -- what readers ask (search.engine); named for what callers do ------------------------------

# What a result shows: plain columns, read without ORM objects (a page of results is one query;
# in a busy server the Python work per row is what the threads queue for).
PHOTO_COLUMNS = (ImageRow.id, ImageRow.path, ImageRow.width, ImageRow.height, ImageRow.size_bytes,
                 ImageRow.taken_at, ImageRow.camera_make, ImageRow.camera_model, ImageRow.indexed_at,
                 ImageRow.file_type, ImageRow.photo_date, ImageRow.date_source)


def index_state(conn: Connection) -> tuple[int, int, str | None]:
    """(generation, dimension, model id) of the index as committed now."""
    return int(get_meta(conn, "generation") or 0), int(get_meta(conn, "dim") or 0), get_meta(conn, "model_id")


def embedding(conn: Connection, image_id: int) -> np.ndarray | None:
    blob = conn.execute(select(ImageRow.embedding).where(ImageRow.id == image_id)).scalar_one_or_none()
    return blob_to_vector(blob) if blob is not None else None


def photo_rows(conn: Connection, ids: list[int]) -> list:
    """The rows of PHOTO_COLUMNS for ``ids`` (any order; unknown ids are left out)."""
    return conn.execute(select(*PHOTO_COLUMNS).where(ImageRow.id.in_(ids))).all() if ids else []


def filter_columns(conn: Connection) -> list:
    """(id, photo_date, width, height, file_type, camera_make, camera_model, path) of every photo:
    what :class:`photoseek.search.filters.FilterColumns` keeps in memory."""
    return conn.execute(select(ImageRow.id, ImageRow.photo_date, ImageRow.width, ImageRow.height, ImageRow.file_type,
                               ImageRow.camera_make, ImageRow.camera_model, ImageRow.path)).all()


def photo_path(conn: Connection, image_id: int) -> str | None:
    return conn.execute(select(ImageRow.path).where(ImageRow.id == image_id)).scalar_one_or_none()


def root_paths(conn: Connection) -> list[str]:
    return list(conn.execute(select(Root.path).order_by(Root.path)).scalars())


@dataclass(frozen=True)
class Counts:
    photos: int
    skipped: int
    runs: int
    skipped_files: list[tuple[str, str]]  # (path, reason), by path
    recent_runs: list[IndexRun]  # the last two, newest first
    last_change: IndexRun | None  # the latest run that added, updated, moved or removed anything


def counts(session, skipped_limit: int) -> Counts:
    """What ``photoseek status`` shows, read in one transaction."""
    changed = (IndexRun.added + IndexRun.updated + IndexRun.moved + IndexRun.removed) > 0
    return Counts(
        photos=session.execute(select(func.count()).select_from(ImageRow)).scalar_one(),
        skipped=session.execute(select(func.count()).select_from(SkippedFile)).scalar_one(),
        runs=session.execute(select(func.count()).select_from(IndexRun)).scalar_one(),
        skipped_files=[(r.display_path, r.reason) for r in session.scalars(
            select(SkippedFile).order_by(SkippedFile.path).limit(skipped_limit))],
        recent_runs=list(session.scalars(select(IndexRun).order_by(IndexRun.id.desc()).limit(2))),
        last_change=session.scalars(select(IndexRun).where(changed).order_by(IndexRun.id.desc()).limit(1)).one_or_none(),
    )


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def get_meta(conn_or_session, key: str) -> str | None:
    return conn_or_session.execute(select(Meta.value).where(Meta.key == key)).scalar_one_or_none()


def set_meta(session, key: str, value: str) -> None:
    session.merge(Meta(key=key, value=value))
