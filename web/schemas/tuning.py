"""What ``photoseek tune`` taught the index, and the feedback marks it learns from (issue 13)."""

from __future__ import annotations

from typing import Literal

from photoseek.web.schemas.common import Timestamp, _Out
from pydantic import ConfigDict, Field


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
