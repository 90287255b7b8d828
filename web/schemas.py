"""Response models of the HTTP API (what ``/docs`` shows and what clients can rely on).

Kept apart from the routes, as Immich keeps its DTOs apart: the engine's dataclasses
(:class:`photoseek.search.Photo`, :class:`~photoseek.search.Hit`, ...) are turned into
these at the edge, with the URLs a client needs to show a result.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field

from photoseek.search import Hit, IndexStatus, Photo


def _with_offset(value):
    """RFC 3339 wants an offset: the index keeps UTC times without one."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_with_offset)]


class PhotoOut(BaseModel):
    """An indexed photo. ``path`` is display text; files are only ever fetched by ``id``."""

    id: int = Field(examples=[7])
    name: str = Field(examples=["coffee.png"])
    path: str = Field(examples=["/home/me/Pictures/coffee.png"])
    width: int
    height: int
    size_bytes: int
    taken_at: Timestamp | None = Field(description="When the photo was taken (EXIF), if known. EXIF records the "
                                       "camera's clock without a time zone: that clock time is given as UTC.")
    camera_make: str | None
    camera_model: str | None
    camera: str | None = Field(description="Make and model in one readable string, if known.")
    indexed_at: Timestamp
    thumbnail_url: str = Field(description="WebP, about 320 px on the long side.")
    preview_url: str = Field(description="WebP, about 1600 px on the long side, for a detail view.")
    file_url: str = Field(description="The original file.")
    similar_url: str = Field(description="API URL of photos like this one.")
    page_url: str = Field(description="The photo's page in the web UI.")


class HitOut(BaseModel):
    rank: int = Field(description="1-based position in the whole result list.", examples=[1])
    score: float = Field(description="Cosine similarity to the query; higher is closer.", examples=[0.31])
    photo: PhotoOut


class SearchResponse(BaseModel):
    kind: Literal["text", "image", "similar"]
    query: str | None = Field(description="The text query (kind 'text'), else null.")
    source: PhotoOut | None = Field(default=None, description="The photo searched by (kind 'similar').")
    offset: int
    limit: int
    next_offset: int | None = Field(description="Offset of the next page, or null when this is the last one.")
    results: list[HitOut]


class SkippedOut(BaseModel):
    path: str
    reason: str


class LastRunOut(BaseModel):
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


class StatusResponse(BaseModel):
    ready: bool = Field(description="True when there is an index with photos to search.")
    message: str | None = Field(default=None, description="What to do when not ready.")
    index_dir: str
    model: str | None = Field(description="The encoder that built the index.")
    dim: int = 0
    image_count: int = 0
    skipped_count: int = 0
    skipped: list[SkippedOut] = []
    roots: list[str] = []
    last_run: LastRunOut | None = None
    previous_run: LastRunOut | None = Field(default=None, description="The run before the last one.")
    last_change: LastRunOut | None = Field(default=None, description="The latest run that added, updated, moved "
                                           "or removed photos (the last run may have found nothing to do).")
    runs: int = Field(default=0, description="How many indexing runs this index has seen.")
    writable: bool = Field(default=True, description="False when the index is read-only here (a read-only mount, "
                           "another user's files): it answers searches but cannot be updated from this machine.")
    generation: int = 0
    search: str | None = Field(default=None, description="How queries are answered: exact, or approximate "
                               "(IVF) above PHOTOSEEK_EXACT_SEARCH_UP_TO photos.")


class ErrorResponse(BaseModel):
    status: int = Field(examples=[404])
    error: str = Field(description="The HTTP reason phrase.", examples=["Not Found"])
    message: str = Field(description="What went wrong, for people.", examples=["no photo has id 12345"])


# -- conversions ---------------------------------------------------------------------------


def camera_label(make: str | None, model: str | None) -> str | None:
    """'Canon' + 'Canon EOS 5D' -> 'Canon EOS 5D'; either may be missing."""
    make, model = (make or "").strip(), (model or "").strip()
    if make and model.lower().startswith(make.split()[0].lower()):
        return model
    return " ".join(x for x in (make, model) if x) or None


def photo_version(photo: Photo) -> str:
    """Changes whenever the file is re-indexed, so image URLs can be cached for good."""
    return f"{int(photo.indexed_at.timestamp()):x}{photo.size_bytes:x}"


def photo_out(photo: Photo, root: str = "") -> PhotoOut:
    api = f"{root}/api/images/{photo.id}"
    version = photo_version(photo)
    return PhotoOut(
        id=photo.id, name=photo.name, path=photo.path, width=photo.width, height=photo.height,
        size_bytes=photo.size_bytes, taken_at=photo.taken_at, camera_make=photo.camera_make,
        camera_model=photo.camera_model, camera=camera_label(photo.camera_make, photo.camera_model),
        indexed_at=photo.indexed_at,
        thumbnail_url=f"{api}/thumbnail?v={version}", preview_url=f"{api}/thumbnail?size=large&v={version}",
        file_url=f"{api}/file", similar_url=f"{api}/similar", page_url=f"{root}/photos/{photo.id}",
    )


def hits_out(hits: list[Hit], offset: int, root: str = "") -> list[HitOut]:
    return [HitOut(rank=offset + i + 1, score=round(h.score, 6), photo=photo_out(h.photo, root)) for i, h in enumerate(hits)]


def search_response(kind: Literal["text", "image", "similar"], hits: list[Hit], *, limit: int, offset: int,
                    query: str | None = None, source: Photo | None = None, root: str = "") -> SearchResponse:
    """One page of results in the API's shape (the command line's ``--json`` prints the same).
    ``hits``: up to ``limit + 1``; the extra one only tells that a next page exists."""
    next_offset = offset + limit if len(hits) > limit else None
    return SearchResponse(kind=kind, query=query, source=photo_out(source, root) if source is not None else None,
                          offset=offset, limit=limit, next_offset=next_offset, results=hits_out(hits[:limit], offset, root))


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
        runs=st.runs, writable=st.writable,
    )
