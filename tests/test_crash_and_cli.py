"""The command line as a user runs it, and a SIGKILL in the middle of indexing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from helpers import run_cli
import helpers
from photoseek.storage import schema as db
from photoseek.store import IndexFiles, VectorStore


photoseek = run_cli


def test_cli_errors_are_clear(tmp_path):
    missing = photoseek("search", "a cat", "--index", str(tmp_path / "nothing"), check=False)
    assert missing.returncode == 1 and "no index at" in missing.stderr and "Traceback" not in missing.stderr
    both = photoseek("search", "a cat", "--queries", "q.txt", check=False)
    assert both.returncode == 2 and "--queries FILE reads every query from the file" in both.stderr
    nothing = photoseek("search", check=False)
    assert nothing.returncode == 2 and "say what to search for" in nothing.stderr
    not_dir = photoseek("index", str(tmp_path / "nope"), "--index", str(tmp_path / "i"), check=False)
    assert not_dir.returncode == 1 and "not a folder" in not_dir.stderr


def _consistent(index_dir: Path) -> tuple[int, set[str]]:
    """Every vector has exactly one row and vice versa; returns (count, paths)."""
    files = IndexFiles(index_dir)
    engine = helpers.sqlite_engine(files.database)
    with engine.connect() as conn:
        rows = conn.execute(select(db.ImageRow.id, db.ImageRow.path)).all()
        generation = int(helpers.meta(conn, "generation"))
    engine.dispose()
    store = VectorStore.load(files.vectors, dim=384, generation=generation)
    assert store is not None, "vector file not saved for the final state"
    ids = {r[0] for r in rows}
    assert len(store) == len(ids)
    assert all(store.vector(i) is not None for i in ids)
    paths = [r[1] for r in rows]
    assert len(paths) == len(set(paths))
    return len(rows), set(paths)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path, samples_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    # 4 distinct variants of each demo photo: 136 files, enough to be killed part-way.
    for src in sorted(samples_dir.iterdir()):
        img = Image.open(src).convert("RGB")
        for k in range(4):
            img.rotate(90 * k, expand=True).save(photos / f"{src.stem}_{k}.jpg", quality=85)
    index = tmp_path / "index"
    env = {**os.environ, "PHOTOSEEK_DECODE_WORKERS": "1", "PHOTOSEEK_BATCH_SIZE": "8"}
    proc = subprocess.Popen([sys.executable, "-m", "photoseek", "index", str(photos), "--index", str(index),
                             "--model", "offline", "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            engine = helpers.sqlite_engine(IndexFiles(index).database)
            with engine.connect() as conn:
                committed = conn.execute(select(func.count()).select_from(db.ImageRow)).scalar_one()
            engine.dispose()
        except Exception:
            continue
        if committed >= 16:
            break
    assert proc.poll() is None, "indexer finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < committed < 136

    resumed = photoseek("index", "--index", str(index), "--no-progress", env_extra={"PHOTOSEEK_BATCH_SIZE": "8"})
    count, paths = _consistent(index)
    assert count == 136 and paths == {str(p) for p in photos.iterdir()}
    added = int(resumed.stdout.split("added ")[1].split(",")[0])
    assert added <= 136 - 16  # what was committed before the kill was kept, not embedded again

    status = json.loads(photoseek("status", "--index", str(index), "--json").stdout)
    assert status["last_run"]["status"] == "finished"


def test_index_from_a_newer_photoseek_is_refused_clearly(tmp_path):
    import sqlite3

    index = tmp_path / "index"
    index.mkdir()
    with sqlite3.connect(index / "photoseek.db") as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("PRAGMA user_version = 99")
    for args in (["status"], ["search", "a cat"], ["index", str(tmp_path)]):
        result = photoseek(*args, "--index", str(index), check=False)
        assert result.returncode == 1 and "newer photoseek" in result.stderr and "Traceback" not in result.stderr
