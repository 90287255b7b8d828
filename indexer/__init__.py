"""The indexer: the only part of photoseek that writes an index."""

from .pipeline import Indexer, IndexingError, IndexLocked, ModelMismatch, RunSummary

__all__ = ["Indexer", "IndexingError", "IndexLocked", "ModelMismatch", "RunSummary"]
