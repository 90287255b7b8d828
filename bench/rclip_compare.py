"""photoseek and rclip side by side on the same photos in one run (issue 14): indexing, a cold
text search, an image search, and photoseek's "more like this" (rclip has none).

    python bench/rclip_compare.py                       # 600 12-MP photos, rclip found on PATH
    python bench/rclip_compare.py --rclip /work/venv-rclip-tool/bin/rclip --photos-count 100
    python bench/run.py --rclip PATH ...                # the same, as part of the whole benchmark

rclip (3.3, ONNX Runtime, ViT-B-32-256) goes in a virtualenv of its own, never photoseek's: its
pins (numpy, pillow, regex...) differ. ``python -m venv ~/venv-rclip && ~/venv-rclip/bin/pip
install rclip==3.3.0``, then pass ``--rclip ~/venv-rclip/bin/rclip``. Its model files are
built from open_clip random weights by bench/rclip_models.py; photoseek uses ViT-B-32 with
random weights (bench/run.py random_clip_checkpoint). Random weights cost the same time and
memory as trained ones; the rankings are meaningless and are not compared.

How each figure is taken (bench/sysmon.py run_measured: wall time of the command, peak RSS
summed over its process tree, sampled every 0.1 s, and the share of the CPU other processes
took meanwhile):

- indexing: ``photoseek index FOLDER`` into an empty index, against rclip's first run in
  FOLDER with an empty database (``rclip -t 5 QUERY``: rclip indexes the working directory
  before it answers, so its figure includes one query, about a second);
- text / image search: a fresh process each time, warm page cache, ``-k 5`` / ``-t 5``,
  rclip with ``-n`` (no re-scan of the folder), the two tools taking turns run by run;
- ``photoseek search --similar ID`` alone.

Invariants: both tools see the very same files (bench/photoset.py, every copy distinct by
content); every rclip run gets its own data folder (bench/rclip_models.fresh_datadir) so the
user's own rclip database is never touched; a run that fails, or prints other than 5 results,
stops the comparison with its output rather than giving a figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent  # on sys.path: run as a script, or imported by bench/run.py

QUERY = "a dog on a beach"
TOP = 5
DEFAULT_PHOTOS = 600  # the comparison
MIN_PHOTOS = TOP + 1
INSTALL_HINT = "python -m venv /path/venv-rclip && /path/venv-rclip/bin/pip install rclip==3.3.0, then --rclip /path/venv-rclip/bin/rclip"

# rclip prints "score\tfilepath" and then one '0.123\t"/path/photo.jpg"' line per result.
_RCLIP_LINE = re.compile(r'^(-?\d+(?:\.\d+)?)\t"(.*)"$')
# photoseek search: "  1  0.283      42  /path/photo.jpg  [semantic, tag]" (rank, score, id, path, why).
_PHOTOSEEK_LINE = re.compile(r"^\s*(\d+)\s+(-?\d+\.\d+)\s+(\d+)\s+(.+?)(?:\s{2}\[[^\]]*\])?\s*$")
# photoseek index's summary: "added 600, updated 0, moved 0, removed 0, skipped 0, unchanged 0 in 27.1 s, ..."
_PHOTOSEEK_ADDED = re.compile(r"^added (\d+), updated \d+, moved \d+, removed \d+, skipped \d+, unchanged \d+ in ",
                              re.MULTILINE)


class CompareError(RuntimeError):
    """A run failed or printed something other than the expected results."""


def log(msg: str = "") -> None:
    print(msg, file=sys.stderr, flush=True)


# -- pure logic (unit-tested in tests/test_bench_rclip_compare.py) --------------------------------


def parse_rclip_results(out: str) -> list[tuple[float, str]]:
    """(score, path) per result line of rclip's default output, best first."""
    rows = []
    for line in out.splitlines():
        m = _RCLIP_LINE.match(line.rstrip("\r"))
        if m:
            rows.append((float(m.group(1)), m.group(2)))
    return rows


def parse_photoseek_results(out: str) -> list[tuple[int, float, int, str]]:
    """(rank, score, photo id, path) per result line of ``photoseek search``, best first."""
    rows = []
    for line in out.splitlines():
        m = _PHOTOSEEK_LINE.match(line)
        if m:
            rows.append((int(m.group(1)), float(m.group(2)), int(m.group(3)), m.group(4)))
    return rows


def parse_photoseek_added(out: str) -> int | None:
    """How many photos ``photoseek index`` says it added (its summary line), None without one."""
    m = _PHOTOSEEK_ADDED.search(out)
    return int(m.group(1)) if m else None


def summarize(runs: list[dict]) -> dict:
    """Wall time (min, median, max) and peak RSS (median, max) over runs of one command, and the
    largest share of the CPU other processes took during any of them."""
    walls = [r["wall"] for r in runs]
    rss = [r["peak_rss_mb"] for r in runs]
    shares = [r["others_share"] for r in runs if r.get("others_share") is not None]
    return {"runs": len(runs), "wall_min": min(walls), "wall_median": statistics.median(walls), "wall_max": max(walls),
            "rss_median_mb": statistics.median(rss), "rss_max_mb": max(rss),
            "others_share_max": max(shares) if shares else None}


def _wall(s: dict | None) -> str:
    if not s:
        return "–"
    if s["runs"] == 1:
        return f"{s['wall_min']:.2f} s"
    return f"{s['wall_min']:.2f}-{s['wall_max']:.2f} s (median {s['wall_median']:.2f})"


def _rss(s: dict | None) -> str:
    return "–" if not s else f"{s['rss_median_mb']:.0f} MB"


def _share(s: dict | None) -> str:
    return "?" if not s or s["others_share_max"] is None else f"{s['others_share_max']:.0%}"


def _ratio(p: dict | None, r: dict | None) -> str:
    if not p or not r:
        return "–"
    wall = p["wall_median"] / r["wall_median"]
    rss = p["rss_median_mb"] / r["rss_median_mb"]
    return f"{wall:.2f}x wall, {rss:.2f}x RSS"


def format_table(result: dict) -> str:
    """The comparison as markdown: one row per command, photoseek and rclip figures side by side,
    the ratio photoseek / rclip (below 1: photoseek faster or leaner), and the others' CPU share."""
    if result.get("skipped"):
        return f"### Compared with rclip\n\nSkipped: {result['skipped']}\n"
    if result.get("failed"):
        return f"### Compared with rclip\n\nFailed: {result['failed']}\n"
    n = result["photos"]
    lines = [
        f"### Compared with rclip ({n} photos, one run)",
        "",
        f"rclip {result['rclip_version']} (ONNX Runtime, ViT-B-32-256) and photoseek (ViT-B-32), both with random "
        "weights (same cost as trained ones); fresh process per run, warm page cache. Wall time min-max (median) "
        "over the runs, peak RSS of the process tree (median); ratio = photoseek / rclip of the medians.",
        "",
        "| command | photoseek wall | photoseek RSS | rclip wall | rclip RSS | photoseek / rclip | others' CPU (photoseek / rclip) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        p, r = row.get("photoseek"), row.get("rclip")
        lines.append(f"| {row['label']} | {_wall(p)} | {_rss(p)} | {_wall(r)} | {_rss(r)} | {_ratio(p, r)} "
                     f"| {_share(p)} / {_share(r) if r else '–'} |")
    idx = next((row for row in result["rows"] if row["kind"] == "index"), None)
    if idx and idx.get("photoseek") and idx.get("rclip"):
        ps, rc = idx["photoseek"]["wall_median"], idx["rclip"]["wall_median"]
        lines += ["", f"Indexing throughput, whole command: photoseek {n / ps:.1f} images/s, rclip {n / rc:.1f} "
                  f"images/s (rclip's first run includes one text query)."]
    busy = [s for row in result["rows"] for s in (row.get("photoseek"), row.get("rclip"))
            if s and s["others_share_max"] is not None and s["others_share_max"] >= 0.15]
    if busy:
        lines += ["", "Other processes took 15% or more of the CPU during some of these runs: the absolute "
                  "figures are slower than on a quiet machine, the ratios less so."]
    return "\n".join(lines) + "\n"


# -- finding and running the tools ------------------------------------------------------------


def find_rclip(explicit: Path | None = None) -> Path | None:
    """``explicit`` (must exist) or ``rclip`` on PATH, else None."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SystemExit(f"--rclip {explicit}: no executable rclip there; install it in its own "
                             f"virtualenv ({INSTALL_HINT})")
        return path
    found = shutil.which("rclip")
    return Path(found) if found else None


def rclip_version(exe: Path) -> str:
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    return (out.stdout or out.stderr).strip().removeprefix("rclip ").strip() or "?"


def photoseek_command() -> list[str]:
    """The photoseek CLI of this Python environment, as a user starts it."""
    script = Path(sys.executable).with_name("photoseek")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "photoseek"]


def _measured(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> dict:
    from sysmon import run_measured

    run = run_measured(cmd, env, cwd=cwd)
    if run.returncode != 0:
        raise CompareError(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.out[-2000:]}\n{run.err[-3000:]}")
    u = run.usage
    return {"wall": run.wall, "peak_rss_mb": u.peak_rss_mb, "peak_pss_mb": u.peak_pss_mb,
            "processes": u.peak_processes, "others_share": run.others_share, "out": run.out}


class Comparison:
    def __init__(self, rclip: Path, photos: Path, count: int, work: Path, *, runs: int = 3,
                 quiet: Callable[[], None] = lambda: None):
        self.rclip, self.photos, self.count, self.runs, self.quiet = rclip, photos, count, runs, quiet
        self.work = work
        self.index = work / "photoseek-index"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PHOTOSEEK_", "RCLIP_"))}
        base["HF_HUB_OFFLINE"] = "1"  # neither tool may reach for the hub
        self.ps_env = dict(base)
        self.rc_env = dict(base)

    # one command each ----------------------------------------------------------------------

    def photoseek_search(self, *args: str) -> dict:
        run = _measured(photoseek_command() + ["search", *args, "-k", str(TOP), "--index", str(self.index)],
                        self.ps_env)
        rows = parse_photoseek_results(run.pop("out"))
        if len(rows) != TOP:
            raise CompareError(f"photoseek search {' '.join(args)} printed {len(rows)} results, not {TOP}")
        return run | {"first_id": rows[0][2]}

    def rclip_search(self, query: str, *, index: bool = False) -> dict:
        cmd = [str(self.rclip), "-t", str(TOP)] + ([] if index else ["-n"]) + [query]
        run = _measured(cmd, self.rc_env, cwd=self.photos)
        rows = parse_rclip_results(run.pop("out"))
        if len(rows) != TOP:
            raise CompareError(f"rclip {' '.join(cmd[1:])} printed {len(rows)} results, not {TOP}")
        return run

    # the comparison ------------------------------------------------------------------------

    def run(self) -> dict:
        import rclip_models
        from run import CLIP_ARCH, random_clip_checkpoint

        model_id = f"{CLIP_ARCH}:{random_clip_checkpoint()}"
        models = rclip_models.build()
        datadir = rclip_models.fresh_datadir(models, self.work / "rclip-data")
        self.rc_env["RCLIP_DATADIR"] = str(datadir)
        rows: list[dict] = []

        log(f"  indexing {self.count} photos: photoseek")
        self.quiet()
        ps_run = _measured(photoseek_command() + ["index", str(self.photos), "--index", str(self.index),
                                                  "--model", model_id, "--no-progress"], self.ps_env)
        added = parse_photoseek_added(ps_run.pop("out"))
        if added != self.count:
            raise CompareError(f"photoseek indexed {added} of {self.count} photos")
        log(f"    {ps_run['wall']:.1f} s, peak RSS {ps_run['peak_rss_mb']:.0f} MB, others' CPU "
            f"{_pct(ps_run['others_share'])}")
        log(f"  indexing {self.count} photos: rclip (its first run: index, then one query)")
        self.quiet()
        rc_run = self.rclip_search(QUERY, index=True)
        indexed = self._rclip_indexed(datadir)
        if indexed != self.count:
            raise CompareError(f"rclip indexed {indexed} of {self.count} photos")
        log(f"    {rc_run['wall']:.1f} s, peak RSS {rc_run['peak_rss_mb']:.0f} MB, others' CPU "
            f"{_pct(rc_run['others_share'])}")
        rows.append({"kind": "index", "label": f"index {self.count} photos (`photoseek index` / first `rclip` run)",
                     "photoseek": summarize([ps_run]), "rclip": summarize([rc_run]),
                     "photoseek_runs": [ps_run], "rclip_runs": [rc_run]})

        photo = str(sorted(self.photos.rglob("*.jpg"))[0].resolve())
        text = self._pair(f'search "{QUERY}"', "text", lambda: self.photoseek_search(QUERY),
                          lambda: self.rclip_search(QUERY))
        rows.append(text)
        rows.append(self._pair("search --image PHOTO", "image", lambda: self.photoseek_search("--image", photo),
                               lambda: self.rclip_search(photo)))
        similar_id = text["photoseek_runs"][0]["first_id"]
        rows.append(self._pair("search --similar ID (rclip: none)", "similar",
                               lambda: self.photoseek_search("--similar", str(similar_id)), None))
        return {"photos": self.count, "runs": self.runs, "rclip": str(self.rclip),
                "rclip_version": rclip_version(self.rclip), "photoseek_model": model_id,
                "rclip_models": str(models), "query": QUERY, "query_image": photo, "rows": rows}

    def _pair(self, label: str, kind: str, photoseek: Callable[[], dict], rclip: Callable[[], dict] | None) -> dict:
        """``runs`` runs of each command, taking turns so both see the same machine."""
        ps_runs, rc_runs = [], []
        for i in range(self.runs):
            self.quiet()
            ps_runs.append(photoseek())
            if rclip is not None:
                self.quiet()
                rc_runs.append(rclip())
            log(f"  {label} run {i + 1}: photoseek {ps_runs[-1]['wall']:.2f} s {ps_runs[-1]['peak_rss_mb']:.0f} MB"
                + (f"; rclip {rc_runs[-1]['wall']:.2f} s {rc_runs[-1]['peak_rss_mb']:.0f} MB" if rc_runs else "")
                + f"; others' CPU {_pct(ps_runs[-1]['others_share'])}")
        return {"kind": kind, "label": label, "photoseek": summarize(ps_runs),
                "rclip": summarize(rc_runs) if rc_runs else None, "photoseek_runs": ps_runs, "rclip_runs": rc_runs}

    @staticmethod
    def _rclip_indexed(datadir: Path) -> int:
        with sqlite3.connect(datadir / "db.sqlite3") as con:
            return con.execute("SELECT count(*) FROM images WHERE deleted IS NULL").fetchone()[0]


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:.0%}"


def compare(rclip: Path | None, source, count: int, work: Path, *, runs: int = 3,
            quiet: Callable[[], None] = lambda: None) -> dict:
    """The comparison on ``count`` photos made from ``source`` (a photoset.PhotoSource) under
    ``work``; ``{"skipped": why}`` when rclip is not installed."""
    import photoset

    if count < MIN_PHOTOS:
        raise ValueError(f"count must be at least {MIN_PHOTOS}, got {count}")
    if rclip is None:
        why = f"rclip not found (pass --rclip PATH or put rclip on PATH; install it in its own virtualenv: {INSTALL_HINT})"
        log(f"\n== rclip comparison skipped: {why}")
        return {"skipped": why}
    log(f"\n== photoseek and rclip ({rclip}) on {count} photos")
    folder = photoset.make_set(source, count, work / "rclip-compare-photos")
    try:
        return Comparison(rclip, folder, count, work / "rclip-compare", runs=runs, quiet=quiet).run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work / "rclip-compare", ignore_errors=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _photo_count(text: str) -> int:
    value = int(text)
    if value < MIN_PHOTOS:
        # rclip leaves the query photo out of an image search's results: TOP results need TOP + 1 photos.
        raise argparse.ArgumentTypeError(f"must be at least {MIN_PHOTOS} (both tools are asked for {TOP} results)")
    return value


def add_arguments(p: argparse.ArgumentParser, *, count_flag: str = "--photos-count",
                  default_count: int | None = DEFAULT_PHOTOS, count_default_text: str = str(DEFAULT_PHOTOS)) -> None:
    """The comparison's options, for this script and for bench/run.py."""
    p.add_argument("--rclip", type=Path, metavar="PATH",
                   help="the rclip executable (default: rclip on PATH; without one the comparison is skipped)")
    p.add_argument(count_flag, dest="rclip_photos", type=_photo_count, default=default_count, metavar="N",
                   help=f"photos both tools index for the rclip comparison [default: {count_default_text}]")
    p.add_argument("--rclip-runs", type=_positive, default=3, metavar="N",
                   help="runs of each search command in the rclip comparison [default: 3]")


def main(argv: list[str] | None = None) -> int:
    import photoset
    from sysmon import wait_until_quiet

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, help="folder of full-size JPEGs (default: ../shared/photos/large, "
                   "else the demo photos upscaled to 12 MP)")
    add_arguments(p)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each run wait up to this long for other processes to go quiet")
    p.add_argument("--out", type=Path, help="JSON output (default bench/results/rclip-compare-<time>.json)")
    args = p.parse_args(argv)
    rclip = find_rclip(args.rclip)
    source = photoset.find_source(args.photos)
    log(f"photos: {source.description}: {len(source.paths)} JPEGs, mean {source.megapixels_mean:.1f} MP")
    quiet = (lambda: wait_until_quiet(args.wait_quiet, echo=log)) if args.wait_quiet > 0 else (lambda: None)
    work = Path(tempfile.mkdtemp(prefix="photoseek-rclip-"))
    stamp = dt.datetime.now().astimezone()
    started = time.perf_counter()
    try:
        result = compare(rclip, source, args.rclip_photos, work, runs=args.rclip_runs, quiet=quiet)
    except CompareError as exc:
        log(f"rclip comparison failed: {exc}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result |= {"started": stamp.isoformat(timespec="seconds"),
               "source": source.description, "seconds": time.perf_counter() - started}
    text = format_table(result)
    result["report"] = text
    print(text)
    if not result.get("skipped"):
        out = args.out or HERE / "results" / f"rclip-compare-{stamp:%Y%m%d-%H%M%S}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
        log(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
