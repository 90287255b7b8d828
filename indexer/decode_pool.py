"""Decoding in worker processes, alongside inference in the main process.

JPEG decoding and resizing are CPU work, so they run in separate processes while the
model runs in the parent, and a decoder that crashes on a hostile file takes down one
worker, not the run. The number of tasks in flight is bounded, so memory stays flat
however many photos there are. Workers and model threads share the cores freely (see
:mod:`photoseek.indexer.inference`).

Stopping (Ctrl-C, SIGTERM: see :mod:`photoseek.interrupts`): the workers ignore SIGINT
from birth (:mod:`photoseek._forkserver_preload`), so only the indexer decides when they
stop; :func:`decode_all` notices its ``stop`` event within ``STOP_POLL_SECONDS``, and its
pool is always shut down before it returns, its workers gone (given ``STOP_GRACE_SECONDS``
to finish the photo in hand, then killed). A second signal kills them at once
(:func:`kill_workers`).

Workers run :func:`photoseek.imaging.load_photo_or_reason` on plain arguments, so
they import Pillow and NumPy only (anything from ``photoseek.indexer`` would drag
torch into every worker: seconds of start-up and hundreds of MB each); with OCR on
(``DecodeJob.ocr_seconds``), onnxruntime and OpenCV too, and each worker loads the OCR
models once, on its first photo.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from photoseek.imaging import DecodedPhoto, decode_worker_init, load_photo_or_reason, load_text_or_reason
from photoseek.interrupts import at_hard_exit

# How long a stopping run lets its workers finish the photo in hand before it kills them.
STOP_GRACE_SECONDS = 1.0
# How often a run waiting for a decode checks whether it was asked to stop.
STOP_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class DecodeJob:
    path: str
    size: int
    max_pixels: int
    ocr_seconds: float | None = None  # read the photo's text too, within this many seconds (photoseek.ocr)
    text_only: bool = False  # only its text (and facts), no pixels for the model: load_text_or_reason


@dataclass(frozen=True)
class DecodeResult:
    path: str
    photo: DecodedPhoto | None = None
    error: str | None = None


def _as_result(job: DecodeJob, outcome: tuple[DecodedPhoto | None, str | None]) -> DecodeResult:
    photo, error = outcome
    return DecodeResult(job.path, photo=photo, error=error)


def decode_one(job: DecodeJob) -> DecodeResult:
    if job.text_only:
        return _as_result(job, load_text_or_reason(job.path, job.max_pixels, job.ocr_seconds))
    return _as_result(job, load_photo_or_reason(job.path, job.size, job.max_pixels, job.ocr_seconds))


def _result(job: DecodeJob, future: Future) -> DecodeResult:
    return _as_result(job, future.result())


def _submit(pool: ProcessPoolExecutor, job: DecodeJob) -> Future:
    # Plain arguments and a function from photoseek.imaging: nothing that makes the worker import torch.
    if job.text_only:
        return pool.submit(load_text_or_reason, job.path, job.max_pixels, job.ocr_seconds)
    return pool.submit(load_photo_or_reason, job.path, job.size, job.max_pixels, job.ocr_seconds)


def _context():
    context = multiprocessing.get_context("forkserver")
    # Workers need only Pillow and NumPy: don't let the fork server import the caller's
    # main module (by default it does), which may pull in torch or re-run a script.
    # photoseek._forkserver_preload also makes the workers ignore SIGINT from their first instruction.
    context.set_forkserver_preload(["photoseek._forkserver_preload"])
    return context


# The worker processes of the pools alive now, for kill_workers: pool id -> the pool's own
# {pid: process} dict (it fills as the pool starts workers, on demand).
_live_workers: dict[int, dict] = {}


def _new_pool(workers: int, context, background: bool, ocr_at_once: int | None = None) -> ProcessPoolExecutor:
    # A new semaphore for each pool: a worker killed while reading a photo's text keeps its turn.
    slots = context.Semaphore(ocr_at_once) if ocr_at_once else None
    return _register(ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=decode_worker_init,
                                         initargs=(background, os.getpid(), slots)))


def _register(pool: ProcessPoolExecutor) -> ProcessPoolExecutor:
    processes = getattr(pool, "_processes", None)
    if isinstance(processes, dict):
        _live_workers[id(pool)] = processes
    return pool


@at_hard_exit
def kill_workers() -> None:
    """SIGKILL every decode worker of this process (a second Ctrl-C: no waiting on anything,
    it runs in a signal handler). Their fork server leaves by itself once they are gone."""
    for processes in list(_live_workers.values()):
        for _ in range(3):  # the pool's manager thread may change the dict meanwhile
            try:
                pids = list(processes)
                break
            except RuntimeError:
                pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _shutdown(pool: ProcessPoolExecutor, grace: float = STOP_GRACE_SECONDS) -> None:
    """Cancel what is queued and return once the pool's workers have exited: they finish
    the photo in hand for up to ``grace`` seconds, then are killed. Waiting for the pool's
    manager thread here (not in the interpreter's exit hook) is what lets the process end
    promptly, and leaves no worker behind."""
    manager = getattr(pool, "_executor_manager_thread", None)
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    try:
        if manager is not None:
            manager.join(grace)
            if manager.is_alive():
                for process in processes:
                    try:
                        process.kill()
                    except (OSError, ValueError, AttributeError):
                        pass
                # The pool sees a worker die and ends the others; that takes moments.
                manager.join(30)
    finally:
        _live_workers.pop(id(pool), None)


def _wait(future: Future, stop: threading.Event | None) -> bool:
    """Wait for ``future``; False if ``stop`` was set first."""
    if stop is None:
        return True
    while not future.done():
        if stop.is_set():
            return False
        wait_for_futures([future], timeout=STOP_POLL_SECONDS, return_when=FIRST_COMPLETED)
    return True


def decode_all(jobs: Iterable[DecodeJob], *, workers: int, window: int = 64, background: bool = False,
               stop: threading.Event | None = None, ocr_at_once: int | None = None) -> Iterator[DecodeResult]:
    """Decode ``jobs`` in order, ``workers`` processes wide (0 = in this process).

    ``window``: at most this many jobs in flight (submitted, not yet consumed).
    ``background``: run the workers at idle CPU priority instead (Linux SCHED_IDLE): they
    then use only what the model leaves, but a busy machine can starve them.
    ``stop``: once set, yield nothing more and return (within ``STOP_POLL_SECONDS``, plus
    up to ``STOP_GRACE_SECONDS`` for the workers to go).
    ``ocr_at_once``: jobs with OCR read at most this many photos' text at a time, across the
    workers (each takes ~250 MB while it reads; see :mod:`photoseek.ocr`); None: no limit.

    If a worker dies (a decoder crashing on a hostile file), the files it may have been
    working on are retried one at a time in a fresh pool; the one that kills its worker
    again is reported as an error instead of stopping the run.

    Close the generator (``contextlib.closing``) when leaving it early: that shuts the
    pool down and waits for its workers to exit.
    """
    if workers <= 0:
        for job in jobs:
            if stop is not None and stop.is_set():
                return
            yield decode_one(job)
        return
    context = _context()
    pending: deque[tuple[DecodeJob, Future]] = deque()
    jobs_iter = iter(jobs)
    pool = _new_pool(workers, context, background, ocr_at_once)
    try:
        while True:
            while len(pending) < window:
                job = next(jobs_iter, None)
                if job is None:
                    break
                pending.append((job, _submit(pool, job)))
            if not pending or (stop is not None and stop.is_set()):
                return
            job, future = pending[0]
            if not _wait(future, stop):
                return
            pending.popleft()
            try:
                result = _result(job, future)
            except BrokenProcessPool:
                if stop is not None and stop.is_set():
                    return  # workers killed by the same signal (e.g. SIGTERM to the process group)
                retry = [job] + [j for j, _ in pending]
                pending.clear()
                _shutdown(pool, grace=0)
                for j in retry:
                    if stop is not None and stop.is_set():
                        return
                    yield _decode_isolated(j, context)
                pool = _new_pool(workers, context, background, ocr_at_once)
                continue
            yield result
    finally:
        _shutdown(pool)


def _decode_isolated(job: DecodeJob, context) -> DecodeResult:
    solo = _new_pool(1, context, False)
    try:
        return _result(job, _submit(solo, job))
    except BrokenProcessPool:
        pass
    finally:
        _shutdown(solo)
    if not _workers_can_start(context):
        raise RuntimeError(
            "image decode worker processes die on start-up; if you call photoseek from a script, guard its "
            "entry point with `if __name__ == '__main__':` (or set PHOTOSEEK_DECODE_WORKERS=0)"
        )
    return DecodeResult(job.path, error="the image decoder crashed on this file")


def _workers_can_start(context) -> bool:
    """Tell a file that kills its decoder from workers that cannot run at all."""
    probe = _register(ProcessPoolExecutor(max_workers=1, mp_context=context))
    try:
        return probe.submit(int, "1").result() == 1
    except BrokenProcessPool:
        return False
    finally:
        _shutdown(probe)
