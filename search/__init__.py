"""Search: answers text and image queries over an index (read-only)."""

from .engine import Hit, IndexNotFound, IndexReplaced, IndexStatus, Photo, Searcher, Skipped

__all__ = ["Hit", "IndexNotFound", "IndexReplaced", "IndexStatus", "Photo", "Searcher", "Skipped"]
