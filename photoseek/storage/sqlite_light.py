"""What ``photoseek status`` and a terminal search read of a SQLite catalogue, with sqlite3 alone.

Importing SQLAlchemy is most of a ``photoseek status`` otherwise (a third of a second), and a good
part of a terminal search (:class:`LightReader`, at the end). For status, these few
read-only queries answer it when the catalogue's schema is the current one, in one transaction
(one consistent state); any other schema (older: to upgrade; newer: to refuse) returns None, and
the full catalogue (:mod:`photoseek.storage.sqlite`) opens it and knows what to do. A test holds the
answers equal to the catalogue's. The read-only opening and the writer's lock live here too, for both.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from photoseek.files import display_path
from photoseek.storage.revisions import HEAD

LOCK_NAME = "index.lock"
RUN_COLUMNS = ("started_at", "finished_at", "status", "added", "updated", "moved", "removed", "skipped", "seconds")


@dataclass(frozen=True)
class StatusRows:
    model_id: str | None
    dim: int
    generation: int
    photos: int
    skipped: int
    runs: int
    skipped_files: list[tuple[str, str]]  # (display path, reason), by path
    recent_runs: list[tuple]  # the last and the one before, newest first: RUN_COLUMNS, times as stored (UTC)
    last_change: tuple | None  # the newest run that added, updated, moved or removed anything
    roots: list[str]  # display paths, sorted


def status_rows(path: Path, skipped_limit: int) -> StatusRows | None:
    """What ``status`` shows of the catalogue at ``path``; None when its schema is not the current one
    (or it cannot be read here as it is): then ask :class:`photoseek.storage.sqlite.SqliteCatalogue`."""
    try:
        con = _read_only(path)
    except sqlite3.Error:
        return None
    try:
        con.execute("BEGIN")  # one snapshot for every read below
        if not _current(con):
            return None
        generation, dim, model_id = _index_state(con)

        def count(table: str) -> int:
            return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - our table names

        def runs(where: str, limit: int) -> list[tuple]:
            rows = con.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
                               (limit,))
            return [(_time(r[0]), _time(r[1]), *r[2:]) for r in rows]

        changed = runs("WHERE added + updated + moved + removed > 0", 1)
        return StatusRows(
            model_id=model_id, dim=dim, generation=generation,
            photos=count("images"), skipped=count("skipped"), runs=count("runs"),
            skipped_files=[(_path(p), r) for p, r in con.execute(
                "SELECT path, reason FROM skipped ORDER BY path LIMIT ?", (skipped_limit,))],
            recent_runs=runs("", 2), last_change=changed[0] if changed else None,
            roots=[_path(p) for (p,) in con.execute("SELECT path FROM roots ORDER BY path")],
        )
    except sqlite3.Error:
        return None
    finally:
        con.close()


def _current(con: sqlite3.Connection) -> bool:
    """Whether the catalogue's schema is the one this code writes (Alembic's head)."""
    if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'").fetchone():
        return False
    return con.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)


def _index_state(con: sqlite3.Connection) -> tuple[int, int, str | None]:
    """(generation, dimension, model id), as :meth:`photoseek.storage.Catalogue.index_state` gives them."""
    meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('generation', 'dim', 'model_id')"))
    return int(meta.get("generation") or 0), int(meta.get("dim") or 0), meta.get("model_id")


def _path(raw: bytes) -> str:
    return display_path(os.fsdecode(bytes(raw)))  # stored as the file system's bytes (schema.FsPath)


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def lock_held(path: Path) -> bool:
    """Whether a writer holds the lock file at ``path`` now. Works on a read-only index too: a
    shared ``flock`` needs only a read-only descriptor, and conflicts with the writer's exclusive
    one (filelock's, on Unix) however that process ended."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody ever wrote here, or it cannot be read
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _read_only(path: Path, **kwargs) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?{readonly_mode(path)}", uri=True, timeout=30, **kwargs)


def readonly_mode(path: Path) -> str:
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


# -- what a one-shot terminal search reads ------------------------------------------------------


_PHOTO_COLUMNS = ("id", "path", "width", "height", "size_bytes", "taken_at", "camera_make", "camera_model",
                  "indexed_at", "file_type", "photo_date", "date_source")
PhotoRow = namedtuple("PhotoRow", _PHOTO_COLUMNS)


def _answered_here(method):
    """A :class:`LightReader` method answered with sqlite3 for a connection of ours; for another (the
    full catalogue's, passed by code that opened one itself), the full catalogue's method of that name."""

    @functools.wraps(method)
    def answer(self, conn, *args, **kwargs):
        if isinstance(conn, LightConnection):
            return method(self, conn, *args, **kwargs)
        return getattr(self.full, method.__name__)(conn, *args, **kwargs)

    return answer


class LightConnection:
    """A :meth:`LightReader.reading` connection: the sqlite3 one, and the full catalogue's, opened
    only if a call the reader does not answer itself needs it."""

    def __init__(self, reader: LightReader, con: sqlite3.Connection):
        self.reader, self.con, self._full = reader, con, None

    def full(self):
        if self._full is None:
            self._full = self.reader.full.engine.connect()
        return self._full

    def close(self) -> None:
        if self._full is not None:
            self._full.close()


class LightReader:
    """The reads of a terminal search by words (one process, one query or a few) of a SQLite
    catalogue of the current schema, with sqlite3 alone: a terminal search otherwise spends a third
    of a second importing SQLAlchemy. It keeps the :class:`~photoseek.storage.catalogue.Catalogue`
    interface: anything it does not answer itself (filters, facets, a stale vector file, the writer's
    calls) goes to the full catalogue (``full()``: the function that opens it), opened on first need.

    Invariant: each answer equals the full catalogue's for the same state; a test holds them equal.
    """

    backend = "sqlite"
    uses_vector_file = True
    identity_per_connection = False  # one process, one short search: the index is not swapped under it
    readonly = True

    def __init__(self, path: Path, full: Callable[[], object]):
        self.path, self._open_full, self._full = Path(path), full, None
        self.lock_path = self.path.parent / LOCK_NAME
        self._con = _read_only(self.path, check_same_thread=False)
        self._lock = threading.RLock()  # a read may start inside another's (same thread, same connection)

    @classmethod
    def open(cls, path: Path, full: Callable[[], object]) -> LightReader | None:
        """A reader of the catalogue at ``path``; None when its schema is not the current one (then
        open the full catalogue, which knows what to do)."""
        try:
            reader = cls(path, full)
        except sqlite3.Error:
            return None
        try:
            if _current(reader._con):
                return reader
        except sqlite3.Error:
            pass
        reader.close()
        return None

    @property
    def full(self):
        if self._full is None:
            self._full = self._open_full()
        return self._full

    @contextmanager
    def reading(self):
        with self._lock:
            conn = LightConnection(self, self._con)
            try:
                yield conn
            finally:
                conn.close()

    def __getattr__(self, name: str):
        # Everything else: the full catalogue's, given its own connection in place of ours.
        attr = getattr(self.full, name)
        return functools.partial(self._pass_on, name) if callable(attr) else attr

    def _pass_on(self, name: str, *args, **kwargs):
        """The full catalogue's ``name``, with its own connection wherever ``args`` hold one of ours."""
        return getattr(self.full, name)(*(a.full() if isinstance(a, LightConnection) else a for a in args), **kwargs)

    def describe(self) -> str:
        return f"SQLite at {self.path}"

    def writer_alive(self) -> bool:
        return lock_held(self.lock_path)

    def close(self) -> None:
        self._con.close()
        if self._full is not None:
            self._full.close()

    # Each answer below is given here for a connection of ours (see _answered_here).

    @_answered_here
    def get_meta(self, conn, key: str) -> str | None:
        row = conn.con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @_answered_here
    def index_state(self, conn) -> tuple[int, int, str | None]:
        return _index_state(conn.con)

    def identity(self, conn) -> str | None:
        return self.get_meta(conn, "index_uid")

    @_answered_here
    def photo_count(self, conn) -> int:
        return conn.con.execute("SELECT count(*) FROM images").fetchone()[0]

    @_answered_here
    def has_photo(self, conn, image_id: int) -> bool:
        return conn.con.execute("SELECT 1 FROM images WHERE id = ?", (int(image_id),)).fetchone() is not None

    @_answered_here
    def photo_rows(self, conn, ids: list[int]) -> list[PhotoRow]:
        if not ids:
            return []
        rows = conn.con.execute(f"SELECT {', '.join(_PHOTO_COLUMNS)} FROM images "  # noqa: S608 - our column names
                                "WHERE id IN (SELECT value FROM json_each(?))", (json.dumps([int(i) for i in ids]),))
        return [PhotoRow(r[0], os.fsdecode(bytes(r[1])), *r[2:5], _time(r[5]), *r[6:8], _time(r[8]), r[9],
                         _time(r[10]), r[11]) for r in rows]

    @_answered_here
    def word_counts(self, conn, words: list[str], cap: int) -> dict[str, int]:
        count = "SELECT count(*) FROM (SELECT rowid FROM photo_text_fts WHERE photo_text_fts MATCH ? LIMIT ?)"
        return {w: conn.con.execute(count, (f'"{w}"', int(cap))).fetchone()[0] for w in words}

    @_answered_here
    def keyword_search(self, conn, words: list[str], filters, limit: int):
        if filters is not None:
            return self._pass_on("keyword_search", conn, words, filters, limit)
        from photoseek.keywords import FIELD_WEIGHTS, FIELDS, KeywordHit

        if not words:
            return []
        # As photoseek.storage.sqlite's: each word quoted (an FTS5 term, never query syntax), a field
        # matched when highlight() marks a term in it, best bm25 first.
        matched = ", ".join(f"instr(highlight(photo_text_fts, {i}, char(1), ''), char(1)) > 0" for i in range(len(FIELDS)))
        weights = ", ".join(str(FIELD_WEIGHTS[f]) for f in FIELDS)
        rows = conn.con.execute(
            f"SELECT photo_text_fts.rowid, {matched} FROM photo_text_fts JOIN images ON images.id = photo_text_fts.rowid "  # noqa: S608
            f"WHERE photo_text_fts MATCH ? ORDER BY bm25(photo_text_fts, {weights}), photo_text_fts.rowid LIMIT ?",
            (" OR ".join(f'"{w}"' for w in words), int(limit)))
        return [KeywordHit(int(r[0]), tuple(f for f, hit in zip(FIELDS, r[1:]) if hit)) for r in rows]

    @_answered_here
    def filter_columns(self, conn) -> list:
        return [(r[0], _time(r[1]), *r[2:7], os.fsdecode(bytes(r[7]))) for r in conn.con.execute(
            "SELECT id, photo_date, width, height, file_type, camera_make, camera_model, path FROM images")]

    @_answered_here
    def tag_members(self, conn):
        from photoseek.search.filters import tag_members_from

        return tag_members_from(conn.con.execute("SELECT tag, image_id FROM photo_tags ORDER BY tag, image_id"))

    @_answered_here
    def photos_with_tags(self, conn, tags: list[str], filters=None, *, limit: int | None = 1000, offset: int = 0,
                         sort: str = "relevance", min_score: float | None = None) -> list[tuple[int, float]]:
        if filters is not None or sort != "relevance" or min_score is not None:
            return self._pass_on("photos_with_tags", conn, tags, filters, limit=limit, offset=offset, sort=sort,
                                 min_score=min_score)
        if not tags:
            return []
        rows = conn.con.execute(
            "SELECT photo_tags.image_id, max(photo_tags.score) FROM photo_tags JOIN images ON photo_tags.image_id = images.id "
            "WHERE photo_tags.tag IN (SELECT value FROM json_each(?)) GROUP BY photo_tags.image_id, images.photo_date "
            "ORDER BY max(photo_tags.score) DESC, photo_tags.image_id LIMIT ? OFFSET ?",
            (json.dumps(list(tags)), -1 if limit is None else int(limit), int(offset)))
        return [(int(i), float(s)) for i, s in rows]
