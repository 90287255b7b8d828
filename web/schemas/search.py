"""A search: its request body (``POST /api/search``) and its page of results."""

from __future__ import annotations

from datetime import date
from typing import Literal

from photoseek.search import Hit, Photo
from photoseek.search.engine import Page
from photoseek.search.query import format_query
from photoseek.web.schemas.common import PhotoOut, _Out, photo_out
from pydantic import BaseModel, ConfigDict, Field

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

    from photoseek.search.query import MAX_TERMS, MAX_WEIGHT
    from pydantic import create_model, field_validator, model_validator

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
        language_hint=language_hint_out(model_id, request.texts))
