"""What ``photoseek status`` and ``GET /api/status`` show of an index, and how it is read.

:func:`read_status` needs no :class:`~photoseek.search.Searcher`: no vectors, no model, so it answers
at once at any size (the kind of vector index comes from the file's header). On a SQLite index whose
schema is current it reads with the standard library alone (:mod:`photoseek.storage.sqlite_light`:
no SQLAlchemy, no FAISS, no NumPy imported); otherwise, and for PostgreSQL, through the catalogue.
A test holds the two readings equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from photoseek.files import display_path
from photoseek.storage.sqlite_light import RUN_COLUMNS
from photoseek.times import as_utc
from photoseek.vector_file import EXACT_SEARCH, IndexFiles, describe_file

if TYPE_CHECKING:
    from photoseek.settings import Settings
    from photoseek.storage import Catalogue


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class LastRun:
    started_at: datetime
    finished_at: datetime | None
    status: str
    added: int
    updated: int
    moved: int
    removed: int
    skipped: int
    seconds: float


@dataclass(frozen=True)
class IndexStatus:
    index_dir: str
    model_id: str | None
    dim: int
    image_count: int
    skipped_count: int
    skipped: list[Skipped]
    roots: list[str]
    last_run: LastRun | None
    previous_run: LastRun | None  # the run before the last one
    last_change: LastRun | None  # the latest run that added, updated, moved or removed anything
    runs: int
    generation: int
    search: str  # exact or approximate (see VectorStore.describe)
    writable: bool  # False: a read-only index (searchable, not updatable here)
    catalogue: str = ""  # where the catalogue lives (SQLite file, PostgreSQL server)


def read_status(index_dir: Path, skipped_limit: int = 100, settings: Settings | None = None) -> IndexStatus:
    """What ``photoseek status`` shows, read without a searcher (see the module's docstring)."""
    from photoseek.settings import Settings
    from photoseek.storage import catalogue_exists, sqlite_path

    settings = settings or Settings()
    files = IndexFiles(Path(index_dir).expanduser().resolve())
    if not settings.database_url and catalogue_exists(files.root):
        from photoseek.storage.sqlite_light import lock_held, status_rows

        rows = status_rows(sqlite_path(files.root, None), skipped_limit)
        if rows is not None:
            search = describe_file(files.vectors, generation=rows.generation, dim=rows.dim) or EXACT_SEARCH
            return _status(files, rows.model_id, rows.dim, rows.generation, rows.photos, rows.skipped,
                           rows.skipped_files, rows.roots, rows.recent_runs, rows.last_change, rows.runs, search,
                           writer_alive=lock_held(files.lock), writable=files.writable(),
                           catalogue=f"SQLite at {sqlite_path(files.root, None)}")
    from photoseek.search.engine import open_index

    catalogue = open_index(files, settings)
    try:
        with catalogue.engine.connect() as conn:
            generation, dim, model_id = catalogue.index_state(conn)
        if catalogue.uses_vector_file:
            search = describe_file(files.vectors, generation=generation, dim=dim) or EXACT_SEARCH
        else:
            search = catalogue.vector_search(dim, settings).describe()
        return status_of(files, catalogue, model_id, search, skipped_limit)
    finally:
        catalogue.close()


def status_of(files: IndexFiles, catalogue: Catalogue, model_id: str | None, search: str,
              skipped_limit: int) -> IndexStatus:
    """The status of an open catalogue (a searcher's, or :func:`read_status`'s for other back ends)."""
    with catalogue.sessions() as session:
        counts = catalogue.counts(session, skipped_limit)
        generation, dim, _ = catalogue.index_state(session)
        roots = [display_path(p) for p in catalogue.root_paths(session)]
    writable = files.writable() if catalogue.can_write() is None else catalogue.can_write()
    def columns(run) -> tuple | None:
        return None if run is None else tuple(getattr(run, name) for name in RUN_COLUMNS)

    return _status(files, model_id, dim, generation, counts.photos, counts.skipped, counts.skipped_files, roots,
                   [columns(r) for r in counts.recent_runs], columns(counts.last_change), counts.runs, search,
                   writer_alive=catalogue.writer_alive(), writable=writable, catalogue=catalogue.describe())


def _status(files: IndexFiles, model_id, dim, generation, photos, skipped, skipped_files, roots, recent_runs,
            last_change, runs, search, *, writer_alive: bool, writable: bool, catalogue: str) -> IndexStatus:
    """From rows of either reading (runs: tuples of RUN_COLUMNS)."""
    run, previous = (list(recent_runs) + [None, None])[:2]

    def last(row: tuple | None) -> LastRun | None:
        if row is None:
            return None
        started, finished, status, *counts = row
        if status == "running" and not writer_alive:
            status = "interrupted"  # its process is gone (the lock dies with it); the next run marks it so too
        return LastRun(as_utc(started), as_utc(finished), status, *counts)

    return IndexStatus(str(files.root), model_id, dim, photos, skipped, [Skipped(p, r) for p, r in skipped_files],
                       roots, last(run), last(previous), last(last_change), runs, generation, search, writable, catalogue)
