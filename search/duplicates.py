"""Near-duplicate photos: bursts, resized or re-encoded copies, light edits, crops.

Two stages, because embeddings alone do not separate copies from different photos of the same kind
of thing with every encoder (measured with the bundled offline encoder: two edited copies of one photo
sat at cosine 0.68 while two different fish photos sat at 0.9999; see README, "Near-duplicates"):

1. **Candidates** from the index embeddings: each photo's ``NEIGHBOURS`` nearest photos at or above
   the threshold (cosine), found with FAISS over the vectors in memory (exact up to
   ``EXACT_UP_TO`` photos, IVF above). Memory and the number of pairs are linear in the photos
   (at most ``NEIGHBOURS`` per photo); no all-pairs matrix is ever made.
2. **Verification** of each candidate pair by a visual check robust to crop, resize, JPEG, mirroring,
   brightness and small rotations: ORB local features (OpenCV) of both photos, matched with Lowe's
   ratio test, then a RANSAC similarity transform (rotation, scale, shift); the pair is the same
   picture when at least ``MIN_MATCHED_POINTS`` distinct points agree on one transform of plausible
   scale. The mirrored photo is tried too.

Verified pairs are joined into groups (connected components: a chain of copies is one group), and
each group suggests one photo to keep: the largest resolution, then the earliest taken, then the
first indexed, with the reason. Nothing here writes, moves or deletes a file: it only reads.

Invariants: a group has at least two photos and every photo is in at most one group; groups are
listed largest first; the keeper is the group's first photo.
"""

from __future__ import annotations

import csv
import io
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np

from photoseek.errors import BadInput

if TYPE_CHECKING:
    from photoseek.search.engine import Photo, Searcher

MIN_THRESHOLD = 0.5
MAX_THRESHOLD = 1.0
# Default thresholds per encoder family, in that encoder's cosine scale. Offline: edited copies of
# one demo photo went down to 0.68 from each other (bench/duplicates.py), so 0.6 leaves a margin;
# the visual check keeps the precision. CLIP: not measurable here (no weights); copies of a
# photo usually sit above 0.9 with CLIP models, so 0.8 is a conservative floor.
DEFAULT_THRESHOLDS = {"offline": 0.6, "clip": 0.8}
NEIGHBOURS = 16  # candidates per photo; a copy needs one verified link to any photo of its group
EXACT_UP_TO = 20_000  # above this many photos the candidates come from an IVF index
QUERY_BATCH = 4_096  # photos searched at once: bounds the result buffers
FEATURE_SIDE = 384  # photos are checked at this many pixels on the long side
ORB_FEATURES = 400  # matching costs features squared; 300 still separated the demo cases
RATIO = 0.8  # Lowe's ratio test
RANSAC_PIXELS = 5.0  # reprojection error (pixels at FEATURE_SIDE) for a point to agree
MIN_MATCHED_POINTS = 12  # same picture from here on (demo: a copy with its original >= 24, different photos <= 5)
POINT_CELL = 4.0  # points closer than this (pixels) count once: ORB finds one corner at several scales
FINGERPRINT_CACHE = 4_096  # photos whose features are kept between runs (about 40 KB each)
PAIR_CACHE = 200_000  # pairs whose check is kept, so moving the threshold re-checks only new pairs
RESULT_CACHE = 8

ReasonCode = Literal["largest_resolution", "earliest_taken", "first_indexed"]


class BadThreshold(BadInput):
    kind = "bad_threshold"


def check_threshold(value: float | None, name: str = "threshold") -> float | None:
    """``value`` if it is a usable threshold (a cosine between MIN_THRESHOLD and 1), None for None."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not MIN_THRESHOLD <= value <= MAX_THRESHOLD:
        raise BadThreshold(f"{name} must be a number from {MIN_THRESHOLD} to {MAX_THRESHOLD} (how similar two photos' "
                           f"embeddings must be, as a cosine, to be compared); got {value!r}")
    return float(value)


def default_threshold(model_id: str | None) -> float:
    """The default for the encoder that built the index (its cosine scale)."""
    family = "offline" if (model_id or "").startswith("offline") else "clip"
    return DEFAULT_THRESHOLDS[family]


# -- grouping (pure) ---------------------------------------------------------------------------

def connected_components(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """The groups that ``pairs`` join (union-find with path halving): each group sorted, groups in
    order of their smallest member. Only ids in some pair appear."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return [sorted(g) for _, g in sorted(groups.items())]


@dataclass(frozen=True)
class Keeper:
    photo_id: int
    reason: ReasonCode
    reason_text: str


def _pixels(p: Photo) -> int:
    return p.width * p.height


def _when(p: Photo) -> datetime | None:
    """When the photo was taken: EXIF, else the file's date (what filters use too)."""
    return p.taken_at or p.photo_date


def suggest_keeper(photos: Sequence[Photo]) -> Keeper:
    """The photo to keep: the largest resolution, then the earliest taken, then the first indexed."""
    if not photos:
        raise ValueError("a group has photos")
    most = max(_pixels(p) for p in photos)
    largest = [p for p in photos if _pixels(p) == most]
    if len(largest) == 1:
        p = largest[0]
        runner_up = max(_pixels(q) for q in photos if q is not p)
        return Keeper(p.id, "largest_resolution",
                      f"largest resolution: {p.width} x {p.height} ({most / 1e6:.2f} MP; the next is "
                      f"{runner_up / 1e6:.2f} MP)")
    dated = [p for p in largest if _when(p) is not None]
    if dated:
        first = min(_when(p) for p in dated)
        earliest = [p for p in dated if _when(p) == first]
        if len(earliest) == 1:
            p = earliest[0]
            source = "EXIF" if p.taken_at is not None else "file date"
            return Keeper(p.id, "earliest_taken",
                          f"taken earliest ({first:%Y-%m-%d %H:%M:%S}, {source}) of the {len(largest)} photos at "
                          f"the largest resolution ({p.width} x {p.height})")
        largest = earliest
    p = min(largest, key=lambda q: q.id)
    return Keeper(p.id, "first_indexed",
                  f"first indexed (id {p.id}) of {len(largest)} photos with the same resolution "
                  f"({p.width} x {p.height}) and date")


@dataclass(frozen=True)
class DuplicateGroup:
    photos: tuple[Photo, ...]  # the keeper first, then by id
    keeper: Keeper
    pairs: tuple[tuple[int, int, float, int], ...]  # verified (a, b, cosine, matched points) inside the group


@dataclass(frozen=True)
class DuplicateReport:
    threshold: float
    default_threshold: float
    model_id: str | None
    photos: int  # in the index
    candidate_pairs: int
    verified_pairs: int
    unreadable: tuple[int, ...]  # photo ids whose files could not be read or decoded (not compared)
    groups: tuple[DuplicateGroup, ...]
    seconds: float
    generation: int = 0

    @property
    def duplicates(self) -> int:
        """Photos that are not their group's keeper."""
        return sum(len(g.photos) - 1 for g in self.groups)


def make_groups(pairs: Sequence[tuple[int, int, float, int]], photos: dict[int, Photo]) -> list[DuplicateGroup]:
    """Groups from verified pairs (a, b, cosine, matched points), keeper first, largest group first.
    Pairs with a photo that is no longer in ``photos`` (removed since) are left out."""
    pairs = [p for p in pairs if p[0] in photos and p[1] in photos]
    groups = []
    for members in connected_components((a, b) for a, b, _, _ in pairs):
        keeper = suggest_keeper([photos[i] for i in members])
        ordered = [photos[keeper.photo_id]] + [photos[i] for i in members if i != keeper.photo_id]
        inside = set(members)
        groups.append(DuplicateGroup(tuple(ordered), keeper,
                                     tuple(p for p in pairs if p[0] in inside)))
    groups.sort(key=lambda g: (-len(g.photos), g.keeper.photo_id))
    return groups


# -- stage 1: candidates from embeddings -------------------------------------------------------

def candidate_pairs(ids: np.ndarray, vectors: np.ndarray, threshold: float, k: int = NEIGHBOURS,
                    exact_up_to: int = EXACT_UP_TO) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (n x 2 ids, smaller first, unique) of photos among each other's ``k`` nearest at or above
    ``threshold``, with their cosines. Memory is O(n k): photos are searched ``QUERY_BATCH`` at a time."""
    import faiss

    n = len(ids)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if n <= exact_up_to:
        index = faiss.IndexFlatIP(dim)
    else:
        # Near-duplicates are each other's nearest neighbours, so a few small clusters visited find them
        # (measured on 100,000 photo-like vectors: 99.999% of the exact 16 nearest, bench/duplicates.py).
        lists = max(1, n // 50)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        # Ten photos a cluster train it: k-means costs sample x clusters, which must not grow as n squared.
        index.cp.min_points_per_centroid = 5
        index.train(vectors[rng.choice(n, size=min(n, 10 * lists), replace=False)])
        index.nprobe = 4
    index.add(vectors)
    k = min(k + 1, n)  # a photo finds itself first
    found_a, found_b, found_s = [], [], []
    for start in range(0, n, QUERY_BATCH):
        scores, rows = index.search(vectors[start:start + QUERY_BATCH], k)
        me = np.arange(start, start + len(rows))[:, None]
        keep = (rows >= 0) & (rows != me) & (scores >= threshold)
        a = np.broadcast_to(me, rows.shape)[keep]
        b = rows[keep]
        found_a.append(np.minimum(a, b))
        found_b.append(np.maximum(a, b))
        found_s.append(scores[keep])
    a, b, s = np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_s)
    pairs, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
    return ids[pairs], s[first].astype(np.float32)


# -- stage 2: visual verification -------------------------------------------------------------

@dataclass(frozen=True)
class Fingerprint:
    """ORB keypoints (x, y at FEATURE_SIDE) and descriptors of a photo and of its mirror image."""

    points: np.ndarray
    descriptors: np.ndarray | None
    mirrored_points: np.ndarray
    mirrored_descriptors: np.ndarray | None


def fingerprint_image(gray: np.ndarray) -> Fingerprint:
    """Features of an 8-bit grayscale image already scaled to about FEATURE_SIDE."""
    import cv2

    orb = cv2.ORB_create(nfeatures=ORB_FEATURES)

    def features(img):
        keypoints, descriptors = orb.detectAndCompute(img, None)
        points = np.float32([kp.pt for kp in keypoints]).reshape(-1, 2)
        return points, descriptors

    points, descriptors = features(gray)
    mirrored_points, mirrored_descriptors = features(np.ascontiguousarray(gray[:, ::-1]))
    return Fingerprint(points, descriptors, mirrored_points, mirrored_descriptors)


def fingerprint_file(path: Path) -> Fingerprint:
    """Features of the photo at ``path`` (decoded small and upright); raises DecodeError."""
    from photoseek.imaging import open_image, read_file

    img, _ = open_image(read_file(path), draft_size=FEATURE_SIDE)
    img.thumbnail((FEATURE_SIDE, FEATURE_SIDE))
    return fingerprint_image(np.asarray(img.convert("L")))


def _agreeing_points(pa: np.ndarray, da, pb: np.ndarray, db, exact: bool = False) -> int:
    import cv2

    if da is None or db is None or len(da) < 2 or len(db) < 2:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    good = [m[0] for m in matcher.knnMatch(da, db, k=2) if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < (3 if exact else MIN_MATCHED_POINTS):  # too few to agree, whatever the transform: skip RANSAC
        return 0 if exact else len(good)  # (an upper bound: enough to decide)
    src = pa[[g.queryIdx for g in good]]
    dst = pb[[g.trainIdx for g in good]]
    transform, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                     ransacReprojThreshold=RANSAC_PIXELS)
    if transform is None or inliers is None:
        return 0
    # A transform that shrinks one photo to a spot (or blows it up) is no copy: every point "agrees".
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    if not 0.2 <= scale <= 5.0:
        return 0
    mask = inliers.ravel().astype(bool)
    distinct = lambda pts: len(np.unique(np.round(pts / POINT_CELL), axis=0))  # noqa: E731
    return min(distinct(src[mask]), distinct(dst[mask]))


def matched_points(a: Fingerprint, b: Fingerprint, exact: bool = False) -> int:
    """How many distinct points of ``a`` and ``b`` (or of ``a`` mirrored) agree on one similarity transform.
    Below MIN_MATCHED_POINTS the count may be an upper bound (enough to decide) unless ``exact``."""
    straight = _agreeing_points(a.points, a.descriptors, b.points, b.descriptors, exact)
    if straight >= MIN_MATCHED_POINTS and not exact:
        return straight
    return max(straight, _agreeing_points(a.mirrored_points, a.mirrored_descriptors, b.points, b.descriptors, exact))


def check_order(pairs: np.ndarray) -> np.ndarray:
    """An order of ``pairs`` in which each photo's pairs come close together, so its features are used
    while still cached: photos numbered by reverse Cuthill-McKee (neighbours get near numbers), pairs by
    the later of their two numbers. In id order a photo's partners would be anywhere."""
    if not len(pairs):
        return np.zeros(0, np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    photos, flat = np.unique(pairs, return_inverse=True)
    a, b = flat.reshape(-1, 2).T
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(len(photos), len(photos))).tocsr()
    position = np.empty(len(photos), np.int64)
    position[reverse_cuthill_mckee(graph, symmetric_mode=False)] = np.arange(len(photos))
    pa, pb = position[a], position[b]
    return np.lexsort((np.minimum(pa, pb), np.maximum(pa, pb)))


# -- putting it together -----------------------------------------------------------------------

class _Lru:
    """A bounded cache, safe to use from the verification threads."""

    def __init__(self, size: int):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key, default=None):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return default

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


@dataclass
class DuplicateFinder:
    """Finds duplicate groups in one searcher's index; keeps photos' features and recent reports
    (for the page's threshold control). Thread-safe: one computation at a time."""

    searcher: Searcher
    _fingerprints: _Lru = field(default_factory=lambda: _Lru(FINGERPRINT_CACHE))
    _pairs: _Lru = field(default_factory=lambda: _Lru(PAIR_CACHE))
    _reports: _Lru = field(default_factory=lambda: _Lru(RESULT_CACHE))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def find(self, threshold: float | None = None) -> DuplicateReport:
        threshold = check_threshold(threshold)
        searcher = self.searcher
        searcher.refresh()
        model_id = searcher.model_id
        if threshold is None:
            threshold = default_threshold(model_id)
        with self._lock:
            with searcher.catalogue.engine.connect() as conn:
                generation = searcher.catalogue.generation(conn)
            cached = self._reports.get((generation, threshold))
            if cached is not None:
                return cached
            report = self._find(threshold, model_id, generation)
            self._reports.put((generation, threshold), report)
            return report

    def _find(self, threshold: float, model_id: str | None, generation: int) -> DuplicateReport:
        started = time.perf_counter()
        catalogue = self.searcher.catalogue
        with catalogue.engine.connect() as conn:
            parts = [part for part in catalogue.iter_embeddings(conn) if len(part[0])]
        ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        vectors = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 1), np.float32)
        del parts
        pairs, cosines = candidate_pairs(ids, vectors, threshold)
        del vectors
        verified, unreadable = self._verify(pairs, cosines)
        involved = sorted({i for a, b, _, _ in verified for i in (a, b)})
        photos = self.searcher.photos(involved)
        groups = make_groups(verified, photos)
        return DuplicateReport(threshold=threshold, default_threshold=default_threshold(model_id), model_id=model_id,
                               photos=len(ids), candidate_pairs=len(pairs), verified_pairs=len(verified),
                               unreadable=tuple(sorted(unreadable)), groups=tuple(groups),
                               seconds=time.perf_counter() - started, generation=generation)

    def _fingerprint(self, image_id: int) -> tuple[tuple, Fingerprint] | None:
        """(the file's identity, its features), or None when it cannot be read."""
        from photoseek.imaging import DecodeError

        path = self.searcher.file_path(image_id)
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (image_id, str(path), st.st_size, st.st_mtime_ns)  # a changed file is looked at again
        found = self._fingerprints.get(key)
        if found is None:
            try:
                found = fingerprint_file(path)
            except DecodeError:
                return None
            self._fingerprints.put(key, found)
        return key, found

    def _verify(self, pairs: np.ndarray, cosines: np.ndarray) -> tuple[list[tuple[int, int, float, int]], set[int]]:
        import cv2

        cv2.setNumThreads(1)  # parallel over pairs instead
        order = check_order(pairs)
        unreadable: set[int] = set()
        workers = max(1, min(4, os.cpu_count() or 1))

        this_run: dict[int, tuple[tuple, Fingerprint] | None] = {}  # each photo's file is looked up once per run

        def fingerprint(image_id: int) -> tuple[tuple, Fingerprint] | None:
            if image_id not in this_run:
                this_run[image_id] = self._fingerprint(image_id)
            return this_run[image_id]

        def check(row: int):
            a, b = int(pairs[row, 0]), int(pairs[row, 1])
            fa, fb = fingerprint(a), fingerprint(b)
            for image_id, fp in ((a, fa), (b, fb)):
                if fp is None:
                    unreadable.add(image_id)
            if fa is None or fb is None:
                return None
            points = self._pairs.get((fa[0], fb[0]))
            if points is None:
                points = matched_points(fa[1], fb[1])
                self._pairs.put((fa[0], fb[0]), points)
            return (a, b, float(cosines[row]), points) if points >= MIN_MATCHED_POINTS else None

        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(check, order.tolist(), chunksize=64))
        return [r for r in results if r is not None], unreadable


_finders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_finders_lock = threading.Lock()


def finder_for(searcher: Searcher) -> DuplicateFinder:
    """The finder of ``searcher`` (one per searcher, so its caches serve repeated requests; it goes
    with the searcher)."""
    with _finders_lock:
        finder = _finders.get(searcher)
        if finder is None:
            finder = _finders[searcher] = DuplicateFinder(weakref.proxy(searcher))
        return finder


def find_duplicates(searcher: Searcher, threshold: float | None = None) -> DuplicateReport:
    """Groups of near-duplicate photos in ``searcher``'s index (see the module's docstring)."""
    return finder_for(searcher).find(threshold)


# -- export ------------------------------------------------------------------------------------

CSV_COLUMNS = ("group", "keep", "photo_id", "path", "width", "height", "size_bytes", "date", "date_source",
               "reason")


def to_csv(report: DuplicateReport) -> str:
    """One row per photo in a group; ``keep`` is ``yes`` for the suggested keeper (whose row carries the
    reason). Dates are RFC 3339 with their offset."""
    from photoseek.times import as_utc

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for number, group in enumerate(report.groups, 1):
        for photo in group.photos:
            keep = photo.id == group.keeper.photo_id
            when = as_utc(photo.photo_date)
            writer.writerow([number, "yes" if keep else "no", photo.id, photo.path, photo.width, photo.height,
                             photo.size_bytes, when.isoformat() if when else "", photo.date_source or "",
                             group.keeper.reason_text if keep else ""])
    return out.getvalue()
