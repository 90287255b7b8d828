"""``GET /api/tags`` and ``photoseek tags --json``: the automatic tags photos carry."""

from __future__ import annotations

from photoseek.web.schemas.common import _Out
from pydantic import Field


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


def tags_out(searcher) -> TagsResponse:
    """:meth:`Searcher.tag_summary` in the API's shape (``photoseek tags --json`` too)."""
    summary = searcher.tag_summary()
    return TagsResponse(photos=summary.photos, untagged=summary.untagged, vocabulary=summary.vocabulary,
                        vocabulary_size=summary.vocabulary_size,
                        tags=[TagCountOut(tag=t, count=n, parents=p) for t, n, p in summary.counts])
