"""Run the image tower on several batches at once, one thread each.

The indexer's decode processes and its model share the cores, with nobody waiting for
anybody: decoding and inference used to take turns (decoders paused while the model ran),
and letting them overlap is what made indexing faster (README, Benchmarks). Each batch
runs on one thread because one torch call spread over every core meets at a barrier
after each operation, so a decoder holding a core for a time slice holds up all of its
threads; single-thread calls have no barrier. On the 2-core benchmark machine two
single-thread calls also run the image tower alone ~10% faster than one 2-thread call
(bench/model_speed.py measures both and takes the faster as the limit); whole indexing
runs differ by less than the machine's noise (bench/ablation.py).

Batches come back in the order they went in, so the indexer writes its checkpoints in
that order too. :class:`BatchSizes` shares a run's last photos evenly among the threads, so that
they finish together rather than one running a full batch while the others wait.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class InferencePool(Generic[T]):
    """``submit(tag, pixels)`` runs ``embed(pixels)`` in one of ``workers`` threads;
    ``ready()`` / ``drain()`` give back ``(tag, embeddings)`` in submission order.

    At most ``workers`` batches run at once, and at most twice that many are held: ``submit``
    waits until a thread is free (not for the oldest batch: a thread done with a short batch takes
    the next at once) and returns the batches finished in order meanwhile, so memory stays bounded
    and the caller's loop is the one place where results are written.
    """

    def __init__(self, embed: Callable[[np.ndarray], np.ndarray], workers: int):
        self.embed = embed
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="photoseek-embed")
        self._in_flight: deque[tuple[T, Future]] = deque()

    def submit(self, tag: T, pixels: np.ndarray) -> list[tuple[T, np.ndarray]]:
        finished = []
        while True:
            finished += self.ready()
            running = [future for _, future in self._in_flight if not future.done()]
            if len(running) < self.workers and len(self._in_flight) < 2 * self.workers:
                break
            wait(running, return_when=FIRST_COMPLETED)
        self._in_flight.append((tag, self._pool.submit(self.embed, pixels)))
        return finished + self.ready()

    def ready(self) -> list[tuple[T, np.ndarray]]:
        """The batches at the front of the queue that have finished (without waiting)."""
        finished = []
        while self._in_flight and self._in_flight[0][1].done():
            finished.append(self._pop())
        return finished

    def drain(self) -> list[tuple[T, np.ndarray]]:
        return [self._pop() for _ in range(len(self._in_flight))]

    def _pop(self) -> tuple[T, np.ndarray]:
        tag, future = self._in_flight.popleft()
        return tag, future.result()

    def close(self) -> None:
        """Wait for what is running (a batch cannot be interrupted) and discard its results."""
        for _, future in self._in_flight:
            future.cancel()
        self._in_flight.clear()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> InferencePool[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BatchSizes:
    """How many photos the next batch takes: ``batch_size``, until the photos left (``total``, less
    those :meth:`taken`: batched or skipped) fit in one batch per thread; from then on, half (one
    share per thread) of what is left, but at least ``MIN_TAIL_BATCH``. The pool gives each batch to
    whichever thread is free, so the last photos go out in ever smaller batches to the threads as they
    finish, and the threads finish together. Full batches to the end left one thread running the last
    full batch while another, done with a short one, had nothing to do: seconds of a core at the end
    of every run, and a small run (20 new photos) on one thread only."""

    def __init__(self, total: int, workers: int, batch_size: int):
        self.left, self.workers, self.batch_size = total, max(1, workers), max(1, batch_size)

    def taken(self, photos: int) -> None:
        self.left -= photos

    def target(self) -> int:
        share = -(-self.left // self.workers)  # ceil
        return min(self.batch_size, max(MIN_TAIL_BATCH, share))


MIN_TAIL_BATCH = 4  # smaller calls cost the model more per photo than the idle core they save
