"""Fuzz photoseek's decode path for a bounded time (issue #5).

    python bench/fuzz_decode.py --seconds 300 [--seed 1] [--out fuzz-findings]

What is fuzzed: exactly what a hostile file or upload reaches, in this order:
``photoseek.web.uploads.sniff`` (the upload's content check), then
``photoseek.imaging.decode_for_embedding`` (what the indexer and the image search run,
with the pixel cap), then ``open_image`` at thumbnail size (what the thumbnailer runs).

Inputs: mutations of small valid files in every photo format (JPEG progressive and
baseline, PNG in several modes, GIF, WebP lossy/lossless, BMP, TIFF in several
compressions, HEIF/AVIF where the encoder exists, MPO, plus Pillow's hostile files from
data/edge) and random bytes behind each format's magic number. Mutations: bit flips,
interesting bytes, interesting 16/32-bit integers (sizes, lengths), chunk deletion,
duplication and splicing between seeds, truncation. A fixed seed makes a run repeatable.

A finding is any of:
  * an exception other than DecodeError / the upload's 4xx (a crash path that would
    cost the web server a 500, or the indexer a generic reason),
  * a hang: one input taking longer than --timeout seconds (SIGALRM),
  * a memory blow-up: peak RSS growing by more than --max-rss-mb on one input,
  * the worker process dying (a segfault in a C decoder): the parent restarts it,
  * a decode that "succeeds" with wrong output (shape, dtype, size past the cap).

Each finding's input is saved in --out with a JSON line describing it; the summary is
printed as JSON at the end. Nothing is sent anywhere; the run stops by itself.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import random
import resource
import signal
import struct
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_PIXELS = 20_000_000
INTERESTING_8 = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x10, 0x20, 0x40]
INTERESTING_16 = [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x0100, 0x1000, 65500]
INTERESTING_32 = [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x00010000, 100_000, 1 << 24]
MAGICS = [b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"BM", b"II*\x00",
          b"MM\x00*", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"RIFF\x00\x10\x00\x00WEBPVP8L", b"RIFF\x00\x10\x00\x00WEBPVP8X",
          b"\x00\x00\x00\x18ftypheic", b"\x00\x00\x00\x1cftypavif"]


class Hang(Exception):
    pass


def seeds() -> list[tuple[str, bytes]]:
    """Small valid files of every photo format, plus Pillow's hostile files."""
    import photoseek.imaging  # noqa: F401 - registers HEIF/AVIF
    from PIL import Image

    base = Image.open(REPO / "data" / "samples" / "coffee.png").convert("RGB").resize((40, 28))
    out: list[tuple[str, bytes]] = []

    def add(name: str, img, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        try:
            img.save(buf, fmt, **kw)
        except Exception:  # an encoder this Pillow lacks
            return
        out.append((name, buf.getvalue()))

    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x0110] = 6, "Make", "Model"
    add("baseline.jpg", base, "JPEG", quality=80, exif=exif)
    add("progressive.jpg", base, "JPEG", quality=70, progressive=True)
    add("cmyk.jpg", base.convert("CMYK"), "JPEG")
    add("gray.jpg", base.convert("L"), "JPEG")
    add("rgb.png", base, "PNG")
    add("rgba.png", base.convert("RGBA"), "PNG")
    add("palette.png", base.convert("P"), "PNG", transparency=0)
    add("gray16.png", base.convert("I;16"), "PNG")
    add("anim.gif", base.convert("P"), "GIF", save_all=True, append_images=[base.rotate(90).convert("P")])
    add("lossy.webp", base, "WEBP", quality=50)
    add("lossless.webp", base.convert("RGBA"), "WEBP", lossless=True)
    add("rgb.bmp", base, "BMP")
    add("rle.bmp", base.convert("P"), "BMP")
    for comp in ("raw", "tiff_lzw", "tiff_deflate", "packbits", "jpeg"):
        add(f"{comp}.tif", base, "TIFF", compression=comp)
    add("tiled-ish.tif", base.convert("I;16"), "TIFF")
    add("mpo.mpo", base, "MPO", save_all=True, append_images=[base.rotate(180)])
    add("photo.heic", base, "HEIF", quality=50)
    add("photo.avif", base, "AVIF", quality=50)
    edge = REPO / "data" / "edge"
    for f in sorted(edge.iterdir()):
        if f.stat().st_size <= 200_000:
            out.append((f"edge/{f.name}", f.read_bytes()))
    return out


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 4, 8, 16])):
        op = rng.randrange(9)
        n = len(buf)
        pos = rng.randrange(n) if n else 0
        if op == 0 and n:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[pos] = rng.choice(INTERESTING_8)
        elif op == 2 and n > 2:
            struct.pack_into(rng.choice([">H", "<H"]), buf, min(pos, n - 2), rng.choice(INTERESTING_16))
        elif op == 3 and n > 4:
            struct.pack_into(rng.choice([">I", "<I"]), buf, min(pos, n - 4), rng.choice(INTERESTING_32))
        elif op == 4 and n:
            del buf[pos: pos + rng.randint(1, 256)]
        elif op == 5 and n:
            buf[pos:pos] = buf[pos: pos + rng.randint(1, 256)]
        elif op == 6:
            other = rng.choice(corpus)
            if other:
                start = rng.randrange(len(other))
                buf[pos:pos] = other[start: start + rng.randint(1, 512)]
        elif op == 7 and n > 8:
            del buf[rng.randint(8, n):]
        else:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 32))
    return bytes(buf)


def one_input(rng: random.Random, corpus: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    roll = rng.random()
    if roll < 0.06:
        magic = rng.choice(MAGICS)
        return f"magic+random({magic[:8]!r})", magic + rng.randbytes(rng.randint(0, 4096))
    name, data = rng.choice(corpus)
    return f"mutated {name}", mutate(data, rng, [d for _, d in corpus])


def check(data: bytes) -> str | None:
    """Run the decode path on one input; None if it behaved, else what went wrong."""
    import numpy as np

    from photoseek.imaging import DecodeError, decode_for_embedding, open_image
    from photoseek.web.uploads import UploadError, sniff

    try:
        sniff(data)
    except UploadError as exc:
        if exc.status not in (400, 415):
            return f"sniff: unexpected status {exc.status}"
    try:
        pixels, info = decode_for_embedding(data, 224, max_pixels=MAX_PIXELS)
    except DecodeError as exc:
        if not exc.reason:
            return "DecodeError without a reason"
    else:
        if pixels.shape != (224, 224, 3) or pixels.dtype != np.uint8:
            return f"bad output {pixels.shape} {pixels.dtype}"
        if info.width * info.height > MAX_PIXELS:
            return f"decoded past the pixel cap: {info.width} x {info.height}"
    try:
        img, _ = open_image(data, draft_size=320, max_pixels=MAX_PIXELS)
        img.thumbnail((320, 320))
    except DecodeError:
        pass
    return None


def worker(conn, seed: int, deadline: float, timeout: float, max_rss_mb: int, corpus) -> None:
    """Runs inputs until the deadline; reports each to the parent before trying it (to survive crashes)."""
    rng = random.Random(seed)

    def alarm(_sig, _frame):
        raise Hang()

    signal.signal(signal.SIGALRM, alarm)
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a runaway allocation fails instead of swapping
    count = 0
    while time.time() < deadline:
        what, data = one_input(rng, corpus)
        conn.send(("trying", what, data))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        signal.setitimer(signal.ITIMER_REAL, timeout)
        t = time.perf_counter()
        try:
            problem = check(data)
        except Hang:
            problem = f"hang: over {timeout} s"
        except MemoryError:
            problem = "MemoryError (over the 6 GB address-space cap)"
        except Exception as exc:  # noqa: BLE001 - that is the point
            problem = f"{type(exc).__name__}: {str(exc)[:200]} @ {traceback.extract_tb(exc.__traceback__)[-1][:3]}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        took = time.perf_counter() - t
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - rss_before
        if problem is None and grew > max_rss_mb:
            problem = f"peak memory grew by {grew} MB on one input"
        count += 1
        conn.send(("done", problem, round(took, 4)))
    conn.send(("finished", count, None))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="how long to fuzz (default 120)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0, help="per-input time limit, seconds")
    ap.add_argument("--max-rss-mb", type=int, default=400, help="per-input peak memory growth that counts as a finding")
    ap.add_argument("--out", type=Path, default=REPO / "test-artifacts" / "fuzz", help="where findings are saved")
    args = ap.parse_args()

    corpus = seeds()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    deadline = started + args.seconds
    stats = {"inputs": 0, "findings": 0, "crashes": 0, "slowest_s": 0.0, "by_kind": {}, "seeds": len(corpus)}
    findings = []
    seed = args.seed
    ctx = mp.get_context("forkserver")
    while time.time() < deadline:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, seed, deadline, args.timeout, args.max_rss_mb, corpus), daemon=True)
        proc.start()
        child.close()
        last = None
        while True:
            try:
                kind, a, b = parent.recv()
            except EOFError:  # the worker died: the last input killed it
                proc.join()
                if last is not None:
                    stats["crashes"] += 1
                    findings.append(("worker died (signal %s)" % -proc.exitcode, last[0], last[1]))
                break
            if kind == "trying":
                last = (a, b)
            elif kind == "done":
                stats["inputs"] += 1
                stats["slowest_s"] = max(stats["slowest_s"], b)
                if a is not None:
                    findings.append((a, last[0], last[1]))
                last = None
            else:
                proc.join()
                break
        seed += 1_000_003  # a restarted worker continues with fresh inputs
    for n, (problem, what, data) in enumerate(findings):
        key = problem.split(":")[0].split(" @")[0]
        stats["by_kind"][key] = stats["by_kind"].get(key, 0) + 1
        if n < 200:
            (args.out / f"finding-{n:03d}.bin").write_bytes(data)
            with open(args.out / "findings.jsonl", "a") as fh:
                fh.write(json.dumps({"n": n, "problem": problem, "input": what, "bytes": len(data)}) + "\n")
    stats["findings"] = len(findings)
    stats["seconds"] = round(time.time() - started, 1)
    stats["inputs_per_second"] = round(stats["inputs"] / max(stats["seconds"], 1e-9), 1)
    stats["examples"] = [{"problem": p, "input": w} for p, w, _ in findings[:10]]
    print(json.dumps(stats, indent=2))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
