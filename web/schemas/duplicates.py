"""``GET /api/duplicates`` and ``photoseek duplicates --json``: groups of near-identical photos."""

from __future__ import annotations

from typing import Literal

from photoseek.web.schemas.common import PhotoOut, _Out, photo_out
from pydantic import Field


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
