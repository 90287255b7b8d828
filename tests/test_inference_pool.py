"""The indexer's inference pool: several batches at once, written back in order."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
import torch

from photoseek.storage import schema as db
from photoseek.encoders.base import torch_threads_per_worker
from photoseek.indexer.inference import BatchSizes, InferencePool

from helpers import embeddings_by


class SlowEmbed:
    """Takes longer for earlier batches, so later ones finish first; records how many run at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.05 if pixels[0, 0] % 2 == 0 else 0.0)
        with self.lock:
            self.running -= 1
        return pixels * 10


def test_batches_come_back_in_the_order_they_went_in_and_at_most_workers_run_at_once():
    embed = SlowEmbed()
    written = []
    with InferencePool(embed, workers=2) as pool:
        for i in range(9):
            for tag, out in pool.submit(i, np.full((1, 1), i)):
                written.append((tag, int(out[0, 0])))
        for tag, out in pool.drain():
            written.append((tag, int(out[0, 0])))
    assert written == [(i, i * 10) for i in range(9)]
    assert embed.most_at_once == 2


def test_a_failing_batch_raises_to_the_writer_and_the_pool_still_closes():
    def embed(pixels):
        if pixels[0, 0] == 3:
            raise RuntimeError("model failed")
        return pixels

    with pytest.raises(RuntimeError, match="model failed"):
        with InferencePool(embed, workers=2) as pool:
            for i in range(6):
                pool.submit(i, np.full((1, 1), i))
            pool.drain()


def test_torch_threads_are_shared_out_per_worker_and_restored():
    before = torch.get_num_threads()
    with torch_threads_per_worker(workers=2, threads_per_worker=1) as threads:
        assert threads == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads_per_worker(workers=64):
        assert torch.get_num_threads() == 1  # never zero threads, however many workers


def test_parallel_inference_stores_the_same_embeddings_as_one_batch_at_a_time(tmp_path, samples_dir, offline_encoder,
                                                                             settings_factory):
    from photoseek.indexer import Indexer

    photos = tmp_path / "photos"
    shutil.copytree(samples_dir, photos)
    stored = {}
    for workers in (1, 3):
        index_dir = tmp_path / f"index-{workers}"
        settings = settings_factory(index_dir, inference_workers=workers, batch_size=4)
        summary = Indexer(index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
        stored[workers] = {path: vector for path, (_, vector) in
                           embeddings_by(index_dir, db.ImageRow.path, db.ImageRow.id).items()}
        assert summary.embedded == len(stored[workers]) > 20
    assert stored[1].keys() == stored[3].keys()
    for path, vector in stored[1].items():
        assert float(np.dot(vector, stored[3][path])) > 0.999, path


@pytest.mark.parametrize("cores, torch_threads, expected", [
    (1, None, (1, 1)), (2, None, (2, 1)), (8, None, (4, 2)), (64, None, (4, 16)), (8, 4, (2, 4)),
])
def test_cores_are_shared_out_with_a_bounded_number_of_batches_in_memory(monkeypatch, tmp_path, cores, torch_threads,
                                                                          expected):
    from photoseek.encoders import base
    from photoseek.indexer import pipeline
    from photoseek.settings import Settings

    monkeypatch.setattr(pipeline, "usable_cores", lambda: cores)
    monkeypatch.setattr(base, "usable_cores", lambda: cores)
    indexer = pipeline.Indexer(tmp_path, Settings(index_dir=tmp_path, torch_threads=torch_threads))
    workers = indexer._inference_workers()
    with torch_threads_per_worker(workers, torch_threads) as threads:
        assert (workers, threads) == expected


def _batches(total: int, workers: int, batch_size: int, skipped_at: frozenset[int] = frozenset()) -> list[int]:
    """The batch sizes a run of ``total`` photos sends to the model, the photos at ``skipped_at``
    (their place in the order decoded) unreadable, as the indexer's loop forms them."""
    sizes, batches, batch = BatchSizes(total, workers, batch_size), [], 0
    for i in range(total):
        if i in skipped_at:
            sizes.taken(1)
            continue
        batch += 1
        if batch >= sizes.target():
            sizes.taken(batch)
            batches.append(batch)
            batch = 0
    return batches + ([batch] if batch else [])


def test_the_last_photos_of_a_run_are_shared_evenly_by_the_model_threads():
    # 585 photos, two threads: full batches, then what is left halved each time (one share per
    # thread), never below 4, so the threads finish together: not 32 + 9, where one thread ran 32
    # photos while the other, done with 9, waited.
    assert _batches(585, 2, 32) == [32] * 17 + [21, 10, 5, 4, 1]
    # A small run uses every thread, not one batch on one of them.
    assert _batches(20, 2, 32) == [10, 5, 4, 1]
    assert _batches(3, 2, 32) == [3]
    # Unreadable photos count as done; every readable photo is in exactly one batch.
    batches = _batches(100, 2, 32, skipped_at=frozenset({3, 60, 99}))
    assert sum(batches) == 97 and batches == [32, 32, 17, 9, 4, 3]
    # One thread: plain full batches.
    assert _batches(70, 1, 32) == [32, 32, 6]


def test_a_thread_done_with_a_short_batch_takes_the_next_without_waiting_for_an_older_one():
    started: dict[int, float] = {}
    release_long = threading.Event()

    def embed(pixels):
        tag = int(pixels[0, 0])
        started[tag] = time.perf_counter()
        if tag == 0:
            release_long.wait(10)  # the long batch runs until the test lets it go
        return pixels

    with InferencePool(embed, workers=2) as pool:
        pool.submit(0, np.full((1, 1), 0))  # long
        pool.submit(1, np.full((1, 1), 1))  # short: its thread is soon free
        assert pool.submit(2, np.full((1, 1), 2)) == []  # not waiting for 0; 1 cannot be given back before 0
        time.sleep(0.2)
        assert 2 in started  # it ran while 0 still runs
        release_long.set()
        assert [tag for tag, _ in pool.drain()] == [0, 1, 2]  # still written in order
