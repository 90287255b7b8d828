"""The SQLite side of an index: schema, version and step migrations.

SQLite is the source of truth. It holds every image's metadata *and* its embedding,
so the FAISS file next to it is a derived, rebuildable cache: whatever a crash
leaves behind, the database is consistent (one transaction per checkpoint) and the
vector index can always be made to match it again.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

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
    event,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from photoseek.errors import PhotoseekError

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


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


# Step migrations: MIGRATIONS[n] takes a database from version n to n + 1. Append, never edit.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}


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


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def get_meta(conn_or_session, key: str) -> str | None:
    return conn_or_session.execute(select(Meta.value).where(Meta.key == key)).scalar_one_or_none()


def set_meta(session, key: str, value: str) -> None:
    session.merge(Meta(key=key, value=value))
