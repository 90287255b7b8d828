"""The indexer: the only part of photoseek that writes an index."""

from .pipeline import Indexer, IndexingError, IndexLocked, ModelMismatch, RunSummary, no_images_message

__all__ = ["Indexer", "IndexingError", "IndexLocked", "ModelMismatch", "RunSummary", "no_images_message"]
