"""photoseek benchmark: indexing throughput against the hardware's limit and a naive script,
memory while indexing, and query latency at 100,000 images. One command:

    python bench/run.py            # full run (~10 min on 2 cores)
    python bench/run.py --quick    # smaller sizes (~3 min)

Prints a markdown table and saves everything as JSON in bench/results/. All numbers come
from one run on one machine, so the ratios hold even when the machine is noisy; the share
of CPU that *other* processes took during each measurement is recorded next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import photoset  # noqa: E402
import rclip_compare  # noqa: E402
from queries import PAGE  # noqa: E402
from sysmon import OthersMeter, wait_until_quiet  # noqa: E402

RESULTS = HERE / "results"
CACHE = RESULTS / "cache"
CLIP_ARCH = "ViT-B-32"
SYNTHETIC_VERSION = "photo-like-v4"  # bump when bench/synthetic.py makes a different index (v4: keyword documents)
TARGET_CLIENTS = 8  # the HTTP targets are for 8 concurrent clients
TARGETS = {
    "ratio_limit": 0.70, "ratio_naive": 4.0,
    "http_text_p50": 25.0, "http_text_p99": 60.0, "inproc_text_p50": 20.0,
    "rss_mb": 2.5 * 1024, "rss_growth": 0.10,
}


def log(msg: str = "") -> None:
    print(msg, file=sys.stderr, flush=True)


def random_clip_checkpoint() -> Path:
    """ViT-B-32 with random weights (no weights can be downloaded here; the speed is the same)."""
    path = CACHE / "vit-b-32-random.pt"
    if not path.is_file():
        import open_clip
        import torch

        log(f"  making {path.name} (random ViT-B-32 weights, once)")
        torch.manual_seed(0)
        model = open_clip.create_model(CLIP_ARCH, pretrained=None)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    return path


def machine_info() -> dict:
    import torch

    from photoseek.encoders.precision import native_bf16_supported

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "native_bf16": native_bf16_supported(), "platform": platform.platform()}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes: about 3 minutes instead of 10")
    p.add_argument("--photos", type=Path, help="folder of full-size JPEGs (default: ../shared/photos/large, "
                   "else the demo photos upscaled to 12 MP)")
    p.add_argument("--models", default="clip,offline", help="comma-separated: clip (ViT-B-32), offline")
    p.add_argument("--index-sizes", help="photo counts to index with ViT-B-32, comma-separated "
                   "(the largest gives the throughput; two or more show whether memory grows) [500,2000; quick 100,300]")
    p.add_argument("--offline-size", type=int, help="photo count to index with the offline encoder [500; quick 200]")
    p.add_argument("--naive-photos", type=int, help="photos for the naive script [39; quick 16]")
    p.add_argument("--n-query-index", type=int, default=100_000, help="images in the query benchmark's index")
    p.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: limit,naive,index,bound,queries,http,rclip")
    p.add_argument("--set", action="append", default=[], metavar="PHOTOSEEK_X=VALUE",
                   help="environment for the 'photoseek index' runs, e.g. --set PHOTOSEEK_BATCH_SIZE=64")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each measurement wait up to this long for other processes to go quiet")
    p.add_argument("--out", type=Path, help="JSON output (default bench/results/bench-<time>.json)")
    rclip_compare.add_arguments(p, count_flag="--rclip-photos", default_count=None, count_default_text="600; quick 100")
    return p.parse_args(argv)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        q = args.quick
        self.sizes = sorted(int(x) for x in (args.index_sizes or ("100,300" if q else "500,2000")).split(","))
        self.offline_size = args.offline_size or (200 if q else 500)
        self.naive_n = args.naive_photos or (16 if q else 39)
        self.limit_batches = [32] if q else [16, 32, 64]
        self.limit_seconds = 3.0 if q else 5.0
        self.query_counts = (dict(n_text=30, n_repeat=150, n_image=8, n_similar=150) if q
                             else dict(n_text=100, n_repeat=500, n_image=30, n_similar=400))
        self.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
        self.env = dict(kv.split("=", 1) for kv in args.set)
        self.models = [m.strip() for m in args.models.split(",") if m.strip()]
        self.work = Path(tempfile.mkdtemp(prefix="photoseek-bench-"))
        self.out: dict = {"started": dt.datetime.now().isoformat(timespec="seconds"), "args": vars(args) | {
            "photos": str(args.photos) if args.photos else None, "out": str(args.out) if args.out else None}}

    def quiet(self) -> None:
        if self.args.wait_quiet > 0:
            wait_until_quiet(self.args.wait_quiet, echo=log)

    def model_id(self, name: str) -> str:
        if name == "clip":
            return f"{CLIP_ARCH}:{random_clip_checkpoint()}"
        if name == "offline":
            from photoseek.encoders import canonical_model_id

            return canonical_model_id("offline")
        raise SystemExit(f"unknown model {name!r}: use clip or offline")

    # -- parts -----------------------------------------------------------------------------

    def run(self) -> dict:
        started = time.perf_counter()
        self.out["machine"] = machine_info()
        source = photoset.find_source(self.args.photos)
        self.source = source
        self.out["photos"] = {"source": source.description, "files": len(source.paths),
                              "megapixels_mean": source.megapixels_mean, "megapixels_min": source.megapixels_min,
                              "megapixels_max": source.megapixels_max, "progressive": source.progressive,
                              "mb_mean": source.mb_mean}
        log(f"photos: {source.description}: {len(source.paths)} JPEGs, {source.megapixels_min:.1f}-"
            f"{source.megapixels_max:.1f} MP (mean {source.megapixels_mean:.1f}), {source.progressive} progressive")
        self.out["indexing"] = {}
        try:
            for name in self.models:
                self.out["indexing"][name] = self.indexing(name)
            if "queries" not in self.skip and "clip" in self.models:
                self.out["queries"] = self.queries(self.model_id("clip"))
            if "rclip" not in self.skip:
                self.out["rclip"] = self.rclip_comparison()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        self.out["seconds"] = time.perf_counter() - started
        return self.out

    def indexing(self, name: str) -> dict:
        from indexing import run_index
        from model_speed import measure_limit, measure_naive, recheck_limit

        model_id = self.model_id(name)
        log(f"\n== {name}: {model_id}")
        res: dict = {"model_id": model_id}
        sizes = self.sizes if name == "clip" else [self.offline_size]
        if "limit" not in self.skip:
            self.quiet()
            with OthersMeter() as others:
                limit = measure_limit(model_id, self.limit_batches, self.limit_seconds, echo=log)
            res["limit"] = vars(limit) | {"others_cpu_share": others.share}
        if "naive" not in self.skip:
            paths = [self.source.paths[i % len(self.source.paths)] for i in range(self.naive_n)]
            self.quiet()
            with OthersMeter() as others:
                naive = measure_naive(model_id, paths, echo=log)
            res["naive"] = vars(naive) | {"others_cpu_share": others.share}
            log(f"  naive: {naive.ips:.2f} images/s ({naive.images} photos)")
        gc.collect()
        if "index" not in self.skip:
            res["runs"] = []
            for n in sizes:
                folder = photoset.make_set(self.source, n, self.work / f"photos-{n}")
                self.quiet()
                run = run_index(folder, model_id, images=n, env_overrides=self.env)
                shutil.rmtree(folder, ignore_errors=True)
                res["runs"].append(run.as_dict())
                log(f"  photoseek index {n} photos: {run.summary_ips:.1f} images/s (whole command {run.wall_ips:.1f}); "
                    f"peak RSS {run.peak_rss_mb:.0f} MB (PSS {run.peak_pss_mb:.0f} MB); others' CPU "
                    f"{(run.others_cpu_share or 0):.0%}")
        if "limit" not in self.skip and "index" not in self.skip:
            # The limit again, after: if the machine got quieter meanwhile, the ratio uses the better number.
            self.quiet()
            recheck_limit(model_id, limit, self.limit_seconds, echo=log)
            res["limit"] = vars(limit) | {"others_cpu_share": res["limit"]["others_cpu_share"]}
            if "bound" not in self.skip and res.get("runs"):
                res["bound"] = self.bound(model_id, limit, max(res["runs"], key=lambda r: r["images"]))
        return res

    def bound(self, model_id: str, limit, run: dict) -> dict:
        """The bound the decode and tower costs put on indexing (bench/index_bound.py), against the
        largest run's whole-command rate."""
        from index_bound import decode_cost, encoder_facts

        from photoseek.settings import usable_cores

        size, precision = encoder_facts(model_id)  # the offline encoder stays fp32 even where bf16 is faster
        cost = decode_cost(list(self.source.paths), size)
        cores = usable_cores()
        tower_ms = cores * 1000.0 / max(v for k, v in limit.grid.items() if k.startswith(precision + "/"))
        bound = cores * 1000.0 / (cost.decode_ms + tower_ms)
        out = {"decode_ms": cost.decode_ms, "read_hash_ms": cost.read_hash_ms, "tower_ms": tower_ms,
               "bound_ips": bound, "wall_ips": run["wall_ips"], "ratio": run["wall_ips"] / bound,
               "photos": run["images"], "others_cpu_share": cost.others_cpu_share}
        log(f"  bound: {cores} / ({cost.decode_ms:.1f} ms decode + {tower_ms:.1f} ms tower) = {bound:.1f} photos/s; "
            f"photoseek index {run['images']} photos, whole command: {run['wall_ips']:.1f} = {out['ratio']:.2f}")
        return out

    def queries(self, model_id: str) -> dict:
        import queries as q
        from synthetic import build_index

        from photoseek.encoders import load_encoder

        n = self.args.n_query_index
        log(f"\n== queries over {n:,} images ({model_id.split(':')[0]})")
        encoder = load_encoder(model_id)
        dim = encoder.dim
        index_dir = CACHE / f"index-{n}-{encoder.dim}"
        stamp = index_dir / "model.txt"
        if not (stamp.is_file() and stamp.read_text() == f"{model_id} {SYNTHETIC_VERSION}"):
            log(f"  building a synthetic index of {n:,} images (once; cached in {index_dir})")
            seconds = build_index(index_dir, n, model_id=model_id, dim=encoder.dim)
            stamp.write_text(f"{model_id} {SYNTHETIC_VERSION}")
            log(f"  built in {seconds:.1f} s")
        photos = self.source.paths
        res: dict = {"images": n, "model_id": model_id, "latency": []}
        self.quiet()
        for lat in q.in_process(index_dir, encoder, photos, n_ids=n, echo=log, **self.query_counts):
            res["latency"].append(lat.as_dict())
        ivf_dir, build_seconds = self.approximate_copy(index_dir, dim)
        res["approximate"] = self.approximate(index_dir, ivf_dir, n, dim, build_seconds)
        res["approximate"]["filtered_recall"] = q.filtered_recall(ivf_dir, n_ids=n, dim=dim)
        log("  approximate index, share of the exact filtered top 24 found: " + ", ".join(
            f"filter keeping {k}: {v:.1%}" for k, v in res["approximate"]["filtered_recall"].items()))
        self.quiet()
        for lat in q.in_process(ivf_dir, encoder, photos, n_ids=n, echo=log, where="in process, IVF index",
                                **self.query_counts):
            res["latency"].append(lat.as_dict())
        shutil.rmtree(ivf_dir, ignore_errors=True)
        del encoder
        gc.collect()
        if "http" not in self.skip:
            self.quiet()
            lats, server = q.over_http(index_dir, photos, clients=self.args.clients, n_ids=n, echo=log,
                                       **self.query_counts)
            res["latency"] += [lat.as_dict() for lat in lats]
            res["server"] = server
        return res


    def rclip_comparison(self) -> dict:
        """bench/rclip_compare.py on this run's photos; skipped (one line) when rclip is not installed."""
        n = self.args.rclip_photos or (100 if self.args.quick else rclip_compare.DEFAULT_PHOTOS)
        try:
            return rclip_compare.compare(self.args.rclip, self.source, n, self.work, runs=self.args.rclip_runs,
                                         quiet=self.quiet)
        except rclip_compare.CompareError as exc:
            log(f"  rclip comparison failed: {exc}")
            return {"failed": str(exc)}

    def approximate_copy(self, exact_dir: Path, dim: int) -> tuple[Path, float]:
        """A copy of the index with the same vectors in the approximate (IVF) index photoseek
        switches to for large collections, and the seconds that index took to build."""
        from photoseek.storage.sqlite import SqliteCatalogue
        from photoseek.store import IndexFiles, VectorStore

        ivf_dir = self.work / "approximate"
        ivf_dir.mkdir()
        shutil.copy2(IndexFiles(exact_dir).database, IndexFiles(ivf_dir).database)
        catalogue = SqliteCatalogue(IndexFiles(ivf_dir).database, readonly=True)
        try:
            started = time.perf_counter()
            store = VectorStore.from_database(catalogue, dim, exact_up_to=0)
            build_seconds = time.perf_counter() - started
            with catalogue.engine.connect() as conn:
                generation = catalogue.generation(conn)
            store.save(IndexFiles(ivf_dir).vectors, generation)
        finally:
            catalogue.close()
        return ivf_dir, build_seconds

    def approximate(self, exact_dir: Path, ivf_dir: Path, n: int, dim: int, build_seconds: float) -> dict:
        import queries as q

        self.quiet()
        res = q.approximate_vs_exact(exact_dir, ivf_dir, n_ids=n, dim=dim).as_dict() | {
            "build_seconds": build_seconds}
        log(f"  approximate index ({res['lists']} lists, {res['probes']} probed): search {res['search_ms_approximate']:.2f} "
            f"vs {res['search_ms_exact']:.2f} ms exact; recall@{PAGE} text {res['recall_text']:.3f}, "
            f"similar {res['recall_similar']:.3f}; built in {build_seconds:.1f} s")
        return res


# -- the report ----------------------------------------------------------------------------------


def _ok(passed: bool | None) -> str:
    return "" if passed is None else ("✅" if passed else "❌")


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:.0%}"


def report(out: dict) -> str:
    m, ph = out["machine"], out["photos"]
    lines = [
        f"## photoseek benchmark ({out['started']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; torch {m['torch']} "
        f"({m['torch_threads']} threads), native bf16: {'yes' if m['native_bf16'] else 'no'}.  ",
        f"Photos: {ph['source']}: {ph['files']} JPEGs, {ph['megapixels_min']:.1f}-{ph['megapixels_max']:.1f} MP "
        f"(mean {ph['megapixels_mean']:.1f} MP, {ph['mb_mean']:.2f} MB), {ph['progressive']} of them progressive; "
        "repeated to the counts below.",
        "",
    ]
    idx = out.get("indexing", {})
    if idx:
        lines += [
            "### Indexing throughput (images/s)",
            "",
            "| encoder | limit: image tower alone | photoseek index (photos) | naive script | photoseek / limit | photoseek / naive |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in idx.items():
            limit = r.get("limit")
            runs = r.get("runs") or []
            best_run = max(runs, key=lambda x: x["images"]) if runs else None
            naive = r.get("naive")
            ps = best_run["summary_ips"] if best_run else None
            rl = ps / limit["best_ips"] if ps and limit else None
            rn = ps / naive["ips"] if ps and naive else None
            is_clip = name == "clip"
            label = CLIP_ARCH if is_clip else r["model_id"]
            lines.append(
                f"| {label} "
                f"| {limit['best_ips']:.1f} ({limit['best_precision']}, batch {limit['best_batch']}, "
                f"{limit.get('best_workers', 1)} at once) " if limit else f"| {label} | – "
            )
            lines[-1] += (
                f"| {ps:.1f} ({best_run['images']}) " if best_run else "| – "
            ) + (f"| {naive['ips']:.2f} " if naive else "| – ") + (
                f"| {rl:.2f} {_ok(rl >= TARGETS['ratio_limit']) if is_clip else ''} " if rl else "| – ") + (
                f"| {rn:.1f} {_ok(rn >= TARGETS['ratio_naive']) if is_clip else ''} |" if rn else "| – |")
        lines += ["", "photoseek = `photoseek index` in a fresh process on a cold index, photos / the seconds its "
                  "summary reports (model load, scan, decode, embed, database and FAISS writes; not Python's own "
                  "start-up). Targets (ViT-B-32): photoseek/limit ≥ 0.70, photoseek/naive ≥ 4.", ""]
        detail = ["| encoder | photos | images/s (summary) | images/s (whole command) | peak RSS, tree | peak PSS, tree "
                  "| main process RSS | processes | others' CPU |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in idx.items():
            for run in r.get("runs") or []:
                detail.append(
                    f"| {CLIP_ARCH if name == 'clip' else r['model_id']} | {run['images']} | {run['summary_ips']:.1f} "
                    f"| {run['wall_ips']:.1f} | {run['peak_rss_mb']:.0f} MB | {run['peak_pss_mb']:.0f} MB "
                    f"| {run['peak_main_rss_mb']:.0f} MB | {run['peak_processes']} | {_pct(run['others_cpu_share'])} |")
        lines += ["### Indexing runs and memory", ""] + detail + [""]
        for name, r in idx.items():
            b = r.get("bound")
            if b:
                lines += [f"Bound, {CLIP_ARCH if name == 'clip' else r['model_id']}: cores / (decode {b['decode_ms']:.1f} "
                          f"+ tower {b['tower_ms']:.1f} ms of one core per photo) = {b['bound_ips']:.1f} photos/s; "
                          f"`photoseek index` on {b['photos']} photos, whole command: {b['wall_ips']:.1f} photos/s = "
                          f"**{b['ratio']:.2f}** of it (target >= 0.8).  "]
        lines.append("")
        clip_runs = (idx.get("clip") or {}).get("runs") or []
        if len(clip_runs) >= 2:
            a, b = clip_runs[0], clip_runs[-1]
            growth = (b["peak_rss_mb"] - a["peak_rss_mb"]) / a["peak_rss_mb"]
            ok = b["peak_rss_mb"] <= TARGETS["rss_mb"] and growth <= TARGETS["rss_growth"]
            lines += [f"Peak RSS (sum over the process tree, decode workers included) from {a['images']} to "
                      f"{b['images']} photos: {a['peak_rss_mb']:.0f} → {b['peak_rss_mb']:.0f} MB ({growth:+.1%}). "
                      f"Target: ≤ 2.5 GB and flat {_ok(ok)}", ""]
        for name, r in idx.items():
            limit = r.get("limit")
            if limit:
                grid = ", ".join(f"{k} {v:.1f}" for k, v in limit["grid"].items())
                lines.append(f"Limit grid, {CLIP_ARCH if name == 'clip' else r['model_id']} (images/s): {grid}; "
                             f"others' CPU {_pct(limit.get('others_cpu_share'))}.  ")
        lines.append("")
    qs = out.get("queries")
    if qs:
        lines += [f"### Query latency over {qs['images']:,} images ({CLIP_ARCH}, page of 24 results)", "",
                  "| query | where | p50 ms | p90 ms | p99 ms | queries/s | target |", "|---|---|---:|---:|---:|---:|---|"]
        for lat in qs["latency"]:
            target = ""
            if lat["kind"].startswith("text"):
                if lat["where"] == "in process":
                    target = f"p50 ≤ 20 {_ok(lat['p50_ms'] <= TARGETS['inproc_text_p50'])}"
                elif lat["where"] == f"HTTP, {TARGET_CLIENTS} clients":
                    target = (f"p50 ≤ 25 {_ok(lat['p50_ms'] <= TARGETS['http_text_p50'])}, "
                              f"p99 ≤ 60 {_ok(lat['p99_ms'] <= TARGETS['http_text_p99'])}")
            err = f" ({lat['errors']} errors)" if lat.get("errors") else ""
            lines.append(f"| {lat['kind']}{err} | {lat['where']} | {lat['p50_ms']:.1f} | {lat['p90_ms']:.1f} "
                         f"| {lat['p99_ms']:.1f} | {lat['throughput_qps']:.1f} | {target} |")
        lines.append("")
        ap = qs.get("approximate")
        if ap:
            lines += [f"Above `exact_search_up_to` photos (default 200,000) the vectors go into an approximate "
                      f"(IVF) index. The same {qs['images']:,} vectors in one ({ap['lists']} lists, {ap['probes']} "
                      f"visited per query): vector search {ap['search_ms_approximate']:.2f} ms instead of "
                      f"{ap['search_ms_exact']:.2f} ms (p50, one query); it finds {ap['recall_text']:.1%} of a "
                      f"text-like query's exact top {PAGE} and {ap['recall_similar']:.1%} of a \"more like this\" "
                      f"query's. Built in {ap['build_seconds']:.1f} s. Lists visited -> text-query recall, "
                      f"search ms: " + ", ".join(f"{p} -> {r:.1%}, {ms:.2f} ms"
                                                for p, (r, ms) in ap.get("probe_sweep", {}).items()), ""]
    if out.get("rclip"):
        lines.append(rclip_compare.format_table(out["rclip"]))
    lines.append(f"Total benchmark time: {out.get('seconds', 0) / 60:.1f} min.")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.models:
        for name in args.models.split(","):
            if name.strip() not in ("clip", "offline"):
                raise SystemExit(f"unknown model {name!r}: use clip and/or offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "rclip" not in {s.strip() for s in args.skip.split(",")}:
        args.rclip = rclip_compare.find_rclip(args.rclip)  # a wrong --rclip stops here, not after the other parts
    bench = Bench(args)
    out = bench.run()
    text = report(out)
    out["report"] = text
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = args.out or RESULTS / f"bench-{dt.datetime.now():%Y%m%d-%H%M%S}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(text)
    log(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
