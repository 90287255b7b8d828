"""Broad words in plain queries, folded into the ranking: "an animal" finds the photos tagged
animal (or any of its descendants) even where the query's embedding alone ranks them low.

:func:`fuse` is reciprocal rank fusion (Cormack et al., SIGIR 2009) of the semantic ranking with
the ranking of the photos carrying the query's tags (by tag score): each photo scores
``sum(1 / (RRF_K + rank))`` over the lists it is in. It is rank-based, so it needs no common scale
between cosines and tag scores, and a query naming no tag is left exactly as it was. Pure; the
general keyword fusion can take the tag list as one more input.
"""

from __future__ import annotations

import numpy as np

RRF_K = 60  # the paper's constant: damps the weight of the very first ranks


def fuse(semantic_ids: np.ndarray, tagged: list[tuple[int, float]], *, k: int = RRF_K) -> list[int]:
    """Ids in fused order: ``semantic_ids`` (best first) and ``tagged`` ((id, tag score), best first)."""
    score: dict[int, float] = {}
    first_seen: dict[int, int] = {}
    for rank, image_id in enumerate(int(i) for i in semantic_ids if i >= 0):
        score[image_id] = score.get(image_id, 0.0) + 1.0 / (k + rank + 1)
        first_seen.setdefault(image_id, rank)
    for rank, (image_id, _) in enumerate(tagged):
        score[image_id] = score.get(image_id, 0.0) + 1.0 / (k + rank + 1)
        first_seen.setdefault(image_id, len(semantic_ids) + rank)
    return sorted(score, key=lambda i: (-score[i], first_seen[i]))
