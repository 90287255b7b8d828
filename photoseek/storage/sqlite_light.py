"""What ``photoseek status`` reads of a SQLite catalogue, with the standard library's sqlite3 alone.

Importing SQLAlchemy is most of a ``photoseek status`` otherwise (a third of a second). These few
read-only queries answer it when the catalogue's schema is the current one, in one transaction
(one consistent state); any other schema (older: to upgrade; newer: to refuse) returns None, and
the full catalogue (:mod:`photoseek.storage.sqlite`) opens it and knows what to do. A test holds the
answers equal to the catalogue's. The read-only opening and the writer's lock live here too, for both.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
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
        con = sqlite3.connect(f"file:{path}?{readonly_mode(path)}", uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        con.execute("BEGIN")  # one snapshot for every read below
        if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'").fetchone():
            return None
        if con.execute("SELECT version_num FROM alembic_version").fetchone() != (HEAD,):
            return None
        meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('generation', 'dim', 'model_id')"))

        def count(table: str) -> int:
            return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - our table names

        def runs(where: str, limit: int) -> list[tuple]:
            rows = con.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
                               (limit,))
            return [(_time(r[0]), _time(r[1]), *r[2:]) for r in rows]

        changed = runs("WHERE added + updated + moved + removed > 0", 1)
        return StatusRows(
            model_id=meta.get("model_id"), dim=int(meta.get("dim") or 0), generation=int(meta.get("generation") or 0),
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
