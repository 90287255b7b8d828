"""The shared back end: PostgreSQL with pgvector, for catalogues that outgrow one machine.

Any number of search servers, on any machines, read one catalogue; indexers take turns (a
PostgreSQL advisory lock, held by the run's own connection, so it goes when the run's process
does). Embeddings are ``halfvec`` columns and are searched where they are: a search with
filters is one SQL statement (the filters plus ``ORDER BY`` inner product), exact up to
``hnsw_above`` photos (PHOTOSEEK_HNSW_ABOVE), through an HNSW index above. Servers keep nothing but the
catalogue's generation: each request compares it, so another machine's indexing shows at once,
and every statement reads one committed state (MVCC), never a mix of two.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
from sqlalchemy import (
    BigInteger, Float, LargeBinary, Text, bindparam, cast, create_engine, delete, func, literal, literal_column, select, text,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from photoseek.errors import IndexNotFound, PhotoseekError, Unavailable
from photoseek.storage import migrations
from photoseek.keywords import FIELD_WEIGHTS, FIELDS
from photoseek.storage.catalogue import (
    CREATED_AT, DIM, GENERATION, INDEX_UID, MODEL_ID, Catalogue, IndexLocked, KeywordHit,
)
from photoseek.storage.schema import ImageRow, IndexRun, Meta, PhotoText, Root, SkippedFile

# The advisory lock the writer holds ('PSK1'); one catalogue per database, so one key.
WRITER_LOCK_KEY = 0x50534B31
HNSW_INDEX = "ix_images_embedding_hnsw"
# Candidates HNSW keeps per query: pgvector's most (its default is 40). Text queries sit far from every
# photo, where a graph search needs many candidates: on 100,000 photo-like vectors, recall@24 of a
# text-like query is 0.30 at 100, 0.64 at 400 and 0.86 at 1,000, for 8 -> 20 ms (bench/postgres.py).
HNSW_EF_SEARCH = 1000


# Full-text search over photo_text: a stored tsvector of every field (English stemming, weighted
# as photoseek.keywords.FIELD_WEIGHTS by ts_rank's four classes) with a GIN index. PostgreSQL
# computes it on every write of the row, in the same transaction.
TEXT_CONFIG = "english"
_CLASSES = {3.0: "A", 1.5: "B", 1.0: "C"}
_DOCUMENT = " || ".join(f"setweight(to_tsvector('{TEXT_CONFIG}', coalesce({f}, '')), '{_CLASSES[FIELD_WEIGHTS[f]]}')"
                        for f in FIELDS)
TEXT_SEARCH_DDL = (
    f"ALTER TABLE photo_text ADD COLUMN document tsvector GENERATED ALWAYS AS ({_DOCUMENT}) STORED",
    "CREATE INDEX ix_photo_text_document ON photo_text USING gin (document)",
)
# ts_rank's weights for classes {D, C, B, A}.
_RANK_WEIGHTS = "{0.1, 0.33, 0.5, 1.0}"


def create_text_search(conn) -> None:
    for statement in TEXT_SEARCH_DDL:
        conn.execute(text(statement))


def _normalise(url: str) -> str:
    """``postgresql://`` and ``postgres://`` as psycopg 3 URLs (SQLAlchemy's default driver is psycopg2)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class PostgresCatalogue(Catalogue):
    backend = "postgresql"
    uses_vector_file = False

    def __init__(self, url: str, *, readonly: bool = False, connections: int = 5):
        try:
            engine = create_engine(_normalise(url), pool_size=connections, max_overflow=64, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise PhotoseekError(f"a PostgreSQL catalogue needs {exc.name}: pip install 'photoseek[postgres]'",
                                 kind="missing_dependency", status=503) from None
        self.url = engine.url
        super().__init__(engine, readonly=readonly)
        try:
            with engine.connect() as conn:
                current = migrations.state(conn)
            if current == migrations.TOO_NEW:
                raise migrations.too_new()
            if readonly and current == migrations.EMPTY:
                raise IndexNotFound(f"no photoseek index in {self.describe()} yet; create one with "
                                    "'photoseek index FOLDER' and the same --database")
            if current != migrations.CURRENT:
                migrations.upgrade(engine)  # servers upgrade too: the database is shared, not a file of one user
            if not readonly:
                self._ensure_identity()
        except OperationalError as exc:
            engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise Unavailable(f"cannot reach the catalogue ({self.describe()}): {reason}. Check --database / "
                              "PHOTOSEEK_DATABASE_URL", kind="database_unreachable") from None

    def describe(self) -> str:
        return f"PostgreSQL at {self.url.render_as_string(hide_password=True)}"

    def _ensure_identity(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(Meta).values(key=INDEX_UID, value=uuid.uuid4().hex).on_conflict_do_nothing())

    def wipe(self) -> None:
        """``--rebuild``: every row goes in one transaction, with a new id and a later generation,
        so servers drop what they hold. Ids are not reused: the sequences go on."""
        with self.engine.begin() as conn:
            generation = int(conn.execute(select(Meta.value).where(Meta.key == GENERATION)).scalar_one_or_none() or 0)
            for table in (PhotoText, ImageRow, SkippedFile, IndexRun, Root):
                conn.execute(delete(table))
            conn.execute(delete(Meta).where(Meta.key.in_((MODEL_ID, DIM, CREATED_AT, INDEX_UID, GENERATION))))
            self.drop_search_index(conn)
            conn.execute(insert(Meta).values([dict(key=INDEX_UID, value=uuid.uuid4().hex),
                                               dict(key=GENERATION, value=str(generation + 1))]))

    def can_write(self) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(text("SELECT has_table_privilege('images', 'INSERT')")).scalar_one())

    # -- whole-catalogue copies ------------------------------------------------------------------

    @contextmanager
    def snapshot(self):
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def insert_rows(self, conn, table, rows: list[dict]) -> None:
        """Photos' embeddings go in as pgvector's text, made from a table of every float16's text
        (pgvector's own formatting, a float at a time, was two thirds of a copy's time); the values
        are the same float16 either way."""
        if table is not ImageRow or not rows:
            return super().insert_rows(conn, table, rows)
        columns = ImageRow.__table__.c
        statement = insert(ImageRow.__table__).values(
            embedding=cast(bindparam("embedding_text", type_=Text), columns.embedding.type))
        params = [{**{k: v for k, v in row.items() if k != "embedding"},
                   "embedding_text": _halfvec_text(row.get("embedding"))} for row in rows]
        conn.execute(statement, params)

    def rows_inserted_with_ids(self, conn, tables) -> None:
        """Rows that came with their ids do not advance the id sequences: move each past them
        (never back: ids are not reused), or the next insert would collide."""
        for table in tables:
            sequence = conn.execute(select(func.pg_get_serial_sequence(table.__tablename__, "id"))).scalar_one()
            if sequence is None:
                continue
            highest = conn.execute(select(func.max(table.id))).scalar_one() or 0
            last, called = conn.execute(text(f"SELECT last_value, is_called FROM {sequence}")).one()
            if highest > (last if called else last - 1):
                conn.execute(select(func.setval(sequence, highest)))

    def drop_search_index(self, conn) -> None:
        conn.execute(text(f"DROP INDEX IF EXISTS {HNSW_INDEX}"))

    # -- the writer's lock -----------------------------------------------------------------

    @contextmanager
    def writer_lock(self):
        conn = self.engine.connect()
        try:
            got = conn.execute(select(func.pg_try_advisory_lock(WRITER_LOCK_KEY))).scalar_one()
            conn.commit()
            if not got:
                raise IndexLocked(f"another 'photoseek index' is already writing {self.describe()}; "
                                  "wait for it to finish")
            try:
                yield
            finally:
                conn.execute(select(func.pg_advisory_unlock(WRITER_LOCK_KEY)))
                conn.commit()
        finally:
            conn.close()

    def writer_alive(self) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database() "
                "AND l.classid = 0 AND l.objid = :key AND l.objsubid = 1)"), {"key": WRITER_LOCK_KEY}).scalar_one())

    # -- dialect -----------------------------------------------------------------------------

    def _ids_clause(self, column, ids):
        return column == func.any(bindparam("facet_ids", [int(i) for i in ids], type_=ARRAY(BigInteger)))

    def _year(self, column):
        return func.to_char(column, "YYYY")

    def _month(self, column):
        return func.to_char(column, "MM")

    def _find_bytes(self, haystack, needle: bytes):
        return func.position(literal(needle, LargeBinary).op("IN")(haystack))

    # -- vectors -----------------------------------------------------------------------------

    def keyword_search(self, conn, words, filters, limit):
        if not words:
            return []
        # Words are letters and digits only (photoseek.keywords.query_words): "a | b" is a valid tsquery.
        query = func.to_tsquery(TEXT_CONFIG, " | ".join(words))
        document = literal_column("photo_text.document")
        matched = [func.to_tsvector(TEXT_CONFIG, func.coalesce(getattr(PhotoText, f), "")).op("@@")(query)
                   for f in FIELDS]
        rank = func.ts_rank(literal_column(f"'{_RANK_WEIGHTS}'::float4[]"), document, query)
        rows = conn.execute(
            select(PhotoText.image_id, *matched).join(ImageRow, ImageRow.id == PhotoText.image_id)
            .where(document.op("@@")(query), *self.filter_clauses(filters))
            .order_by(rank.desc(), PhotoText.image_id).limit(limit)).all()
        return [KeywordHit(int(r[0]), tuple(f for f, hit in zip(FIELDS, r[1:]) if hit)) for r in rows]

    def word_counts(self, conn, words, cap):
        count = text(f"SELECT count(*) FROM (SELECT 1 FROM photo_text WHERE document @@ to_tsquery('{TEXT_CONFIG}', :w) "
                     "LIMIT :cap) AS m")
        return {w: conn.execute(count, {"w": w, "cap": int(cap)}).scalar_one() for w in words}

    def vector_search(self, dim: int, settings):
        return PgVectorSearch(self, dim, settings.hnsw_above)

    def prepare_search(self, dim: int, settings) -> None:
        """After a run: an HNSW index once the collection is larger than exact search suits (built
        once; PostgreSQL keeps it up to date as rows come and go)."""
        with self.engine.connect() as conn:
            count = self.photo_count(conn)
        if count <= settings.hnsw_above or not dim:
            return
        with self.engine.begin() as conn:
            conn.execute(text(f"CREATE INDEX IF NOT EXISTS {HNSW_INDEX} ON images USING hnsw "
                              f"((embedding::halfvec({int(dim)})) halfvec_ip_ops)"))


class PgVectorSearch:
    """Searches the catalogue's own vectors in SQL; the same answers as the vector file's search
    (exact float16 vectors, float32 query) up to ``exact_up_to`` photos, then HNSW."""

    def __init__(self, catalogue: PostgresCatalogue, dim: int, exact_up_to: int):
        self.catalogue, self.dim, self.exact_up_to = catalogue, dim, exact_up_to
        with catalogue.engine.connect() as conn:
            self.count = catalogue.photo_count(conn)
            self.hnsw = conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": HNSW_INDEX}).scalar_one()
        self.approximate = bool(self.hnsw) and self.count > exact_up_to

    def __len__(self) -> int:
        return self.count

    def describe(self) -> str:
        if self.approximate:
            return f"approximate: PostgreSQL HNSW (pgvector), {HNSW_EF_SEARCH} candidates per query"
        return "exact: every photo is compared with the query (PostgreSQL)"

    def _distance(self, vector: np.ndarray, *, approximate: bool):
        """Negative inner product, pgvector's ``<#>``: ascending is best first, which is the order an
        HNSW index can produce (a score of ``-distance`` sorted descending would not use it)."""
        from pgvector.sqlalchemy import HALFVEC, VECTOR

        kind = HALFVEC if approximate else VECTOR  # exact: float16 vectors against a float32 query
        query = bindparam("q", np.asarray(vector, np.float32), type_=kind(self.dim))
        return cast(ImageRow.embedding, kind(self.dim)).op("<#>", return_type=Float)(query)

    def top(self, vector: np.ndarray, k: int, filters) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` (scores, ids) among the photos that pass ``filters``, best first."""
        where = self.catalogue.filter_clauses(filters)
        with self.catalogue.engine.begin() as conn:
            if self.approximate:
                # Filters thin out HNSW's candidates: iterative scans go on until k pass (pgvector 0.8).
                conn.execute(text(f"SET LOCAL hnsw.ef_search = {HNSW_EF_SEARCH}"))
                conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            distance = self._distance(vector, approximate=self.approximate)
            rows = conn.execute(select(ImageRow.id, -distance).where(*where).order_by(distance).limit(int(k))).all()
        # Best first, ties by id (as the vector file's search); relaxed_order may return near-ties swapped.
        rows.sort(key=lambda r: (-r[1], r[0]))
        return _arrays(rows)

    def above(self, vector: np.ndarray, cutoff: float, filters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (score, id, photo date in seconds) at or above ``cutoff`` among ``filters``, best first."""
        distance = self._distance(vector, approximate=False)
        seconds = func.extract("epoch", ImageRow.photo_date)
        with self.catalogue.engine.connect() as conn:
            rows = conn.execute(select(ImageRow.id, -distance, seconds)
                                .where(*self.catalogue.filter_clauses(filters), distance <= -float(cutoff))
                                .order_by(distance, ImageRow.id)).all()
        return self._with_dates(rows)

    @staticmethod
    def _with_dates(rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from photoseek.search.filters import NO_DATE

        scores, ids = _arrays(rows)
        dates = np.fromiter((NO_DATE if r[2] is None else int(r[2]) for r in rows), dtype=np.int64, count=len(rows))
        return scores, ids, dates

    def scores_of(self, vector: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score, id, photo date in seconds) of those of ``ids`` that exist, best first."""
        distance = self._distance(vector, approximate=False)
        seconds = func.extract("epoch", ImageRow.photo_date)
        with self.catalogue.engine.connect() as conn:
            rows = conn.execute(select(ImageRow.id, -distance, seconds)
                                .where(ImageRow.id.in_([int(i) for i in ids])).order_by(distance, ImageRow.id)).all()
        return self._with_dates(rows)

    def score_stats(self, vector: np.ndarray) -> tuple[float, float]:
        """Mean and (population) standard deviation of the query's score over every photo."""
        score = -self._distance(vector, approximate=False)
        with self.catalogue.engine.connect() as conn:
            mean, std = conn.execute(select(func.avg(score), func.stddev_pop(score))).one()
        return float(mean or 0.0), float(std or 0.0)

    def vector(self, image_id: int) -> np.ndarray | None:
        with self.catalogue.engine.connect() as conn:
            return self.catalogue.embedding(conn, image_id)


@lru_cache(maxsize=1)
def _float16_texts() -> list[str]:
    return [repr(float(v)) for v in np.arange(1 << 16, dtype=np.uint16).view(np.float16)]


def _halfvec_text(vector) -> str | None:
    if vector is None:
        return None
    texts = _float16_texts()
    codes = np.asarray(vector, dtype=np.float32).astype(np.float16).view(np.uint16).tolist()
    return "[" + ",".join([texts[c] for c in codes]) + "]"


def _arrays(rows) -> tuple[np.ndarray, np.ndarray]:
    scores = np.fromiter((r[1] for r in rows), dtype=np.float32, count=len(rows))
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return scores, ids
