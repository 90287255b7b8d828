"""``photoseek index`` against the bound this hardware puts on it, measured on the same photos in one run.

    python bench/index_bound.py                  # 600 12-MP photos, ViT-B-32 (random weights), ~3 min
    python bench/index_bound.py --photos-count 300 --model offline

Per photo, on one core:

* decode: the indexer's own decode at its draft scale (:func:`photoseek.imaging.decode_for_embedding`:
  JPEG DCT-scaled decode, upright, RGB, bicubic resize + centre crop to the tower's input size), on
  the bytes already in memory; reading and hashing the file are measured apart (``read+hash``);
* tower: the image tower alone on ready tensors at its best batch, precision and split of the cores
  (bench/model_speed.py ``measure_limit``), as core-seconds: cores / images per second.

bound = cores / (decode + tower), in photos per second: what the cores could do if they never
waited and did nothing else. Next to it: ``photoseek index`` on the same photos in a fresh process
on an empty index, photos / the whole command's wall time (Python start-up, imports, model loading,
scan, decode, embed, database and vector writes, tags), the ratio, and the peak memory of the
whole process tree (decode workers included). Decode and tower are measured before and after the
run and the faster of each kept: the bound is the quieter machine's, so the ratio errs low. Each
measurement records the share of the CPU other processes took meanwhile (bench/sysmon.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import photoset  # noqa: E402
from sysmon import OthersMeter  # noqa: E402


@dataclass
class DecodeCost:
    decode_ms: float  # one core, per photo: decode + resize + crop (no file reading)
    read_hash_ms: float  # one core, per photo: read the file and hash its bytes (the worker does both too)
    photos: int
    others_cpu_share: float | None


@dataclass
class Bound:
    model_id: str
    cores: int
    photos: int
    decode_ms: float
    read_hash_ms: float
    tower_ms: float  # core-milliseconds per photo at the tower's best configuration
    tower_config: str
    bound_ips: float  # cores / (decode + tower)
    index_wall_ips: float  # the whole 'photoseek index' command
    index_summary_ips: float  # the seconds photoseek's own summary reports (from opening the index on)
    ratio: float  # index_wall_ips / bound_ips
    peak_rss_mb: float
    peak_pss_mb: float
    peak_main_rss_mb: float
    main_hwm_mb: float
    peak_rss_bound_mb: float
    index_seconds: float
    others_cpu_share: dict[str, float | None] = field(default_factory=dict)
    summary_line: str = ""
    before: dict | None = None  # the same run with other code (--before): its wall rate, ratio and memory


    def lines(self) -> list[str]:
        share = ", ".join(f"{k} {v:.0%}" for k, v in self.others_cpu_share.items() if v is not None)
        return [
            f"photos: {self.photos}; cores: {self.cores}; model: {self.model_id}",
            f"decode {self.decode_ms:.1f} ms + tower {self.tower_ms:.1f} ms of one core per photo "
            f"(tower at {self.tower_config}; reading + hashing the file {self.read_hash_ms:.1f} ms more, not in the bound)",
            f"bound: {self.cores} / ({self.decode_ms:.1f} + {self.tower_ms:.1f}) ms = {self.bound_ips:.1f} photos/s",
            f"photoseek index, whole command: {self.index_wall_ips:.1f} photos/s ({self.index_seconds:.1f} s; "
            f"its own summary: {self.index_summary_ips:.1f}/s) = {self.ratio:.2f} of the bound",
            f"peak memory of the process tree: RSS {self.peak_rss_mb:.0f} MB sampled every 0.1 s, at most "
            f"{self.peak_rss_bound_mb:.0f} MB (main process's own peak {self.main_hwm_mb:.0f} MB by the kernel + the "
            f"other processes' sampled peak); PSS {self.peak_pss_mb:.0f} MB",
            f"others' CPU share: {share or 'unknown'}",
        ] + ([
            f"before ({self.before['label']}): {self.before['wall_ips']:.1f} photos/s whole command "
            f"({self.before['wall_seconds']:.1f} s) = {self.before['wall_ips'] / self.bound_ips:.2f} of the bound; "
            f"peak RSS {self.before['peak_rss_mb']:.0f} MB sampled, at most {self.before['peak_rss_bound_mb']:.0f} MB "
            f"(main {self.before['main_hwm_mb']:.0f} MB), PSS {self.before['peak_pss_mb']:.0f} MB; "
            f"others' CPU {self.before['others_cpu_share'] or 0:.0%}"] if self.before else [])


def decode_cost(paths: list[Path], size: int, max_photos: int = 60) -> DecodeCost:
    """Milliseconds of one core per photo (wall time of this single-threaded process; the best of two
    passes over up to ``max_photos`` of ``paths``, spread over the set)."""
    from photoseek.imaging import content_hash, decode_for_embedding

    step = max(1, len(paths) // max_photos)
    sample = paths[::step][:max_photos]
    blobs = [p.read_bytes() for p in sample]
    decode_for_embedding(blobs[0], size)  # warm-up: Pillow's plugins, the first allocation
    best_decode = best_read = float("inf")
    with OthersMeter() as others:
        for _ in range(2):
            started = time.perf_counter()
            for data in blobs:
                decode_for_embedding(data, size)
            best_decode = min(best_decode, (time.perf_counter() - started) / len(blobs))
            started = time.perf_counter()
            for p in sample:
                content_hash(p.read_bytes())
            best_read = min(best_read, (time.perf_counter() - started) / len(sample))
    return DecodeCost(best_decode * 1000, best_read * 1000, len(sample), others.share)


def tower_cost(model_id: str, batches: list[int], seconds: float, precision: str, echo=print):
    """(core-ms per photo, configuration, others' share) at the image tower's best configuration in
    ``precision``, the one photoseek runs this encoder in (the offline encoder stays float32 even
    where bf16 is faster: its vectors do not survive bf16)."""
    from model_speed import measure_limit

    from photoseek.settings import usable_cores

    with OthersMeter() as others:
        limit = measure_limit(model_id, batches, seconds, echo=echo)
    gc.collect()
    # The indexer runs a CLIP tower in OpenVINO when it can: the faster engine sets the bound.
    engines = (precision + "/", "openvino/")
    key, ips = max(((k, v) for k, v in limit.grid.items() if k.startswith(engines)), key=lambda kv: kv[1])
    _, batch, split = key.split("/")[:3]
    calls, threads = split.split("x")
    config = f"{key.split('/')[0]}, batch {batch[2:]}, {calls} call(s) x {threads} thread(s)"
    return usable_cores() * 1000.0 / ips, config, others.share, limit


def measure(model_id: str, folder: Path, n: int, *, batches: list[int], seconds: float, size: int, precision: str,
            env: dict[str, str] | None = None, before: Path | None = None, echo=print) -> Bound:
    """``before``: a folder holding another photoseek package (e.g. an older commit's, laid out as
    installed): it is run on the same photos too, first, with that folder on PYTHONPATH and a cache
    folder of its own there."""
    from indexing import run_index

    from photoseek.settings import usable_cores

    paths = sorted(folder.rglob("*.jpg"))
    echo("  decode cost (one core) ...")
    dec1 = decode_cost(paths, size)
    echo(f"    decode {dec1.decode_ms:.1f} ms, read+hash {dec1.read_hash_ms:.1f} ms per photo")
    echo("  tower cost ...")
    tower1, config1, tshare1, _ = tower_cost(model_id, batches, seconds, precision, echo=lambda m: echo("  " + m))
    earlier = None
    if before is not None:
        # Its own cache folder (in DIR): exports of another format would replace the current code's.
        # Filled first by a run on a few photos, so that its one-time exports and conversion are not
        # what is compared.
        before_env = (env or {}) | {"PYTHONPATH": str(before), "XDG_CACHE_HOME": str(before / ".cache")}
        with tempfile.TemporaryDirectory() as few:
            for path in paths[:8]:
                shutil.copy(path, few)
            run_index(Path(few), model_id, images=8, env_overrides=before_env)
        echo(f"  photoseek index on {n} photos, code from {before} ...")
        old = run_index(folder, model_id, images=n, env_overrides=before_env)
        echo(f"    {old.summary_line}")
        echo(f"    whole command {old.wall_seconds:.1f} s = {old.wall_ips:.1f} photos/s; peak RSS {old.peak_rss_mb:.0f} MB")
        earlier = {"label": str(before), "wall_ips": old.wall_ips, "wall_seconds": old.wall_seconds,
                   "summary_ips": old.summary_ips, "peak_rss_mb": old.peak_rss_mb, "peak_pss_mb": old.peak_pss_mb,
                   "main_hwm_mb": old.main_hwm_mb, "peak_rss_bound_mb": old.peak_rss_bound_mb,
                   "others_cpu_share": old.others_cpu_share, "summary_line": old.summary_line}
    echo(f"  photoseek index on {n} photos ...")
    run = run_index(folder, model_id, images=n, env_overrides=env)
    echo(f"    {run.summary_line}")
    echo(f"    whole command {run.wall_seconds:.1f} s = {run.wall_ips:.1f} photos/s; peak RSS {run.peak_rss_mb:.0f} MB")
    echo("  decode and tower again ...")
    dec2 = decode_cost(paths, size)
    tower2, config2, tshare2, _ = tower_cost(model_id, batches, seconds, precision, echo=lambda m: echo("  " + m))
    dec = min((dec1, dec2), key=lambda d: d.decode_ms)
    tower, config = min(((tower1, config1), (tower2, config2)))
    cores = usable_cores()
    bound = cores * 1000.0 / (dec.decode_ms + tower)
    return Bound(
        model_id=model_id, cores=cores, photos=n, decode_ms=dec.decode_ms, read_hash_ms=dec.read_hash_ms,
        tower_ms=tower, tower_config=config, bound_ips=bound, index_wall_ips=run.wall_ips,
        index_summary_ips=run.summary_ips, ratio=run.wall_ips / bound, peak_rss_mb=run.peak_rss_mb,
        peak_pss_mb=run.peak_pss_mb, peak_main_rss_mb=run.peak_main_rss_mb, main_hwm_mb=run.main_hwm_mb,
        peak_rss_bound_mb=run.peak_rss_bound_mb, index_seconds=run.wall_seconds,
        others_cpu_share={"decode": max(filter(None, (dec1.others_cpu_share, dec2.others_cpu_share)), default=None),
                          "tower": max(filter(None, (tshare1, tshare2)), default=None),
                          "index run": run.others_cpu_share},
        summary_line=run.summary_line, before=earlier,
    )


def input_size(model_id: str) -> int:
    return encoder_facts(model_id)[0]


def encoder_facts(model_id: str) -> tuple[int, str]:
    """(input size, the precision photoseek runs the image tower in: "bf16" or "fp32")."""
    import torch

    from photoseek.encoders import load_encoder

    encoder = load_encoder(model_id)
    facts = encoder.input_spec.size, "bf16" if encoder.dtype == torch.bfloat16 else "fp32"
    del encoder
    gc.collect()
    return facts


def main(argv=None) -> int:
    import run as bench_run

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=Path, help="folder of full-size JPEGs (default: bench/photoset.py's choice)")
    p.add_argument("--photos-count", type=int, default=600, help="photos to index (the issue's size: 600)")
    p.add_argument("--model", default="clip", help="clip (ViT-B-32, random weights) or offline")
    p.add_argument("--batches", default="32", help="tower batch sizes to try, comma-separated")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per tower configuration")
    p.add_argument("--set", action="append", default=[], metavar="PHOTOSEEK_X=VALUE",
                   help="environment for the 'photoseek index' run")
    p.add_argument("--before", type=Path, metavar="DIR",
                   help="also index the same photos with the photoseek package in DIR (on PYTHONPATH), for before/after")
    p.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    if args.model == "clip":
        model_id = f"{bench_run.CLIP_ARCH}:{bench_run.random_clip_checkpoint()}"
    elif args.model == "offline":
        from photoseek.encoders import canonical_model_id

        model_id = canonical_model_id("offline")
    else:
        raise SystemExit(f"--model: use clip or offline, not {args.model!r}")
    source = photoset.find_source(args.photos)
    work = Path(tempfile.mkdtemp(prefix="photoseek-bound-"))
    try:
        folder = photoset.make_set(source, args.photos_count, work / "photos")
        print(f"photos: {source.description}, {args.photos_count} files (mean {source.megapixels_mean:.1f} MP)",
              file=sys.stderr)
        facts = encoder_facts(model_id)
        bound = measure(model_id, folder, args.photos_count, batches=[int(b) for b in args.batches.split(",")],
                        seconds=args.seconds, size=facts[0], precision=facts[1],
                        env=dict(kv.split("=", 1) for kv in args.set), before=args.before, echo=lambda m: print(m, file=sys.stderr))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(bound.lines()))
    if args.out:
        args.out.write_text(json.dumps(asdict(bound), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
