"""Does fusing keyword matches into the ranking cost the searches by meaning anything?

    python bench/keywords.py

Indexes the demo photos (data/samples) twice with the bundled offline encoder: once as they
are, and once renamed IMG_0001.jpg, IMG_0002.jpg, ... in a folder named "camera roll" (names that
say nothing, like a camera's). Then runs bench/offline_quality.py's labelled queries through
``Searcher.search`` with keyword matching on and off and prints recall@1/5/10 and MRR for each.

Renamed, a query's words match no file: fusion must leave recall where it is. As they are, the
demo files are named for what they show ("gold_fish.jpg"), so keyword matches add what the names
say: that row shows what fusion does with descriptive names, not the encoder's quality.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.offline_quality import KS, LABELS  # noqa: E402

SAMPLES = REPO / "data" / "samples"


def index(photos: Path, index_dir: Path, encoder):
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher
    from photoseek.settings import Settings

    settings = Settings(index_dir=index_dir, decode_workers=1)
    Indexer(index_dir, settings, show_progress=False).run([photos], encoder=encoder)
    return Searcher(index_dir, settings, encoder=encoder)


def evaluate(searcher, names: dict[str, str], keywords: bool) -> dict[str, float]:
    """names: indexed file name -> demo file name."""
    from photoseek.search.query import SearchRequest, Term

    relevant: dict[str, set[str]] = {}
    for name, queries in LABELS.items():
        for q in queries:
            relevant.setdefault(q, set()).add(name)
    out = {f"R@{k}": 0.0 for k in KS} | {"MRR": 0.0}
    for query, rel in relevant.items():
        page = searcher.search(SearchRequest(terms=(Term(text=query),), limit=len(names), keywords=keywords))
        ranking = [names[h.photo.name] for h in page.hits]
        for k in KS:
            out[f"R@{k}"] += len(rel & set(ranking[:k])) / min(k, len(rel))
        first = next((i for i, n in enumerate(ranking) if n in rel), None)
        out["MRR"] += 0.0 if first is None else 1.0 / (first + 1)
    return {k: v / len(relevant) for k, v in out.items()}


def main() -> None:
    from photoseek.encoders import load_encoder

    encoder = load_encoder("offline")
    files = sorted(p.name for p in SAMPLES.iterdir() if p.name in LABELS)
    queries = {q for qs in LABELS.values() for q in qs}
    print(f"{len(LABELS)} photos, {len(queries)} labelled queries, encoder {encoder.model_id}")
    print(f"{'file names':<22}{'keywords':<10}" + "".join(f"{k:>8}" for k in [*(f'R@{k}' for k in KS), 'MRR']))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        as_they_are, renamed = tmp / "demo", tmp / "camera roll"
        as_they_are.mkdir()
        renamed.mkdir()
        neutral = {}
        for i, name in enumerate(files, start=1):
            shutil.copy(SAMPLES / name, as_they_are / name)
            new = f"IMG_{i:04d}{Path(name).suffix}"
            shutil.copy(SAMPLES / name, renamed / new)
            neutral[new] = name
        for label, photos, names in (("renamed (IMG_0001)", renamed, neutral),
                                     ("as they are", as_they_are, {n: n for n in files})):
            searcher = index(photos, tmp / f"index-{photos.name}", encoder)
            for keywords in (False, True):
                m = evaluate(searcher, names, keywords)
                print(f"{label:<22}{'on' if keywords else 'off':<10}" + "".join(f"{v:8.3f}" for v in m.values()))
            searcher.close()


if __name__ == "__main__":
    main()
