"""The rclip comparison (bench/rclip_compare.py) reads both tools' output and tabulates it right.

Only the pure parts: running rclip needs rclip and its models, which CI does not install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def rc():
    spec = importlib.util.spec_from_file_location("rclip_compare_under_test", BENCH / "rclip_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RCLIP_OUT = (
    "score\tfilepath\n"
    '0.111\t"/photos/d000/000003_Picture 1A.jpg"\n'
    '0.110\t"/photos/d000/000017_plasma_ColdRipple.jpg"\n'
    '-0.020\t"/photos/d000/000001_a "quoted" name.jpg"\n'
)


def test_rclip_results_are_read_score_and_path_best_first(rc):
    rows = rc.parse_rclip_results(RCLIP_OUT)
    assert rows == [
        (0.111, "/photos/d000/000003_Picture 1A.jpg"),
        (0.110, "/photos/d000/000017_plasma_ColdRipple.jpg"),
        (-0.020, '/photos/d000/000001_a "quoted" name.jpg'),
    ]


def test_rclip_indexing_chatter_is_not_taken_for_results(rc):
    noisy = ('checking images in the current directory for changes; use "--no-indexing" to skip this\n'
             "100%|##########| 39/39 [00:17<00:00,  2.18images/s]\n" + RCLIP_OUT)
    assert len(rc.parse_rclip_results(noisy)) == 3
    assert rc.parse_rclip_results("score\tfilepath\n") == []


PHOTOSEEK_OUT = (
    "  1  -0.007      39  /photos/d000/000038_umang.jpg  [semantic, tag]\n"
    "  2  0.005      15  /photos/my trip/000014_mate_FreshFlower.jpg\n"
    " 10  0.283     142  /photos/d000/000141_x.jpg  [file name, caption]\n"
    "more: --offset 10\n"
)


def test_photoseek_results_give_rank_score_id_and_path_without_the_why(rc):
    assert rc.parse_photoseek_results(PHOTOSEEK_OUT) == [
        (1, -0.007, 39, "/photos/d000/000038_umang.jpg"),
        (2, 0.005, 15, "/photos/my trip/000014_mate_FreshFlower.jpg"),
        (10, 0.283, 142, "/photos/d000/000141_x.jpg"),
    ]


def test_photoseek_index_summary_says_how_many_photos_were_added(rc):
    out = ("added 600, updated 0, moved 0, removed 0, skipped 0, unchanged 0 in 27.1 s, 22.1 images/s; "
           "the index holds 600 photos  [ViT-B-32:/x.pt]\ntagged 600 photos\n")
    assert rc.parse_photoseek_added(out) == 600
    assert rc.parse_photoseek_added("index: /tmp/x\n") is None


def _run(wall: float, rss: float, share: float | None = 0.05) -> dict:
    return {"wall": wall, "peak_rss_mb": rss, "others_share": share}


def test_summary_keeps_the_spread_and_the_busiest_moment(rc):
    s = rc.summarize([_run(3.0, 300, 0.1), _run(1.0, 100, None), _run(2.0, 200, 0.4)])
    assert (s["wall_min"], s["wall_median"], s["wall_max"]) == (1.0, 2.0, 3.0)
    assert (s["rss_median_mb"], s["rss_max_mb"]) == (200, 300)
    assert s["others_share_max"] == 0.4


def test_table_puts_both_tools_side_by_side_with_the_ratio_photoseek_over_rclip(rc):
    result = {"photos": 100, "rclip_version": "3.3.0", "rows": [
        {"kind": "index", "label": "index 100 photos", "photoseek": rc.summarize([_run(20.0, 2000)]),
         "rclip": rc.summarize([_run(80.0, 1000)])},
        {"kind": "text", "label": 'search "a dog on a beach"',
         "photoseek": rc.summarize([_run(0.5, 200), _run(0.7, 220), _run(0.6, 210)]),
         "rclip": rc.summarize([_run(1.0, 420), _run(1.2, 440), _run(1.1, 430)])},
        {"kind": "similar", "label": "search --similar ID", "photoseek": rc.summarize([_run(0.4, 90)]),
         "rclip": None},
    ]}
    table = rc.format_table(result)
    lines = table.splitlines()
    index_row = next(ln for ln in lines if ln.startswith("| index 100 photos"))
    assert "| 20.00 s | 2000 MB | 80.00 s | 1000 MB | 0.25x wall, 2.00x RSS |" in index_row
    text_row = next(ln for ln in lines if ln.startswith('| search "a dog'))
    assert "0.50-0.70 s (median 0.60)" in text_row and "1.00-1.20 s (median 1.10)" in text_row
    assert "0.55x wall, 0.49x RSS" in text_row
    similar_row = next(ln for ln in lines if ln.startswith("| search --similar"))
    assert similar_row.count("| – ") >= 3  # rclip has no such command: no figure, no ratio
    assert "photoseek 5.0 images/s, rclip 1.2 images/s" in table
    assert "Other processes took" not in table  # a quiet machine gets no warning


def test_table_warns_when_others_took_the_cpu_and_says_why_it_was_skipped(rc):
    busy = {"photos": 10, "rclip_version": "3.3.0", "rows": [
        {"kind": "text", "label": "search", "photoseek": rc.summarize([_run(1.0, 100, 0.6)]),
         "rclip": rc.summarize([_run(1.0, 100, 0.2)])}]}
    assert "| 60% / 20% |" in rc.format_table(busy)
    assert "Other processes took 15% or more of the CPU" in rc.format_table(busy)
    assert "Skipped: rclip not found" in rc.format_table({"skipped": "rclip not found"})
