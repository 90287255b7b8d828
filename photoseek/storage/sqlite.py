"""The embedded back end: one SQLite file in the index folder, searched through a FAISS vector file.

Layout of an index folder: ``photoseek.db`` (this catalogue), ``vectors.faiss`` (see
:mod:`photoseek.store`), ``index.lock`` (the writer's lock), ``thumbnails/``.

WAL mode: readers (a server) never block the writer, and see whole transactions only.
Readers open the file read-only, so an index on a read-only mount or in another user's folder
can be searched.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import LargeBinary, column, create_engine, event, func, literal, literal_column, select, table, text
from sqlalchemy.exc import OperationalError

from photoseek.errors import PhotoseekError
from photoseek.keywords import FIELD_WEIGHTS, FIELDS
from photoseek.storage import migrations
from photoseek.storage.catalogue import INDEX_UID, Catalogue, IndexLocked, KeywordHit
from photoseek.storage.sqlite_light import LOCK_NAME, lock_held, readonly_mode  # noqa: F401 (lock_held: its old home)
from photoseek.storage.schema import ImageRow

# Full-text search over photo_text (schema.PhotoText): an FTS5 index whose content is that table,
# kept in step by triggers, so every write of a photo's words (or its deletion, also by cascade
# from images) updates the index in the same transaction.
_COLUMNS = ", ".join(FIELDS)
_NEW = ", ".join(f"new.{f}" for f in FIELDS)
_OLD = ", ".join(f"old.{f}" for f in FIELDS)
TEXT_SEARCH_DDL = (
    f"CREATE VIRTUAL TABLE photo_text_fts USING fts5({_COLUMNS}, content='photo_text', content_rowid='image_id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    f"CREATE TRIGGER photo_text_ai AFTER INSERT ON photo_text BEGIN "
    f"INSERT INTO photo_text_fts(rowid, {_COLUMNS}) VALUES (new.image_id, {_NEW}); END",
    f"CREATE TRIGGER photo_text_ad AFTER DELETE ON photo_text BEGIN "
    f"INSERT INTO photo_text_fts(photo_text_fts, rowid, {_COLUMNS}) VALUES ('delete', old.image_id, {_OLD}); END",
    f"CREATE TRIGGER photo_text_au AFTER UPDATE ON photo_text BEGIN "
    f"INSERT INTO photo_text_fts(photo_text_fts, rowid, {_COLUMNS}) VALUES ('delete', old.image_id, {_OLD}); "
    f"INSERT INTO photo_text_fts(rowid, {_COLUMNS}) VALUES (new.image_id, {_NEW}); END",
)


def create_text_search(conn) -> None:
    for statement in TEXT_SEARCH_DDL:
        conn.exec_driver_sql(statement)


class SqliteCatalogue(Catalogue):
    backend = "sqlite"
    uses_vector_file = True
    identity_per_connection = True

    def __init__(self, path: Path, *, readonly: bool = False, connections: int = 5):
        self.path = Path(path)
        self.lock_path = self.path.parent / LOCK_NAME
        if readonly:
            url = f"sqlite:///file:{self.path}?{readonly_mode(self.path)}&uri=true"
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{self.path}"
        # ``connections``: kept open for threads that query at once (a server's request threads). Beyond
        # that a connection is opened per query and closed after, and a fresh SQLite connection re-reads
        # the schema and starts with a cold page cache.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=connections, max_overflow=64)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            if not readonly:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        super().__init__(engine, readonly=readonly)
        if readonly:
            self._check_readable_schema()
        else:
            migrations.upgrade(engine)
            self._ensure_identity()

    def describe(self) -> str:
        return f"SQLite at {self.path}"

    # -- schema and identity ---------------------------------------------------------------

    def _check_readable_schema(self) -> None:
        """A reader takes the schema as it finds it: newer is refused; older is upgraded in place
        when the file can be written (as any open for writing would), else refused with what to do."""
        with self.engine.connect() as conn:
            state = migrations.state(conn)
        if state == migrations.CURRENT:
            return
        if state == migrations.TOO_NEW:
            raise migrations.too_new()
        try:
            SqliteCatalogue(self.path).close()
        except OperationalError:
            raise PhotoseekError(
                f"the index at {self.path.parent} was written by an older photoseek and cannot be upgraded here "
                "because it is read-only; run 'photoseek index' once where it can be written",
                kind="schema_too_old", status=503) from None

    def _ensure_identity(self) -> None:
        """Give the catalogue its id if it has none yet (new, or written before ids existed).
        Read first: every open comes through here, and a write would wait for a running
        indexer's transaction."""
        with self.engine.connect() as conn:
            if self.identity(conn) is not None:
                return
        try:
            with self.engine.begin() as conn:  # OR IGNORE: another process may have given it one meanwhile
                conn.execute(text("INSERT OR IGNORE INTO meta (key, value) VALUES (:key, :value)"),
                             {"key": INDEX_UID, "value": uuid.uuid4().hex})
        except OperationalError:  # a read-only database: readers then compare "no id" with "no id"
            pass

    def read_identity(self, dbapi_conn: sqlite3.Connection) -> str | None:
        try:
            row = dbapi_conn.execute("SELECT value FROM meta WHERE key = ?", (INDEX_UID,)).fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    def wipe(self) -> None:
        """``--rebuild``: the files go; the next open creates a new catalogue with a new id."""
        self.close()
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            path.unlink(missing_ok=True)

    @contextmanager
    def snapshot(self):
        with self.engine.connect() as conn:
            # pysqlite begins transactions only before writes: a read transaction is begun by hand
            # (the rollback ends it).
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.rollback()

    # -- the writer's lock -----------------------------------------------------------------

    @contextmanager
    def writer_lock(self):
        lock = FileLock(str(self.lock_path))
        try:
            lock.acquire(timeout=2)  # readers probe this lock for an instant
        except Timeout:
            raise IndexLocked(f"another 'photoseek index' is already writing {self.path.parent}; "
                              "wait for it to finish") from None
        try:
            yield
        finally:
            lock.release()

    def writer_alive(self) -> bool:
        return lock_held(self.lock_path)

    # -- dialect -----------------------------------------------------------------------------

    def _ids_clause(self, column, ids):
        # One JSON array, not one parameter per id (SQLite allows 999 or 32,766, depending on its build).
        values = select(literal_column("value")).select_from(func.json_each(literal(json.dumps([int(i) for i in ids]))))
        return column.in_(values)

    def keyword_search(self, conn, words, filters, limit):
        if not words:
            return []
        fts = table("photo_text_fts", column("rowid"))
        rowid, name = fts.c.rowid, literal_column("photo_text_fts")
        # Each word quoted: FTS5 then reads it as a term, never as query syntax.
        match = " OR ".join(f'"{w}"' for w in words)
        # Which fields matched: highlight() marks matched terms in a field; a mark means a match there.
        matched = [func.instr(func.highlight(name, i, "\x01", ""), "\x01") > 0 for i in range(len(FIELDS))]
        rows = conn.execute(
            select(rowid, *matched).select_from(fts.join(ImageRow, ImageRow.id == rowid))
            .where(text("photo_text_fts MATCH :match").bindparams(match=match), *self.filter_clauses(filters))
            .order_by(func.bm25(name, *(FIELD_WEIGHTS[f] for f in FIELDS)), rowid).limit(limit)).all()
        return [KeywordHit(int(r[0]), tuple(f for f, hit in zip(FIELDS, r[1:]) if hit)) for r in rows]

    def word_counts(self, conn, words, cap):
        count = text("SELECT count(*) FROM (SELECT rowid FROM photo_text_fts WHERE photo_text_fts MATCH :w LIMIT :cap)")
        return {w: conn.execute(count, {"w": f'"{w}"', "cap": int(cap)}).scalar_one() for w in words}

    def _year(self, column):
        return func.strftime("%Y", column)

    def _month(self, column):
        return func.strftime("%m", column)

    def _find_bytes(self, haystack, needle: bytes):
        return func.instr(haystack, literal(needle, LargeBinary))
