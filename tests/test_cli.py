"""The command line as a new user meets it: help, mistakes, output for people and for scripts,
and indexes that can be read but not written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import helpers
from helpers import as_other_user, cli, free_port, make_photos, read_only_mount, run_cli
from photoseek.web.schemas import SearchResponse, StatusResponse


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory, samples_dir) -> Path:
    """The demo photos indexed by the command line, as the README's quick start does."""
    return helpers.cli_demo_index(tmp_path_factory, samples_dir, "cli", "offline")


def _ro_copy(index: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ro-index"
    shutil.copytree(index, copy)
    for leftover in ("photoseek.db-wal", "photoseek.db-shm"):  # as a cleanly closed index, or a backup, has
        (copy / leftover).unlink(missing_ok=True)
    return copy


# -- help -------------------------------------------------------------------------------------


def test_help_keeps_its_bracketed_notes_and_shows_no_type_noise():
    for command in ("index", "search", "status", "serve"):
        text = " ".join(run_cli(command, "--help").stdout.split())  # as one line: help wraps to the terminal
        assert "[env: PHOTOSEEK_INDEX_DIR; default: this user's data folder]" in text, command
        assert "<bool>" not in text and "<list[" not in text and "<str>" not in text and "<path>" not in text, text
    assert "[env: PHOTOSEEK_PORT; default: 8000]" in " ".join(run_cli("serve", "--help").stdout.split())
    assert run_cli("--version").stdout.startswith("photoseek 0.")


# -- mistakes are answered at once, before anything heavy is loaded -----------------------------


@pytest.mark.parametrize("args, code, message", [
    (["search", "--image", "nope.jpg"], 2, "no such file: nope.jpg"),
    (["search", "   "], 2, "the query is empty"),
    (["search", "--similar", "99999"], 1, "no photo has id 99999"),
    (["search", "--queries", "missing.txt"], 2, "no such file: missing.txt"),
])
def test_input_mistakes_are_answered_before_any_model_is_loaded(cli_index, args, code, message):
    # Run the command line in a process that reports whether torch (which every encoder needs) was
    # ever imported: the answer must not wait for it.
    probe = ("import sys; from photoseek.cli import app\n"
             "try:\n    app(sys.argv[1:])\n"
             "except SystemExit as e:\n    print('torch' in sys.modules, file=sys.stderr); raise\n")
    result = subprocess.run([sys.executable, "-c", probe, *args, "--index", str(cli_index)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == code, result.stderr
    error, torch_loaded = result.stderr.strip().splitlines()
    assert error.startswith("error: ") and message in error and torch_loaded == "False", result.stderr


def test_a_new_index_in_a_folder_that_cannot_be_written_says_where_and_what_to_do(tmp_path, samples_dir):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run_cli("index", str(samples_dir), "--index", str(locked / "index"), "--model", "offline",
                         check=False, prefix=as_other_user())
    finally:
        locked.chmod(0o755)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot create the index at {locked / 'index'}: permission denied in {locked}" in result.stderr
    assert "--index DIR" in result.stderr and "checkpoint" not in result.stderr


# -- what indexing says --------------------------------------------------------------------------


def test_an_empty_folder_says_no_images_found_and_which_count(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    result = run_cli("index", str(empty), "--index", str(tmp_path / "index"), "--model", "offline", check=False)
    assert result.returncode == 1
    assert f"no images found in {empty}" in result.stderr and ".jpg" in result.stderr and ".heic" in result.stderr
    assert "images/s" not in result.stdout + result.stderr


def test_the_summary_names_skipped_files_and_points_to_status(tmp_path, samples_dir):
    photos = tmp_path / "photos"
    make_photos(photos, samples_dir, 0, 3)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    for i in range(6):
        (photos / f"empty_{i}.png").write_bytes(b"")
    result = run_cli("index", str(photos), "--index", str(tmp_path / "index"), "--model", "offline", "--no-progress")
    assert "added 3" in result.stdout and "skipped 7" in result.stdout and "the index holds 3 photos" in result.stdout
    named = [line for line in result.stderr.splitlines() if line.strip().startswith("skipped ")]
    assert len(named) == 5 and all(": " in line for line in named)
    assert "... and 2 more: 'photoseek status' lists them all" in result.stderr

    again = run_cli("index", "--index", str(tmp_path / "index"), "--no-progress")
    assert "unchanged 10" in again.stdout and "images/s" not in again.stdout
    status = run_cli("status", "--index", str(tmp_path / "index")).stdout
    # The last run changed nothing; the one before it, which added the photos, is still shown.
    assert "last run:" in status and "before it:" in status and "added 3" in status and "runs:     2" in status
    assert "broken.jpg" in status and status.count("empty_") == 6


# -- what searching prints -----------------------------------------------------------------------


def test_plain_output_shows_the_id_that_similar_takes(cli_index):
    lines = run_cli("search", "a cup of coffee", "-k", "3", "--index", str(cli_index)).stdout.splitlines()
    rank, score, photo_id, path = lines[0].split(maxsplit=3)
    # Its file name holds a word of the query too: said in brackets after the path.
    assert rank == "1" and path.endswith("coffee.png  [semantic, file name]") and 0 < float(score) <= 1
    similar = run_cli("search", "--similar", photo_id, "-k", "3", "--index", str(cli_index)).stdout
    assert "coffee.png" not in similar and len(similar.splitlines()) == 3


def test_plain_output_says_what_json_says_without_loading_pydantic(cli_index):
    """People's lines come from the search itself, not the API's models (pydantic's import alone costs a
    terminal search a tenth of a second): the same ranks, scores, ids, paths and dates as --json."""
    for args in (["a cup of coffee", "-k", "4", "--offset", "1"], ["a dog", "--sort", "newest", "-k", "3"]):
        argv = ["search", *args, "--index", str(cli_index)]
        code = ("import sys\nfrom photoseek.cli import main\nsys.argv = ['photoseek', *sys.argv[1:]]\ntry:\n"
                "    main()\nexcept SystemExit:\n    print('pydantic' in sys.modules)\n")
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        *lines, pydantic_loaded = out.stdout.splitlines()
        assert pydantic_loaded == "False", out.stderr
        page = SearchResponse.model_validate_json(run_cli(*argv, "--json").stdout)
        assert len(lines) == len(page.results) > 0
        for line, hit in zip(lines, page.results):
            rank, score, photo_id, rest = line.split(maxsplit=3)
            assert (int(rank), score, int(photo_id)) == (hit.rank, f"{hit.score:.3f}", hit.photo.id)
            assert hit.photo.path in rest
            if page.sort == "newest":
                assert rest.startswith(f"{hit.photo.date:%Y-%m-%d %H:%M}")


def test_json_is_the_api_shape_everywhere(cli_index, tmp_path, samples_dir):
    text = SearchResponse.model_validate_json(
        run_cli("search", "a guitar", "-k", "2", "--json", "--index", str(cli_index)).stdout)
    assert text.kind == "text" and text.query == "a guitar" and text.next_offset == 2
    assert [r.rank for r in text.results] == [1, 2] and text.results[0].photo.name == "guitar.jpg"
    assert text.results[0].photo.indexed_at.utcoffset() is not None

    photo_id = str(text.results[0].photo.id)
    similar = SearchResponse.model_validate_json(
        run_cli("search", "--similar", photo_id, "-k", "2", "--offset", "1", "--json", "--index", str(cli_index)).stdout)
    assert similar.kind == "similar" and similar.source.id == int(photo_id) and similar.results[0].rank == 2

    image = SearchResponse.model_validate_json(run_cli(
        "search", "--image", str(samples_dir / "rocket.jpg"), "-k", "1", "--json", "--index", str(cli_index)).stdout)
    assert image.kind == "image" and image.results[0].photo.name == "rocket.jpg"

    queries = tmp_path / "queries.txt"
    queries.write_text("a rocket\n\na guitar\n")
    lines = run_cli("search", "--queries", str(queries), "--json", "-k", "1", "--index", str(cli_index)).stdout
    pages = [SearchResponse.model_validate_json(line) for line in lines.splitlines()]
    assert [p.query for p in pages] == ["a rocket", "a guitar"] and pages[1].results[0].photo.name == "guitar.jpg"

    status = StatusResponse.model_validate_json(run_cli("status", "--json", "--index", str(cli_index)).stdout)
    assert status.image_count == 34 and status.writable and status.last_run.started_at.utcoffset() is not None


# -- runs that did not finish ----------------------------------------------------------------------


@pytest.mark.slow
def test_status_shows_a_killed_run_as_interrupted_with_the_run_before_it(tmp_path, samples_dir):
    photos, index = tmp_path / "photos", tmp_path / "index"
    make_photos(photos, samples_dir, 0, 4)
    run_cli("index", str(photos), "--index", str(index), "--model", "offline", "--no-progress")
    make_photos(photos, samples_dir, 4, 400)
    env = {**os.environ, "PHOTOSEEK_DECODE_WORKERS": "1", "PHOTOSEEK_BATCH_SIZE": "8"}
    proc = subprocess.Popen(cli("index", "--index", str(index), "--no-progress"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while "running" not in run_cli("status", "--index", str(index)).stdout:
            assert proc.poll() is None and time.monotonic() < deadline, "the second run never showed as running"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    status = run_cli("status", "--index", str(index)).stdout
    assert "interrupted" in status and "running" not in status
    assert "run 'photoseek index' to continue" in status
    assert "before it:" in status and "finished: added 4" in status


# -- an index that can be read but not written ------------------------------------------------------


def test_search_and_status_work_on_a_read_only_mount_and_indexing_says_so(cli_index, tmp_path):
    ro = _ro_copy(cli_index, tmp_path)
    prefix = read_only_mount(ro)
    if prefix is None:
        pytest.skip("needs root and unshare to mount a folder read-only")
    before = sorted(p.name for p in ro.iterdir())
    found = run_cli("search", "a guitar", "-k", "1", "--index", str(ro), prefix=prefix)
    assert found.stdout.split()[3].endswith("guitar.jpg") and "Traceback" not in found.stderr
    status = run_cli("status", "--index", str(ro), prefix=prefix).stdout
    assert "read-only here" in status and "photos:   34" in status
    refused = run_cli("index", "--index", str(ro), prefix=prefix, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: the index at {ro} is read-only (read-only file system: index.lock): it can be searched but not "
        "updated. To index, use a copy you can write to (--index DIR) or ask its owner"]
    assert sorted(p.name for p in ro.iterdir()) == before


def test_another_users_index_can_be_searched_and_served(cli_index, tmp_path):
    ro = _ro_copy(cli_index, tmp_path)
    for path in (ro, *ro.iterdir()):
        path.chmod(0o555 if path.is_dir() else 0o444)
    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(cache)}
    try:
        found = run_cli("search", "a guitar", "-k", "1", "--index", str(ro), prefix=as_other_user(), env_extra=env)
        assert found.stdout.split()[3].endswith("guitar.jpg")
        assert "read-only here" in run_cli("status", "--index", str(ro), prefix=as_other_user()).stdout

        port = free_port()
        server = subprocess.Popen([*as_other_user(), *cli("serve", "--index", str(ro), "--port", str(port))],
                                  env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            body = _get_when_up(server, f"http://127.0.0.1:{port}/api/search?q=a+guitar&limit=1")
            photo = json.loads(body)["results"][0]["photo"]
            thumb = urllib.request.urlopen(f"http://127.0.0.1:{port}{photo['thumbnail_url']}", timeout=60)
            assert thumb.status == 200 and thumb.read(12)[8:12] == b"WEBP"
        finally:
            server.terminate()
            server.wait(timeout=30)
        # The thumbnail went to this user's cache, not into the index.
        assert list(cache.rglob("*.webp")) and not (ro / "thumbnails").exists()
    finally:
        for path in (ro, *ro.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)


def _get_when_up(server: subprocess.Popen, url: str, timeout: float = 120) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=30).read()
        except OSError:
            if server.poll() is not None:
                raise AssertionError(f"the server exited: {server.stderr.read().decode()}") from None
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.3)


# -- steering a search from the command line --------------------------------------------------------


def test_filters_sort_arithmetic_and_facets_from_the_command_line(cli_index):
    idx = ["--index", str(cli_index)]
    pngs = SearchResponse.model_validate_json(
        run_cli("search", "a cat", "--type", "png", "--sort", "newest", "--min-score", "-1", "-k", "50", "--json",
                *idx).stdout)
    assert pngs.filters.type == ["png"] and pngs.sort == "newest" and pngs.cutoff == -1
    assert sorted(r.photo.name for r in pngs.results) == ["astronaut.png", "chelsea.png", "coffee.png",
                                                          "motorcycle_left.png"]
    cat = next(r.photo for r in pngs.results if r.photo.name == "chelsea.png")

    mixed = SearchResponse.model_validate_json(
        run_cli("search", "--similar", str(cat.id), "2:a dog", "-k", "3", "--json", *idx).stdout)
    assert mixed.kind == "similar" and mixed.query == "2:a dog" and mixed.source.id == cat.id
    assert [t.kind for t in mixed.terms] == ["photo", "text"] and "chelsea.png" not in [r.photo.name for r in mixed.results]

    minus = run_cli("search", "a fish - 2:red", "-k", "3", *idx).stdout
    assert "red_fish.jpg" not in minus.splitlines()[0]

    bad = run_cli("search", "a cat", "--after", "2021-02-30", *idx, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --after must be a date as YYYY-MM-DD")
    counts = json.loads(run_cli("facets", "--json", *idx).stdout)
    assert {t["value"]: t["count"] for t in counts["type"]} == {"jpeg": 30, "png": 4}


def _seconds(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def test_ctrl_c_during_a_search_ends_it_quietly(cli_index):
    """A search has nothing to save: Ctrl-C at any moment (imports, model loading) ends it at once with
    the shell's code and no traceback, and never as a misleading error (transformers once reported a
    KeyboardInterrupt inside its import as a missing package)."""
    # Moments within the work, measured on this machine: a search that ends first (its results printed,
    # then the Ctrl-C) is not the case under test, and how long a search takes changes with the machine.
    # The interpreter's own start (its site module) comes before any code of ours and is left out.
    python_start = max(_seconds([sys.executable, "-c", "pass"]) for _ in range(3))
    whole = _seconds(cli("search", "a cat", "--index", str(cli_index)))
    for delay in (python_start + f * (whole - python_start) for f in (0.1, 0.4, 0.7)):
        proc = subprocess.Popen(cli("search", "a cat", "--index", str(cli_index)), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        if proc.returncode == 0 or out:  # it finished first (results printed; maybe the Ctrl-C came as it
            continue                      # exited): not the case under test at this moment
        assert proc.returncode == 130, (delay, err)
        assert err.strip() == "" and out == "", (delay, err)


def test_a_bad_setting_in_the_environment_is_one_line_naming_it(tmp_path):
    result = run_cli("status", "--index", str(tmp_path / "index"), check=False,
                     env_extra={"PHOTOSEEK_OCR_SECONDS": "0"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: bad setting (environment or .env): PHOTOSEEK_OCR_SECONDS=0: should be more than 0; "
        "fix or unset it"]
