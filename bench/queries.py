"""Query latency over a large index: in process (the Searcher) and over HTTP (``photoseek serve``).

Kinds of query:
* text, new: a query not seen before, so the text tower runs;
* text, repeated: a query asked before, so its embedding comes from the cache;
* image: reverse image search with a full-size photo upload (decode + image tower);
* similar: "more like this" for an indexed photo (no model at all).

Every kind ends in the same FAISS search over all vectors plus one SQL query for the page.
"""

from __future__ import annotations

import itertools
import os
import queue
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from photoseek.search.query import Filters, SearchRequest, Term
from synthetic import SYNTHETIC_START, text_like_queries
from sysmon import OthersMeter, TreeSampler

PAGE = 24

_SUBJECTS = ["a dog", "a cat", "two kids", "an old man", "a red car", "a bicycle", "a sailboat", "a horse",
             "a bowl of soup", "a birthday cake", "a mountain lake", "a city street", "a lighthouse", "a bridge",
             "a field of sunflowers", "a snowy forest", "a beach", "a waterfall", "a guitar", "a cup of coffee"]
_CONTEXTS = ["at sunset", "in the rain", "at night", "in winter", "from above", "in black and white",
             "on a sunny day", "in the fog", "close up", "with friends"]


def text_queries(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct, plausible queries."""
    combos = [f"{s} {c}" for s, c in itertools.product(_SUBJECTS, _CONTEXTS)] + list(_SUBJECTS)
    random.Random(seed).shuffle(combos)
    out = combos[:n]
    i = 0
    while len(out) < n:  # more than we have templates for: number them
        out.append(f"{combos[i % len(combos)]} {i}")
        i += 1
    return out


@dataclass
class Latency:
    kind: str
    where: str  # "in process" | "HTTP, 8 clients"
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_qps: float
    errors: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def summarise(kind: str, where: str, seconds: Sequence[float], wall: float, errors: int = 0) -> Latency:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if not len(ms):
        return Latency(kind, where, 0, float("nan"), float("nan"), float("nan"), float("nan"), 0.0, errors)
    return Latency(kind, where, len(ms), float(np.percentile(ms, 50)), float(np.percentile(ms, 90)),
                   float(np.percentile(ms, 99)), float(ms.mean()), len(ms) / wall if wall > 0 else 0.0, errors)


def _time_each(fn: Callable[[object], object], items: Sequence[object]) -> tuple[list[float], float]:
    out = []
    started = time.perf_counter()
    for item in items:
        t = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - t)
    return out, time.perf_counter() - started


def unique_uploads(photos: Sequence[Path], n: int) -> list[bytes]:
    """``n`` different image uploads (real photos, each made unique by trailing bytes, so no cache helps)."""
    blobs = [p.read_bytes() for p in photos]
    return [blobs[i % len(blobs)] + b"upload %d" % i for i in range(n)]


def in_process(index_dir: Path, encoder, photos: Sequence[Path], *, n_text: int, n_repeat: int, n_image: int,
               n_similar: int, n_ids: int, echo=print, where: str = "in process") -> list[Latency]:
    from photoseek.search import Searcher
    from photoseek.settings import Settings

    searcher = Searcher(index_dir, Settings(index_dir=index_dir), encoder=encoder)
    try:
        for q in ("warm-up one", "warm-up two", "warm-up three"):  # first calls allocate; not what a user sees
            searcher.search_text(q, PAGE)
        results = []
        queries = text_queries(n_text + 20)
        fresh, repeat_pool = queries[:n_text], queries[n_text:n_text + 20]
        with OthersMeter() as others:
            lat, wall = _time_each(lambda q: searcher.search_text(q, PAGE), fresh)
        results.append(summarise("text, new query", where, lat, wall))
        echo(f"  {where}: text, new query   p50 {results[-1].p50_ms:7.1f} ms (others' CPU {others.share or 0:.0%})")
        for q in repeat_pool:
            searcher.search_text(q, PAGE)
        repeats = [repeat_pool[i % len(repeat_pool)] for i in range(n_repeat)]
        lat, wall = _time_each(lambda q: searcher.search_text(q, PAGE), repeats)
        results.append(summarise("text, repeated query", where, lat, wall))
        echo(f"  {where}: text, repeated    p50 {results[-1].p50_ms:7.1f} ms")
        uploads = unique_uploads(photos, n_image + 1)
        searcher.search_image(uploads[-1], PAGE)
        lat, wall = _time_each(lambda b: searcher.search_image(b, PAGE), uploads[:n_image])
        results.append(summarise("image upload", where, lat, wall))
        echo(f"  {where}: image upload      p50 {results[-1].p50_ms:7.1f} ms")
        rng = random.Random(1)
        ids = [rng.randint(1, n_ids) for _ in range(n_similar)]
        lat, wall = _time_each(lambda i: searcher.similar(i, PAGE), ids)
        results.append(summarise("similar (by id)", where, lat, wall))
        echo(f"  {where}: similar           p50 {results[-1].p50_ms:7.1f} ms")
        for label, filters in filter_cases(n_ids):
            requests = [SearchRequest(terms=(Term(text=q),), filters=filters, limit=PAGE) for q in repeat_pool]
            for r in requests:  # texts cached: this measures the filtered search, not the text tower
                searcher.search(r)
            lat, wall = _time_each(searcher.search, [requests[i % len(requests)] for i in range(n_repeat)])
            results.append(summarise(f"text, repeated, filter keeping {label}", where, lat, wall))
            echo(f"  {where}: filter {label:>5}      p50 {results[-1].p50_ms:7.1f} ms")
        return results
    finally:
        searcher.close()


def filter_cases(n_ids: int) -> list[tuple[str, Filters]]:
    """Filters over the synthetic index (bench/synthetic.py) keeping 50%, 5% and 0.5% of its photos."""
    middle = (SYNTHETIC_START + timedelta(minutes=n_ids // 2)).date()
    return [("50%", Filters(after=middle)), ("5%", Filters(types=("heif",))), ("0.5%", Filters(types=("png",)))]


def filtered_recall(index_dir: Path, *, n_ids: int, dim: int, n_queries: int = 100, k: int = PAGE) -> dict[str, float]:
    """Share of the exact filtered top ``k`` that the index's own filtered search finds (1.0 for an
    exact index by construction; the number that matters for an IVF one)."""
    from photoseek.storage.sqlite import SqliteCatalogue
    from photoseek.store import IndexFiles, VectorStore

    files = IndexFiles(index_dir)
    catalogue = SqliteCatalogue(files.database, readonly=True)
    with catalogue.engine.connect() as conn:
        generation = catalogue.generation(conn)
        cases = [(label, catalogue.filter_ids(conn, f)) for label, f in filter_cases(n_ids)]
    store = VectorStore.load(files.vectors, dim=dim, generation=generation)
    exact = VectorStore.from_database(catalogue, dim, exact_up_to=10**9)
    catalogue.close()
    queries = text_like_queries(n_queries, n_ids, dim, seed=7)
    out = {}
    for label, allowed in cases:
        found = total = 0
        for q in queries:
            _, want = exact.search(q, k, allowed=allowed)
            _, got = store.search(q, k, allowed=allowed)
            found += len(set(want[0]) & set(got[0]))
            total += len(want[0])
        out[label] = found / total
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``photoseek serve`` on loopback, for the duration of a ``with`` block (always stopped after)."""

    def __init__(self, index_dir: Path, start_timeout: float = 180.0, env: dict[str, str] | None = None):
        self.env = env or {}
        self.index_dir = index_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.sampler: TreeSampler | None = None

    def __enter__(self) -> Server:
        import httpx

        env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEEK_")}
        env.update(self.env)
        env.update(HF_HUB_OFFLINE="1", PHOTOSEEK_HOST="127.0.0.1", PHOTOSEEK_PORT=str(self.port),
                   PHOTOSEEK_INDEX_DIR=str(self.index_dir))
        self.proc = subprocess.Popen([sys.executable, "-m", "photoseek", "serve"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.sampler = TreeSampler(self.proc.pid, interval=0.25).__enter__()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"photoseek serve exited ({self.proc.returncode}):\n{self.proc.stderr.read()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/status", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"photoseek serve did not answer within {self.start_timeout:.0f} s")
            time.sleep(0.25)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self.sampler is not None:
            self.sampler.__exit__(None, None, None)


def _concurrent(url: str, requests: Sequence[tuple[str, str, dict]], clients: int) -> tuple[list[float], float, int]:
    """Send ``requests`` (method, path, kwargs) from ``clients`` threads, each with its own keep-alive connection."""
    import httpx

    work: queue.SimpleQueue = queue.SimpleQueue()
    for r in requests:
        work.put(r)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120.0) as http:
            while True:
                try:
                    method, path, kwargs = work.get_nowait()
                except queue.Empty:
                    return
                t = time.perf_counter()
                try:
                    response = http.request(method, path, **kwargs)
                    ok = response.status_code == 200 and response.json().get("results") is not None
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - t
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - started, errors[0]


def over_http(index_dir: Path, photos: Sequence[Path], *, clients: int, n_text: int, n_repeat: int, n_image: int,
              n_similar: int, n_ids: int, echo=print) -> tuple[list[Latency], dict]:
    where = f"HTTP, {clients} clients"
    results = []
    with Server(index_dir) as server:
        import httpx

        for q in ("warm-up one", "warm-up two"):
            httpx.get(f"{server.url}/api/search", params={"q": q, "limit": PAGE}, timeout=120.0)
        queries = text_queries(n_text + 20, seed=7)
        fresh, repeat_pool = queries[:n_text], queries[n_text:n_text + 20]

        def text(q: str) -> tuple[str, str, dict]:
            return "GET", "/api/search", {"params": {"q": q, "limit": PAGE}}

        with OthersMeter() as others:
            lat, wall, errors = _concurrent(server.url, [text(q) for q in fresh], clients)
        results.append(summarise("text, new query", where, lat, wall, errors))
        echo(f"  {where}: text, new query   p50 {results[-1].p50_ms:7.1f} ms (others' CPU {others.share or 0:.0%})")
        _concurrent(server.url, [text(q) for q in repeat_pool], 1)  # each asked once before
        lat, wall, errors = _concurrent(server.url, [text(repeat_pool[i % 20]) for i in range(n_repeat)], clients)
        results.append(summarise("text, repeated query", where, lat, wall, errors))
        echo(f"  {where}: text, repeated    p50 {results[-1].p50_ms:7.1f} ms")
        # One client at a time: the cost of a request itself, without queueing behind the others.
        lat, wall, errors = _concurrent(server.url, [text(repeat_pool[i % 20]) for i in range(n_repeat // 4)], 1)
        results.append(summarise("text, repeated query", "HTTP, 1 client", lat, wall, errors))
        echo(f"  HTTP, 1 client: text, repeated    p50 {results[-1].p50_ms:7.1f} ms")
        uploads = unique_uploads(photos, n_image)
        lat, wall, errors = _concurrent(server.url, [
            ("POST", "/api/search/image", {"params": {"limit": PAGE}, "content": b,
                                           "headers": {"content-type": "image/jpeg"}}) for b in uploads], clients)
        results.append(summarise("image upload", where, lat, wall, errors))
        echo(f"  {where}: image upload      p50 {results[-1].p50_ms:7.1f} ms")
        rng = random.Random(2)
        lat, wall, errors = _concurrent(server.url, [
            ("GET", f"/api/images/{rng.randint(1, n_ids)}/similar", {"params": {"limit": PAGE}})
            for _ in range(n_similar)], clients)
        results.append(summarise("similar (by id)", where, lat, wall, errors))
        echo(f"  {where}: similar           p50 {results[-1].p50_ms:7.1f} ms")
    u = server.sampler.usage
    return results, {"server_peak_rss_mb": u.peak_rss_mb, "server_peak_pss_mb": u.peak_pss_mb}


@dataclass
class Approximate:
    """The approximate (IVF) index photoseek uses above ``exact_search_up_to`` photos, measured on
    the same vectors as the exact one: what a search costs, and how many of the exact top results
    it finds (recall@k)."""

    lists: int
    probes: int
    search_ms_exact: float  # the vector search alone, p50, one query at a time
    search_ms_approximate: float
    recall_text: float  # text-like queries (see synthetic.text_like_queries)
    recall_similar: float  # "more like this" for stored photos
    probe_sweep: dict[int, tuple[float, float]]  # lists visited -> (text recall, search ms p50)

    def as_dict(self) -> dict:
        return asdict(self)


def approximate_vs_exact(exact_dir: Path, approximate_dir: Path, *, n_ids: int, dim: int, n_queries: int = 200,
                         k: int = PAGE) -> Approximate:
    from synthetic import text_like_queries

    from photoseek.search.engine import _single_threaded_openmp
    from photoseek.store import IndexFiles, VectorStore

    def store(index_dir: Path) -> VectorStore:
        raw = VectorStore.load(IndexFiles(index_dir).vectors, dim=dim, generation=1)
        if raw is None:
            raise RuntimeError(f"no current vector file in {index_dir}")
        return raw

    exact, approx = store(exact_dir), store(approximate_dir)
    text_like = text_like_queries(n_queries, n_ids, dim)
    rng = np.random.default_rng(7)
    similar = np.stack([exact.vector(int(i)) for i in rng.integers(1, n_ids + 1, n_queries)])
    recalls, times = {}, {"exact": [], "approximate": []}
    with _single_threaded_openmp():
        for name, queries, want in (("text", text_like, k),
                                    ("similar", similar, k + 1)):
            found = 0
            for q in queries:
                t = time.perf_counter()
                _, truth = exact.search(q, want)
                times["exact"].append(time.perf_counter() - t)
                t = time.perf_counter()
                _, got = approx.search(q, want)
                times["approximate"].append(time.perf_counter() - t)
                found += len(set(truth[0].tolist()) & set(got[0].tolist()))
            recalls[name] = found / (want * len(queries))
    return Approximate(lists=approx.index.nlist, probes=approx.index.nprobe,
                       search_ms_exact=float(np.median(times["exact"]) * 1000),
                       search_ms_approximate=float(np.median(times["approximate"]) * 1000),
                       recall_text=recalls["text"], recall_similar=recalls["similar"],
                       probe_sweep=_probe_sweep(exact, approx, text_like, k))


def _probe_sweep(exact, approx, queries: np.ndarray, k: int) -> dict[int, tuple[float, float]]:
    """Text-query recall and search time when visiting 1/16, 1/8, 1/4 and 1/2 of the lists."""
    from photoseek.search.engine import _single_threaded_openmp

    truths = [set(exact.search(q, k)[1][0].tolist()) for q in queries]
    out = {}
    default = approx.index.nprobe
    try:
        with _single_threaded_openmp():
            for share in (16, 8, 4, 2):
                approx.index.nprobe = max(1, approx.index.nlist // share)
                found, times = 0, []
                for q, truth in zip(queries, truths):
                    t = time.perf_counter()
                    _, got = approx.search(q, k)
                    times.append(time.perf_counter() - t)
                    found += len(truth & set(got[0].tolist()))
                out[approx.index.nprobe] = (found / (k * len(queries)), float(np.median(times) * 1000))
    finally:
        approx.index.nprobe = default
    return out
