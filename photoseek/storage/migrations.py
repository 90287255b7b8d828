"""Schema versions and upgrades, through Alembic, for every back end.

Revisions live in ``alembic/versions`` (append, never edit). A new catalogue is created from
the models and stamped at the head revision; an existing one is upgraded in one transaction
(both SQLite and PostgreSQL run DDL transactionally), so a crash mid-upgrade leaves the old
schema, never half of the new one. SQLite indexes written before Alembic carry their version in
``PRAGMA user_version`` (1 or 2): they are stamped with the matching revision, then upgraded.

Alembic itself is imported only when something must change: opening a current catalogue
(every search, every ``status``) reads one row and compares it with :data:`HEAD`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from photoseek.errors import PhotoseekError

# Every revision, oldest first; the last is the head. Keep in step with alembic/versions.
REVISIONS = ("0001", "0002", "0003", "0004", "0005")
HEAD = REVISIONS[-1]
# SQLite's user_version before Alembic -> the revision it equals. New SQLite files get
# ALEMBIC_ERA, so that a photoseek from before Alembic refuses them as "newer" instead of
# writing into a schema it does not know.
LEGACY_SQLITE = {1: "0001", 2: "0002"}
ALEMBIC_ERA = 3

CURRENT, OLDER, TOO_NEW, EMPTY = "current", "older", "too new", "empty"


def too_new() -> PhotoseekError:
    return PhotoseekError("this index was written by a newer photoseek (its schema is not one this one knows); "
                          "upgrade photoseek", kind="schema_too_new", status=503)


def _revision(conn: Connection) -> str | None:
    """The catalogue's revision: Alembic's, else one read from a pre-Alembic SQLite file."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    if conn.dialect.name == "sqlite":
        version = int(conn.execute(text("PRAGMA user_version")).scalar_one())
        if version > max(LEGACY_SQLITE):
            return "?"
        if version in LEGACY_SQLITE:
            return LEGACY_SQLITE[version]
    return None if not tables else "0001"


def state(conn: Connection) -> str:
    revision = _revision(conn)
    if revision is None:
        return EMPTY
    if revision == HEAD:
        return CURRENT
    return OLDER if revision in REVISIONS else TOO_NEW


def upgrade(engine: Engine) -> None:
    """Create or upgrade the catalogue behind ``engine`` to :data:`HEAD`."""
    with engine.connect() as conn:
        current = state(conn)
    if current == CURRENT:
        return
    if current == TOO_NEW:
        raise too_new()
    from alembic import command

    from photoseek.storage.schema import Base

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # servers on several machines may start at once
            conn.execute(text("SELECT pg_advisory_xact_lock(1347636018)"))
        else:
            # pysqlite opens a transaction only before INSERT/UPDATE/DELETE: without this, each CREATE
            # would commit on its own, and a server opening the file mid-creation would find tables
            # without a version and "upgrade" them too. IMMEDIATE also takes the write lock at once.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        current = state(conn)  # again, inside the transaction: another process may have done it
        if current == TOO_NEW:
            raise too_new()
        config = _config(conn)
        if current == EMPTY:
            if conn.dialect.name == "postgresql":
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            Base.metadata.create_all(conn)
            create_text_search(conn)
            command.stamp(config, HEAD)
        elif current == OLDER:
            if "alembic_version" not in inspect(conn).get_table_names():
                command.stamp(config, _revision(conn))
            command.upgrade(config, HEAD)
        if conn.dialect.name == "sqlite":
            conn.execute(text(f"PRAGMA user_version = {ALEMBIC_ERA}"))


def create_text_search(conn: Connection) -> None:
    """The back end's full-text index over photo_text (its own SQL lives in its own module)."""
    if conn.dialect.name == "postgresql":
        from photoseek.storage.postgres import create_text_search as create
    else:
        from photoseek.storage.sqlite import create_text_search as create
    create(conn)


def _config(conn: Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("alembic")))
    config.attributes["connection"] = conn
    return config
