"""Load test of `photoseek serve` (issue #5): 32 concurrent clients for 60 s on the loopback.

    python bench/load.py [--images 10000] [--clients 32] [--seconds 60] [--max-requests 200000]
                         [--out test-artifacts/load.json] [--keep DIR]

1. Builds an index of ``--images`` photos with the bundled offline encoder's real vectors:
   the 34 demo photos are embedded for real; every other row is a symbolic link (inside the
   indexed folder) to one of them, with that photo's vector plus a little noise, so searches,
   "more like this" and thumbnails all work on real files (each id gets its own thumbnail).
2. Starts the real server (``python -m photoseek serve``) on 127.0.0.1, on a free port.
3. Warms up for ``--warmup`` seconds, then runs ``--clients`` closed-loop clients, each on one
   keep-alive connection, mixing 50% text searches, 20% similar-image searches, 25%
   thumbnails (random ids: mostly cold, so each is made on the spot) and 5% image uploads
   (24 distinct photos), for ``--seconds`` seconds or ``--max-requests`` requests.
4. Reports requests/s, p50/p95/p99 (overall and per kind), errors, and the server's resident
   memory after the warm-up, after the run, and after a second identical run (growth).

Traffic goes to 127.0.0.1 only; every loop is bounded in time and count; the server is
stopped at the end. The client is a minimal asyncio HTTP/1.1 client, light on the CPU that
it shares with the server (2 cores here).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
HOST = "127.0.0.1"
QUERIES = ["a cat", "a dog", "coffee", "the sea", "mountains", "a guitar", "snow", "a rocket", "fish in water",
           "a sunrise", "a tent in the forest", "a laptop", "a phone", "a motorcycle", "an astronaut", "night sky",
           "a bear", "puppies", "a drone", "a turtle", "jellyfish", "an island", "a camera", "drinks",
           "a game controller", "a red fish", "a black cat on a sofa", "a snowflake", "a galaxy", "dusk over a city",
           "a fighter fish", "gold fish", "green controller", "audio mixer", "a cup", "people", "a beach", "trees",
           "a bird", "a car"]
MIX = [("text", 0.50), ("similar", 0.20), ("thumbnail", 0.25), ("upload", 0.05)]


def build_index(index_dir: Path, photos: Path, n_images: int) -> None:
    from sqlalchemy import insert

    from sqlalchemy import select

    from photoseek.storage import schema as db
    from photoseek.storage.schema import utcnow
    from photoseek.storage.sqlite import SqliteCatalogue
    from photoseek.encoders import load_encoder
    from photoseek.imaging import load_photo
    from photoseek.store import IndexFiles, VectorStore

    originals = photos / "originals"
    links = photos / "links"
    originals.mkdir(parents=True)
    links.mkdir()
    sources = sorted(SAMPLES.iterdir())
    for src in sources:
        shutil.copy2(src, originals / src.name)
    encoder = load_encoder("offline")
    decoded = [load_photo(originals / s.name, encoder.input_spec.size) for s in sources]
    base = encoder.encode_pixels(np.stack([d.pixels for d in decoded]))
    rng = np.random.default_rng(0)

    files = IndexFiles(index_dir)
    catalogue = SqliteCatalogue(files.database)
    engine = catalogue.engine
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(db.Root).values(path=os.path.realpath(photos), added_at=now))
        root_id = conn.execute(select(db.Root.id)).scalar_one()
        rows = []
        for i in range(n_images):
            k = i % len(sources)
            if i < len(sources):
                path = originals / sources[k].name
            else:
                path = links / f"{i:06d}-{sources[k].name}"
                os.symlink(originals / sources[k].name, path)
            vector = base[k] + rng.normal(0, 0.02, base.shape[1]).astype(np.float32) * (i >= len(sources))
            vector /= np.linalg.norm(vector)
            d = decoded[k]
            rows.append(dict(path=str(path), root_id=root_id, size_bytes=d.size_bytes,
                             mtime_ns=os.stat(path).st_mtime_ns, content_hash=d.content_hash, width=d.info.width,
                             height=d.info.height, taken_at=d.info.taken_at, camera_make=d.info.camera_make,
                             camera_model=d.info.camera_model, indexed_at=now, embedding=vector))
        for start in range(0, len(rows), 2000):
            conn.execute(insert(db.ImageRow), rows[start: start + 2000])
        for key, value in (("model_id", encoder.model_id), ("dim", str(encoder.dim)), ("generation", "1"),
                           ("created_at", now.isoformat())):
            conn.execute(insert(db.Meta).values(key=key, value=value))
        conn.execute(insert(db.IndexRun).values(started_at=now, finished_at=now, status="finished", added=n_images,
                                                updated=0, moved=0, removed=0, skipped=0, seconds=0.0))
    VectorStore.from_database(catalogue, encoder.dim).save(files.vectors, 1)
    catalogue.close()


def upload_bodies() -> list[bytes]:
    from PIL import Image

    out = []
    for src in sorted(SAMPLES.iterdir())[:24]:
        img = Image.open(src).convert("RGB")
        img.thumbnail((512, 512))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Connection:
    """One keep-alive HTTP/1.1 connection (requests one at a time)."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def request(self, method: str, target: str, body: bytes = b"", content_type: str | None = None) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        head = f"{method} {target} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
        if body:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding":
                raise ConnectionError("chunked responses are not expected here")
        await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_load(port: int, clients: int, seconds: float, max_requests: int, n_images: int,
                   uploads: list[bytes], seed: int) -> dict:
    deadline = time.perf_counter() + seconds
    budget = [max_requests]
    samples: list[tuple[str, float, int]] = []
    failures: list[str] = []
    kinds, weights = zip(*MIX)

    async def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        conn = Connection(port)
        try:
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                kind = rng.choices(kinds, weights)[0]
                image_id = rng.randint(1, n_images)
                if kind == "text":
                    q = rng.choice(QUERIES).replace(" ", "+")
                    args = ("GET", f"/api/search?q={q}&limit=24")
                elif kind == "similar":
                    args = ("GET", f"/api/images/{image_id}/similar?limit=24")
                elif kind == "thumbnail":
                    args = ("GET", f"/api/images/{image_id}/thumbnail")
                else:
                    args = ("POST", "/api/search/image?limit=24", rng.choice(uploads), "image/jpeg")
                t = time.perf_counter()
                try:
                    status = await asyncio.wait_for(conn.request(*args), timeout=30)
                except Exception as exc:  # noqa: BLE001 - counted as an error
                    conn.close()
                    failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                    status = 0
                samples.append((kind, time.perf_counter() - t, status))
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.perf_counter() - started
    return summarise(samples, failures, elapsed)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    v = np.asarray(values) * 1000
    return {"n": len(values), "p50_ms": round(float(np.percentile(v, 50)), 1),
            "p95_ms": round(float(np.percentile(v, 95)), 1), "p99_ms": round(float(np.percentile(v, 99)), 1),
            "max_ms": round(float(v.max()), 1)}


def summarise(samples, failures, elapsed) -> dict:
    errors = [s for s in samples if not 200 <= s[2] < 300]
    out = {"seconds": round(elapsed, 1), "requests": len(samples), "requests_per_s": round(len(samples) / elapsed, 1),
           "errors": len(errors), "error_examples": failures[:5] + [f"{k}: HTTP {s}" for k, _, s in errors[:5] if s],
           "all": percentiles([s[1] for s in samples])}
    for kind, _ in MIX:
        out[kind] = percentiles([s[1] for s in samples if s[0] == kind])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "test-artifacts" / "load.json")
    ap.add_argument("--mix", help="override the request mix, e.g. text=1 or text=5,thumbnail=1")
    ap.add_argument("--runs", type=int, default=2, choices=(1, 2), help="measured runs (memory growth needs 2)")
    ap.add_argument("--keep", type=Path, help="build the index here and keep it (default: a temporary folder)")
    args = ap.parse_args()
    if not (1 <= args.clients <= 256 and 0 < args.seconds <= 600 and args.max_requests <= 1_000_000):
        ap.error("bounded on purpose: 1-256 clients, at most 600 s, at most 1,000,000 requests")

    if args.mix:
        global MIX
        MIX = [(k, float(v)) for k, v in (part.split("=") for part in args.mix.split(","))]
    work = args.keep or Path(tempfile.mkdtemp(prefix="photoseek-load-"))
    index_dir, photos = work / "index", work / "photos"
    t = time.perf_counter()
    if not (index_dir / "photoseek.db").exists():
        build_index(index_dir, photos, args.images)
    built = time.perf_counter() - t
    uploads = upload_bodies()

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEEK_")}  # photoseek's defaults
    server = subprocess.Popen([sys.executable, "-m", "photoseek", "serve", "--index", str(index_dir), "--host", HOST,
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    report: dict = {"images": args.images, "clients": args.clients, "mix": dict(MIX), "index_build_s": round(built, 1)}
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("server did not come up")
            try:
                if asyncio.run(Connection(port).request("GET", "/api/status")) == 200:
                    break
            except OSError:
                time.sleep(0.5)
        report["rss_mb_started"] = round(rss_mb(server.pid), 1)
        asyncio.run(run_load(port, args.clients, args.warmup, args.max_requests, args.images, uploads, args.seed + 99))
        report["rss_mb_after_warmup"] = round(rss_mb(server.pid), 1)
        report["run_1"] = asyncio.run(run_load(port, args.clients, args.seconds, args.max_requests, args.images,
                                               uploads, args.seed))
        report["rss_mb_after_run_1"] = round(rss_mb(server.pid), 1)
        if args.runs == 2:
            report["run_2"] = asyncio.run(run_load(port, args.clients, args.seconds, args.max_requests, args.images,
                                                   uploads, args.seed + 1))
            report["rss_mb_after_run_2"] = round(rss_mb(server.pid), 1)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stderr.close()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if all(report[r]["errors"] == 0 for r in ("run_1", "run_2") if r in report) else 1


if __name__ == "__main__":
    sys.exit(main())
