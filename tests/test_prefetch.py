"""Decoding while the model loads (photoseek.indexer.prefetch): the photos come out as
decode_all gives them, at the size the encoder asks for, and nothing is left running."""

from __future__ import annotations

import threading
import time

import pytest

from helpers import make_photos
from photoseek.indexer.decode_pool import DecodeJob
from photoseek.indexer.prefetch import DecodeAhead, predicted_input_size


@pytest.fixture(scope="module")
def photos(tmp_path_factory, samples_dir):
    folder = tmp_path_factory.mktemp("ahead")
    make_photos(folder, samples_dir, 0, 12)
    paths = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    return paths[:6] + [str(folder / "broken.jpg")] + paths[6:]


def test_photos_decoded_ahead_come_out_in_order_while_the_caller_is_busy(photos):
    jobs = [DecodeJob(p, 224, 10**8) for p in photos]
    with DecodeAhead(jobs, workers=2, size=224) as ahead:
        time.sleep(0.5)  # the caller loads its model meanwhile
        results = list(ahead)
    assert [r.path for r in results] == photos
    broken = [r for r in results if r.photo is None]
    assert [r.path for r in broken] == [photos[6]] and broken[0].error
    assert all(r.photo.pixels.shape == (224, 224, 3) for r in results if r.photo is not None)


def test_at_most_max_ahead_photos_wait_and_closing_early_stops_the_workers(photos):
    jobs = [DecodeJob(p, 64, 10**8) for p in photos * 3]
    ahead = DecodeAhead(jobs, workers=1, max_ahead=2, size=64)
    deadline = time.monotonic() + 30
    while ahead._queue.qsize() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert ahead._queue.qsize() == 2  # full, and no more taken
    results = iter(ahead)
    assert next(results).path == photos[0]
    ahead.limit(1)  # the model is loaded: one photo ahead is enough now
    assert next(results).path == photos[1]
    assert next(results).path == photos[2]
    time.sleep(0.3)
    assert ahead._queue.qsize() <= 1
    assert next(results).path == photos[3]
    ahead.close()
    assert not ahead._thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "photoseek-decode-ahead"]


def test_a_stop_ends_the_results_early(photos):
    stop = threading.Event()
    jobs = [DecodeJob(p, 64, 10**8) for p in photos * 4]
    with DecodeAhead(jobs, workers=1, stop=stop, size=64) as ahead:
        seen = 0
        for _ in ahead:
            seen += 1
            if seen == 2:
                stop.set()
    assert 2 <= seen < len(jobs)


def test_an_error_in_the_decode_thread_reaches_the_reader():
    def jobs():
        yield DecodeJob("/nonexistent.jpg", 64, 10**8)
        raise RuntimeError("the plan broke")

    with DecodeAhead(jobs(), workers=0, size=64) as ahead:
        with pytest.raises(RuntimeError, match="the plan broke"):
            list(ahead)


def test_the_predicted_input_size_is_the_loaded_encoders(offline_encoder):
    assert predicted_input_size(offline_encoder.model_id) == offline_encoder.input_spec.size
    assert predicted_input_size("ViT-B-32:laion2b_s34b_b79k") == 224
    assert predicted_input_size("ViT-L-14-336:openai") == 336
    assert predicted_input_size("no-such-model:/x.pt") is None
    assert predicted_input_size("hf-hub:someone/model") is None
