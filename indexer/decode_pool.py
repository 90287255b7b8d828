"""Decoding in worker processes, alongside inference in the main process.

JPEG decoding and resizing are CPU work, so they run in separate processes while the
model runs in the parent, and a decoder that crashes on a hostile file takes down one
worker, not the run. The number of tasks in flight is bounded, so memory stays flat
however many photos there are. Workers and model threads share the cores freely (see
:mod:`photoseek.indexer.inference`).

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


def _as_result(job: DecodeJob, outcome: tuple[DecodedPhoto | None, str | None]) -> DecodeResult:
    photo, error = outcome
    return DecodeResult(job.path, photo=photo, error=error)


def decode_one(job: DecodeJob) -> DecodeResult:
    return _as_result(job, load_photo_or_reason(job.path, job.size, job.max_pixels))


def _result(job: DecodeJob, future: Future) -> DecodeResult:
    return _as_result(job, future.result())


def _submit(pool: ProcessPoolExecutor, job: DecodeJob) -> Future:
    # Plain arguments and a function from photoseek.imaging: nothing that makes the worker import torch.
    return pool.submit(load_photo_or_reason, job.path, job.size, job.max_pixels)


def _context():
    context = multiprocessing.get_context("forkserver")
    # Workers need only Pillow and NumPy: don't let the fork server import the caller's
    # main module (by default it does), which may pull in torch or re-run a script.
    context.set_forkserver_preload(["photoseek.imaging"])
    return context


def _new_pool(workers: int, context, background: bool) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=decode_worker_init,
                               initargs=(background, os.getpid()))


def decode_all(jobs: Iterable[DecodeJob], *, workers: int, window: int = 64, background: bool = False) -> Iterator[DecodeResult]:
    """Decode ``jobs`` in order, ``workers`` processes wide (0 = in this process).

    ``window``: at most this many jobs in flight (submitted, not yet consumed).
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
    pool = _new_pool(workers, context, background)
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
                pool = _new_pool(workers, context, background)
                continue
            yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _decode_isolated(job: DecodeJob, context) -> DecodeResult:
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=decode_worker_init,
                             initargs=(False, os.getpid())) as solo:
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
