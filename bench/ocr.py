"""What ``photoseek index --ocr`` costs and finds.

1. Per photo, in this process (one onnxruntime thread, as in a decode worker): milliseconds of
   :func:`photoseek.ocr.read_photo_text` (decode at OCR size + detect + recognise) on the demo
   photos, on the camera photos in data/large, and on rendered photos of text (signs, receipts,
   a 12-MP photo with a line of text); the words of the rendered photos that OCR found.
2. Memory: this process's RSS before and after loading the OCR models and at its peak.
3. The whole indexing process tree (``photoseek index``, decode workers included), peak PSS and
   RSS and wall time, without and with ``--ocr``, on one folder (demo photos, rendered text
   photos, data/large), with the offline encoder.

    python bench/ocr.py            # about two minutes on 2 cores
    python bench/ocr.py --no-index # parts 1 and 2 only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # the tests' text_photo: the bench reads the same rendered photos as the tests
from PIL import Image
from sysmon import OthersMeter, run_measured

RENDERED = {
    "sign_lisbon": (["LISBON", "BAKERY"], dict()),
    "sign_open": (["OPEN DAILY", "8 AM 6 PM"], dict(background=(180, 30, 30))),
    "receipt": (["BAKERY LISBON", "INVOICE 2023", "Croissant 2.50", "Coffee 1.20", "TOTAL 3.70"],
                dict(size=(640, 900), font_size=40, background=(245, 245, 240), ink=(20, 20, 20))),
    "screenshot": (["Settings", "Wi-Fi network", "Bluetooth", "Battery 87%"],
                   dict(size=(1080, 800), font_size=48, background=(255, 255, 255), ink=(30, 30, 30))),
    "poster": (["JAZZ FESTIVAL", "PORTO 2024", "Tickets at the door"],
               dict(size=(900, 1200), font_size=64, background=(20, 20, 60), ink=(250, 220, 80))),
}


def rendered_photos(folder: Path) -> dict[Path, list[str]]:
    """The rendered text photos, written as JPEGs; path -> the words on it."""
    out = {}
    for name, (lines, style) in RENDERED.items():
        path = folder / f"{name}.jpg"
        helpers.text_photo(lines, **style).save(path, quality=90)
        out[path] = " ".join(lines).upper().split()
    big = Image.new("RGB", (4000, 3000), (250, 250, 250))
    big.paste(helpers.text_photo(["INVOICE 2023"], size=(1400, 300), font_size=140), (1300, 1300))
    path = folder / "photo_12mp_invoice.jpg"
    big.save(path, quality=90)
    out[path] = ["INVOICE", "2023"]
    return out


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def per_photo(groups: dict[str, list[Path]], expected: dict[Path, list[str]]) -> dict:
    from photoseek import ocr

    before = rss_mb()
    started = time.perf_counter()
    ocr._load()
    load_seconds = time.perf_counter() - started
    loaded = rss_mb()
    result: dict = {"model_load_s": round(load_seconds, 2), "rss_before_mb": round(before),
                    "rss_models_loaded_mb": round(loaded), "max_side": ocr.MAX_SIDE, "groups": {}}
    found = total = 0
    for group, paths in groups.items():
        times, cpu = [], []
        for path in paths:
            data = path.read_bytes()
            t, c = time.perf_counter(), time.process_time()
            text, error = ocr.read_photo_text(data, 60)
            times.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
            if path in expected:
                got = set((text or "").upper().split())
                hits = sum(w in got for w in expected[path])
                found, total = found + hits, total + len(expected[path])
                print(f"  {path.name}: {hits}/{len(expected[path])} words  {text!r}", file=sys.stderr)
            if error:
                print(f"  {path.name}: {error}", file=sys.stderr)
        times.sort()
        # CPU ms: what the photo cost this process (one onnxruntime thread), whatever else ran on the machine.
        result["groups"][group] = {"photos": len(times), "median_ms": round(statistics.median(times)),
                                   "max_ms": round(times[-1]), "median_cpu_ms": round(statistics.median(cpu)),
                                   "max_cpu_ms": round(max(cpu)), "total_s": round(sum(times) / 1000, 2)}
    result["rendered_words_found"] = f"{found}/{total}"
    result["rss_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


SUMMARY = re.compile(r"added (\d+).* in ([\d.]+) s")


def index_tree(folder: Path, ocr_on: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEEK_")}
    index_dir = Path(tempfile.mkdtemp(prefix="photoseek-bench-ocr-"))
    cmd = [sys.executable, "-m", "photoseek", "index", str(folder), "--index", str(index_dir), "--model", "offline",
           "--no-progress", *(["--ocr"] if ocr_on else [])]
    try:
        run = run_measured(cmd, env)
        if run.returncode:
            raise RuntimeError(run.err[-2000:])
        u = run.usage
        m = SUMMARY.search(run.out)
        return {"ocr": ocr_on, "wall_s": round(run.wall, 1), "run_s": float(m.group(2)) if m else None,
                "peak_pss_mb": round(u.peak_pss_mb), "peak_rss_sum_mb": round(u.peak_rss_mb),
                "peak_processes": u.peak_processes, "others_cpu_share": run.others_share,
                "ocr_line": next((ln for ln in run.out.splitlines() if ln.startswith("OCR:")), None)}
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-index", action="store_true", help="skip the photoseek index runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="photoseek-bench-ocr-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        expected = rendered_photos(folder)
        samples = sorted((REPO / "data" / "samples").iterdir())
        large = sorted((REPO / "data" / "large").glob("*.jpg"))
        for path in samples + large:
            shutil.copy(path, folder / path.name)
        groups = {"demo (data/samples, ~640x427)": samples, "camera (data/large, 9.8-10.7 MP)": large,
                  "rendered text (5 signs/receipts)": [p for p in expected if "12mp" not in p.name],
                  "rendered 12 MP photo with text": [p for p in expected if "12mp" in p.name]}
        with OthersMeter() as others:
            report = {"per_photo": per_photo(groups, expected)}
        report["per_photo"]["others_cpu_share"] = others.share  # CPU other processes took meanwhile (0-1)
        if not args.no_index:
            report["index"] = [index_tree(folder, False), index_tree(folder, True)]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
