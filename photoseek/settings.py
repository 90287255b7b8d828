"""Settings from the environment (``PHOTOSEEK_*``) with sensible defaults.

A pydantic model gives typed values and validation; :func:`environment` reads ``PHOTOSEEK_*``
variables (any case) and a ``.env`` file in the working folder, the variables winning, and values
given in code win over both (pydantic-settings' rules, without its import: a tenth of a second
of every terminal search). No other module reads ``os.environ`` for a setting.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "PHOTOSEEK_"


# Up to this many photos every search compares the query with every photo: exact, and about
# 9 ms a query at 200,000 photos (2 ms at 50,000) on one core. Beyond it an inverted-file
# index (IVF) compares it with the photos of the nearest quarter of its clusters only: about
# 4x faster, but a text query then finds ~91% of its exact top results (bench/run.py measures
# both), so it is kept for collections where a full scan would be slow.
EXACT_SEARCH_UP_TO = 200_000

# Above this many photos the approximate index keeps only product-quantised codes in memory
# (IVF-PQ, 64 bytes a 512-d photo instead of 1 KB of float16) and re-ranks its best candidates
# on float16 vectors read from a memory-mapped file (photoseek.store). At 1,000,000 photos the
# float16 IVF index already holds ~1 GB in RAM; below that it fits a search server comfortably
# and costs no quantisation and no reads from disk, so it stays the choice there (bench/million.py).
PQ_ABOVE = 1_000_000


# A PostgreSQL catalogue compares a query with every photo up to this many (exact), then builds an HNSW
# index: an exact scan in SQL costs far more per photo than FAISS's in memory (bench/postgres.py).
HNSW_ABOVE = 20_000


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow);
    the defaults for worker and thread counts are derived from it."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_index_dir() -> Path:
    return Path(platformdirs.user_data_dir("photoseek", appauthor=False)) / "index"


def environment(fields, env_file: str | os.PathLike | None = ".env") -> dict[str, str]:
    """The ``PHOTOSEEK_*`` values for ``fields`` (names) from ``env_file`` (when it exists), then
    from the environment, which wins. Names match in any case; unknown names are ignored."""
    found: dict[str, str] = {}

    def take(items) -> None:
        for key, value in items:
            name = key.lower()
            if name.startswith(ENV_PREFIX.lower()) and name[len(ENV_PREFIX):] in fields and value is not None:
                found[name[len(ENV_PREFIX):]] = value

    if env_file is not None and os.path.isfile(env_file):
        from dotenv import dotenv_values  # python-dotenv: the same parser pydantic-settings uses

        take(dotenv_values(env_file).items())
    take(os.environ.items())
    return found


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_default=True)

    def __init__(self, _env_file: str | os.PathLike | None = ".env", **values) -> None:
        super().__init__(**{**environment(type(self).model_fields, _env_file), **values})

    index_dir: Path = Field(default_factory=default_index_dir, description="Where the index lives.")
    database_url: str | None = Field(
        default=None,
        description="The catalogue, when not SQLite in the index folder: postgresql+psycopg://user@host/db "
        "(PostgreSQL with pgvector, shared by several machines).")
    path_map: str | None = Field(
        default=None,
        description="Where indexed folders are mounted on this machine when it differs from where they were "
        "indexed: 'INDEXED=HERE', several separated by ';' (e.g. '/mnt/archive=/Volumes/archive').")
    model: str | None = Field(
        default=None,
        description="Encoder for a new index: 'MODEL:PRETRAINED' (open_clip), 'MODEL:/path/to/checkpoint.pt', "
        "or 'offline' / 'offline:lite0' / 'offline:lite2' / 'offline:multilingual' (bundled). Default: CLIP if "
        "its weights can be had.",
    )
    batch_size: int = Field(default=32, ge=1, le=1024)
    decode_workers: int | None = Field(default=None, ge=0, description="Decode processes; default from CPU count.")
    inference_workers: int | None = Field(
        default=None, ge=1, description="Batches the indexer embeds at once; default: one per core, at most 4.")
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch threads per inference worker; default: cores / workers.")
    precision: str = Field(default="auto", pattern="^(auto|bf16|fp32)$")
    openvino: bool = Field(
        default=True, description="Index with a CLIP model's image tower in OpenVINO (converted once per model) "
        "instead of torch: no torch in the indexing process. PHOTOSEEK_OPENVINO=0: torch.")
    max_image_pixels: int = Field(default=120_000_000, ge=1, description="Larger images are refused as bombs.")
    exact_search_up_to: int = Field(
        default=EXACT_SEARCH_UP_TO, ge=0,
        description="Up to this many photos searches are exact; above, an approximate (IVF) index answers.")
    pq_above: int = Field(
        default=PQ_ABOVE, ge=0,
        description="Above this many photos the approximate index holds product-quantised codes (IVF-PQ) and "
        "re-ranks its best candidates on float16 vectors memory-mapped from vectors.f16.")
    hnsw_above: int = Field(
        default=HNSW_ABOVE, ge=0,
        description="PostgreSQL catalogues: up to this many photos searches are exact; above, an HNSW index "
        "(pgvector) answers.")
    ocr: bool = Field(
        default=False, description="Also read the text in photos (signs, receipts, screenshots) when indexing: "
        "photoseek index --ocr (photoseek.ocr).")
    ocr_seconds: float = Field(
        default=10.0, gt=0, le=600, description="Most seconds OCR may spend on one photo; a photo that needs more "
        "is indexed without its text, and the run says so.")
    ocr_at_once: int = Field(
        default=1, ge=1, description="Photos whose text is read at the same time, across the decode workers: each "
        "takes about 250 MB more while it is read.")
    tag_vocabulary: str | None = Field(
        default=None, description="Tag vocabulary: a file of your own tags, added to the shipped ones (see "
        "photoseek.tags.parse_user_vocabulary), or 'default'. Unset: the one the index was last tagged with.")
    tags: bool = Field(default=True, description="Tag new photos at the end of 'photoseek index' (photoseek.tags); "
                       "off: 'photoseek tags --update' tags them later.")
    tag_words: bool = Field(default=True, description="Words in plain queries that name tags ('an animal') bring "
                            "the photos carrying those tags into the ranking.")
    checkpoint_every: int = Field(default=256, ge=1, description="Commit progress every N embedded images.")
    ray_address: str | None = Field(
        default=None, description="Decode and embed on Ray: 'local' (start one here), 'auto' (the cluster this "
        "machine belongs to) or a cluster's address. Default: no Ray (indexer.ray_runner).")

    # Web service
    host: str = "127.0.0.1"
    port: int = 8000
    worker_threads: int | None = Field(
        default=None, ge=1, description="Server threads for blocking work; default four per core, 8 to 40.")
    token: str | None = Field(default=None, description="Access token; required when listening beyond loopback.")
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    max_query_chars: int = Field(default=500, ge=1)

    @property
    def resolved_index_dir(self) -> Path:
        return self.index_dir.expanduser().resolve()
