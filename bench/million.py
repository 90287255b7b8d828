"""One search server, 1,000,000 photos: the IVF-PQ store (codes in memory, float16 re-ranking from a
memory-mapped file) against the float16 IVF store, at the same size, in one run.

    python bench/million.py [--n 1000000] [--dim 512] [--queries 200]

Prints build time, the resident memory of a fresh process that loads each store and answers the
queries (measured in that process: /proc/self/status), p50/p95 latency of one query at a time on
one thread (as the server searches), and recall@10 against exact search, with and without
re-ranking, for text-like queries and "more like this" queries. The synthetic vectors are cached
under bench/results/cache (gitignored); the stores are written there too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / "results" / "cache"
K = 10


def generators():
    """bench/synthetic.py's photo-like vectors and text-like queries. That module imports the old
    ``photoseek.db`` for its SQLite writer, which this benchmark does not use: a stand-in lets it import."""
    sys.path.insert(0, str(HERE))
    if "photoseek.db" not in sys.modules:
        try:
            import photoseek.db  # noqa: F401
        except ImportError:
            sys.modules["photoseek.db"] = types.ModuleType("photoseek.db")
    from synthetic import photo_like_vectors, text_like_queries

    return photo_like_vectors, text_like_queries


def data(n: int, dim: int, n_queries: int):
    photo_like_vectors, text_like_queries = generators()
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"photo_like_{n}x{dim}.npy"
    if not path.exists():
        np.save(path, photo_like_vectors(n, dim))
    vectors = np.load(path, mmap_mode="r")
    rng = np.random.default_rng(7)
    similar = vectors[np.sort(rng.choice(n, n_queries, replace=False))] + 0.03 * rng.standard_normal((n_queries, dim))
    similar = (similar / np.linalg.norm(similar, axis=1, keepdims=True)).astype(np.float32)
    return vectors, {"text": text_like_queries(n_queries, n, dim), "similar": similar}


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids (row + 1) of the exact top ``k`` (float32), in chunks of the vectors."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), 100_000):
        s = queries @ np.asarray(vectors[start:start + 100_000]).T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        best_i = np.concatenate([best_i, top + start + 1], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def build(kind: str, vectors: np.ndarray, folder: Path) -> float:
    from photoseek.store import IndexFiles, VectorStore

    n, dim = vectors.shape
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def sample(size: int) -> np.ndarray:
        return np.asarray(vectors[np.sort(np.random.default_rng(0).choice(n, min(n, size), replace=False))])

    batches = ((np.arange(s + 1, min(n, s + 20_000) + 1), np.asarray(vectors[s:s + 20_000]))
               for s in range(0, n, 20_000))
    store = VectorStore.build(dim, n, sample, batches, exact_up_to=0, pq_above=0 if kind == "pq" else n,
                              spill_dir=folder)
    store.save(IndexFiles(folder).vectors, 1)
    return time.perf_counter() - started


def status() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) // 1024  # MB
    return fields


def serve(folder: Path, dim: int, queries_file: Path) -> None:
    """In a fresh process: load the store, answer every query one at a time, report memory and timings."""
    import faiss

    from photoseek.store import IndexFiles, VectorStore

    before = status()
    t = time.perf_counter()
    store = VectorStore.load(IndexFiles(folder).vectors, dim=dim, generation=1)
    assert store is not None
    load_s = time.perf_counter() - t
    loaded = status()
    faiss.omp_set_num_threads(1)  # one thread a query, as the server searches
    queries = np.load(queries_file)
    out = {"describe": store.describe(), "load_s": load_s, "before": before, "loaded": loaded, "runs": {}}
    for factor in ([store.rerank_factor, 0] if store.quantized else [None]):
        if factor is not None:
            store.rerank_factor = factor
        times, ids = [], []
        for q in queries:
            t = time.perf_counter()
            _, got = store.search(q, K)
            times.append(time.perf_counter() - t)
            ids.append(got[0])
        out["runs"][str(factor)] = {"ms": [x * 1000 for x in times], "ids": np.array(ids).tolist()}
    out["after"] = status()
    print(json.dumps(out))


def measure(folder: Path, dim: int, queries_file: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--serve", str(folder), "--dim", str(dim),
                           "--queries-file", str(queries_file)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200, help="of each kind (text-like, more like this)")
    ap.add_argument("--serve", type=Path)
    ap.add_argument("--queries-file", type=Path)
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve, args.dim, args.queries_file)

    t = time.perf_counter()
    vectors, queries = data(args.n, args.dim, args.queries)
    print(f"data: {args.n:,} x {args.dim}, {time.perf_counter() - t:.0f} s", flush=True)
    all_queries = np.concatenate([queries["text"], queries["similar"]])
    t = time.perf_counter()
    truth = exact_top(vectors, all_queries, K)
    print(f"exact top {K}: {time.perf_counter() - t:.0f} s", flush=True)
    queries_file = CACHE / f"million-queries-{args.n}.npy"
    np.save(queries_file, all_queries)
    kinds = {"pq": CACHE / f"million-pq-{args.n}", "ivf": CACHE / f"million-ivf-{args.n}"}
    results = {}
    for kind, folder in kinds.items():
        seconds = build(kind, vectors, folder)
        print(f"built {kind} in {seconds:.0f} s", flush=True)
        results[kind] = measure(folder, args.dim, queries_file) | {"build_s": seconds}
        files = {p.name: p.stat().st_size for p in folder.iterdir() if p.name.startswith("vectors.")}
        results[kind]["files_mb"] = {name: round(size / 2**20) for name, size in files.items()}
    n_q = args.queries
    rows = []
    for kind, r in results.items():
        for factor, run in r["runs"].items():
            got = np.array(run["ids"])
            recall = {name: np.mean([len(set(g) & set(w)) / K for g, w in zip(got[sl], truth[sl])])
                      for name, sl in (("text", slice(0, n_q)), ("similar", slice(n_q, 2 * n_q)))}
            ms = np.array(run["ms"])
            label = {"pq": f"IVF-PQ, re-ranked {factor}x" if factor != "0" else "IVF-PQ, not re-ranked",
                     "ivf": "IVF float16"}[kind]
            rows.append((label, r, recall, np.percentile(ms, 50), np.percentile(ms, 95)))
    print()
    print(f"{args.n:,} photo-like vectors, {args.dim}-d, {n_q} text-like + {n_q} 'more like this' queries, top {K}:")
    print()
    print("| store | build | files | RSS loaded (anon) | RSS after queries (anon / file-mapped) "
          "| p50 / p95 ms | recall@10 text / similar |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r, recall, p50, p95 in rows:
        print(f"| {label} | {r['build_s']:.0f} s | {', '.join(f'{k} {v} MB' for k, v in r['files_mb'].items())} "
              f"| {r['loaded']['VmRSS']} MB ({r['loaded']['RssAnon']}) "
              f"| {r['after']['VmRSS']} MB ({r['after']['RssAnon']} / {r['after']['RssFile']}) "
              f"| {p50:.1f} / {p95:.1f} | {recall['text']:.3f} / {recall['similar']:.3f} |")
    print()
    for kind, r in results.items():
        print(f"{kind}: {r['describe']}; load {r['load_s']:.1f} s; process before loading {r['before']['VmRSS']} MB")
    (HERE / "results").mkdir(exist_ok=True)
    summary = {kind: {k: v for k, v in r.items() if k != "runs"} for kind, r in results.items()}
    (HERE / "results" / f"million-{args.n}.json").write_text(json.dumps(
        {"rows": [{"store": label, "p50_ms": p50, "p95_ms": p95, "recall": recall} for label, _, recall, p50, p95 in rows],
         "stores": summary}, indent=1))


if __name__ == "__main__":
    main()
