"""The JSON API: thin routes over :mod:`.service`, with the response models of :mod:`.schemas`.

Every constraint a route enforces is declared on its parameters, so the OpenAPI schema tells
clients exactly what is accepted; bad input is a 400 that names the parameter.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from photoseek.errors import NotFound
from photoseek.imaging import DecodeError, sniff_format
from photoseek.search import Photo, Searcher
from photoseek.search.duplicates import CSV_COLUMNS, MAX_THRESHOLD, MIN_THRESHOLD, find_duplicates, to_csv
from photoseek.search.query import Filters, SearchRequest, Term, parse_date, parse_query
from photoseek.settings import Settings

from . import security
from .schemas import (
    ErrorResponse, FacetsResponse, PhotoDetailOut, PhotoTagOut, SearchResponse, StatusResponse, TagsResponse,
    facets_out, page_out, photo_detail_out, tags_out,
    DATE_PATTERN, photo_version, search_body_model, status_out,
)
from .schemas import DuplicatesResponse, duplicates_out
from .schemas import AdapterOut, TuneResponse
from .service import NO_INDEX, Service, answer, run
from .service import search_request as build_request
from .uploads import read_upload

DEFAULT_LIMIT = 24
MAX_LIMIT = 200
MAX_OFFSET = 100_000
MIME = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
        "BMP": "image/bmp", "TIFF": "image/tiff", "HEIF": "image/heif", "AVIF": "image/avif"}
ImageId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="A photo's id, as returned by a search.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many results.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="How many results to skip (paging).")]
Threshold = Annotated[float | None, Query(ge=MIN_THRESHOLD, le=MAX_THRESHOLD, description=(
    f"Compare two photos visually from this embedding similarity (cosine, {MIN_THRESHOLD} to {MAX_THRESHOLD}) on; "
    "lower finds more heavily edited copies and takes longer. Default: the index's encoder's "
    "(default_threshold in the answer)."))]


def root_path(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def filter_params(
    after: Annotated[str | None, Query(pattern=DATE_PATTERN, json_schema_extra={"format": "date"}, description=(
        "Only photos taken on or after this day (YYYY-MM-DD); photos without an EXIF date count by their file's "
        "date."))] = None,
    before: Annotated[str | None, Query(pattern=DATE_PATTERN, json_schema_extra={"format": "date"},
                                        description="Only photos taken on or before this day (YYYY-MM-DD).")] = None,
    camera: Annotated[str | None, Query(max_length=100, description="Camera make or model contains this "
                                        "(any case).")] = None,
    folder: Annotated[str | None, Query(max_length=4096, description="Only photos under this folder "
                                        "(an absolute path inside an indexed folder).")] = None,
    type: Annotated[list[str], Query(max_length=16, description="File types (jpeg, png, heif, ...); "
                                     "repeatable.")] = [],  # noqa: B006 (FastAPI copies defaults)
    orientation: Annotated[Literal["landscape", "portrait", "square"] | None, Query()] = None,
    min_pixels: Annotated[int | None, Query(ge=1, le=10**12, description="Width x height at least.")] = None,
    tag: Annotated[list[str], Query(max_length=16, description="Only photos carrying this automatic tag (as "
                                    "tag:NAME in q); repeatable: every one.")] = [],  # noqa: B006
) -> Filters:
    """The filter parameters /api/search and /api/facets share."""
    return Filters(after=parse_date(after, "after"), before=parse_date(before, "before"), camera=camera, folder=folder, types=tuple(t.lower() for t in type),
                   orientation=orientation, min_pixels=min_pixels, tags=tuple(t.strip().lower() for t in tag if t.strip()))


def api_router(settings: Settings, service: Service) -> APIRouter:
    """The ``/api`` routes over ``service``."""

    def no_store(response: Response) -> None:
        response.headers["Cache-Control"] = "no-store"

    errors = {
        400: {"model": ErrorResponse, "description": "Bad request (e.g. an empty or too long query)"},
        404: {"model": ErrorResponse, "description": "No photo with this id"},
        503: {"model": ErrorResponse, "description": "No index yet"},
    }
    api = APIRouter(prefix="/api", dependencies=[Depends(no_store)], responses={400: errors[400], 503: errors[503]})

    @api.get("/search", response_model=SearchResponse, tags=["search"], summary="Search by text, a photo, or both",
             responses={404: errors[404]})
    async def search(
        request: Request,
        filters: Annotated[Filters, Depends(filter_params)],
        # A default, not Annotated: the limit is a setting, and annotations here are resolved as module names.
        q: str | None = Query(None, max_length=settings.max_query_chars, description=(
            "What to look for, in words. Terms can be added and subtracted with a + or - standing alone "
            "('dog - leash + snow') and weighed with a number and a colon ('2:sunset + beach').")),
        similar: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="An indexed photo's id: photos like it "
                                             "(itself left out); q, if given, refines it ('in winter').")] = None,
        min_score: Annotated[float | None, Query(ge=-1, le=1, description="Leave out photos scoring below this "
                                                 "(cosine similarity). Default: none when sorting by relevance; "
                                                 "by date, a cutoff calibrated to the query.")] = None,
        sort: Annotated[Literal["relevance", "newest", "oldest"], Query(
            description="By score, or by date (newest or oldest first) among the good matches.")] = "relevance",
        limit: Limit = DEFAULT_LIMIT, offset: Offset = 0,
        keywords: Annotated[bool, Query(description="Also match photos by the words of their file name, folders, "
                                        "caption, keywords and text read in them (see each result's 'why').")] = True,
    ) -> SearchResponse:
        searcher = service.need(await service.current())
        search_request = build_request(settings, q=q, similar=similar, filters=filters, sort=sort, min_score=min_score,
                                       limit=limit, offset=offset, keywords=keywords)
        page, source = await run(answer, searcher, search_request, settings)
        return page_out(page, source=source, root=root_path(request), model_id=searcher.model_id)

    SearchBody = search_body_model(settings.max_query_chars, settings.max_upload_bytes)

    async def search_post(request: Request, body) -> SearchResponse:
        """Everything GET /api/search takes, plus terms with explicit weights and photos sent as base64, for
        clients that build queries themselves: `{"terms": [{"image": "...", "weight": 1}, {"text": "in winter",
        "weight": 0.5}], "filters": {"after": "2021-01-01"}, "sort": "newest"}`."""
        searcher = service.need(await service.current())
        terms = [Term(weight=t.weight, text=t.text, photo_id=t.photo_id,
                      image=base64.b64decode(t.image) if t.image is not None else None) for t in body.terms]
        if body.q is not None and body.q.strip():
            terms += parse_query(body.q, max_chars=settings.max_query_chars)
        f = body.filters
        filters = Filters(after=parse_date(f.after, "filters.after"), before=parse_date(f.before, "filters.before"),
                          camera=f.camera, folder=f.folder,
                          types=tuple(t.lower() for t in f.type), orientation=f.orientation, min_pixels=f.min_pixels,
                          tags=tuple(t.strip().lower() for t in f.tag if t.strip()))
        search = SearchRequest(terms=tuple(terms), filters=filters, sort=body.sort, min_score=body.min_score,
                               limit=body.limit, offset=body.offset, keywords=body.keywords)
        page, source = await run(answer, searcher, search, settings)
        return page_out(page, source=source, root=root_path(request), model_id=searcher.model_id)

    # The body's model is made here (its limits follow the settings), so it is given as an object: a
    # string annotation would be looked up among the module's names.
    search_post.__annotations__["body"] = SearchBody
    api.post("/search", response_model=SearchResponse, tags=["search"], summary="Search with a JSON request",
             responses={404: errors[404], 415: {"model": ErrorResponse, "description": "An image term is not an image"}}
             )(search_post)

    @api.get("/facets", response_model=FacetsResponse, tags=["search"], summary="Counts for the filter bar",
             responses={404: errors[404]})
    async def facets(
        filters: Annotated[Filters, Depends(filter_params)],
        q: str | None = Query(None, max_length=settings.max_query_chars, description=(
            "With a query, count only the photos that match it: those at or above min_score, or the calibrated "
            "cutoff that sorting by date uses.")),
        similar: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Or like this photo.")] = None,
        min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
        year: Annotated[int | None, Query(ge=1, le=9999, description="Count per month of this year.")] = None,
    ) -> FacetsResponse:
        """How many photos each choice in the filter bar keeps: per camera, year (or month of a chosen year),
        top-level folder and file type. Each facet counts with the other filters applied, not its own."""
        searcher = service.need(await service.current())
        terms = tuple([Term(photo_id=similar)] if similar is not None else []) + tuple(
            parse_query(q, max_chars=settings.max_query_chars) if q and q.strip() else ())
        counts = await run(lambda: searcher.facets(filters, terms=terms, min_score=min_score, year=year))
        return facets_out(counts)

    @api.post(
        "/search/image", response_model=SearchResponse, tags=["search"], summary="Search by an image (reverse image search)",
        responses={413: {"model": ErrorResponse, "description": "Upload too large"},
                   415: {"model": ErrorResponse, "description": "Not an image"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary", "description": "The query image."}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        }}},
    )
    async def search_image(request: Request, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0) -> SearchResponse:
        """Upload a photo (multipart field `file`, or the raw image as the body); get the indexed photos most like
        it. The upload is kept in memory only, up to `max_upload_bytes`."""
        searcher = service.need(await service.current())
        upload = await read_upload(request, settings.max_upload_bytes)
        search = SearchRequest(terms=(Term(image=upload.data),), limit=limit, offset=offset)
        page, _ = await run(answer, searcher, search, settings)
        return page_out(page, root=root_path(request), model_id=searcher.model_id)

    @api.get("/images/{image_id}/similar", response_model=SearchResponse, tags=["images"],
             summary="Photos like an indexed one", responses={404: errors[404]})
    async def similar(request: Request, image_id: ImageId, limit: Limit = DEFAULT_LIMIT,
                      offset: Offset = 0) -> SearchResponse:
        """The photo itself is left out."""
        searcher = service.need(await service.current())
        search = SearchRequest(terms=(Term(photo_id=image_id),), limit=limit, offset=offset)
        page, source = await run(answer, searcher, search, settings)
        return page_out(page, source=source, root=root_path(request), model_id=searcher.model_id)

    async def _photo(image_id: int) -> tuple[Searcher, Photo]:
        searcher = service.need(await service.current())
        photo = await run(searcher.photo, image_id)
        if photo is None:
            raise NotFound(f"no photo has id {image_id}")
        return searcher, photo

    @api.get("/images/{image_id}", response_model=PhotoDetailOut, tags=["images"], summary="A photo's metadata",
             responses={404: errors[404]})
    async def image(request: Request, image_id: ImageId) -> PhotoDetailOut:
        searcher, photo = await _photo(image_id)
        out = photo_detail_out(photo, await run(searcher.photo_text, image_id), root_path(request))
        out.tags = [PhotoTagOut(tag=t, score=round(s, 6), via=v) for t, s, v in await run(searcher.photo_tags, image_id)]
        return out

    @api.get("/tags", response_model=TagsResponse, tags=["search"], summary="Automatic tags, with how many photos "
             "carry each")
    async def tags() -> TagsResponse:
        return await run(tags_out, service.need(await service.current()))

    @api.get("/images/{image_id}/thumbnail", tags=["images"], summary="A photo's thumbnail (WebP)",
             response_class=FileResponse, responses={
                 200: {"content": {"image/webp": {}}, "description": "The thumbnail"}, 404: errors[404]})
    async def thumbnail(image_id: ImageId,
                        size: Annotated[Literal["small", "large"], Query(
                            description="small: about 320 px on the long side; large: about 1600 px")] = "small",
                        v: Annotated[str | None, Query(description="Version from the photo's URLs (for caching)")] = None):
        searcher, photo = await _photo(image_id)
        source = await run(searcher.file_path, image_id)
        if source is None:
            raise NotFound(f"the file of photo {image_id} is no longer where it was indexed; "
                           "run 'photoseek index' to bring the index up to date")
        path = await run(service.thumbs.get, photo, source, size)
        cache = "private, max-age=31536000, immutable" if v == photo_version(photo) else "private, max-age=300"
        return FileResponse(path, media_type="image/webp",
                            headers={"Cache-Control": cache, "Content-Security-Policy": security.FILE_CSP})

    @api.get("/images/{image_id}/file", tags=["images"], summary="A photo's original file",
             response_class=FileResponse, responses={
                 200: {"content": {"image/*": {}}, "description": "The original file"}, 404: errors[404]})
    async def original(image_id: ImageId):
        """Only files in the index are served, and only while they still are images."""
        searcher, photo = await _photo(image_id)
        source = await run(searcher.file_path, image_id)
        fmt = await run(_image_format, source) if source is not None else None
        if fmt is None:
            raise NotFound(f"the file of photo {image_id} is no longer on disk (or no longer an image); "
                           "run 'photoseek index' to bring the index up to date")
        return FileResponse(source, media_type=MIME.get(fmt, "application/octet-stream"), filename=photo.name,
                            content_disposition_type="inline",
                            headers={"Cache-Control": "private, max-age=300",
                                     "Content-Security-Policy": security.FILE_CSP})

    @api.get("/status", response_model=StatusResponse, tags=["index"], summary="What the index holds")
    async def status(skipped: Annotated[int, Query(ge=0, le=10_000, description="List up to this many skipped files.")] = 100
                     ) -> StatusResponse:
        searcher = await service.current()
        if searcher is None:
            return StatusResponse(ready=False, message=NO_INDEX, index_dir=str(service.files.root), model=None)
        return status_out(await run(searcher.status, skipped))

    @api.get("/tune", response_model=TuneResponse, tags=["index"], summary="What photoseek tune taught the index")
    async def tuned() -> TuneResponse:
        """The adapter trained on your captions ('photoseek tune'), with held-out recall before and after."""
        from photoseek.tune import load_adapter

        adapter = await run(load_adapter, service.files.root)
        return TuneResponse(adapter=None if adapter is None else AdapterOut.model_validate(adapter.summary))

    @api.get("/duplicates", response_model=DuplicatesResponse, tags=["index"], summary="Near-duplicate photos")
    async def duplicates(request: Request, threshold: Threshold = None) -> DuplicatesResponse:
        """Groups of near-identical photos (bursts, resized or re-encoded copies, light edits, crops), each with
        the photo suggested to keep and why. Nothing is deleted or moved: export the list for your own tools."""
        searcher = service.need(await service.current())
        report = await run(find_duplicates, searcher, threshold)
        return duplicates_out(report, root_path(request))

    @api.get("/duplicates.csv", tags=["index"], summary="Near-duplicate photos as CSV", response_class=Response,
             responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                              "description": "One row per photo: " + ", ".join(CSV_COLUMNS)}})
    async def duplicates_csv(threshold: Threshold = None) -> Response:
        searcher = service.need(await service.current())
        report = await run(find_duplicates, searcher, threshold)
        return Response(to_csv(report), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": 'attachment; filename="photoseek-duplicates.csv"'})

    return api


def _image_format(path: Path) -> str | None:
    """The format of a file on disk, if it is still a supported image (header only)."""
    try:
        return sniff_format(path)
    except DecodeError:
        return None
