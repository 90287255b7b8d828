"""Helpers for the tests that drive `photoseek index` as a separate process and watch its
index from outside (crash safety, concurrency)."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from sqlalchemy import select
from sqlalchemy.engine import Engine

from photoseek.storage import schema as db
from photoseek.storage.catalogue import INDEX_UID  # noqa: F401  (tests read it from here)
from photoseek.storage.sqlite import SqliteCatalogue
from photoseek.store import IndexFiles

# One decode worker and small batches: light on a 2-core machine, and many checkpoints to hit.
SMALL_RUN_ENV = {"PHOTOSEEK_DECODE_WORKERS": "1", "PHOTOSEEK_BATCH_SIZE": "8"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "photoseek", *args]


def run_cli(*args: str, env_extra: dict | None = None, check: bool = True, prefix: list[str] | None = None,
            **kwargs) -> subprocess.CompletedProcess:
    """``photoseek ARGS`` as a user runs it (one decode worker: light on 2 cores); asserts exit 0 unless
    ``check`` is false. ``prefix``: a command to run it under (see :func:`read_only_mount`)."""
    env = {**os.environ, "PHOTOSEEK_DECODE_WORKERS": "1", **(env_extra or {})}
    result = subprocess.run([*(prefix or []), *cli(*args)], capture_output=True, text=True, env=env, timeout=600,
                            **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_only_mount(folder: Path) -> list[str] | None:
    """A command prefix that runs a program with ``folder`` mounted read-only (a private mount
    namespace: nothing outside the program sees it), or None where this machine cannot (not root,
    no unshare). A read-only mount stops root too, unlike file modes."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return None
    f = shlex.quote(str(folder))
    script = f'mount --bind {f} {f} && mount -o remount,ro,bind {f} && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "-"]


def as_other_user() -> list[str]:
    """A command prefix under which file modes apply as to another user: root without the capability
    to override them (root ignores modes otherwise). Empty when not root: modes apply already."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def make_photos(folder: Path, samples: Path, start: int, count: int, *, seed: int = 0, rotate: bool = False,
                prefix: str = "photo") -> None:
    """``count`` distinct 256 px JPEGs cut from the demo photos, named ``{prefix}_{i:04d}.jpg``."""
    sources = [Image.open(p).convert("RGB") for p in sorted(samples.iterdir())]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        rng = np.random.default_rng(seed + i)
        img = sources[i % len(sources)]
        side = int(min(img.size) * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, img.width - side + 1)), int(rng.integers(0, img.height - side + 1))
        tile = img.crop((x, y, x + side, y + side)).resize((256, 256))
        if rotate:
            tile = tile.rotate(90 * int(rng.integers(0, 4)))
        tile.save(folder / f"{prefix}_{i:04d}.jpg", quality=85)


def query_index(index_dir: Path, sql: str, default=None):
    """The first column of the first row of a read-only query on the index database, or
    ``default`` when there is no such row or no readable database (yet)."""
    try:
        con = sqlite3.connect(f"file:{IndexFiles(index_dir).database}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute(sql).fetchone()
            return row[0] if row else default
        finally:
            con.close()
    except sqlite3.Error:
        return default


def query_rows(index_dir: Path, sql: str) -> list[tuple]:
    """All rows of a read-only query on the index database."""
    con = sqlite3.connect(f"file:{IndexFiles(index_dir).database}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def last_run_status(index_dir: Path) -> str | None:
    return query_index(index_dir, "SELECT status FROM runs ORDER BY id DESC LIMIT 1")


def generation(index_dir: Path) -> int:
    """The database's generation: +1 for every committed checkpoint."""
    return int(query_index(index_dir, "SELECT value FROM meta WHERE key = 'generation'", 0))


def runs_count(index_dir: Path) -> int:
    return query_index(index_dir, "SELECT count(*) FROM runs", 0)


def embeddings_by(index_dir: Path, key, other) -> dict:
    """``key -> (other, embedding)`` for every committed photo, e.g.
    ``embeddings_by(index, db.ImageRow.id, db.ImageRow.path)``."""
    engine = sqlite_engine(IndexFiles(index_dir).database)
    with engine.connect() as conn:
        rows = conn.execute(select(key, other, db.ImageRow.embedding)).all()
    engine.dispose()
    return {k: (o, np.asarray(e)) for k, o, e in rows}


def sqlite_engine(path: Path, *, readonly: bool = False) -> Engine:
    """An engine on the SQLite catalogue at ``path`` (created and upgraded unless ``readonly``)."""
    return SqliteCatalogue(Path(path), readonly=readonly).engine


def meta(conn, key: str) -> str | None:
    return conn.execute(select(db.Meta.value).where(db.Meta.key == key)).scalar_one_or_none()


def cli_demo_index(tmp_path_factory, samples_dir: Path, name: str, model: str) -> Path:
    """A copy of the demo photos indexed with ``--model MODEL`` by the command line, as a user would."""
    base = tmp_path_factory.mktemp(name)
    photos = base / "photos"
    shutil.copytree(samples_dir, photos)
    index = base / "index"
    run_cli("index", str(photos), "--index", str(index), "--model", model, "--no-progress")
    return index


def text_photo(lines: list[str], *, size: tuple[int, int] = (800, 500), font_size: int = 80,
               background=(40, 90, 160), ink=(255, 255, 255), margin: int = 50, word_gap: float = 1.0) -> Image.Image:
    """A photo of text (a sign, a receipt): ``lines`` drawn top to bottom in Pillow's bundled
    scalable font, so no system font is needed. Words stand ``word_gap`` em apart, as on signs and
    receipts: the bundled font's own space is narrow enough that OCR may run words together."""
    from PIL import ImageDraw, ImageFont

    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    for i, line in enumerate(lines):
        x, y = margin, margin + i * int(font_size * 1.5)
        for word in line.split():
            draw.text((x, y), word, font=font, fill=ink)
            x += draw.textlength(word, font=font) + word_gap * font_size
    return img


def jpeg_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def with_iptc(jpeg: bytes, records: list[tuple[tuple[int, int], bytes]]) -> bytes:
    """``jpeg`` with an IPTC block (APP13 "Photoshop 3.0", resource 0x0404) holding ``records``:
    ((record, dataset), value) pairs, as photo software writes them."""
    data = b"".join(b"\x1c" + bytes(tag) + struct.pack(">H", len(value)) + value for tag, value in records)
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(data)) + data
    resource += b"\x00" * (len(data) % 2)
    segment = b"Photoshop 3.0\x00" + resource
    return jpeg[:2] + b"\xff\xed" + struct.pack(">H", len(segment) + 2) + segment + jpeg[2:]


def xmp_packet(*, title: str | None = None, description: str | None = None, subjects: tuple[str, ...] = ()) -> str:
    """An XMP packet with Dublin Core title, description and subject (keywords), as Lightroom writes them."""
    dc = ""
    if title is not None:
        dc += f'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{title}</rdf:li></rdf:Alt></dc:title>'
    if description is not None:
        dc += f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt></dc:description>'
    if subjects:
        dc += "<dc:subject><rdf:Bag>" + "".join(f"<rdf:li>{s}</rdf:li>" for s in subjects) + "</rdf:Bag></dc:subject>"
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
            f'xmlns:dc="http://purl.org/dc/elements/1.1/">{dc}</rdf:Description></rdf:RDF></x:xmpmeta>'
            '<?xpacket end="w"?>')


# The edits a near-duplicate finder must see through (issue 12): name suffix -> what was done.
EDITS = ("crop70", "small_jpeg", "mirror_bright", "rotate5")


def make_edited_copies(samples: Path, folder: Path, names: list[str] | None = None) -> dict[str, list[str]]:
    """The demo photos plus four edited copies of each, written into ``folder``; returns
    ``original file name -> [its copies' file names]``. The edits: a crop keeping 70% of each side
    (off-centre), half size re-encoded as JPEG quality 20, mirrored and 30% brighter, rotated 5 degrees
    (corners cropped away, as a straightening tool does). ``names``: only these demo photos."""
    from PIL import ImageEnhance, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    copies: dict[str, list[str]] = {}
    for source in sorted(samples.iterdir()):
        if names is not None and source.name not in names:
            continue
        shutil.copy2(source, folder / source.name)
        img = Image.open(source).convert("RGB")
        w, h = img.size
        edited = {
            "crop70": img.crop((int(0.2 * w), int(0.1 * h), int(0.2 * w) + int(0.7 * w), int(0.1 * h) + int(0.7 * h))),
            "small_jpeg": img.resize((max(1, w // 2), max(1, h // 2)), Image.LANCZOS),
            "mirror_bright": ImageEnhance.Brightness(ImageOps.mirror(img)).enhance(1.3),
            "rotate5": img.rotate(5, resample=Image.BICUBIC).crop((int(0.06 * w), int(0.06 * h),
                                                                   int(0.94 * w), int(0.94 * h))),
        }
        made = []
        for edit in EDITS:
            name = f"{source.stem}__{edit}.jpg"
            edited[edit].save(folder / name, quality=20 if edit == "small_jpeg" else 90)
            made.append(name)
        copies[source.name] = made
    return copies


def top10_stable(s32: np.ndarray, s16: np.ndarray, tolerance: float) -> None:
    """Row by row, the 10 best columns by the reference scores (``s32``) and by the others agree,
    except swaps between scores within ``tolerance`` of the tenth."""
    for i in range(len(s32)):
        top32 = np.argsort(-s32[i])[:10]
        top16 = np.argsort(-s16[i])[:10]
        tenth = s32[i][top32[-1]]
        for j in set(top32) ^ set(top16):  # in one top-10 only: must be a near-tie at the boundary
            assert abs(s32[i][j] - tenth) <= tolerance, (i, j, s32[i][j], tenth)
