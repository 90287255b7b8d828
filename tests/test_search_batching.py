"""Concurrent text queries share one text-tower pass, and each still gets its own answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from photoseek.search.batching import Coalescer


class SlowBatchFn:
    """Records its batches; the first call holds until ``release`` is set, so others queue up."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            assert self.release.wait(10)
        return [i * 10 for i in items]


def _wait_for_queue(coalescer: Coalescer, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(coalescer._queue) < n:
        assert time.monotonic() < deadline, "callers did not queue"
        time.sleep(0.005)


def _occupy(pool: ThreadPoolExecutor, coalescer: Coalescer, fn: SlowBatchFn):
    """Submit item 0 and wait until its batch is running (and held there by ``fn``)."""
    first = pool.submit(coalescer, 0)
    while not fn.batches:
        time.sleep(0.005)
    return first


def test_lone_call_runs_at_once():
    fn = SlowBatchFn()
    fn.release.set()
    assert Coalescer(fn)(7) == 70
    assert fn.batches == [[7]]


def test_calls_arriving_while_busy_run_as_one_batch_in_order():
    fn = SlowBatchFn()
    coalescer = Coalescer(fn, max_batch=16)
    with ThreadPoolExecutor(8) as pool:
        first = _occupy(pool, coalescer, fn)
        rest = []
        for i in range(1, 8):
            rest.append(pool.submit(coalescer, i))
            _wait_for_queue(coalescer, i)  # submitted one by one, so the queue order is known
        fn.release.set()
        assert first.result(10) == 0
        assert [f.result(10) for f in rest] == [i * 10 for i in range(1, 8)]
    assert fn.batches == [[0], [1, 2, 3, 4, 5, 6, 7]]


def test_max_batch_is_respected():
    fn = SlowBatchFn()
    coalescer = Coalescer(fn, max_batch=3)
    with ThreadPoolExecutor(8) as pool:
        first = _occupy(pool, coalescer, fn)
        rest = [pool.submit(coalescer, i) for i in range(1, 8)]
        _wait_for_queue(coalescer, 7)
        fn.release.set()
        assert sorted(f.result(10) for f in [first, *rest]) == [i * 10 for i in range(8)]
    assert [len(b) for b in fn.batches] == [1, 3, 3, 1]
    assert sorted(i for b in fn.batches for i in b) == list(range(8))


def test_a_failing_batch_fails_each_of_its_calls_and_the_next_batch_works():
    calls = []

    def flaky(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("model fell over")
        return [str(i) for i in items]

    coalescer = Coalescer(flaky)
    with pytest.raises(RuntimeError, match="fell over"):
        coalescer(1)
    assert coalescer(2) == "2"


def test_concurrent_text_searches_match_sequential_ones(demo_index, offline_encoder, settings_factory):
    """Batched embeddings are the same vectors as one-at-a-time ones: same hits, same scores."""
    from photoseek.search import Searcher

    queries = ["a cat", "a cup of coffee", "a rocket", "a sea turtle", "a guitar", "a red car", "a bridge",
               "a pizza", "a dog", "a violin", "a sailboat", "a bicycle"]
    alone = Searcher(demo_index, settings_factory(demo_index), encoder=offline_encoder)
    expected = {q: [(h.photo.id, h.score) for h in alone.search_text(q, 5)] for q in queries}

    together = Searcher(demo_index, settings_factory(demo_index), encoder=offline_encoder)
    batches: list[int] = []
    encode_texts = together._encode_texts

    def counting(texts):
        batches.append(len(texts))
        return encode_texts(texts)

    together._embed_texts._batch_fn = counting
    start = threading.Barrier(len(queries))

    def search(q):
        start.wait()
        return q, [(h.photo.id, h.score) for h in together.search_text(q, 5)]

    with ThreadPoolExecutor(len(queries)) as pool:
        got = dict(pool.map(search, queries))
    for q in queries:
        assert [i for i, _ in got[q]] == [i for i, _ in expected[q]], q
        assert np.allclose([s for _, s in got[q]], [s for _, s in expected[q]], atol=1e-5), q
    assert sum(batches) == len(queries)
    assert len(batches) < len(queries)  # some queries shared a pass


def test_a_search_leaves_the_model_its_threads(demo_searcher):
    """FAISS searches on one thread; torch reads the same OpenMP setting of the calling thread,
    so a search that did not put it back would leave every later query embedded in that
    thread on a single core."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        demo_searcher.search_text("a cup of coffee", 5)
        demo_searcher.similar(1, 5)
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)
