"""Filters evaluated in memory, beside the vectors they narrow.

A filter keeping half of 100,000 photos must cost a few milliseconds, not a table scan: SQLite
would read every row (each carries its embedding) to answer ``photo_date >= ?`` for half the
table. So the few columns filters look at are loaded once with the vectors (same generation:
they always describe the same photos), as NumPy arrays, and a filter is a vectorised mask.
:meth:`photoseek.storage.Catalogue.filter_ids` is the same filter in SQL; a test holds the two equal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

import numpy as np

from photoseek.files import is_under
from photoseek.search.query import Filters


def tag_members_from(rows) -> dict[str, np.ndarray]:
    """tag -> ids of the photos carrying it, from (tag, image_id) rows ordered by tag then id."""
    members: dict[str, list[int]] = {}
    for tag, image_id in rows:
        members.setdefault(tag, []).append(image_id)
    return {t: np.asarray(i, dtype=np.int64) for t, i in members.items()}

NO_DATE = np.iinfo(np.int64).min  # sorts first; callers put undated photos last explicitly


@dataclass(frozen=True)
class FilterColumns:
    ids: np.ndarray  # int64, sorted
    dates: np.ndarray  # int64 seconds of photo_date (naive, as stored); NO_DATE where unknown
    widths: np.ndarray
    heights: np.ndarray
    type_codes: np.ndarray  # int32 index into types
    types: list[str | None]
    camera_codes: np.ndarray  # int32 index into cameras
    cameras: list[str]  # "make model", lower case
    dir_codes: np.ndarray  # int32 index into dirs
    dirs: list[str]  # each photo's folder
    tags: dict[str, np.ndarray] = field(default_factory=dict)  # tag -> sorted ids carrying it (Catalogue.tag_members)

    @classmethod
    def load(cls, rows, tags: dict[str, np.ndarray] | None = None) -> FilterColumns:
        """From :meth:`photoseek.storage.Catalogue.filter_columns`'s rows (and ``tag_members``)."""
        n = len(rows)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        dates = np.fromiter((_seconds(r[1]) for r in rows), dtype=np.int64, count=n)
        widths = np.fromiter((r[2] for r in rows), dtype=np.int64, count=n)
        heights = np.fromiter((r[3] for r in rows), dtype=np.int64, count=n)
        type_codes, types = _codes(r[4] for r in rows)
        camera_codes, cameras = _codes(f"{r[5] or ''} {r[6] or ''}".lower() for r in rows)
        dir_codes, dirs = _codes(os.path.dirname(r[7]) for r in rows)
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], dates[order], widths[order], heights[order], type_codes[order], types,
                   camera_codes[order], cameras, dir_codes[order], dirs, dict(tags or {}))

    def __len__(self) -> int:
        return len(self.ids)

    def dates_of(self, ids: np.ndarray) -> np.ndarray:
        """The dates (seconds, NO_DATE where unknown or not loaded) of ``ids``, in their order."""
        ids = np.asarray(ids, dtype=np.int64)
        at = np.clip(np.searchsorted(self.ids, ids), 0, max(len(self.ids) - 1, 0))
        if not len(self.ids):
            return np.full(len(ids), NO_DATE, dtype=np.int64)
        return np.where(self.ids[at] == ids, self.dates[at], NO_DATE)

    def select(self, filters: Filters) -> np.ndarray:
        """Ids (sorted) of the photos that pass ``filters``."""
        keep = np.ones(len(self.ids), dtype=bool)
        if filters.after is not None:
            keep &= self.dates >= _seconds(datetime.combine(filters.after, time.min))
        if filters.before is not None:
            keep &= (self.dates < _seconds(datetime.combine(filters.before + timedelta(days=1), time.min))) & (
                self.dates != NO_DATE)
        if filters.camera:
            needle = filters.camera.lower().strip()
            keep &= np.isin(self.camera_codes, [i for i, c in enumerate(self.cameras) if needle in c])
        if filters.folder:
            folder = filters.folder.rstrip(os.sep)
            keep &= np.isin(self.dir_codes, [i for i, d in enumerate(self.dirs) if is_under(d, [folder], or_equal=True)])
        if filters.types:
            keep &= np.isin(self.type_codes, [i for i, t in enumerate(self.types) if t in filters.types])
        if filters.orientation == "landscape":
            keep &= self.widths > self.heights
        elif filters.orientation == "portrait":
            keep &= self.heights > self.widths
        elif filters.orientation == "square":
            keep &= self.widths == self.heights
        if filters.min_pixels:
            keep &= self.widths * self.heights >= filters.min_pixels
        for tag in filters.tags:
            keep &= np.isin(self.ids, self.tags.get(tag, np.zeros(0, np.int64)), assume_unique=True)
        return self.ids[keep]


def _seconds(value: datetime | None) -> int:
    if value is None:
        return NO_DATE
    return int((value - datetime(1970, 1, 1)).total_seconds())


def _codes(values) -> tuple[np.ndarray, list]:
    index: dict = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int32)
    return codes, list(index)
