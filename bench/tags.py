"""Automatic tags on the demo photos, against hand labels (bench/tag_labels.py).

    python bench/tags.py [--index DIR] [--model offline]

Indexes data/samples into a fresh temporary index (or uses --index), then reports:

* tag precision / recall: each photo's tags (with the ancestors the hierarchy gives) against its
  labelled tags and their ancestors, pooled over photos, for the shipped calibration and a few others;
* broad queries ("an animal", "a vehicle", ...): precision@10 of the plain semantic search (before)
  and with the query's tag words folded into the ranking (after, search.tag_fusion). Precision@10
  counts relevant photos in the top 10 out of min(10, relevant photos), since most of these queries
  have fewer than 10 relevant demo photos; R-precision (relevant photos in the top R, R = how many
  there are) and average precision tell orderings apart that the top 10 of 34 photos does not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tag_labels import BROAD_QUERIES, PHOTO_TAGS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RULES = [(3.0, 1.0), (4.0, 1.0), (4.0, 99.0), (5.0, 1.0), (6.0, 1.0)]  # (z threshold, gap to the best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path)
    parser.add_argument("--model", default="offline")
    args = parser.parse_args()
    from photoseek.encoders import load_encoder
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher
    from photoseek.settings import Settings
    from photoseek.tags import Z_GAP, Z_THRESHOLD, choose_tags, load_vocabulary, prompts_for, tag_matrix

    index = args.index or Path(tempfile.mkdtemp(prefix="photoseek-tags-"))
    if args.index is None:
        Indexer(index, Settings(index_dir=index), show_progress=False).run([ROOT / "data" / "samples"], model=args.model)
    vocabulary = load_vocabulary()
    searcher = Searcher(index, Settings(index_dir=index))
    with searcher.catalogue.engine.connect() as conn:
        ids, vectors = next(searcher.catalogue.iter_embeddings(conn))
        names = {int(i): os.path.basename(searcher.catalogue.photo_path(conn, int(i))) for i in ids}
    encoder = load_encoder(searcher.model_id)
    matrix = tag_matrix(vocabulary, encoder.encode_texts, prompts=prompts_for(encoder), cache_key=searcher.model_id)
    scores = vectors @ matrix.T

    def closure(tags) -> set[str]:
        return set(tags).union(*(vocabulary.ancestors(t) for t in tags))

    print(f"tags on {len(ids)} demo photos ({searcher.model_id}, {len(vocabulary)} tags in the vocabulary)")
    print("| rule | precision | recall | tags per photo |\n|---|---:|---:|---:|")
    for z, gap in RULES:
        tp = fp = fn = 0
        for image_id, row in zip(ids, scores):
            got = {t for t, _, _ in choose_tags(row, vocabulary.names, vocabulary, z_threshold=z, z_gap=gap)}
            want = closure(PHOTO_TAGS[names[int(image_id)]])
            tp, fp, fn = tp + len(got & want), fp + len(got - want), fn + len(want - got)
        shipped = " (shipped)" if (z, gap) == (Z_THRESHOLD, Z_GAP) else ""
        print(f"| z >= {z:g}, within {gap:g} of the best{shipped} | {tp / max(tp + fp, 1):.2f} | {tp / (tp + fn):.2f} "
              f"| {(tp + fp) / len(ids):.1f} |")

    print("\nbroad queries, before (semantic ranking alone) -> after (tag words folded in):")
    print("| query | relevant | P@10 | R-precision | AP |\n|---|---:|---:|---:|---:|")
    totals = []
    for query, relevant in BROAD_QUERIES.items():
        row = []
        for fold in (False, True):
            searcher.settings = searcher.settings.replace(tag_words=fold)
            ranked = [os.path.basename(h.photo.path) for h in searcher.search_text(query, limit=len(ids))]
            hits = [name in relevant for name in ranked]
            p10 = sum(hits[:10]) / min(10, len(relevant))
            rprec = sum(hits[:len(relevant)]) / len(relevant)
            ap = sum(sum(hits[:k + 1]) / (k + 1) for k, h in enumerate(hits) if h) / len(relevant)
            row.append((p10, rprec, ap))
        totals.append(row)
        (a, b, c), (d, e, f) = row
        print(f"| {query} | {len(relevant)} | {a:.2f} -> {d:.2f} | {b:.2f} -> {e:.2f} | {c:.2f} -> {f:.2f} |")
    (a, b, c), (d, e, f) = np.mean(totals, axis=0)
    print(f"| **mean over {len(totals)} queries** | | **{a:.2f} -> {d:.2f}** | **{b:.2f} -> {e:.2f}** | "
          f"**{c:.2f} -> {f:.2f}** |")
    searcher.close()


if __name__ == "__main__":
    main()
