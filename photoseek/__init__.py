"""photoseek: self-hosted semantic image search.

The repository keeps each role in its own room, all installed under this namespace:
``photoseek.indexer`` writes the index, ``photoseek.search`` answers queries and
``photoseek.web`` serves HTTP. The pieces both sides share (settings, image decoding,
encoders, the storage schema and the vector store) live in this package itself.
"""

__version__ = "0.1.0"
