"""Broad words in plain queries, folded into the ranking: "an animal" finds the photos tagged
animal (or any of its descendants) even where the query's embedding alone ranks them low.

:func:`fuse` is reciprocal rank fusion (Cormack et al., SIGIR 2009) of the semantic ranking with
the set of photos carrying the query's tags: a photo scores ``1 / (RRF_K + rank)`` from the semantic
list, plus ``1 / (RRF_K + 1)`` when it carries a tag, as if every tagged photo shared the tag list's
first place. The tag says whether, the semantic ranking says in which order: tag scores near 1 are
too close to one another to rank by (on the demo photos, ranking by them put the goldfish above the
red fish that "a fish" ranks first). Rank-based, so cosines and tag scores need no common scale, and a query naming no tag is left
exactly as it was. Pure; the general keyword fusion can take the tagged set as one more input.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

RRF_K = 60  # the paper's constant: damps the weight of the very first ranks


def fuse(semantic_ids: np.ndarray, tagged: Iterable[int], *, k: int = RRF_K) -> list[int]:
    """Ids in fused order from ``semantic_ids`` (best first) and the ids of the ``tagged`` photos."""
    score: dict[int, float] = {}
    order: dict[int, int] = {}
    for rank, image_id in enumerate(int(i) for i in semantic_ids if i >= 0):
        score[image_id] = 1.0 / (k + rank + 1)
        order[image_id] = rank
    for image_id in dict.fromkeys(int(i) for i in tagged):
        score[image_id] = score.get(image_id, 0.0) + 1.0 / (k + 1)
        order.setdefault(image_id, len(order) + len(semantic_ids))
    return sorted(score, key=lambda i: (-score[i], order[i]))
