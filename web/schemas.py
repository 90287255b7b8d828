"""Response models of the HTTP API (what ``/docs`` shows and what clients can rely on).

Kept apart from the routes, as Immich keeps its DTOs apart: the engine's dataclasses
(:class:`photoseek.search.Photo`, :class:`~photoseek.search.Hit`, ...) are turned into
these at the edge, with the URLs a client needs to show a result.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from photoseek.search import Hit, IndexStatus, Photo
from photoseek.times import as_utc
from photoseek.search.engine import Page
from photoseek.search.query import format_query


class _Out(BaseModel):
    """The models here are built when first used, not when imported: a terminal search uses a few of
    them, and building them all cost it more than the search."""

    model_config = ConfigDict(defer_build=True)


# RFC 3339 wants an offset: the index keeps UTC times without one.
Timestamp = Annotated[AwareDatetime, BeforeValidator(as_utc)]


class PhotoTagOut(_Out):
    """An automatic tag of a photo (photoseek.tags)."""

    tag: str = Field(examples=["golden retriever"], description="The tag; search for it with tag:NAME "
                     "(hyphens for spaces).")
    score: float = Field(examples=[0.93], description="Cosine of the photo and the tag's text embedding; for a "
                         "tag derived from the hierarchy, its descendant's.")
    via: str | None = Field(default=None, examples=[None], description="The tag this one was derived from "
                            "(\"dog\" via \"golden retriever\"); null: scored directly.")


class TagCountOut(_Out):
    tag: str = Field(examples=["dog"])
    count: int = Field(description="Photos carrying the tag (directly or through a descendant).", examples=[2])
    parents: list[str] = Field(description="Its parents in the vocabulary's hierarchy.", examples=[["animal"]])


class TagsResponse(_Out):
    """GET /api/tags and photoseek tags --json."""

    photos: int = Field(description="Photos in the index.")
    untagged: int = Field(description="Photos not tagged with the current vocabulary yet (photoseek index or "
                          "photoseek tags --update tags them).")
    vocabulary: str = Field(description="'default' (the shipped vocabulary) or the user's vocabulary file.")
    vocabulary_size: int = Field(description="Tags in the vocabulary.")
    tags: list[TagCountOut] = Field(description="Tags photos carry, most photos first.")


class PhotoOut(_Out):
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
    file_type: str | None = Field(default=None, description="What the file is: jpeg, png, heif, ...")
    date: Timestamp | None = Field(default=None, description="The date filters and sorting use: taken_at if "
                                   "known, else the file's modification time (see date_source).")
    date_source: Literal["exif", "file"] | None = None
    thumbnail_url: str = Field(description="WebP, about 320 px on the long side.")
    preview_url: str = Field(description="WebP, about 1600 px on the long side, for a detail view.")
    file_url: str = Field(description="The original file.")
    similar_url: str = Field(description="API URL of photos like this one.")
    page_url: str = Field(description="The photo's page in the web UI.")
    tags: list[PhotoTagOut] | None = Field(default=None, description="Its automatic tags, best score first "
                                           "(GET /api/images/{id} only; null in search results).")


class PhotoDetailOut(PhotoOut):
    """An indexed photo with the words it can be found by besides its looks."""

    caption: str | None = Field(default=None, description="The description written into the photo (EXIF, IPTC or "
                                "XMP), if any.")
    keywords: list[str] = Field(default=[], description="Keywords written into the photo (IPTC or XMP).")
    ocr_text: str | None = Field(default=None, description="Text read in the photo (photoseek index --ocr), if any.")


def photo_detail_out(photo: Photo, text: dict[str, str], root: str = "") -> PhotoDetailOut:
    keywords = [k.strip() for k in text.get("keywords", "").split(",") if k.strip()]
    return PhotoDetailOut(**photo_out(photo, root).model_dump(), caption=text.get("caption") or None,
                          keywords=keywords, ocr_text=text.get("ocr") or None)


# Why a photo is a result (photoseek.keywords.REASONS, and "semantic").
Reason = Literal["semantic", "file_name", "folder", "caption", "keyword", "ocr_text", "tag"]


class HitOut(_Out):
    rank: int = Field(description="1-based position in the whole result list.", examples=[1])
    score: float = Field(description="Cosine similarity to the query; higher is closer.", examples=[0.31])
    why: list[Reason] = Field(default=["semantic"], min_length=1, examples=[["semantic", "ocr_text"]], description=(
        "Why it matched: 'semantic' (by meaning: the photo looks like the query; for a keyword match, it also scores "
        "as well as the query's calibrated cutoff), and the parts of the photo's text holding a word of the query: "
        "'file_name', 'folder', 'caption', 'keyword' (keywords written into the photo), 'ocr_text' (text read in it); "
        "'tag': it carries an automatic tag a word of the query names ('an animal')."))
    photo: PhotoOut


class TermOut(_Out):
    weight: float = Field(description="Negative: subtracted from the query.", examples=[1.0])
    kind: Literal["text", "image", "photo"]
    text: str | None = None
    photo_id: int | None = None


class FiltersOut(_Out):
    """Filters, as applied (responses) or asked for (the body of POST /api/search)."""

    after: date | None = Field(default=None, description="Taken on or after this day.")
    before: date | None = Field(default=None, description="Taken on or before this day.")
    camera: str | None = Field(default=None, max_length=100, description="Make or model contains this (any case).")
    folder: str | None = Field(default=None, max_length=4096, description="Under this folder.")
    type: list[str] = Field(default=[], max_length=16, description="File types: jpeg, png, heif, ...")
    orientation: Literal["landscape", "portrait", "square"] | None = None
    min_pixels: int | None = Field(default=None, ge=1, le=10**12)
    tag: list[str] = Field(default=[], max_length=16, description="Automatic tags every photo must carry.")


# Dates as the schema says: ISO calendar dates only (a bare number is not a day).
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


def search_body_model(max_query_chars: int, max_upload_bytes: int) -> type[BaseModel]:
    """The body of ``POST /api/search``, with the limits this server enforces declared in it."""
    from base64 import b64decode
    from binascii import Error as Base64Error

    from pydantic import create_model, field_validator, model_validator

    from photoseek.search.query import MAX_TERMS, MAX_WEIGHT

    class TermIn(BaseModel):
        """One term: exactly one of text, photo_id, image."""

        model_config = ConfigDict(strict=True)  # exactly the JSON types the schema declares: no true for 1

        weight: float = Field(default=1.0, ge=-MAX_WEIGHT, le=MAX_WEIGHT,
                              description="How much it counts; negative subtracts it. Not 0.")
        text: str | None = Field(default=None, min_length=1, max_length=max_query_chars, description="Words, as is "
                                 "(no +/- syntax inside a term).")
        photo_id: int | None = Field(default=None, ge=1, le=2**63 - 1, description="An indexed photo.")
        image: str | None = Field(default=None, max_length=4 * (max_upload_bytes // 3 + 1),
                                  description="An image file, base64-encoded.")

        @model_validator(mode="after")
        def _one(self):
            if sum(x is not None for x in (self.text, self.photo_id, self.image)) != 1:
                raise ValueError("each term has exactly one of text, photo_id, image")
            if self.weight == 0:
                raise ValueError("a weight of 0 does nothing: leave the term out")
            return self

        @field_validator("image")
        @classmethod
        def _base64(cls, value: str | None):
            if value is not None:
                try:
                    b64decode(value, validate=True)
                except (Base64Error, ValueError):
                    raise ValueError("image must be base64 (RFC 4648, no line breaks)") from None
            return value

    class FiltersIn(BaseModel):
        """Filters, as asked for."""

        model_config = ConfigDict(strict=True)

        after: str | None = Field(default=None, pattern=DATE_PATTERN, json_schema_extra={"format": "date"},
                                  description="Taken on or after this day (YYYY-MM-DD).")
        before: str | None = Field(default=None, pattern=DATE_PATTERN, json_schema_extra={"format": "date"},
                                   description="Taken on or before this day (YYYY-MM-DD).")
        camera: str | None = Field(default=None, max_length=100, description="Make or model contains this (any case).")
        folder: str | None = Field(default=None, max_length=4096, description="Under this folder.")
        type: list[str] = Field(default=[], max_length=16, description="File types: jpeg, png, heif, ...")
        orientation: Literal["landscape", "portrait", "square"] | None = None
        min_pixels: int | None = Field(default=None, ge=1, le=10**12)
        tag: list[str] = Field(default=[], max_length=16, description="Automatic tags every photo must carry "
                               "(as tag:NAME in q).")

    return create_model(
        "SearchBody",
        __config__=ConfigDict(strict=True),
        q=(str | None, Field(default=None, max_length=max_query_chars,
                             description="Text with the +/- and weight syntax, added to the terms.")),
        terms=(list[TermIn], Field(default=[], max_length=MAX_TERMS, description="Weighted terms.")),
        filters=(FiltersIn, Field(default_factory=FiltersIn)),
        sort=(Literal["relevance", "newest", "oldest"], "relevance"),
        min_score=(float | None, Field(default=None, ge=-1, le=1)),
        limit=(int, Field(default=24, ge=1, le=200)),
        offset=(int, Field(default=0, ge=0, le=100_000)),
        keywords=(bool, Field(default=True, description="Also match photos by the words of their file name, folders, "
                                                        "caption, keywords and text read in them (fused with the "
                                                        "ranking by meaning).")),
    )


class LanguageHintOut(_Out):
    """The query's words are mostly in a script the index's encoder cannot read: its results are
    likely unrelated to the query. A warning next to the results, not an error."""

    script: str = Field(description="The query's script (Unicode), e.g. Cyrillic, Han, Greek.", examples=["Cyrillic"])
    model: str = Field(description="The encoder that built the index.", examples=["offline:lite0"])
    suggested_model: str | None = Field(description="An encoder that reads this script, to re-index with "
                                        "(photoseek index --rebuild --model ...).", examples=["offline:multilingual"])
    message: str = Field(description="The hint, for people.")


class SearchResponse(_Out):
    kind: Literal["text", "image", "similar"] = Field(
        description="What the search is by: 'image' when it has an uploaded photo, 'similar' when it has an "
                    "indexed photo, else 'text'. Words may refine either.")
    query: str | None = Field(description="The text of the query, if it has one.")
    source: PhotoOut | None = Field(default=None, description="The indexed photo searched by (kind 'similar').")
    terms: list[TermOut] = Field(default=[], description="The weighted terms the query was made of.")
    filters: FiltersOut = Field(default_factory=FiltersOut, description="The filters applied.")
    sort: Literal["relevance", "newest", "oldest"] = "relevance"
    cutoff: float | None = Field(default=None, description="Photos scoring below this were left out: min_score, "
                                 "or when sorting by date without one, the calibrated default. Null: no cutoff.")
    matches: int | None = Field(default=None, description="How many photos passed the cutoff (when there was one "
                                "and results are sorted by date).")
    offset: int
    limit: int
    next_offset: int | None = Field(description="Offset of the next page, or null when this is the last one.")
    results: list[HitOut]
    language_hint: LanguageHintOut | None = Field(
        default=None, description="Set when the query's words are mostly in a writing system the index's encoder "
        "does not read (e.g. Cyrillic for an English-only encoder): the results are still given, but are likely "
        "unrelated to the query. Null otherwise.")


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
                               "(IVF, IVF-PQ, or PostgreSQL's HNSW) for large collections.")
    catalogue: str | None = Field(default=None, description="Where the catalogue lives: the SQLite file in the "
                                  "index folder, or the PostgreSQL server (without its password).",
                                  examples=["SQLite at /home/ann/.local/share/photoseek/index/photoseek.db"])


class ErrorResponse(_Out):
    status: int = Field(examples=[404])
    error: str = Field(description="The HTTP reason phrase.", examples=["Not Found"])
    message: str = Field(description="What went wrong, for people.", examples=["no photo has id 12345"])


# -- conversions ---------------------------------------------------------------------------


class FacetValue(_Out):
    value: str | None = Field(description="What to pass back as the filter (camera, folder, type, or the year "
                              "or month as digits); null: photos with no such value.")
    label: str = Field(description="For people.")
    count: int = Field(description="How many photos this choice keeps, with the other filters as they are.")


class FacetsResponse(_Out):
    camera: list[FacetValue]
    year: list[FacetValue] = Field(default=[], description="Per year (when no year is chosen).")
    month: list[FacetValue] = Field(default=[], description="Per month of the chosen year (?year=).")
    folder: list[FacetValue] = Field(description="Per top-level folder inside each indexed folder.")
    type: list[FacetValue]
    orientation: list[FacetValue] = Field(default=[], description="Per shape: landscape, portrait, square.")
    tag: list[FacetValue] = Field(default=[], description="Per automatic tag, the 30 most common (filter with "
                                  "tag:NAME in q, or ?tag=NAME).")


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


def facets_out(counts: dict[str, list]) -> FacetsResponse:
    def values(name: str, label) -> list[FacetValue]:
        return [FacetValue(value=None if v is None else str(v), label=label(v), count=n) for v, n in counts.get(name, [])]

    def camera(pair) -> FacetValue:
        (make, model), n = pair
        label = camera_label(make, model)
        return FacetValue(value=label, label=label or "unknown camera", count=n)

    return FacetsResponse(
        camera=[camera(p) for p in counts["camera"]],
        year=values("year", lambda v: v or "no date"),
        month=values("month", lambda v: MONTHS[int(v) - 1] if v else "no date"),
        folder=values("folder", lambda v: v),
        type=values("type", lambda v: (v or "unknown").upper()),
        orientation=values("orientation", lambda v: v.capitalize()),
        tag=values("tag", lambda v: v),
    )


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
        indexed_at=photo.indexed_at, file_type=photo.file_type, date=photo.photo_date, date_source=photo.date_source,
        thumbnail_url=f"{api}/thumbnail?v={version}", preview_url=f"{api}/thumbnail?size=large&v={version}",
        file_url=f"{api}/file", similar_url=f"{api}/similar", page_url=f"{root}/photos/{photo.id}",
    )


def hits_out(hits: list[Hit], offset: int, root: str = "") -> list[HitOut]:
    return [HitOut(rank=offset + i + 1, score=round(h.score, 6), why=list(h.why), photo=photo_out(h.photo, root))
            for i, h in enumerate(hits)]


def search_response(kind: Literal["text", "image", "similar"], hits: list[Hit], *, limit: int, offset: int,
                    query: str | None = None, source: Photo | None = None, root: str = "") -> SearchResponse:
    """One page of results in the API's shape (the command line's ``--json`` prints the same).
    ``hits``: up to ``limit + 1``; the extra one only tells that a next page exists."""
    next_offset = offset + limit if len(hits) > limit else None
    return SearchResponse(kind=kind, query=query, source=photo_out(source, root) if source is not None else None,
                          offset=offset, limit=limit, next_offset=next_offset, results=hits_out(hits[:limit], offset, root))


def language_hint_out(model_id: str | None, texts) -> LanguageHintOut | None:
    """:func:`photoseek.encoders.languages.language_hint` in the API's shape."""
    from photoseek.encoders.languages import language_hint

    hint = language_hint(model_id, [t for t in texts if t])
    return LanguageHintOut(**vars(hint)) if hint is not None else None


def page_out(page: Page, *, source: Photo | None = None, root: str = "", model_id: str | None = None) -> SearchResponse:
    """A page of :meth:`Searcher.search` in the API's shape (the command line's ``--json`` too).
    ``model_id``: the index's encoder, for the language hint."""
    request = page.request
    kinds = {t.kind for t in request.terms}
    f = request.filters
    return SearchResponse(
        kind="image" if "image" in kinds else "similar" if "photo" in kinds else "text",
        query=format_query(request.terms),
        source=photo_out(source, root) if source is not None else None,
        terms=[TermOut(weight=t.weight, kind=t.kind, text=t.text, photo_id=t.photo_id) for t in request.terms],
        filters=FiltersOut(after=f.after, before=f.before, camera=f.camera, folder=f.folder, type=list(f.types),
                           orientation=f.orientation, min_pixels=f.min_pixels, tag=list(f.tags)),
        sort=request.sort, cutoff=None if page.cutoff is None else round(page.cutoff, 6), matches=page.matches,
        offset=request.offset, limit=request.limit, next_offset=page.next_offset,
        results=hits_out(page.hits, request.offset, root),
        language_hint=language_hint_out(model_id, [t.text for t in request.terms if t.kind == "text"]))


def tags_out(searcher) -> TagsResponse:
    """:meth:`Searcher.tag_summary` in the API's shape (``photoseek tags --json`` too)."""
    summary = searcher.tag_summary()
    return TagsResponse(photos=summary.photos, untagged=summary.untagged, vocabulary=summary.vocabulary,
                        vocabulary_size=summary.vocabulary_size,
                        tags=[TagCountOut(tag=t, count=n, parents=p) for t, n, p in summary.counts])


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


# -- near-duplicates (GET /api/duplicates) -----------------------------------------------------

class DuplicateMemberOut(_Out):
    photo: PhotoOut
    keep: bool = Field(description="The suggested photo to keep in its group.")


class DuplicatePairOut(_Out):
    a: int = Field(description="A photo id.")
    b: int = Field(description="Another photo id in the same group.")
    similarity: float = Field(description="Cosine similarity of the two photos' embeddings.")
    matched_points: int = Field(description="Distinct points of the two photos that one rotation, scale and shift "
                                "(mirrored or not) map onto each other: the visual check.")


class DuplicateGroupOut(_Out):
    keeper_id: int = Field(description="The suggested photo to keep: the largest resolution, then the earliest "
                           "taken, then the first indexed.")
    reason: Literal["largest_resolution", "earliest_taken", "first_indexed"]
    reason_text: str = Field(description="Why that photo, for people.")
    photos: list[DuplicateMemberOut] = Field(description="The keeper first; at least two photos.")
    pairs: list[DuplicatePairOut] = Field(description="The verified pairs that join the group.")


class DuplicatesResponse(_Out):
    """Groups of near-identical photos. photoseek only lists them: it never deletes or moves a photo."""

    threshold: float = Field(description="The embedding similarity (cosine) from which two photos were compared.")
    default_threshold: float = Field(description="The default for this index's encoder.")
    model: str | None
    photos: int = Field(description="Photos in the index.")
    candidate_pairs: int = Field(description="Pairs compared visually (each photo's nearest neighbours at or above "
                                 "the threshold).")
    verified_pairs: int = Field(description="Pairs that passed the visual check.")
    duplicates: int = Field(description="Photos in groups that are not their group's keeper.")
    unreadable: list[int] = Field(description="Ids of photos whose files could not be read (not compared).")
    seconds: float = Field(description="Time the grouping took when it was computed.")
    groups: list[DuplicateGroupOut] = Field(description="Largest group first.")
    csv_url: str = Field(description="The same list as CSV, one row per photo.")


def duplicates_out(report, root: str = "") -> DuplicatesResponse:
    """``report``: a :class:`photoseek.search.duplicates.DuplicateReport`."""
    groups = [DuplicateGroupOut(
        keeper_id=g.keeper.photo_id, reason=g.keeper.reason, reason_text=g.keeper.reason_text,
        photos=[DuplicateMemberOut(photo=photo_out(p, root), keep=p.id == g.keeper.photo_id) for p in g.photos],
        pairs=[DuplicatePairOut(a=a, b=b, similarity=round(s, 4), matched_points=n) for a, b, s, n in g.pairs],
    ) for g in report.groups]
    return DuplicatesResponse(
        threshold=report.threshold, default_threshold=report.default_threshold, model=report.model_id,
        photos=report.photos, candidate_pairs=report.candidate_pairs, verified_pairs=report.verified_pairs,
        duplicates=report.duplicates, unreadable=list(report.unreadable), seconds=round(report.seconds, 3),
        groups=groups, csv_url=f"{root}/api/duplicates.csv?threshold={report.threshold:g}",
    )


class AdapterOut(_Out):
    """What ``photoseek tune`` taught the index (text queries pass through this adapter)."""

    version: int = Field(ge=1)
    model_id: str = Field(description="The encoder it was trained for; ignored for an index rebuilt with another.")
    trained_at: Timestamp
    source: str = Field(description="Where the captions came from: a captions file, or 'catalogue' (EXIF/IPTC/XMP "
                        "captions and keywords), with '+folders' when folder names were used too.")
    forced: bool = Field(description="Applied with --force although it did not pass the checks.")
    pairs: int = Field(ge=0, description="(photo, caption) pairs.")
    photos: int = Field(ge=0)
    held_out_pairs: int = Field(ge=0)
    held_out_photos: int = Field(ge=0)
    test_photos: int = Field(ge=0, description="Held-out photos the recall figures are measured on.")
    k: int = Field(ge=1)
    recall_before: float = Field(ge=0, le=1, description="Held-out recall@k of the pretrained space.")
    recall_after: float = Field(ge=0, le=1, description="Held-out recall@k with the adapter.")
    mrr_before: float = Field(ge=0, le=1)
    mrr_after: float = Field(ge=0, le=1)
    generic_before: float | None = Field(ge=0, le=1, description="Recall@10 of the hand-labelled demo queries "
                                         "before; null when the index does not hold those photos.")
    generic_after: float | None = Field(ge=0, le=1)
    note: str
    epochs: int = Field(ge=0)
    seconds: float = Field(ge=0)
    marks_right: int = Field(0, ge=0, description="Feedback marks 'right' it learned from (training pairs).")
    marks_wrong: int = Field(0, ge=0, description="Feedback marks 'wrong' it learned from (hard negatives).")


class TuneResponse(_Out):
    adapter: AdapterOut | None = Field(description="The current adapter; null: the pretrained space.")


# -- feedback marks and tuning from the page (issue 13) ------------------------------------------

MarkValue = Literal["right", "wrong"]


class FeedbackIn(_Out):
    """A mark on a result of a text query: "right" (a training pair for the next tune), "wrong" (a hard
    negative), or "none" to clear it. Marking again replaces the mark."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=1000, pattern=r"\S", description="The text query the result was "
                       "found by: not only spaces (stored stripped, runs of spaces made one).")
    # 2**53 - 1: exact as a JSON number in every client (photo ids never come near it).
    image_id: int = Field(ge=1, le=2**53 - 1, description="The photo's id, as returned by a search.")
    mark: Literal["right", "wrong", "none"]


class MarkOut(_Out):
    query: str
    image_id: int = Field(ge=1)
    path: str
    mark: MarkValue
    created_at: Timestamp


class FeedbackResponse(_Out):
    """The answer to a mark: the stored mark (null when cleared) and how many marks the index holds."""

    mark: MarkOut | None
    total: int = Field(ge=0, description="Marks in the index, every query.")


class MarksResponse(_Out):
    marks: list[MarkOut] = Field(description="By query, newest first.")
    total: int = Field(ge=0, description="Marks in the index, every query (what the next tune learns from).")
    writable: bool = Field(description="Whether marks can be kept (false: the index is read-only here).")


class TuneIn(_Out):
    model_config = ConfigDict(extra="forbid")
    folders: bool = Field(False, description="Also use folder names as captions.")
    force: bool = Field(False, description="Apply the adapter even if it did not pass the checks.")
    feedback: bool = Field(True, description="Learn from the feedback marks (false: captions only).")


class TuneOutcomeOut(_Out):
    """A finished tune: the adapter now applied to text queries, and what it learned, in words."""

    applied: bool
    message: str = Field(description="One line for people.")
    adapter: AdapterOut
