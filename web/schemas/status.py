"""``GET /api/status`` and ``photoseek status --json``: the index and its runs."""

from __future__ import annotations

from typing import Literal

from photoseek.search import IndexStatus
from photoseek.web.schemas.common import Timestamp, _Out
from pydantic import Field


class SkippedOut(_Out):
    path: str
    reason: str


class LastRunOut(_Out):
    started_at: Timestamp
    finished_at: Timestamp | None
    status: Literal["running", "finished", "interrupted"] = Field(
        examples=["finished"], description="'interrupted': stopped (Ctrl-C, a crash) before it finished; "
        "the photos it saved stay indexed and the next run carries on.")
    added: int
    updated: int
    moved: int
    removed: int
    skipped: int
    seconds: float


class StatusResponse(_Out):
    ready: bool = Field(description="True when there is an index with photos to search.")
    message: str | None = Field(default=None, description="What to do when not ready.")
    index_dir: str
    model: str | None = Field(description="The encoder that built the index.")
    dim: int = 0
    image_count: int = 0
    skipped_count: int = 0
    skipped: list[SkippedOut] = Field(default=[])
    roots: list[str] = Field(default=[])
    last_run: LastRunOut | None = None
    previous_run: LastRunOut | None = Field(default=None, description="The run before the last one.")
    last_change: LastRunOut | None = Field(default=None, description="The latest run that added, updated, moved "
                                           "or removed photos (the last run may have found nothing to do).")
    runs: int = Field(default=0, description="How many indexing runs this index has seen.")
    writable: bool = Field(default=True, description="False when the index is read-only here (a read-only mount, "
                           "another user's files): it answers searches but cannot be updated from this machine.")
    generation: int = 0
    search: str | None = Field(default=None, description="How queries are answered: exact, or approximate "
                               "(IVF, IVF-PQ, or PostgreSQL's HNSW) for large collections.")
    catalogue: str | None = Field(default=None, description="Where the catalogue lives: the SQLite file in the "
                                  "index folder, or the PostgreSQL server (without its password).",
                                  examples=["SQLite at /home/ann/.local/share/photoseek/index/photoseek.db"])


def status_out(st: IndexStatus) -> StatusResponse:
    ready = bool(st.model_id) and st.image_count > 0
    return StatusResponse(
        ready=ready,
        message=None if ready else "the index is empty: run 'photoseek index FOLDER' to add photos",
        index_dir=st.index_dir, model=st.model_id, dim=st.dim, image_count=st.image_count,
        skipped_count=st.skipped_count, skipped=[SkippedOut(path=s.path, reason=s.reason) for s in st.skipped],
        roots=st.roots, generation=st.generation, search=st.search,
        last_run=LastRunOut(**vars(st.last_run)) if st.last_run else None,
        previous_run=LastRunOut(**vars(st.previous_run)) if st.previous_run else None,
        last_change=LastRunOut(**vars(st.last_change)) if st.last_change else None,
        runs=st.runs, writable=st.writable, catalogue=st.catalogue or None,
    )
