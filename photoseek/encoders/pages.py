"""Handing clean file-backed pages back to the kernel: memory a process read once and needs no more.

A memory-mapped file's pages count in the process's resident memory from the moment they are read
until the mapping goes, though the kernel could drop them at any time and read them back from the
file. photoseek maps large files it reads once (a checkpoint it exports, an OpenVINO IR whose
weights the runtime copies into its own layout) and keeps the mapping; ``madvise(MADV_DONTNEED)``
on those pages takes them out of the resident set at once.

Invariant: only pages of a mapping of the named file are ever dropped, and only clean ones: a
read-only mapping (:func:`drop_file`), or arrays the caller never writes (:func:`releaser`). Were
they read again, the kernel would read them back from the file; nothing is ever lost.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable

PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4
_libc = None


def releaser(path: str | os.PathLike) -> Callable[[object], None]:
    """A function that drops an array's pages when they lie wholly inside a mapping of ``path``
    (as this process maps it now) and leaves anything else alone (a copy, an array in ordinary
    memory, whose pages would be lost, not re-read). The caller never writes those arrays."""
    from numpy.lib.array_utils import byte_bounds

    ranges = [(start, end) for start, end, _ in mappings(path)]

    def release(array) -> None:
        low, high = byte_bounds(array)
        if high > low and any(start <= low and high <= end for start, end in ranges):
            drop(low, high)

    return release


def drop_file(path: str | os.PathLike) -> None:
    """Drop the pages of every read-only mapping of ``path`` in this process."""
    for start, end, writable in mappings(path):
        if not writable:
            drop(start, end)


def mappings(path: str | os.PathLike) -> list[tuple[int, int, bool]]:
    """(start, end, writable) of each mapping of ``path`` in this process (none without ``/proc``)."""
    path = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") == path:
                    start, end = fields[0].split("-")
                    found.append((int(start, 16), int(end, 16), "w" in fields[1]))
    except OSError:
        pass
    return found


def drop(start: int, end: int) -> None:
    """``madvise(MADV_DONTNEED)`` on the whole pages inside [start, end): only ever for clean
    file-backed pages (see the module)."""
    global _libc
    if os.name != "posix":
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        first = (start + PAGE - 1) // PAGE * PAGE
        last = end // PAGE * PAGE
        if last > first:
            _libc.madvise(first, last - first, MADV_DONTNEED)
    except (OSError, AttributeError):  # no madvise here: the pages go when the file is unmapped
        pass
