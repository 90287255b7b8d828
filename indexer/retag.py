"""``photoseek tags --vocabulary FILE`` / ``--update``: (re)tag an index from its stored embeddings.

No folder is scanned and no photo decoded: every photo's embedding is in the catalogue, and a tag
score is a dot product with the tag's text vector (photoseek.tags). Runs under the writer's lock,
like ``photoseek index``; each batch is one transaction (tags, "tagged with" marks, generation), and
the vector file is saved again under the new generation so searchers reload without rebuilding it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from photoseek.encoders import load_encoder
from photoseek.errors import Unavailable
from photoseek.settings import Settings
from photoseek.storage import open_catalogue
from photoseek.store import IndexFiles, load_vectors
from photoseek.tags import tag_pending, vocabulary_for


def retag(index_dir: Path, settings: Settings, *, stop: threading.Event | None = None) -> int:
    """Tag every photo not tagged with the vocabulary ``settings.tag_vocabulary`` names (else the
    index's own). Returns how many photos were tagged."""
    files = IndexFiles(Path(index_dir).expanduser().resolve())
    files.ensure_writable()
    catalogue = open_catalogue(files.root, settings.database_url)
    try:
        with catalogue.writer_lock():
            with catalogue.engine.connect() as conn:
                generation, dim, model_id = catalogue.index_state(conn)
                vocabulary = vocabulary_for(catalogue, conn, settings.tag_vocabulary)
            if not model_id or not dim:
                raise Unavailable(f"the index at {files.root} is empty: run 'photoseek index FOLDER' first")
            vectors = None
            if catalogue.uses_vector_file:
                vectors = load_vectors(files, catalogue, dim=dim, generation=generation, persist=True,
                                       exact_up_to=settings.exact_search_up_to, pq_above=settings.pq_above)
            tagged, new_generation = tag_pending(catalogue, vocabulary,
                                                 lambda: load_encoder(model_id, precision=settings.precision),
                                                 model_id=model_id,
                                                 generation=generation, stop=stop)
            if vectors is not None and new_generation != generation:
                vectors.save(files.vectors, new_generation)
            return tagged
    finally:
        catalogue.close()
