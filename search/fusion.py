"""Rank fusion: one ranking from several (by meaning, by keywords), and why each photo is in it.

Reciprocal rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009): a photo's fused score is the
sum, over the rankings it appears in, of ``1 / (k + rank)`` (rank from 1). It needs no score
calibration between rankings whose scores mean different things (a cosine, a bm25), and k = 60
keeps the first few places of any one ranking from drowning the others. A photo that both looks
like the query and carries its words rises above either alone; a keyword match no picture
resembles still reaches the first page. Pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """Every id of ``rankings`` (each best first) ordered by fused score, best first; ties go to the
    id ranked higher in the earliest ranking that holds it, so the first ranking (by meaning) breaks them."""
    fused: dict[int, float] = {}
    first_seen: dict[int, tuple[int, int]] = {}
    for which, ranking in enumerate(rankings):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
            first_seen.setdefault(item, (which, rank))
    return sorted(fused, key=lambda item: (-fused[item], first_seen[item]))
