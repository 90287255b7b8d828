"""glibc's allocator, tuned for photoseek's long-running processes (a no-op elsewhere).

Two cases, measured in bench/index_bound.py (figures in the README):

* decode workers keep their buffers (``mmap_threshold``): a large JPEG's coefficient buffers are
  otherwise handed back to the kernel after each photo and faulted in again, zero-filled, for the next;
* the indexer's main process caps its arenas (``arena_max``): glibc gives each thread that
  allocates its own arena, and each keeps the activations it once held, so the model threads'
  freed batches pile up in several heaps instead of being reused from one.
"""

from __future__ import annotations

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def tune(*, mmap_threshold: int | None = None, trim_threshold: int | None = None, arena_max: int | None = None) -> bool:
    """Set what is given; False when this is not glibc (nothing set). Call it early: an arena
    limit applies to the arenas created after it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = True
    for option, value in ((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold),
                          (_M_ARENA_MAX, arena_max)):
        if value is not None:
            ok = bool(mallopt(option, int(value))) and ok
    return ok
