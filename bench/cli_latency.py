"""Terminal commands from process start to printed results: wall time and peak resident memory.

    python bench/cli_latency.py                      # 100,000 photos, ViT-B-32 (random weights) and offline
    python bench/cli_latency.py --photos 20000 --runs 3 --models clip
    python bench/cli_latency.py --before DIR         # also the photoseek package in DIR, runs alternating

Each command is run cold (a new process each time; the page cache warm, as for someone searching
twice in a row), ``--runs`` times. Wall time is measured around the process, peak RSS is the
process's own (``wait4``; so this process stays small: a child's high-water mark starts at what it
was forked from, and the models and the index are made in a subprocess), and the share of the CPU that other processes took is printed beside
it: figures from a busy machine say so. The index is synthetic (bench/synthetic.py: photo-like
vectors, metadata and keyword documents for every photo), built once and cached in bench/results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sysmon import machine_busy_seconds  # noqa: E402

REPO = HERE.parent
QUERY_PHOTO = REPO / "data" / "samples" / "bear.jpg"


def commands(index_dir: Path) -> list[tuple[str, list[str]]]:
    base = ["--index", str(index_dir)]
    return [
        ('search "a dog on a beach"', ["search", "a dog on a beach", "-k", "5", *base]),
        ("search --image bear.jpg", ["search", "--image", str(QUERY_PHOTO), "-k", "5", *base]),
        ("search --similar 42", ["search", "--similar", "42", "-k", "5", *base]),
        ("status", ["status", *base]),
    ]


def measure(argv: list[str], pythonpath: str | None = None) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MB, CPU seconds) of one cold ``photoseek`` process; ``pythonpath``:
    the folder whose photoseek package runs instead of the installed one."""
    # Bytecode is written as an installed package's is (a user's first run writes it), and 'python -m'
    # runs from a folder without a checkout, which would shadow PYTHONPATH's package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
        # Its own cache folder: exports of another format would otherwise replace the current code's
        # (one export per model is kept), and each run would export again.
        env["XDG_CACHE_HOME"] = os.path.join(pythonpath, ".cache")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "photoseek", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"photoseek {' '.join(argv)} failed: {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


BUILD = """
import sys
sys.path.insert(0, {here!r})
from run import CACHE, SYNTHETIC_VERSION, random_clip_checkpoint
from synthetic import build_index
from photoseek.encoders import canonical_model_id, load_encoder

model, n = {model!r}, {n}
model_id = f"ViT-B-32:{{random_clip_checkpoint()}}" if model == "clip" else canonical_model_id("offline")
index_dir = CACHE / f"cli-{{model}}-{{n}}"
stamp = index_dir / "model.txt"
encoder = load_encoder(model_id)  # for CLIP this also exports the towers a search runs without torch
if not (stamp.is_file() and stamp.read_text() == f"{{model_id}} {{SYNTHETIC_VERSION}}"):
    print(f"building a synthetic index of {{n:,}} photos for {{model}} (once, in {{index_dir}})", file=sys.stderr)
    build_index(index_dir, n, model_id=model_id, dim=encoder.dim)
    stamp.write_text(f"{{model_id}} {{SYNTHETIC_VERSION}}")
print(index_dir)
"""


def index_for(model: str, n: int) -> Path:
    """A synthetic index of ``n`` photos for ``model`` (built once), its model's towers exported."""
    out = subprocess.run([sys.executable, "-c", BUILD.format(here=str(HERE), model=model, n=n)],
                         stdout=subprocess.PIPE, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def others_share(busy_before: float | None, own_before: float, started: float, children_cpu: float) -> float | None:
    """The share of the machine's CPU that processes other than this one and its runs took meanwhile."""
    busy = machine_busy_seconds()
    if busy is None or busy_before is None:
        return None
    ours = time.process_time() - own_before + children_cpu
    wall = time.perf_counter() - started
    return min(1.0, max(0.0, busy - busy_before - ours) / max(1e-9, wall * (os.cpu_count() or 1)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=100_000, help="photos in the synthetic index [100000]")
    p.add_argument("--runs", type=int, default=5, help="cold runs of each command [5]")
    p.add_argument("--models", default="clip,offline", help="comma-separated: clip (ViT-B-32), offline")
    p.add_argument("--before", metavar="DIR", help="also run the photoseek package in DIR (on PYTHONPATH; e.g. an "
                   "older commit's, with the libraries it ran with; its cache folder in DIR), each run alternating with the "
                   "current code's")
    args = p.parse_args(argv)
    codes = [("now", None)] + ([("before", args.before)] if args.before else [])
    rows = []
    plan = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        index_dir = index_for(model, args.photos)
        plan += [(model, index_dir, label, cmd) for label, cmd in commands(index_dir)]
    plan.append(("-", None, "--help", ["--help"]))
    for model, index_dir, label, cmd in plan:
        for code, path in codes:  # once unmeasured: the page cache warm, any export this command makes made
            measure(cmd, path)
        walls = {code: [] for code, _ in codes}
        rss = {code: [] for code, _ in codes}
        cpu = 0.0
        busy, own, started = machine_busy_seconds(), time.process_time(), time.perf_counter()
        for _ in range(args.runs):
            for code, path in codes:  # alternating: a slow spell of the machine falls on both
                wall, peak, used = measure(cmd, path)
                walls[code].append(wall)
                rss[code].append(peak)
                cpu += used
        share = others_share(busy, own, started, cpu)
        for code, _ in codes:
            rows.append((label, model, code, min(walls[code]), statistics.median(walls[code]), max(rss[code]), share))
            print(f"  {model:8s} {code:6s} {label:28s} {min(walls[code]):5.2f}-{statistics.median(walls[code]):5.2f} s"
                  f"  {max(rss[code]):5.0f} MB  others' CPU {(share or 0):.0%}", flush=True)
    print(f"\nphotoseek on {args.photos:,} photos, {args.runs} cold runs each (min / median wall, peak RSS):\n")
    print("| command | model | code | wall (min / median) | peak RSS | others' CPU |\n| --- | --- | --- | --- | --- | --- |")
    for label, model, code, best, median, peak, share in rows:
        print(f"| `photoseek {label}` | {model} | {code} | {best:.2f} / {median:.2f} s | {peak:.0f} MB | {(share or 0):.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
