"""Feedback marks (issue 13): a person says a result of a text query is "right" or "wrong", and the
next ``photoseek tune`` learns from it (a "right" mark is a (query, photo) training pair like a
caption; a "wrong" mark a hard negative).

Invariants:

* One mark per (query, photo), kept in the catalogue (``feedback``, :class:`FeedbackMark`) of either
  back end: marking again replaces the mark, ``none`` clears it, and a photo's marks go with it.
* Queries are stored normalised (:func:`normalise_query`): "a  dog " and "a dog" are one query.
* Every mistake (empty or too long query, unknown mark, unknown photo) is a
  :class:`~photoseek.errors.PhotoseekError` naming the parameter, raised before anything is written;
  a read-only index is refused with :class:`ReadOnlyIndex` (409), changing nothing.
* Each write opens its own writable connection to the catalogue and closes it: a server keeps its
  searches on a read-only connection (issue 9) and writes only when asked to.
* No torch, no model: marking and listing are quick.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from photoseek.errors import BadInput, NotFound, NotWritable, PhotoseekError
from photoseek.files import display_path
from photoseek.times import as_utc

MARKS = ("right", "wrong")
CLEAR = "none"
MAX_QUERY_CHARS = 1000  # the column's width; a setting may allow less (max_query_chars)


class UnknownPhoto(NotFound):
    """A mark for a photo the index does not hold (404; on the command line a mistake: exit 2)."""

    exit_code = 2


class ReadOnlyIndex(PhotoseekError):
    """The index can be searched but not written: marks (and tunes) cannot be kept."""

    kind = "read_only"
    status = 409


@dataclass(frozen=True)
class Mark:
    query: str
    image_id: int
    path: str
    mark: str
    created_at: datetime  # UTC, with its offset

    def as_dict(self) -> dict:
        return {"query": self.query, "image_id": self.image_id, "path": display_path(self.path), "mark": self.mark,
                "created_at": self.created_at.isoformat()}


def normalise_query(query: str | None, *, name: str = "query", max_chars: int = MAX_QUERY_CHARS) -> str:
    """``query`` stripped, runs of white space made one space; :class:`BadInput` naming ``name`` when
    that leaves nothing or too much."""
    text = " ".join((query or "").split())
    if not text:
        raise BadInput(f"{name}: the query is empty; give the words of the search the mark is for",
                       kind="empty_query")
    if len(text) > min(max_chars, MAX_QUERY_CHARS):
        raise BadInput(f"{name}: the query is {len(text)} characters long; at most {min(max_chars, MAX_QUERY_CHARS)} "
                       "are kept", kind="query_too_long")
    return text


def check_mark(mark: str | None, *, name: str = "mark") -> str | None:
    """The mark to store (None: clear it); :class:`BadInput` naming ``name`` for anything else."""
    value = (mark or "").strip().lower()
    if value == CLEAR:
        return None
    if value not in MARKS:
        raise BadInput(f"{name}: {mark!r} is not a mark; use right, wrong or none (to clear it)", kind="bad_mark")
    return value


_writes = threading.Lock()  # one mark at a time per process: replacing is delete + insert


def check_writable(index_dir: Path, database_url: str | None, catalogue=None, *,
                   what: str = "marks cannot be kept") -> None:
    """:class:`ReadOnlyIndex` (409), saying why and ``what`` follows, unless this process may write the
    index: its folder (SQLite's catalogue, and the adapter file, live there) or, given ``catalogue``
    of a database server, that catalogue."""
    from photoseek.storage import backend_of
    from photoseek.store import IndexFiles

    if catalogue is None or backend_of(database_url) == "sqlite":
        try:
            IndexFiles(Path(index_dir).expanduser().resolve()).ensure_writable()
        except NotWritable as exc:
            raise ReadOnlyIndex(f"this index is read-only: {exc.message.split(': it can be searched')[0]}; {what}",
                                ) from None
    if catalogue is not None and catalogue.can_write() is False:
        raise ReadOnlyIndex(f"this index is read-only: this user may not write {catalogue.describe()}; {what}")


def writable(index_dir: Path, database_url: str | None, catalogue=None) -> bool:
    """Whether marks can be kept (see :func:`check_writable`)."""
    try:
        check_writable(index_dir, database_url, catalogue)
    except ReadOnlyIndex:
        return False
    return True


@contextmanager
def writer(index_dir: Path, database_url: str | None) -> Iterator:
    """A writable catalogue for one write, or :class:`ReadOnlyIndex` saying why not (nothing is created:
    an index must exist). Closed afterwards."""
    from photoseek.errors import IndexNotFound
    from photoseek.storage import backend_of, catalogue_exists, open_catalogue

    root = Path(index_dir).expanduser().resolve()
    if not catalogue_exists(root, database_url):
        raise IndexNotFound(f"no index at {root} yet: run 'photoseek index FOLDER' first")
    sqlite = backend_of(database_url) == "sqlite"
    if sqlite:
        check_writable(root, database_url)
    # A database server's catalogue opened "read-only" still takes writes where its role may: the flag only
    # spares it writing its id, which a role without INSERT could not.
    catalogue = open_catalogue(root, database_url, readonly=not sqlite, connections=1)
    try:
        if not sqlite:
            check_writable(root, database_url, catalogue)
        yield catalogue
    finally:
        catalogue.close()


def _mark(row) -> Mark:
    query, image_id, path, mark, created_at = row
    return Mark(query, int(image_id), path, mark, as_utc(created_at))


def set_mark(catalogue, query: str, image_id: int, mark: str | None) -> Mark | None:
    """Store (or with None clear) the mark on (normalised ``query``, photo); :class:`NotFound` for an
    unknown photo. Returns the stored mark."""
    with _writes, catalogue.sessions.begin() as session:
        if not catalogue.has_photo(session, image_id):
            raise UnknownPhoto(f"image_id: no photo has id {image_id}")
        row = catalogue.set_feedback(session, query, image_id, mark)
        if row is None:
            return None
        path = catalogue.photo_path(session, image_id)
        return Mark(row.query, row.image_id, path, row.mark, as_utc(row.created_at))


def marks(catalogue, query: str | None = None) -> list[Mark]:
    """Every mark, or the marks of one normalised ``query``."""
    with catalogue.engine.connect() as conn:
        return [_mark(r) for r in catalogue.feedback_marks(conn, query)]


def clear(catalogue, query: str | None = None) -> int:
    """Remove every mark (or one query's); how many went."""
    with _writes, catalogue.sessions.begin() as session:
        return catalogue.clear_feedback(session, query)


def find_photo(catalogue, path_or_id: str) -> int:
    """A photo given on the command line by its id or its path; :class:`NotFound` naming it."""
    import os

    with catalogue.engine.connect() as conn:
        if path_or_id.strip().isdigit():
            image_id = int(path_or_id)
            if catalogue.has_photo(conn, image_id):
                return image_id
            raise UnknownPhoto(f"no photo has id {image_id} (ids are in the third column of 'photoseek search')")
        path = os.path.realpath(os.path.expanduser(path_or_id))
        found = catalogue.ids_of_paths(conn, [path])
    if path not in found:
        raise UnknownPhoto(f"{path_or_id} is not an indexed photo (give its path as indexed, or its id from "
                       "'photoseek search')")
    return found[path]
