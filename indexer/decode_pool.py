"""Decoding in worker processes, overlapped with inference in the main process.

JPEG decoding and resizing are pure CPU work that holds the GIL, so they run in
separate processes while the model runs in the parent. The number of tasks in
flight is bounded, so memory stays flat however many photos there are.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from photoseek.imaging import DecodedPhoto, DecodeError, load_photo


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
    try:
        return DecodeResult(job.path, photo=load_photo(Path(job.path), job.size, max_pixels=job.max_pixels))
    except DecodeError as exc:
        return DecodeResult(job.path, error=exc.reason)
    except Exception as exc:  # a decoder bug must cost one file, not the run
        return DecodeResult(job.path, error=f"could not decode: {type(exc).__name__}: {str(exc)[:200]}")


def decode_all(jobs: Iterable[DecodeJob], *, workers: int, window: int = 64) -> Iterator[DecodeResult]:
    """Decode ``jobs`` in order, ``workers`` processes wide (0 = in this process).

    If a worker dies (a decoder crashing on a hostile file), the files it may have been
    working on are retried one at a time in a fresh pool; the one that kills its worker
    again is reported as an error instead of stopping the run.
    """
    if workers <= 0:
        yield from map(decode_one, jobs)
        return
    context = multiprocessing.get_context("forkserver")
    # Workers need only Pillow and NumPy: don't let the fork server import the caller's
    # main module (by default it does), which may pull in torch or re-run a script.
    context.set_forkserver_preload(["photoseek.imaging"])
    pending: deque[tuple[DecodeJob, Future]] = deque()
    jobs_iter = iter(jobs)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        while True:
            while len(pending) < window:
                job = next(jobs_iter, None)
                if job is None:
                    break
                pending.append((job, pool.submit(decode_one, job)))
            if not pending:
                return
            job, future = pending.popleft()
            try:
                yield future.result()
            except BrokenProcessPool:
                retry = [job] + [j for j, _ in pending]
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for j in retry:
                    yield _decode_isolated(j, context)
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _decode_isolated(job: DecodeJob, context) -> DecodeResult:
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as solo:
        try:
            return solo.submit(decode_one, job).result()
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
