"""Broad words in plain queries, folded into the ranking: "an animal" finds the photos tagged
animal (or any of its descendants) even where the query's embedding alone ranks them low.

:func:`tagged_first`: the photos carrying one of the query's tags come first, then the others,
each group in the semantic ranking's order (by cosine). The tag says whether, the embedding says in
which order: tag scores near 1 are too close to one another to rank by (on the demo photos, ranking
by them put the goldfish above the red fish that "a fish" ranks first). Both groups are top-k lists
by cosine (the tagged one from a search filtered to the tag), so a longer page extends them without
reordering what came before: pages never overlap or skip. A reciprocal rank fusion giving every
tagged photo the tag list's first place orders the same way; this form also pages. Scores stay
cosines, so they fall within each group, not across the two. Pure; the general keyword fusion can
take the tagged group as one more input.
"""

from __future__ import annotations

import numpy as np


def merge_tops(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several top-k lists (scores, ids; ids < 0 are padding), each id once."""
    best: dict[int, float] = {}
    for scores, ids in parts:
        for s, i in zip(scores, ids):
            if i >= 0 and float(s) > best.get(int(i), -np.inf):
                best[int(i)] = float(s)
    order = sorted(best, key=lambda i: (-best[i], i))[:k]
    return np.asarray([best[i] for i in order], dtype=np.float32), np.asarray(order, dtype=np.int64)


def tagged_first(semantic: tuple[np.ndarray, np.ndarray], tagged_top: tuple[np.ndarray, np.ndarray],
                 tagged: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """``tagged_top`` (the best tagged photos by cosine), then the photos of ``semantic`` that carry
    no tag (``tagged``: every tagged photo's id)."""
    scores, ids = semantic
    rest = [(float(s), int(i)) for s, i in zip(scores, ids) if i >= 0 and int(i) not in tagged]
    return (np.concatenate([tagged_top[0], np.asarray([s for s, _ in rest], dtype=np.float32)]),
            np.concatenate([tagged_top[1], np.asarray([i for _, i in rest], dtype=np.int64)]))
