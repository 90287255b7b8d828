"""Where an index's catalogue lives: one interface (:class:`Catalogue`), one module per back end.

``open_catalogue(index_dir, database_url)`` picks the back end from the URL's scheme:

- none (the default): SQLite in the index folder, searched through a FAISS vector file beside it
  (:mod:`photoseek.storage.sqlite`);
- ``postgresql+psycopg://user@host/db``: PostgreSQL with pgvector, shared by any number of
  indexers (one at a time) and servers on other machines (:mod:`photoseek.storage.postgres`).

A new back end is one module with a :class:`Catalogue` subclass, plus a line in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from typing import TYPE_CHECKING

from photoseek.errors import BadInput

if TYPE_CHECKING:
    from photoseek.storage.catalogue import Catalogue, IndexLocked

# URL scheme (before any "+driver") -> "module:class".
BACKENDS = {
    "sqlite": "photoseek.storage.sqlite:SqliteCatalogue",
    "postgresql": "photoseek.storage.postgres:PostgresCatalogue",
}

__all__ = ["BACKENDS", "Catalogue", "IndexLocked", "backend_of", "open_catalogue", "sqlite_path"]


def __getattr__(name: str):
    # The interface imports SQLAlchemy (a third of a second): not for what needs only the functions below.
    if name in ("Catalogue", "IndexLocked"):
        from photoseek.storage import catalogue

        return getattr(catalogue, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def backend_of(database_url: str | None) -> str:
    """The back end a URL names ("sqlite" for none); :class:`BadInput` naming the setting if unknown."""
    if not database_url:
        return "sqlite"
    scheme = database_url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "postgres":
        scheme = "postgresql"
    if scheme not in BACKENDS or "://" not in database_url:
        raise BadInput(f"--database / PHOTOSEEK_DATABASE_URL: {database_url.split('://')[0]!r} is not a catalogue "
                       f"photoseek knows; use {' or '.join(s + '://...' for s in BACKENDS)} (or leave it unset for "
                       "SQLite in the index folder)")
    return scheme


def sqlite_path(index_dir: Path, database_url: str | None) -> Path:
    if database_url and database_url.startswith("sqlite"):
        return Path(database_url.split(":///", 1)[1]).expanduser()
    return Path(index_dir) / "photoseek.db"


def open_catalogue(index_dir: Path, database_url: str | None = None, *, readonly: bool = False,
                   connections: int = 5) -> Catalogue:
    """Open (creating and upgrading unless ``readonly``) the catalogue of the index at ``index_dir``.
    ``database_url``: another back end than SQLite in ``index_dir`` (see the module's docstring)."""
    backend = backend_of(database_url)
    module, name = BACKENDS[backend].split(":")
    cls = getattr(importlib.import_module(module), name)
    if backend == "sqlite":
        return cls(sqlite_path(index_dir, database_url), readonly=readonly, connections=connections)
    return cls(database_url, readonly=readonly, connections=connections)


def open_reader(index_dir: Path, database_url: str | None = None, *, connections: int = 5) -> Catalogue:
    """A read-only catalogue for a short-lived process (a terminal search): a SQLite one of the
    current schema read with sqlite3 alone (:class:`photoseek.storage.sqlite_light.LightReader`,
    which opens the full catalogue on first need), anything else as :func:`open_catalogue` opens it."""
    def full() -> Catalogue:
        return open_catalogue(index_dir, database_url, readonly=True, connections=connections)

    if not database_url:
        from photoseek.storage.sqlite_light import LightReader

        reader = LightReader.open(sqlite_path(index_dir, None), full)
        if reader is not None:
            return reader
    return full()


def catalogue_exists(index_dir: Path, database_url: str | None = None) -> bool:
    """Whether there is a catalogue to read (without creating one)."""
    if backend_of(database_url) == "sqlite":
        return sqlite_path(index_dir, database_url).is_file()
    return True  # a server's database: opening it says whether it can be reached
