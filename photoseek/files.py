"""File-system helpers every room shares: atomic replacement and path containment.

Pure standard library: the decode workers may import it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], None] | bytes, *, durable: bool = False) -> None:
    """Replace ``path`` with what ``write`` writes (or the bytes given) so that a reader, or a crash,
    sees the old file or the new one, never half of one: a temp file beside it, then a rename.
    ``durable``: also fsync the file and its folder, so the new file survives a power cut (for
    files the index's consistency rests on; a cache can be made again)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(write, (bytes, bytearray, memoryview)):
                fh.write(write)
            else:
                write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_under(path: str, roots: Iterable[str], *, or_equal: bool = False) -> bool:
    """Whether ``path`` lies inside one of ``roots`` (as text: resolve links first where it matters).
    ``/photos2/x`` is not inside ``/photos``; ``or_equal``: a root itself counts too."""
    for root in roots:
        if (or_equal and path == root) or path.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


PATH_MAP_SETTING = "PHOTOSEEK_PATH_MAP"


def parse_path_map(text: str | None) -> tuple[tuple[str, str], ...]:
    """``'INDEXED=HERE;INDEXED2=HERE2'`` (the ``path_map`` setting) as (indexed, here) pairs, longest
    indexed prefix first. Both sides absolute; a bad entry is a :class:`BadInput` saying the form."""
    from photoseek.errors import BadInput

    pairs = []
    for entry in (text or "").split(";"):
        if not entry.strip():
            continue
        parts = entry.split("=")
        if len(parts) != 2 or not all(os.path.isabs(p.strip()) for p in parts):
            raise BadInput(f"{PATH_MAP_SETTING}: {entry.strip()!r} is not INDEXED=HERE; give absolute "
                           "paths, the folder as it was indexed '=' where it is on this machine, several separated "
                           "by ';' (e.g. '/mnt/archive=/Volumes/archive')")
        pairs.append(tuple(os.path.normpath(p.strip()) for p in parts))
    return tuple(sorted(pairs, key=lambda p: -len(p[0])))


def map_path(path: str, path_map: tuple[tuple[str, str], ...]) -> str:
    """Where the indexed ``path`` is on this machine (see :func:`parse_path_map`): the longest indexed
    prefix that is whole path components (``/mnt/a`` maps ``/mnt/a/x``, not ``/mnt/ab``) is replaced;
    a path no prefix covers is returned as it is."""
    for indexed, here in path_map:
        if path == indexed:
            return here
        prefix = indexed.rstrip(os.sep) + os.sep
        if path.startswith(prefix):
            return os.path.join(here, path[len(prefix):])
    return path


def display_path(path: str) -> str:
    """A path for people: bytes that are not UTF-8 (kept by the catalogue as the file system has them)
    shown as replacement characters."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
