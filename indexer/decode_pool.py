"""Decoding in worker processes, taking turns with inference in the main process.

JPEG decoding and resizing are pure CPU work that holds the GIL, so they run in
separate processes while the model runs in the parent. The number of tasks in
flight is bounded, so memory stays flat however many photos there are.

Decoders and the model must not fight over the cores: torch's threads meet at a
barrier after every operation, so a decoder that takes one core for a time slice
stalls the model on all of them. With a :class:`Gate`, the workers start no new photo
while the model runs (the indexer closes the gate around each batch), and while the
main process waits for photos or writes the database they get every core. On a
2-core machine that is 2 workers and 2 torch threads, both at full speed, in turns.

Workers run :func:`photoseek.imaging.load_photo_or_reason` on plain arguments, so
they import Pillow and NumPy only (anything from ``photoseek.indexer`` would drag
torch into every worker: seconds of start-up and hundreds of MB each).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass

from photoseek.imaging import DecodedPhoto, decode_worker_init, load_photo_or_reason


@dataclass(frozen=True)
class DecodeJob:
    path: str
    size: int
    max_pixels: int


@dataclass(frozen=True)
class DecodeResult:
    path: str
    photo: DecodedPhoto | None = None
    error: str | None = None


def decode_one(job: DecodeJob) -> DecodeResult:
    photo, error = load_photo_or_reason(job.path, job.size, job.max_pixels)
    return DecodeResult(job.path, photo=photo, error=error)


def _result(job: DecodeJob, future: Future) -> DecodeResult:
    photo, error = future.result()
    return DecodeResult(job.path, photo=photo, error=error)


def _submit(pool: ProcessPoolExecutor, job: DecodeJob) -> Future:
    # Plain arguments and a function from photoseek.imaging: nothing that makes the worker import torch.
    return pool.submit(load_photo_or_reason, job.path, job.size, job.max_pixels)


def _context():
    context = multiprocessing.get_context("forkserver")
    # Workers need only Pillow and NumPy: don't let the fork server import the caller's
    # main module (by default it does), which may pull in torch or re-run a script.
    context.set_forkserver_preload(["photoseek.imaging"])
    return context


class Gate:
    """Open: workers may start photos. Closed (``with gate.closed():``): they finish the one they
    are on and wait (at most ``photoseek.imaging.GATE_TIMEOUT`` seconds) until it opens."""

    def __init__(self):
        self.event = _context().Event()
        self.event.set()

    @contextmanager
    def closed(self):
        self.event.clear()
        try:
            yield
        finally:
            self.event.set()


def _new_pool(workers: int, context, gate: Gate | None, background: bool) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=decode_worker_init,
                               initargs=(gate.event if gate is not None else None, background, os.getpid()))


def decode_all(jobs: Iterable[DecodeJob], *, workers: int, window: int = 64, gate: Gate | None = None,
               background: bool = False) -> Iterator[DecodeResult]:
    """Decode ``jobs`` in order, ``workers`` processes wide (0 = in this process).

    ``window``: at most this many jobs in flight (submitted, not yet consumed).
    ``gate``: lets the caller pause the workers while it runs the model (see the module docstring).
    ``background``: run the workers at idle CPU priority instead (Linux SCHED_IDLE): they
    then use only what the model leaves, but a busy machine can starve them.

    If a worker dies (a decoder crashing on a hostile file), the files it may have been
    working on are retried one at a time in a fresh pool; the one that kills its worker
    again is reported as an error instead of stopping the run.
    """
    if workers <= 0:
        yield from map(decode_one, jobs)
        return
    context = _context()
    pending: deque[tuple[DecodeJob, Future]] = deque()
    jobs_iter = iter(jobs)
    pool = _new_pool(workers, context, gate, background)
    try:
        while True:
            while len(pending) < window:
                job = next(jobs_iter, None)
                if job is None:
                    break
                pending.append((job, _submit(pool, job)))
            if not pending:
                return
            job, future = pending.popleft()
            try:
                result = _result(job, future)
            except BrokenProcessPool:
                retry = [job] + [j for j, _ in pending]
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for j in retry:
                    yield _decode_isolated(j, context)
                pool = _new_pool(workers, context, gate, background)
                continue
            yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _decode_isolated(job: DecodeJob, context) -> DecodeResult:
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=decode_worker_init,
                             initargs=(None, False, os.getpid())) as solo:
        try:
            return _result(job, _submit(solo, job))
        except BrokenProcessPool:
            pass
    if not _workers_can_start(context):
        raise RuntimeError(
            "image decode worker processes die on start-up; if you call photoseek from a script, guard its "
            "entry point with `if __name__ == '__main__':` (or set PHOTOSEEK_DECODE_WORKERS=0)"
        )
    return DecodeResult(job.path, error="the image decoder crashed on this file")


def _workers_can_start(context) -> bool:
    """Tell a file that kills its decoder from workers that cannot run at all."""
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as probe:
        try:
            return probe.submit(int, "1").result() == 1
        except BrokenProcessPool:
            return False
