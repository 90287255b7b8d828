"""What each indexing optimisation buys: the same photos indexed with one thing changed at a time.

    python bench/ablation.py                 # ViT-B-32, 312 photos, 2 rounds (~8 min on 2 cores)
    python bench/ablation.py --rounds 3 --photos-count 624 --variants default,one-call-2-threads

Each variant runs ``Indexer.run`` in a fresh process with the encoder already loaded, so
the numbers are the steady-state pipeline (scan, decode, embed, database, FAISS), not
model loading. Variants are interleaved in rounds and the best round is reported (noise
on a shared machine only ever slows a run down); the CPU share other processes took is
shown too.
"""

from __future__ import annotations

# Light imports only at module level: decode workers re-import this file as their main module.
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

VARIANT_ENV = "PHOTOSEEK_BENCH_VARIANT"

# name: (description, environment, patches)
VARIANTS: dict[str, tuple[str, dict[str, str], tuple[str, ...]]] = {
    "default": ("photoseek as shipped", {}, ()),
    "original": ("the pipeline before issue #4: 1 worker that imports torch, decoding alongside one model call "
                 "on 2 torch threads, no progressive fast path, default malloc",
                 {"PHOTOSEEK_DECODE_WORKERS": "1", "PHOTOSEEK_INFERENCE_WORKERS": "1", "PHOTOSEEK_TORCH_THREADS": "2"},
                 ("torch-in-workers", "no-fast-progressive", "no-mallopt")),
    "no-draft": ("JPEGs decoded at full size, then shrunk (no draft mode)", {}, ("no-draft",)),
    "no-fast-progressive": ("progressive JPEGs decoded whole (no AC-scan skipping)", {}, ("no-fast-progressive",)),
    "no-mallopt": ("decode workers with glibc's default malloc thresholds", {}, ("no-mallopt",)),
    "torch-in-workers": ("decode workers import the indexer (and torch) as before", {}, ("torch-in-workers",)),
    "one-call-2-threads": ("one model call at a time over 2 torch threads (meeting at a barrier after each "
                           "operation), next to 2 decode workers",
                           {"PHOTOSEEK_INFERENCE_WORKERS": "1", "PHOTOSEEK_TORCH_THREADS": "2"}, ()),
    "idle-2w": ("decode workers at idle CPU priority (SCHED_IDLE)", {}, ("idle-workers",)),
    "1thread-1w": ("1 model thread + 1 decode worker, side by side",
                   {"PHOTOSEEK_INFERENCE_WORKERS": "1", "PHOTOSEEK_DECODE_WORKERS": "1"}, ()),
    "batch16": ("batch size 16", {"PHOTOSEEK_BATCH_SIZE": "16"}, ()),
    "batch64": ("batch size 64", {"PHOTOSEEK_BATCH_SIZE": "64"}, ()),
    "fp32": ("image tower in float32 instead of bfloat16", {"PHOTOSEEK_PRECISION": "fp32"}, ()),
}
DEFAULT_VARIANTS = ["default", "original", "no-draft", "no-fast-progressive", "torch-in-workers",
                    "one-call-2-threads", "idle-2w", "batch16", "batch64", "fp32"]


def _apply_patches(patches: tuple[str, ...]) -> None:
    """Runs in the benchmark process *and* in every decode worker (they import this module as main)."""
    from photoseek import imaging

    if "no-draft" in patches:
        imaging._draft_jpeg = lambda img, data, draft_size: img
    if "no-fast-progressive" in patches:
        imaging.progressive_dc_stream = lambda data: None
    if "no-mallopt" in patches:
        imaging.decode_worker_init = init_without_mallopt


def init_without_mallopt(idle_priority=False, parent_pid=None) -> None:
    """photoseek.imaging.decode_worker_init without the malloc tuning."""
    import threading

    from photoseek import imaging

    if parent_pid is not None:
        threading.Thread(target=imaging._exit_when_gone, args=(parent_pid,), daemon=True).start()
    if idle_priority:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


if os.environ.get(VARIANT_ENV):  # in the child and in its decode workers
    _apply_patches(VARIANTS[os.environ[VARIANT_ENV]][2])


def child(variant: str, folder: Path, model_id: str) -> dict:
    import functools

    import torch

    from photoseek.encoders import load_encoder
    from photoseek.indexer import Indexer
    from photoseek.indexer import decode_pool
    from photoseek.indexer import pipeline
    from photoseek.settings import Settings
    from sysmon import OthersMeter, cpu_seconds, process_tree

    patches = VARIANTS[variant][2]
    if "idle-workers" in patches:
        pipeline.decode_all = functools.partial(decode_pool.decode_all, background=True)
    if "torch-in-workers" in patches:
        decode_pool._submit = lambda pool, job: pool.submit(decode_pool.decode_one, job)
        decode_pool._result = lambda job, future: future.result()
    if "no-mallopt" in patches:
        decode_pool.decode_worker_init = init_without_mallopt
    settings = Settings()
    index_dir = Path(tempfile.mkdtemp(prefix="photoseek-ablation-"))
    indexer = Indexer(index_dir, settings.replace(index_dir=index_dir), show_progress=False)
    encoder = load_encoder(model_id, precision=settings.precision)
    cpu0 = cpu_seconds(process_tree(os.getpid()))
    with OthersMeter() as others:
        summary = indexer.run([folder], encoder=encoder)
    cpu = cpu_seconds(process_tree(os.getpid())) - cpu0
    return {"variant": variant, "images": summary.embedded, "seconds": summary.seconds,
            "ips": summary.images_per_second, "cpu_ms_per_image": cpu / max(1, summary.embedded) * 1000,
            "others_cpu_share": others.share, "torch_threads": torch.get_num_threads(),
            "dtype": str(encoder.dtype)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"from: {', '.join(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--photos", type=Path, help="source folder of JPEGs (as for run.py)")
    p.add_argument("--photos-count", type=int, default=312)
    p.add_argument("--model", default="clip", help="clip (ViT-B-32) or offline")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model-id", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.model_id)))
        return 0

    import shutil

    import photoset
    from run import random_clip_checkpoint
    from sysmon import wait_until_quiet

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    if args.model == "clip":
        model_id = f"ViT-B-32:{random_clip_checkpoint()}"
    else:
        from photoseek.encoders import canonical_model_id

        model_id = canonical_model_id(args.model)
    source = photoset.find_source(args.photos)
    work = Path(tempfile.mkdtemp(prefix="photoseek-ablation-photos-"))
    results: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        folder = photoset.make_set(source, args.photos_count, work / "photos")
        print(f"{args.photos_count} photos from {source.description}; {model_id.split(':')[0]}", file=sys.stderr)
        for r in range(args.rounds):
            for v in variants:
                if args.wait_quiet:
                    wait_until_quiet(args.wait_quiet, echo=lambda m: print(m, file=sys.stderr))
                env = {k: val for k, val in os.environ.items() if not k.startswith("PHOTOSEEK_")}
                env.update(VARIANTS[v][1])
                env[VARIANT_ENV] = v
                env["HF_HUB_OFFLINE"] = "1"
                proc = subprocess.run([sys.executable, __file__, "--child", v, "--folder", str(folder),
                                       "--model-id", model_id], env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"variant {v} failed:\n{proc.stderr[-3000:]}")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                results[v].append(res)
                print(f"  round {r + 1} {v:20s} {res['ips']:6.1f} images/s  {res['cpu_ms_per_image']:6.1f} CPU-ms/image"
                      f"  others' CPU {res['others_cpu_share'] or 0:.0%}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = max(r["ips"] for r in results["default"]) if results.get("default") else None
    lines = [f"### Indexing ablation ({args.photos_count} photos, {model_id.split(':')[0]}, best of {args.rounds} rounds)",
             "", "| variant | what changes | images/s | vs default | CPU-ms per image | others' CPU (that round) |",
             "|---|---|---:|---:|---:|---:|"]
    for v in variants:
        best = max(results[v], key=lambda x: x["ips"])
        rel = f"{best['ips'] / base:.2f}x" if base else ""
        lines.append(f"| {v} | {VARIANTS[v][0]} | {best['ips']:.1f} | {rel} | {best['cpu_ms_per_image']:.1f} "
                     f"| {best['others_cpu_share'] or 0:.0%} |")
    text = "\n".join(lines)
    out = HERE / "results" / f"ablation-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model_id": model_id, "photos": args.photos_count, "source": source.description,
                               "results": results, "report": text}, indent=2))
    print(text)
    print(f"\nsaved {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
