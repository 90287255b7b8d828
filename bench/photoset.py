"""Photo folders for the benchmark: real full-size camera JPEGs, repeated to any count.

Source, in order: ``--photos DIR``; ``$PHOTOSEEK_BENCH_PHOTOS``; ``../shared/photos/large``
next to the repository; else the repository's demo photos (``data/samples``) upscaled
to 4000 x 3000 (12 MP) JPEGs, made once into ``bench/results/cache/``.

A set of N photos repeats the sources cyclically. Every copy gets a few unique bytes
after the JPEG end marker, so each file has its own content hash (the indexer sees N
distinct photos) while decoding to the same pixels as its source.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / "results" / "cache"
SHARED_LARGE = REPO.parent / "shared" / "photos" / "large"
SAMPLES = REPO / "data" / "samples"
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


@dataclass(frozen=True)
class PhotoSource:
    paths: list[Path]
    description: str
    megapixels_mean: float
    megapixels_min: float
    megapixels_max: float
    progressive: int  # how many of the sources are progressive JPEGs (slower to decode)
    mb_mean: float


def _jpegs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in JPEG_SUFFIXES)


def upscaled_samples(size: tuple[int, int] = (4000, 3000), quality: int = 92) -> list[Path]:
    """The demo photos as 12 MP baseline JPEGs (made once, cached)."""
    out = CACHE / f"upscaled-{size[0]}x{size[1]}-q{quality}"
    done = out / ".complete"
    if done.is_file():
        return _jpegs(out)
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted(SAMPLES.iterdir()):
        if src.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        with Image.open(src) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            w, h = size if img.width >= img.height else size[::-1]
            img = ImageOps.fit(img, (w, h), Image.BICUBIC)
            img.save(out / f"{src.stem}.jpg", "JPEG", quality=quality)
    done.write_text("ok\n")
    return _jpegs(out)


def find_source(explicit: Path | None = None) -> PhotoSource:
    candidates: list[tuple[Path, str]] = []
    if explicit is not None:
        candidates.append((Path(explicit), f"--photos {explicit}"))
    elif os.environ.get("PHOTOSEEK_BENCH_PHOTOS"):
        env = Path(os.environ["PHOTOSEEK_BENCH_PHOTOS"])
        candidates.append((env, f"$PHOTOSEEK_BENCH_PHOTOS={env}"))
    else:
        candidates.append((SHARED_LARGE, "real photos in ../shared/photos/large"))
    for folder, label in candidates:
        if folder.is_dir():
            paths = _jpegs(folder)
            if paths:
                return _describe(paths, label)
        if explicit is not None:
            raise SystemExit(f"no JPEG photos in {folder}")
    return _describe(upscaled_samples(), "demo photos (data/samples) upscaled to 4000x3000, JPEG q92")


def _describe(paths: list[Path], label: str) -> PhotoSource:
    mps, progressive, sizes = [], 0, []
    for p in paths:
        with Image.open(p) as img:
            mps.append(img.width * img.height / 1e6)
            progressive += bool(img.info.get("progressive") or img.info.get("progression"))
        sizes.append(p.stat().st_size / 1e6)
    return PhotoSource(paths, label, sum(mps) / len(mps), min(mps), max(mps), progressive, sum(sizes) / len(sizes))


def make_set(source: PhotoSource, n: int, dest: Path) -> Path:
    """``dest`` filled with ``n`` photos (sources repeated, each copy unique by a trailer)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    blobs = [p.read_bytes() for p in source.paths]
    per_folder = 1000
    for i in range(n):
        k = i % len(blobs)
        folder = dest / f"d{i // per_folder:03d}"
        if i % per_folder == 0:
            folder.mkdir()
        name = f"{i:06d}_{source.paths[k].name}"
        with open(folder / name, "wb") as fh:
            fh.write(blobs[k])
            fh.write(b"photoseek-bench copy %d\n" % i)
    return dest
