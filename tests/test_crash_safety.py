"""Crash safety (issue #5): SIGKILL at 20 random moments, and running out of disk space.

The kill test indexes a few hundred small generated photos with the real command line and
kills it 20 times: at moments drawn with a fixed seed over the whole run (start-up, scan,
model loading, decoding, mid-batch, mid-commit, the final save of the vector file), during
a first build and during an incremental run (new, deleted, changed and renamed photos).
After every kill the index on disk is checked (the state the next run starts from); the
run after the last kill must finish, and the result must equal a clean run's.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import helpers
from helpers import SMALL_RUN_ENV, cli, generation, last_run_status, query_index
from photoseek.storage import schema as db
from photoseek.storage.sqlite import SqliteCatalogue
from photoseek.store import IndexFiles, VectorStore

SEED = 5_2024
N_PHOTOS = 480  # enough that no run can finish inside its kill window, however fast indexing gets
KILLS_FIRST_BUILD = 14  # then one kill as the first build finishes, then 5 in an incremental run
KILLS_INCREMENTAL = 5
DIM = 384
ENV = SMALL_RUN_ENV
# Where to write the figures for docs/RELIABILITY.md (optional).
REPORT = Path(os.environ.get("PHOTOSEEK_RELIABILITY_OUT", "")) if os.environ.get("PHOTOSEEK_RELIABILITY_OUT") else None


def make_photos(folder: Path, samples: Path, start: int, count: int) -> None:
    helpers.make_photos(folder, samples, start, count, rotate=True)


def index_state(index_dir: Path) -> dict:
    """Check the on-disk index the way the next run and any reader will find it; return its facts."""
    files = IndexFiles(index_dir)
    if not files.database.exists():
        return {"rows": 0, "vectors": "none"}
    con = sqlite3.connect(files.database, timeout=30)  # WAL recovery happens here, as it would for the next run
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "images" not in tables:
            return {"rows": 0, "vectors": "none"}
        rows = con.execute("SELECT id, path, length(embedding) FROM images").fetchall()
        skipped = {r[0] for r in con.execute("SELECT path FROM skipped")}
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        running = con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]
    finally:
        con.close()
    paths = [r[1] for r in rows]
    assert len(paths) == len(set(paths)), "duplicate paths"
    assert not set(paths) & skipped, "a file both indexed and skipped"
    assert all(r[2] == DIM * 4 for r in rows), "a row without a whole embedding"
    assert running <= 1
    generation = int(meta.get("generation", 0))
    store = VectorStore.load(files.vectors, dim=DIM, generation=generation)
    if store is None:
        vectors = "stale (rebuilt from the database on next open)"
    else:
        # A vector file stamped with the database's generation must match it exactly.
        ids = {r[0] for r in rows}
        assert len(store) == len(ids), "vector file and database disagree"
        assert all(store.vector(i) is not None for i in ids)
        vectors = "current"
    # What a reader gets: the database's rows, one vector each.
    catalogue = SqliteCatalogue(files.database, readonly=True)
    try:
        from photoseek.store import load_vectors

        loaded = load_vectors(files, catalogue, dim=DIM, generation=generation, persist=False)
        assert len(loaded) == len(rows)
    finally:
        catalogue.close()
    return {"rows": len(rows), "vectors": vectors}


def committed_rows(index_dir: Path) -> int:
    return query_index(index_dir, "SELECT count(*) FROM images", 0)


def read_embeddings(index_dir: Path) -> dict[str, tuple[str, np.ndarray]]:
    """path -> (content hash, embedding)."""
    return helpers.embeddings_by(index_dir, db.ImageRow.path, db.ImageRow.content_hash)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (decode workers, their fork server)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def seconds_to_first_batch(photos: Path, scratch_index: Path, env: dict) -> float:
    """How long a run takes here from its start to committing its first batch of photos
    (start-up, scan, plan, model loading, the first decodes). Time kills are drawn from this
    span, so they fall inside runs on a slow machine and on a fast one alike."""
    started = time.monotonic()
    proc = subprocess.Popen(cli("index", str(photos), "--index", str(scratch_index), "--model", "offline",
                                "--no-progress"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The first checkpoint records the run's cheap changes; the second is its first batch.
        while generation(scratch_index) < 2:
            assert proc.poll() is None and time.monotonic() - started < 240, "the calibration run did not get going"
            time.sleep(0.01)
        return time.monotonic() - started
    finally:
        proc.kill()
        proc.wait(60)
        shutil.rmtree(scratch_index, ignore_errors=True)




def kill_once(photos: Path, index: Path, env: dict, how: str, rng: random.Random, startup: float) -> dict:
    """Start `photoseek index`, SIGKILL it at a moment chosen by ``how``; return what happened."""
    before, gen_before = committed_rows(index), generation(index)
    started = time.monotonic()
    err_path = index.parent / "killed-run.err"
    with open(err_path, "wb") as err_file:  # a file, not a pipe: orphaned workers may keep a pipe open
        proc = subprocess.Popen(cli("index", str(photos), "--index", str(index), "--model", "offline",
                                    "--no-progress"), env=env, stdout=subprocess.DEVNULL, stderr=err_file)
    deadline = started + 240
    if how == "time":  # anywhere in start-up, scan, plan, model loading, up to the first batches
        target = started + rng.uniform(0.0, 1.1 * startup)
        while time.monotonic() < target and proc.poll() is None:
            time.sleep(0.01)
        moment = f"{target - started:.2f} s after start"
    elif how.startswith("progress"):  # mid-batch / mid-commit: after 1 or 2 batches, then a random pause
        # A run's first checkpoint records its cheap changes (before the model loads); later ones are batches.
        want = 2 if how == "progress-1" else rng.randint(2, 3)
        # About 0.25 s here (shorter on a faster machine); an incremental run ("progress-1") has only a
        # couple of batches and its tagging after them, so its kill comes sooner, or the run may be over.
        pause = rng.uniform(0.0, (0.02 if how == "progress-1" else 0.1) * startup)
        while time.monotonic() < deadline and proc.poll() is None and generation(index) - gen_before < want:
            time.sleep(0.01)
        time.sleep(pause)
        moment = f"{pause:.2f} s after {want} checkpoint(s)"
    else:  # "finish": right after the run commits 'finished', i.e. while it saves the vector file
        while time.monotonic() < deadline and proc.poll() is None and last_run_status(index) != "finished":
            time.sleep(0.005)
        moment = "as the run finished (saving vectors)"
    finished_first = proc.poll() is not None
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    stderr = err_path.read_text(errors="replace")
    assert "Traceback" not in stderr, stderr[-2000:]
    # The killed run's helper processes should leave with it; count any that stay, then end them.
    wait_until = time.monotonic() + 4.0  # decode workers check for their indexer every second
    while any(alive(pid) for pid in children) and time.monotonic() < wait_until:
        time.sleep(0.1)
    left = [pid for pid in children if alive(pid)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    state = index_state(index)
    return {"how": how, "moment": moment, "rows_before": before, "rows_after": state["rows"],
            "vectors": state["vectors"], "finished_before_kill": finished_first, "orphans_left": len(left),
            "seconds": round(time.monotonic() - started, 1)}


@pytest.mark.slow
def test_sigkill_at_20_random_moments_then_resume_equals_clean_run(tmp_path, samples_dir, offline_encoder,
                                                                     settings_factory):
    from photoseek.indexer import Indexer

    rng = random.Random(SEED)
    photos, index = tmp_path / "photos", tmp_path / "index"
    make_photos(photos, samples_dir, 0, N_PHOTOS)
    env = {**os.environ, **ENV}
    kills = []
    startup = seconds_to_first_batch(photos, tmp_path / "scratch", env)
    t0 = time.monotonic()

    # First build: 14 kills at random moments, then one as the build finishes.
    for _ in range(KILLS_FIRST_BUILD):
        kills.append(kill_once(photos, index, env, rng.choice(["time", "progress"]), rng, startup))
    kills.append(kill_once(photos, index, env, "finish", rng, startup))

    # An incremental run's worth of changes: new, deleted, changed and renamed photos.
    make_photos(photos, samples_dir, N_PHOTOS, 60)
    names = sorted(p.name for p in photos.iterdir())[:N_PHOTOS]
    picked = rng.sample(names, 40)
    for name in picked[:10]:
        (photos / name).unlink()
    for name in picked[10:25]:
        Image.open(photos / name).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / name, quality=80)
    for name in picked[25:40]:
        (photos / name).rename(photos / f"renamed_{name}")
    for _ in range(KILLS_INCREMENTAL):
        kills.append(kill_once(photos, index, env, "progress-1", rng, startup))

    # The run after the last kill finishes.
    final = subprocess.run(cli("index", "--index", str(index), "--no-progress"), env=env, capture_output=True,
                           text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    state = index_state(index)
    assert state["vectors"] == "current"
    chain_seconds = time.monotonic() - t0

    # A clean run over the same final folder.
    clean_dir = tmp_path / "clean"
    Indexer(clean_dir, settings_factory(clean_dir, batch_size=8), show_progress=False).run([photos],
                                                                                          encoder=offline_encoder)
    got, want = read_embeddings(index), read_embeddings(clean_dir)
    assert set(got) == set(want) == {str(p) for p in photos.iterdir()}
    worst = 0.0
    for path, (chash, vector) in want.items():
        assert got[path][0] == chash, path
        worst = max(worst, float(np.abs(got[path][1] - vector).max()))
    assert worst <= 1e-5, f"embeddings differ from a clean run's by {worst}"

    status = json.loads(subprocess.run(cli("status", "--index", str(index), "--json"), env=env, capture_output=True,
                                       text=True, timeout=120).stdout)
    assert status["last_run"]["status"] == "finished" and status["skipped_count"] == 0

    killed_mid_run = sum(not k["finished_before_kill"] for k in kills)
    assert len(kills) == 20 and killed_mid_run >= 19, kills  # the moments really fell inside runs
    assert not [k for k in kills if k["finished_before_kill"] and k["how"] != "finish"], kills
    assert sum(k["rows_after"] != k["rows_before"] for k in kills) >= 8, kills  # many fell among the writes
    assert sum(k["orphans_left"] for k in kills) == 0, kills  # a killed run leaves no process behind
    if REPORT is not None:
        REPORT.mkdir(parents=True, exist_ok=True)
        (REPORT / "crash_safety.json").write_text(json.dumps({
            "photos_first_build": N_PHOTOS, "final_photos": len(got), "kills": kills,
            "max_abs_embedding_diff": worst, "chain_seconds": round(chain_seconds, 1),
            "seconds_to_first_batch": round(startup, 2)}, indent=2))


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) to mount a small tmpfs")
def test_out_of_disk_space_while_indexing(tmp_path, samples_dir, offline_encoder, settings_factory):
    """Index on a tmpfs with little room left: a clear error, and the previous index still
    loads and answers (on the full disk, and after it is copied off)."""
    from photoseek.indexer import Indexer

    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe_dir}"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root in its own mount namespace): "
                    f"{probe.stderr.decode()[:200]}")

    photos, index = tmp_path / "photos", tmp_path / "index"
    shutil.copytree(samples_dir, photos)
    Indexer(index, settings_factory(index), show_progress=False).run([photos], encoder=offline_encoder)
    make_photos(photos / "more", samples_dir, 0, 40)
    size_kb = _dir_size(index) // 1024 + 96  # room for a few checkpoints, not for the whole run
    mnt, out = tmp_path / "mnt", tmp_path / "after"
    mnt.mkdir()
    script = f"""
set -u
mount -t tmpfs -o size={size_kb}k tmpfs {mnt} || exit 90
cp -a {index} {mnt}/index || exit 91
{sys.executable} -m photoseek index --index {mnt}/index --no-progress > {tmp_path}/index.out 2> {tmp_path}/index.err
echo $? > {tmp_path}/index.rc
df -k {mnt} | tail -1 > {tmp_path}/df.txt
{sys.executable} -m photoseek search "a cup of coffee" --index {mnt}/index -k 3 --json > {tmp_path}/search.out 2> {tmp_path}/search.err
echo $? > {tmp_path}/search.rc
cp -a {mnt}/index {out}
"""
    env = {**os.environ, **ENV}
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr

    rc = int((tmp_path / "index.rc").read_text())
    err = (tmp_path / "index.err").read_text()
    assert rc == 1, (rc, err[-3000:])
    assert "Traceback" not in err and "error:" in err and "disk" in err.lower(), err[-3000:]

    # The index on the full disk still answers.
    assert int((tmp_path / "search.rc").read_text()) == 0, (tmp_path / "search.err").read_text()[-2000:]
    hits = json.loads((tmp_path / "search.out").read_text())["results"]
    assert hits[0]["photo"]["path"].endswith("coffee.png")

    # Consistent, with everything the previous index had; a run with room finishes the job.
    state = index_state(out)
    assert state["rows"] >= 34
    finish = subprocess.run(cli("index", "--index", str(out), "--no-progress"), env=env, capture_output=True,
                            text=True, timeout=600)
    # The copied index still names the photo folder by its real path, so it can carry on.
    assert finish.returncode == 0, finish.stderr[-3000:]
    assert index_state(out) == {"rows": 74, "vectors": "current"}
