"""One writer, many readers (issue #5).

A second indexer on the same index is refused with a clear message (and a killed one leaves
no lock behind); searches keep working while `photoseek index` runs, and every answer comes
from one state, the old or the new: each hit's photo, path and score belong together.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import helpers
from helpers import SMALL_RUN_ENV, cli, last_run_status, runs_count
from photoseek.storage import schema as db

ENV = SMALL_RUN_ENV
QUERY = "a photo"


def make_photos(folder: Path, samples: Path, start: int, count: int) -> None:
    helpers.make_photos(folder, samples, start, count, seed=10_000, prefix="p")


def snapshot(index_dir: Path) -> dict[int, tuple[str, np.ndarray]]:
    """id -> (path, embedding) of the index's committed state."""
    return helpers.embeddings_by(index_dir, db.ImageRow.id, db.ImageRow.path)


def wait_until_running(proc: subprocess.Popen, index_dir: Path, runs_before: int, timeout: float = 120) -> None:
    """Until the new run holds the lock and has recorded itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if runs_count(index_dir) > runs_before:
            return
        time.sleep(0.05)
    raise AssertionError("the indexer did not start")


def report(name: str, stats: dict, reader: "Reader") -> None:
    out = os.environ.get("PHOTOSEEK_RELIABILITY_OUT")
    if out:
        lat = sorted(reader.latencies)
        stats = {**stats, "requests": len(lat), "errors": len(reader.errors),
                 "p50_ms": round(1000 * lat[len(lat) // 2], 1), "p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 1)}
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(stats, indent=2))


class Reader(threading.Thread):
    """Searches through the web API in a loop, recording every answer."""

    def __init__(self, client: TestClient, similar_ids: list[int], allow_empty: bool = False):
        super().__init__(daemon=True)
        self.allow_empty, self.empty = allow_empty, 0
        self.client, self.similar_ids = client, similar_ids
        self.answers: list[tuple[str, list[tuple[int, str, float]]]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.latencies: list[float] = []

    def __enter__(self) -> "Reader":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.finish()  # also when the test fails: no request may outlive the client

    def finish(self) -> None:
        self.stop.set()
        self.join(60)
        assert not self.is_alive(), "a search request hung for a minute"

    def run(self) -> None:
        rng = random.Random(1)
        while not self.stop.is_set():
            if rng.random() < 0.7:
                kind, url = "text", f"/api/search?q={QUERY}&limit=200"
            else:
                kind, url = "similar", f"/api/images/{rng.choice(self.similar_ids)}/similar?limit=200"
            t = time.perf_counter()
            r = self.client.get(url)
            self.latencies.append(time.perf_counter() - t)
            if r.status_code == 404 and kind == "similar":
                continue  # that photo was removed by the run: a fair answer
            if r.status_code == 503 and self.allow_empty and ("empty" in r.text or "rebuilt" in r.text):
                self.empty += 1  # --rebuild starts from an empty database (see the rebuild test)
                continue
            if r.status_code != 200:
                self.errors.append(f"{url}: {r.status_code} {r.text[:200]}")
                continue
            hits = [(h["photo"]["id"], h["photo"]["path"], h["score"]) for h in r.json()["results"]]
            self.answers.append((kind, hits))


def check_answers(answers, states: list[dict[int, tuple[str, np.ndarray]]], query_vector: np.ndarray) -> dict:
    """Every answer comes from one state: its hits' paths and scores are those of that state's rows."""
    stats = {"answers": len(answers), "from_state": [0] * len(states)}
    for kind, hits in answers:
        ids = [h[0] for h in hits]
        assert len(ids) == len(set(ids)), "duplicate hits"
        assert len({h[1] for h in hits}) == len(hits), "duplicate paths"
        fits = []
        for n, state in enumerate(states):
            ok = all(i in state and state[i][0] == path for i, path, _ in hits)
            if ok and kind == "text":
                ok = all(abs(float(state[i][1] @ query_vector) - score) < 1e-4 for i, _, score in hits)
            if ok:
                fits.append(n)
        assert fits, f"an answer that is no state's: {hits[:5]}"
        stats["from_state"][fits[-1]] += 1
    return stats


@pytest.mark.slow
def test_one_writer_refused_second_and_readers_see_old_or_new(tmp_path, samples_dir, offline_encoder,
                                                              settings_factory):
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher
    from photoseek.web.app import create_app

    photos, index = tmp_path / "photos", tmp_path / "index"
    make_photos(photos, samples_dir, 0, 40)
    settings = settings_factory(index, batch_size=8)
    Indexer(index, settings, show_progress=False).run([photos], encoder=offline_encoder)
    old = snapshot(index)

    # The next run has work of every kind: 80 new photos, 8 deleted, 8 changed.
    make_photos(photos, samples_dir, 40, 80)
    names = sorted(p.name for p in photos.iterdir())[:40]
    for name in names[:8]:
        (photos / name).unlink()
    for name in names[8:16]:
        Image.open(photos / name).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(photos / name, quality=80)

    searcher = Searcher(index, settings, encoder=offline_encoder)
    query_vector = searcher.embed_text(QUERY)
    app = create_app(settings, searcher, refresh_interval=0.2)
    env = {**os.environ, **ENV}
    with TestClient(app, base_url="http://127.0.0.1:8000") as client, Reader(client, sorted(old)) as reader:
        runs_before = runs_count(index)
        writer = subprocess.Popen(cli("index", "--index", str(index), "--no-progress"), env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until_running(writer, index, runs_before)

        # A second indexer is refused, quickly and clearly; so is a --rebuild, which must not wipe anything.
        # The writer is frozen meanwhile (it keeps its lock), so a fast machine cannot finish it first.
        writer.send_signal(signal.SIGSTOP)
        refused = []
        try:
            for extra in ([], ["--rebuild"]):
                t = time.monotonic()
                second = subprocess.run(cli("index", str(photos), "--index", str(index), "--no-progress", *extra),
                                        env=env, capture_output=True, text=True, timeout=120)
                refused_in = time.monotonic() - t
                assert second.returncode == 1, second.stderr
                assert "another 'photoseek index' is already writing" in second.stderr
                assert "wait for it" in second.stderr and "Traceback" not in second.stderr
                assert refused_in < 60
                refused.append(round(refused_in, 1))
        finally:
            writer.send_signal(signal.SIGCONT)

        out, err = writer.communicate(timeout=600)
        assert writer.returncode == 0, err[-3000:]
        time.sleep(1.0)  # let the readers pick up the new state
        reader.finish()
        new = snapshot(index)
        full = client.get(f"/api/search?q={QUERY}&limit=200").json()["results"]
        assert {h["photo"]["id"] for h in full} == set(new)  # the new state, whole

    assert not reader.errors, reader.errors[:5]
    stats = check_answers(reader.answers, [old, new], query_vector)
    assert stats["answers"] >= 20
    stats["second_indexer_refused_after_s"] = refused
    report("concurrency_incremental", stats, reader)
    for kind, hits in reader.answers:
        ids = {h[0] for h in hits}
        assert ids <= set(old) or ids <= set(new), "an answer mixing old and new photos"
    searcher.close()

    # A killed indexer leaves no lock behind: the next one starts at once.
    make_photos(photos, samples_dir, 120, 24)
    runs_before = runs_count(index)
    victim = subprocess.Popen(cli("index", "--index", str(index), "--no-progress"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_running(victim, index, runs_before)
    victim.send_signal(signal.SIGKILL)
    victim.wait(60)
    after = subprocess.run(cli("index", "--index", str(index), "--no-progress"), env=env, capture_output=True,
                           text=True, timeout=600)
    assert after.returncode == 0, after.stderr[-3000:]
    assert last_run_status(index) == "finished"
    assert len(snapshot(index)) == len(new) + 24


@pytest.mark.slow
def test_rebuild_while_serving_never_mixes_states(tmp_path, samples_dir, offline_encoder, settings_factory):
    """`photoseek index --rebuild` replaces the database while the server answers: photo ids
    start again from 1 in a fresh database, so an old vector must never be paired with the
    new database's row of the same id.

    Known limit: a rebuild wipes the index first, so the server follows the new database as
    it fills: "the index is empty" (503) for a moment, then partial results (each a whole
    committed state of the new index), never a mix of old and new."""
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher
    from photoseek.web.app import create_app

    photos, index = tmp_path / "photos", tmp_path / "index"
    make_photos(photos, samples_dir, 0, 48)
    settings = settings_factory(index, batch_size=8)
    Indexer(index, settings, show_progress=False).run([photos], encoder=offline_encoder)
    old = snapshot(index)
    for name in sorted(p.name for p in photos.iterdir())[:12:2]:  # ids shift in the rebuilt index
        (photos / name).unlink()

    searcher = Searcher(index, settings, encoder=offline_encoder)
    query_vector = searcher.embed_text(QUERY)
    app = create_app(settings, searcher, refresh_interval=0.2)
    env = {**os.environ, **ENV}
    with (TestClient(app, base_url="http://127.0.0.1:8000") as client,
          Reader(client, sorted(old)[:10], allow_empty=True) as reader):
        rebuild = subprocess.run(cli("index", "--index", str(index), "--rebuild", "--no-progress"), env=env,
                                 capture_output=True, text=True, timeout=600)
        assert rebuild.returncode == 0, rebuild.stderr[-3000:]
        time.sleep(1.0)
        reader.finish()
        new = snapshot(index)
        full = client.get(f"/api/search?q={QUERY}&limit=200").json()["results"]
        assert {h["photo"]["path"] for h in full} == {p for p, _ in new.values()}
    searcher.close()
    assert not reader.errors, reader.errors[:5]
    stats = check_answers(reader.answers, [old, new], query_vector)
    stats["empty_index_503"] = reader.empty
    report("concurrency_rebuild", stats, reader)
