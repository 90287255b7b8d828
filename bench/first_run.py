"""A model's first ``photoseek index`` on a machine: nothing exported or converted yet.

The first run of a model does once what later runs reuse: the exports of its towers, the OpenVINO
conversion, the tag vocabulary's text vectors. Each run here gets an empty cache folder of its own
(``XDG_CACHE_HOME``), so it pays all of that, and prints the whole command's time and the peak memory
of its process tree (the exporting and converting processes included), then the same for a second
run that finds the cache filled.

    python bench/first_run.py --model clip --photos-count 60
    python bench/first_run.py --model offline --photos-count 60
    python bench/first_run.py --before DIR   # also the same runs with the photoseek package in DIR
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import photoset  # noqa: E402
from indexing import run_index  # noqa: E402


def main(argv=None) -> int:
    import run as bench_run

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=Path, help="folder of full-size JPEGs (default: bench/photoset.py's choice)")
    p.add_argument("--photos-count", type=int, default=60, help="photos to index")
    p.add_argument("--model", default="clip", help="clip (ViT-B-32, random weights) or offline")
    p.add_argument("--before", type=Path, metavar="DIR",
                   help="also run with the photoseek package in DIR (on PYTHONPATH; e.g. an older commit's), "
                        "each with an empty cache of its own, for before/after in one run")
    args = p.parse_args(argv)
    if args.model == "clip":
        model_id = f"{bench_run.CLIP_ARCH}:{bench_run.random_clip_checkpoint()}"
    elif args.model == "offline":
        model_id = "offline:lite0"
    else:
        raise SystemExit(f"--model: use clip or offline, not {args.model!r}")
    work = Path(tempfile.mkdtemp(prefix="photoseek-first-run-"))
    try:
        folder = photoset.make_set(photoset.find_source(args.photos), args.photos_count, work / "photos")
        codes = [("", {})] + ([(f" [code from {args.before}]", {"PYTHONPATH": str(args.before)})] if args.before else [])
        for n, (code, env) in enumerate(codes):
            cache = {"XDG_CACHE_HOME": str(work / f"cache-{n}")}
            for label in ("first run (empty cache)", "second run (cache filled)"):
                run = run_index(folder, model_id, images=args.photos_count, env_overrides=cache | env)
                print(f"{label}{code}: {run.wall_seconds:.1f} s, process tree peak RSS {run.peak_rss_mb:.0f} MB "
                      f"sampled (at most {run.peak_rss_bound_mb:.0f} MB; main process {run.main_hwm_mb:.0f} MB); "
                      f"others' CPU {100 * (run.others_cpu_share or 0):.0f}%  [{model_id}, {args.photos_count} photos]",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
