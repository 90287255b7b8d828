"""Near-duplicates: quality on the demo photos plus edited copies, and cost at 100,000 photos.

    python bench/duplicates.py                    # both parts
    python bench/duplicates.py --skip scale       # quality only (about a minute)
    python bench/duplicates.py --skip quality --sizes 25000,50000,100000

Quality: the 34 demo photos and four edited copies of each (tests/helpers.make_edited_copies: crop
keeping 70%, half size at JPEG quality 20, mirrored + 30% brighter, rotated 5 degrees) indexed with the
bundled offline encoder, grouped at the default threshold. Precision and recall are over pairs of
photos: a pair is "found" when both are in one group, "true" when both come from one demo photo.
Also: the visual check's margin (fewest matched points of a true pair that was checked, most of a
false one) and its cost per photo and per pair.

Scale: N synthetic photo-like vectors (bench/synthetic.py; 512-d) with 1% planted near-copies (cosine
about 0.97 to their original), each size in a fresh process: the time and the peak memory added by
finding candidate pairs (FAISS k-NN, IVF above EXACT_UP_TO photos) and grouping them, and the share of
planted copies found. The visual check is not part of it (no image files): its cost is the measured
cost per pair times the candidate pairs, reported beside it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))


def quality() -> dict:
    from helpers import make_edited_copies

    from photoseek.encoders import load_encoder
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher
    from photoseek.search import duplicates as d
    from photoseek.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="bench-dups-"))
    try:
        copies = make_edited_copies(ROOT / "data" / "samples", work / "photos")
        origin = {name: original for original, made in copies.items() for name in [original, *made]}
        settings = Settings(index_dir=work / "index", decode_workers=1)
        encoder = load_encoder("offline")
        Indexer(settings.index_dir, settings, show_progress=False).run([work / "photos"], encoder=encoder)
        searcher = Searcher(settings.index_dir, settings, encoder=encoder)
        finder = d.DuplicateFinder(searcher)
        report = finder.find(None)
        again = time.perf_counter()
        finder.find(0.55)  # a new threshold: features and checked pairs are reused
        moved = time.perf_counter() - again

        name = {p.id: Path(p.path).name for g in report.groups for p in g.photos}
        found = {frozenset((name[a.id], name[b.id])) for g in report.groups for a, b in combinations(g.photos, 2)}
        true = {frozenset(pair) for original, made in copies.items() for pair in combinations([original, *made], 2)}
        tp = len(found & true)

        # The visual check's margin over every candidate pair at the default threshold, and its cost.
        with searcher.catalogue.engine.connect() as conn:
            ids, vectors = next(searcher.catalogue.iter_embeddings(conn))
        pairs, _ = d.candidate_pairs(ids, vectors, report.threshold)
        paths = {i: searcher.file_path(int(i)) for i in ids}
        started = time.perf_counter()
        prints = {i: d.fingerprint_file(paths[i]) for i in ids}
        per_photo = (time.perf_counter() - started) / len(ids)
        started = time.perf_counter()
        for a, b in pairs.tolist():
            d.matched_points(prints[a], prints[b])
        per_pair = (time.perf_counter() - started) / max(1, len(pairs))
        # The margin: exact counts (no early exit) for every candidate pair, and for every copy with its original.
        points = [(d.matched_points(prints[a], prints[b], exact=True), origin[paths[a].name] == origin[paths[b].name])
                  for a, b in pairs.tolist()]
        by_name = {paths[i].name: i for i in ids}
        to_original = [d.matched_points(prints[by_name[c]], prints[by_name[o]], exact=True)
                       for o, made in copies.items() for c in made]
        # Cosines of the truth, for the threshold's margin.
        sims = vectors @ vectors.T
        row = {int(i): k for k, i in enumerate(ids)}
        true_cos = [float(sims[row[a], row[b]]) for a, b in combinations(ids.tolist(), 2)
                    if origin[paths[a].name] == origin[paths[b].name]]
        searcher.close()
        return {
            "encoder": report.model_id, "photos": report.photos, "threshold": report.threshold,
            "groups": len(report.groups), "true_groups": len(copies),
            "pair_precision": round(tp / len(found), 4) if found else None,
            "pair_recall": round(tp / len(true), 4),
            "candidate_pairs": report.candidate_pairs, "verified_pairs": report.verified_pairs,
            "seconds_first_run": round(report.seconds, 2), "seconds_new_threshold": round(moved, 2),
            "min_points_copy_to_original": min(to_original),
            "min_points_true_candidate_pair": min(p for p, same in points if same),
            "max_points_false_candidate_pair": max((p for p, same in points if not same), default=0),
            "min_points_needed": d.MIN_MATCHED_POINTS,
            "lowest_cosine_same_picture": round(min(true_cos), 3),
            "ms_per_photo_features": round(per_photo * 1000, 2), "ms_per_pair_check": round(per_pair * 1000, 2),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM) since it was last reset."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak starts again from the current RSS


def _vectors(n: int, path: Path) -> None:
    """``n`` photo-like vectors, the last 1% near-copies of others (cosine ~0.97), saved to ``path``."""
    from synthetic import photo_like_vectors

    dim = 512
    rng = np.random.default_rng(7)
    originals = photo_like_vectors(n - n // 100, dim)
    planted = rng.choice(len(originals), n // 100, replace=False)
    noise = rng.standard_normal((len(planted), dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = originals[planted] + 0.25 * noise
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    np.save(path, np.concatenate([originals, copies.astype(np.float32)]))
    np.save(path.with_suffix(".planted.npy"), planted)


def _scale_one(n: int, threshold: float, path: Path, queue) -> None:
    from photoseek.search import duplicates as d

    import faiss  # noqa: F401  (loaded before the baseline: its code is no part of the grouping's memory)

    vectors = np.load(path)  # the vectors as an index holds them: the baseline
    planted = np.load(path.with_suffix(".planted.npy"))
    originals = vectors[:n - n // 100]
    ids = np.arange(1, n + 1, dtype=np.int64)
    _reset_peak()
    before = _peak_mb()
    started = time.perf_counter()
    pairs, _ = d.candidate_pairs(ids, vectors, threshold)
    search_s = time.perf_counter() - started
    started = time.perf_counter()
    groups = d.connected_components(map(tuple, pairs.tolist()))
    group_s = time.perf_counter() - started
    after = _peak_mb()
    rcm = d.check_order(pairs)
    in_id_order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    wanted = {(int(ids[o]), int(ids[len(originals) + k])) for k, o in enumerate(planted)}
    found = {tuple(p) for p in pairs.tolist()}
    queue.put({
        "photos": n, "threshold": threshold, "index": "exact" if n <= d.EXACT_UP_TO else "IVF",
        "candidate_pairs": len(pairs), "pairs_per_photo": round(len(pairs) / n, 2),
        "candidate_seconds": round(search_s, 2), "grouping_seconds": round(group_s, 2),
        "groups_if_all_verified": len(groups),
        "vectors_mb": round(vectors.nbytes / 2**20, 1), "peak_mb_added": round(after - before, 1),
        "planted_copies_found": round(len(wanted & found) / len(wanted), 4),
        "photos_in_pairs": int(len(np.unique(pairs))),
        "decodes_in_check_order": _decodes(pairs[rcm], d.FINGERPRINT_CACHE),
        "decodes_in_id_order": _decodes(pairs[in_id_order], d.FINGERPRINT_CACHE),
    })


def _decodes(pairs: np.ndarray, cache_size: int) -> int:
    """How many photos the visual check would decode, checking ``pairs`` in this order with an LRU
    feature cache of ``cache_size`` photos (as DuplicateFinder keeps)."""
    from collections import OrderedDict

    cache: OrderedDict = OrderedDict()
    misses = 0
    for a, b in pairs.tolist():
        for x in (a, b):
            if x in cache:
                cache.move_to_end(x)
            else:
                misses += 1
                cache[x] = None
                if len(cache) > cache_size:
                    cache.popitem(last=False)
    return misses


def scale(sizes: list[int], threshold: float) -> list[dict]:
    out = []
    work = Path(tempfile.mkdtemp(prefix="bench-dups-"))
    for n in sizes:
        path = work / f"v{n}.npy"
        _vectors(n, path)
        queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=_scale_one, args=(n, threshold, path, queue))
        proc.start()
        out.append(queue.get())
        proc.join()
        print(json.dumps(out[-1]), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", action="append", default=[], choices=["quality", "scale"])
    parser.add_argument("--sizes", default="25000,50000,100000")
    parser.add_argument("--threshold", type=float, default=0.8, help="for the synthetic vectors (CLIP's default)")
    args = parser.parse_args()
    if "quality" not in args.skip:
        print(json.dumps(quality()), flush=True)
    if "scale" not in args.skip:
        scale([int(s) for s in args.sizes.split(",")], args.threshold)


if __name__ == "__main__":
    main()
