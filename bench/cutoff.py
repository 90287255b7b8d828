"""How good is the default relevance cutoff that sorting by date uses? Measured on the demo photos.

    python bench/cutoff.py              # the bundled offline encoder over data/samples (about 30 s)

Sorting by date keeps only "good matches": by default the photos whose score stands
``CUTOFF_SIGMAS`` standard deviations above the query's mean score over the whole collection
(``Searcher.cutoff_for``). For every hand-labelled query of bench/offline_quality.py this prints,
for several multiples of the standard deviation and for fixed cosine cutoffs, the share of the
query's relevant photos kept and of its irrelevant photos dropped (pooled over all queries), and
how many queries keep none of their relevant photos at all.

Only the offline encoder can be measured here: without real CLIP weights (none can be downloaded
on this machine) CLIP's scores mean nothing. The cutoff is relative to each query's own score
distribution, so it carries over to CLIP's different score scale without a new constant; a
fixed cosine cutoff would not (CLIP's text-image cosines sit near 0.2-0.35).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.offline_quality import LABELS  # noqa: E402
from photoseek.encoders import load_encoder  # noqa: E402
from photoseek.indexer import Indexer  # noqa: E402
from photoseek.search import Searcher  # noqa: E402
from photoseek.search.engine import CUTOFF_SIGMAS  # noqa: E402
from photoseek.search.query import SearchRequest, Term  # noqa: E402
from photoseek.settings import Settings  # noqa: E402

SAMPLES = REPO / "data" / "samples"
SIGMAS = (1.0, 1.5, 2.0, 2.5, 3.0)
FIXED = (0.3, 0.4, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="offline")
    args = parser.parse_args()

    queries: dict[str, set[str]] = {}
    for name, qs in LABELS.items():
        for q in qs:
            queries.setdefault(q, set()).add(name)

    with tempfile.TemporaryDirectory() as tmp:
        photos, index = Path(tmp) / "photos", Path(tmp) / "index"
        shutil.copytree(SAMPLES, photos)
        settings = Settings(index_dir=index, decode_workers=1)
        encoder = load_encoder(args.model)
        Indexer(index, settings, show_progress=False).run([photos], encoder=encoder)
        searcher = Searcher(index, settings, encoder=encoder)
        scored = {}
        for q in queries:
            page = searcher.search(SearchRequest(terms=(Term(text=q),), min_score=-1.0, limit=1000))
            scored[q] = {h.photo.name: h.score for h in page.hits}
        searcher.close()

    def rates(cutoff_of) -> tuple[float, float, int]:
        kept_relevant = relevant = dropped_irrelevant = irrelevant = lost = 0
        for q, wanted in queries.items():
            scores = scored[q]
            cut = cutoff_of(np.array(list(scores.values())))
            kept = {n for n, s in scores.items() if s >= cut}
            kept_relevant += len(kept & wanted)
            relevant += len(wanted)
            dropped_irrelevant += len(set(scores) - wanted - kept)
            irrelevant += len(set(scores) - wanted)
            lost += not (kept & wanted)
        return kept_relevant / relevant, dropped_irrelevant / irrelevant, lost

    print(f"{len(queries)} labelled queries over {len(list(SAMPLES.iterdir()))} demo photos, "
          f"model {args.model}\n")
    print("| cutoff | relevant kept | irrelevant dropped | queries left with no relevant photo |")
    print("|---|---:|---:|---:|")
    for k in SIGMAS:
        kept, dropped, lost = rates(lambda s, k=k: s.mean() + k * s.std())
        mark = " (default)" if k == CUTOFF_SIGMAS else ""
        print(f"| mean + {k:g} sd{mark} | {kept:.1%} | {dropped:.1%} | {lost} |")
    for c in FIXED:
        kept, dropped, lost = rates(lambda s, c=c: c)
        print(f"| fixed cosine {c:g} | {kept:.1%} | {dropped:.1%} | {lost} |")


if __name__ == "__main__":
    main()
