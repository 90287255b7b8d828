"""``photoseek index --ray``: decoding and embedding on a real (local) Ray instance give the
index the built-in pipeline gives: same photos, same vectors (to float16 precision), same
skips for the same reasons; later runs change only what changed; Ctrl-C stops cleanly and
the next run resumes; the command line prints its usual summary.

One Ray instance serves the whole session (``ray_session`` in conftest); the indexer finds
it initialised and uses it as it is."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from photoseek.indexer import Indexer
from photoseek.store import IndexFiles

pytestmark = pytest.mark.slow

GOOD = ["coffee.png", "rocket.jpg", "guitar.jpg", "sea_turtle.jpg", "bear.jpg", "tent.jpg", "chelsea.png",
        "black_cat.jpg", "camera.jpg", "drone.jpg"]
EDGE_GOOD = ["hopper_orientation_6.jpg", "pil_sample_cmyk.jpg", "1_trns.png"]
HOSTILE = ["not_an_image.jpg", "truncated_photo.jpg", "empty.jpg", "decompression_bomb.gif"]


@pytest.fixture()
def photos(tmp_path, samples_dir, edge_dir) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in GOOD:
        shutil.copy2(samples_dir / name, folder / name)
    for name in EDGE_GOOD + HOSTILE:
        shutil.copy2(edge_dir / name, folder / name)
    return folder


def _catalogue(index_dir: Path) -> tuple[dict[str, tuple], dict[str, str]]:
    """path -> (facts..., embedding) for every photo, and path -> reason for every skipped file."""
    con = sqlite3.connect(f"file:{IndexFiles(index_dir).database}?mode=ro", uri=True)
    try:
        photos = {os.fsdecode(bytes(p)): (h, w, ht, t, mk, md, ft, np.frombuffer(e, dtype="<f4"))
                  for p, h, w, ht, t, mk, md, ft, e in con.execute(
                      "SELECT path, content_hash, width, height, taken_at, camera_make, camera_model, file_type, "
                      "embedding FROM images")}
        skipped = {os.fsdecode(bytes(p)): r for p, r in con.execute("SELECT path, reason FROM skipped")}
    finally:
        con.close()
    return photos, skipped


def _assert_same(ray_index: Path, local_index: Path) -> None:
    ray_photos, ray_skips = _catalogue(ray_index)
    local_photos, local_skips = _catalogue(local_index)
    assert set(ray_photos) == set(local_photos)
    assert ray_skips == local_skips
    for path, (*facts, vector) in ray_photos.items():
        *local_facts, local_vector = local_photos[path]
        assert facts == local_facts, path
        # To float16 precision: float16 keeps ~3 significant digits (a step of 2**-11 just below 1).
        np.testing.assert_allclose(vector.astype(np.float16), local_vector.astype(np.float16), atol=1e-3,
                                   err_msg=path)


def _run(index_dir: Path, folder: Path, encoder, settings_factory, *, ray: str | None, **kwargs):
    settings = settings_factory(index_dir, batch_size=kwargs.pop("batch_size", 32))
    return Indexer(index_dir, settings, show_progress=False, ray_address=ray, **kwargs).run(
        [folder], encoder=encoder)


def test_ray_run_gives_the_built_in_pipelines_index(ray_session, photos, tmp_path, samples_dir, offline_encoder,
                                                     settings_factory):
    # Story 1: same photos, same vectors, same skips with the same reasons.
    local = _run(tmp_path / "local", photos, offline_encoder, settings_factory, ray=None)
    started = time.perf_counter()
    on_ray = _run(tmp_path / "ray", photos, offline_encoder, settings_factory, ray="local")
    print(f"ray run: {time.perf_counter() - started:.1f} s, built-in: {local.seconds:.1f} s")
    assert ray_session.is_initialized()  # the session's instance, used as it was (not shut down)
    assert (on_ray.added, on_ray.skipped, on_ray.embedded, on_ray.photos) == \
        (len(GOOD) + len(EDGE_GOOD), len(HOSTILE), len(GOOD) + len(EDGE_GOOD), len(GOOD) + len(EDGE_GOOD))
    assert (on_ray.added, on_ray.skipped, on_ray.photos) == (local.added, local.skipped, local.photos)
    assert sorted(on_ray.skipped_files) == sorted(local.skipped_files)
    assert not on_ray.interrupted
    _assert_same(tmp_path / "ray", tmp_path / "local")

    # Story 2: a photo added, one removed, one changed: a second --ray run touches only those.
    photos_before, _ = _catalogue(tmp_path / "ray")
    (photos / "bear.jpg").unlink()
    shutil.copy2(photos / "tent.jpg", photos / "tent_again.jpg")  # a new file
    shutil.copy2(samples_dir / "dusk.jpg", photos / "guitar.jpg")  # a changed one
    second = _run(tmp_path / "ray", photos, offline_encoder, settings_factory, ray="local")
    local_second = _run(tmp_path / "local", photos, offline_encoder, settings_factory, ray=None)
    assert (second.added, second.updated, second.removed, second.moved, second.skipped, second.embedded) == \
        (1, 1, 1, 0, 0, 2)
    assert (second.added, second.updated, second.removed, second.unchanged) == \
        (local_second.added, local_second.updated, local_second.removed, local_second.unchanged)
    photos_after, _ = _catalogue(tmp_path / "ray")
    untouched = set(photos_before) - {str(photos / "bear.jpg"), str(photos / "guitar.jpg")}
    assert all(np.array_equal(photos_after[p][-1], photos_before[p][-1]) for p in untouched)
    _assert_same(tmp_path / "ray", tmp_path / "local")


def test_stopping_a_ray_run_saves_what_it_wrote_and_the_next_run_resumes(ray_session, photos, tmp_path,
                                                                         offline_encoder, settings_factory,
                                                                         monkeypatch):
    from photoseek.indexer import ray_runner

    index_dir = tmp_path / "index"
    indexer = Indexer(index_dir, settings_factory(index_dir, batch_size=4), show_progress=False, ray_address="local")
    unpack = ray_runner._unpack

    def ctrl_c_after_first_block(block):
        indexer.stop.set()  # as StopSignals does on Ctrl-C
        return unpack(block)

    monkeypatch.setattr(ray_runner, "_unpack", ctrl_c_after_first_block)
    first = indexer.run([photos], encoder=offline_encoder)
    assert first.interrupted and 0 < first.saved < len(GOOD) + len(EDGE_GOOD)
    # The Ray work is shut down: its actor gives its CPU back (moments after the executor closes).
    deadline = time.monotonic() + 10
    while ray_session.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray_session.available_resources().get("CPU", 0) == 2
    # What it committed is a consistent index: the next run (here the built-in pipeline, which
    # shares the driver's planning and writing) embeds only the rest.
    rest = _run(index_dir, photos, offline_encoder, settings_factory, ray=None)
    assert not rest.interrupted
    assert first.saved + rest.saved == len(GOOD) + len(EDGE_GOOD) == rest.photos
    photos_in, skipped = _catalogue(index_dir)
    assert len(photos_in) == rest.photos and set(skipped) == {str(photos / n) for n in HOSTILE}


def test_cli_index_with_ray_local_prints_the_usual_summary(tmp_path, samples_dir, edge_dir):
    # A process of its own: '--ray local' starts (and shuts down) its own Ray instance there.
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in GOOD[:3]:
        shutil.copy2(samples_dir / name, photos / name)
    shutil.copy2(edge_dir / "empty.jpg", photos / "empty.jpg")
    index_dir = tmp_path / "index"
    result = run_cli("index", str(photos), "--index", str(index_dir), "--model", "offline", "--no-progress",
                     "--ray", "local")
    assert "added 3, updated 0, moved 0, removed 0, skipped 1, unchanged 0" in result.stdout
    assert "the index holds 3 photos  [offline:lite0]" in result.stdout
    assert f"skipped {photos / 'empty.jpg'}: empty file" in result.stderr
    assert "Traceback" not in result.stderr


def test_photoseek_does_not_import_ray_unless_asked():
    code = ("import sys, photoseek, photoseek.cli, photoseek.indexer, photoseek.indexer.pipeline; "
            "from photoseek.indexer import Indexer; Indexer('/nonexistent/index'); "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_without_ray_installed_ray_is_refused_in_one_line(tmp_path, monkeypatch):
    from photoseek.errors import PhotoseekError
    from photoseek.indexer.ray_runner import RayUnavailable

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(RayUnavailable) as caught:
        Indexer(tmp_path / "index", ray_address="local")
    assert isinstance(caught.value, PhotoseekError) and caught.value.kind == "ray_unavailable"
    assert "pip install 'photoseek[ray]'" in caught.value.message and "\n" not in caught.value.message
