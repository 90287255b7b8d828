"""Search: answers text and image queries over an index (read-only).

The names below load :mod:`.engine` (and with it torch and FAISS) on first use, so that
:mod:`.query` (parsing, the request model) can be imported alone, e.g. by the command line
checking its input before anything heavy is loaded.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__all__ = ["Hit", "IndexNotFound", "IndexReplaced", "IndexStatus", "Page", "Photo", "Searcher", "Skipped"]

if TYPE_CHECKING:
    from .engine import Hit, IndexNotFound, IndexReplaced, IndexStatus, Page, Photo, Searcher, Skipped


def __getattr__(name: str):
    if name in __all__:
        return getattr(import_module(".engine", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
