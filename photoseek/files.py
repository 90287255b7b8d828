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
