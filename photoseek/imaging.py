"""Decoding photos into model-ready pixels, defensively.

This module runs inside the indexer's decode worker processes, so it imports neither
torch nor the database: only Pillow and NumPy. Every failure becomes a
:class:`DecodeError` whose ``reason`` is short and human-readable, because it is
shown to the user in ``photoseek status``.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import io
import os
import re
import signal
import stat
import struct
import threading
import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from photoseek.embedded_text import read_embedded_text
from photoseek.errors import DecodeError, PhotoseekError  # noqa: F401 (DecodeError: its home was here)

try:  # HEIC/HEIF (iPhone photos); pillow-heif registers itself as a Pillow plugin.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - it is a declared dependency
    pass

# A truncated file is a corrupt file: skip it rather than index half a picture.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .webp .bmp .tif .tiff .heic .heif .avif .mpo".split()
)
# The formats photos come in (the same set as IMAGE_EXTENSIONS). Pillow can open many more
# (EPS even runs Ghostscript); a file named .jpg is decoded only if it is one of these.
PHOTO_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
_PLUGINS = {"JPEG": "JpegImagePlugin", "MPO": "MpoImagePlugin", "PNG": "PngImagePlugin", "GIF": "GifImagePlugin",
            "WEBP": "WebPImagePlugin", "BMP": "BmpImagePlugin", "TIFF": "TiffImagePlugin", "AVIF": "AvifImagePlugin"}
_open_formats: tuple[str, ...] | None = None
DEFAULT_MAX_PIXELS = 120_000_000
# fit_square resizes whole images up to this aspect ratio (photos, panoramas); beyond it, only the kept square.
MAX_FIT_ASPECT = 8
MAX_FILE_BYTES = 512 * 1024 * 1024

_EXIF_IFD = 0x8769
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_DATETIME = 0x0132
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110

# Magic numbers of the formats above, for files whose name gives no hint.
_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
)


@dataclass(frozen=True)
class PhotoInfo:
    """What we record about a photo besides its embedding."""

    width: int
    height: int
    taken_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    file_type: str | None = None  # what the bytes are (see file_type), whatever the file's name says
    # Text written into the file by photo software (photoseek.embedded_text): titles and descriptions
    # (newline-separated, at most 2,000 characters) and keywords (at most 64).
    caption: str | None = None
    keywords: tuple[str, ...] = ()
    # Text read in the pixels (photoseek.ocr), only when the run asked for it (index --ocr):
    # None = OCR not run (or it failed: ocr_error says why); "" = OCR ran and found no text.
    ocr_text: str | None = None
    ocr_error: str | None = None


@dataclass(frozen=True)
class DecodedPhoto:
    """A photo ready for the image tower: a square uint8 RGB array plus its facts."""

    pixels: np.ndarray  # (size, size, 3) uint8
    info: PhotoInfo
    content_hash: str
    size_bytes: int


def looks_like_image(path: Path) -> bool:
    """Whether a file is worth trying: by extension, else by its first bytes."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return head.startswith(_MAGIC)


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class NotRegularFile(OSError):
    """A FIFO, socket or device where a photo was expected."""


def _open_regular(path: Path):
    """Open a regular file for reading without ever blocking (a FIFO would block a plain open)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    fh = os.fdopen(fd, "rb")
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        fh.close()
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        raise NotRegularFile(errno.EINVAL, "not a regular file (a FIFO, socket or device)", str(path))
    return fh


def hash_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with _open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_file(path: Path) -> bytes:
    """The bytes of a regular file, at most MAX_FILE_BYTES.

    Opened without blocking and checked on the open descriptor: a path swapped for a
    FIFO or a device after the scan must not hang a worker (or the web server) for
    ever, and a file that keeps growing must not be read without end.
    """
    try:
        with _open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise DecodeError(f"file too large ({size} bytes)", "too_large")
            data = fh.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise DecodeError(f"file too large (over {MAX_FILE_BYTES} bytes)", "too_large")
            return data
    except PermissionError:
        raise DecodeError("cannot read file: permission denied", "unreadable") from None
    except FileNotFoundError:
        raise DecodeError("file disappeared before it could be read", "unreadable") from None
    except IsADirectoryError:
        raise DecodeError("not a file", "unreadable") from None
    except NotRegularFile:
        raise DecodeError("not a file: a FIFO, socket or device", "unreadable") from None
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}", "unreadable") from None


def open_image(data: bytes, *, draft_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, PhotoInfo]:
    """Decode bytes to an upright RGB image and its facts.

    ``draft_size`` lets the JPEG decoder skip detail we would throw away (DCT scaling
    gives 1/2, 1/4 or 1/8 size almost for free); the image stays at least that big on
    both sides. The reported width and height are always those of the full photo.
    """
    if not data:
        raise DecodeError("empty file")
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than fails) on large images and odd metadata; we decide ourselves.
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=photo_formats())
            width, height = img.size
            if width <= 0 or height <= 0:
                raise DecodeError("image has no pixels")
            if width * height > max_pixels:
                raise DecodeError(f"image too large: {width} x {height} pixels (limit {max_pixels:,})", "too_large")
            exif = _safe_exif(img)
            kind = file_type(img.format)
            caption, keywords = read_embedded_text(img, exif)  # before draft/load replace img; never raises
            if draft_size and img.format in ("JPEG", "MPO"):
                img = _draft_jpeg(img, data, draft_size)
            img.load()  # the first frame of an animation; raises on truncated or corrupt data
            img = _upright(img, exif)
            if exif is not None and exif.get(0x0112) in (5, 6, 7, 8):
                width, height = height, width
            img = to_rgb(img)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not an image (unrecognised format)", "not_image") from None
    except Image.DecompressionBombError as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        raise DecodeError(f"image too large: {size} (limit {max_pixels:,}); a decompression bomb?", "too_large") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, EOFError,
            MemoryError, RuntimeError, struct.error) as exc:
        message = str(exc).strip() or type(exc).__name__
        raise DecodeError(f"corrupt or truncated image: {message[:200]}") from None
    return img, replace(_photo_info(width, height, exif, kind), caption=caption, keywords=keywords)


def file_type(pillow_format: str | None) -> str | None:
    """The file type people filter by: ``jpeg``, ``png``, ``heif``, ... from Pillow's format name
    (an MPO is a JPEG with extra frames)."""
    if not pillow_format:
        return None
    return _FILE_TYPES.get(pillow_format, pillow_format.lower())


_FILE_TYPES = {"JPEG": "jpeg", "MPO": "jpeg", "HEIF": "heif", "AVIF": "avif"}
# File types by extension, for photos indexed before the type was recorded (schema 1).
EXTENSION_TYPES = {".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".jfif": "jpeg", ".mpo": "jpeg", ".png": "png",
                   ".gif": "gif", ".webp": "webp", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff", ".heic": "heif",
                   ".heif": "heif", ".avif": "avif"}


def _draft_jpeg(img: Image.Image, data: bytes, draft_size: int) -> Image.Image:
    """``img`` set to decode at the smallest DCT scale that keeps ``draft_size`` pixels a side.

    A progressive JPEG decoded at 1/8 scale gets its unused AC scans removed first (see
    :func:`progressive_dc_stream`): the same pixels, bit for bit, two to five times faster.
    """
    w, h = img.size
    if img.format == "JPEG" and img.info.get("progressive") and min(w // draft_size, h // draft_size) >= 8:
        reduced = progressive_dc_stream(data)
        if reduced is not None:
            try:
                fast = Image.open(io.BytesIO(reduced), formats=("JPEG",))
                if fast.size == img.size and fast.mode == img.mode:
                    fast.draft("RGB", (draft_size, draft_size))
                    fast.load()
                    return fast
            except Exception:  # anything odd: decode the file as it is, and report its errors as usual
                pass
    img.draft("RGB", (draft_size, draft_size))
    return img


def sniff_format(source: bytes | Path) -> str:
    """The Pillow format of an image (bytes, or a file: its header only), if it is one of the
    formats photos come in (never, say, EPS, which runs Ghostscript). Raises :class:`DecodeError`:
    ``not_image``, or ``too_large`` for a decompression bomb."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source,
                            formats=photo_formats()) as img:
                return str(img.format)
    except Image.DecompressionBombError:
        raise DecodeError("image too large: a decompression bomb?", "too_large") from None
    except Exception:  # any parser error (e.g. the AVIF plugin's RuntimeError) means: not an image we can read
        raise DecodeError("not an image (unrecognised format)", "not_image") from None


def photo_formats() -> tuple[str, ...]:
    """PHOTO_FORMATS that this Pillow can open (``Image.open(formats=...)`` rejects unknown names)."""
    global _open_formats
    if _open_formats is None:
        # Only these formats' plugins: Image.init() imports all of Pillow's ~45, a tenth of a second
        # of every terminal search by an image. HEIF comes from pillow_heif's opener, registered above.
        for name in PHOTO_FORMATS:
            if name not in Image.OPEN and name in _PLUGINS:
                try:
                    importlib.import_module(f"PIL.{_PLUGINS[name]}")
                except ImportError:  # this Pillow lacks it (AVIF before Pillow 11.3): the format is left out
                    pass
        _open_formats = tuple(f for f in PHOTO_FORMATS if f in Image.OPEN)
    return _open_formats


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is laid on white, as a viewer shows it."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if "transparency" in img.info or img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def fit_square(img: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (bicubic) and centre-crop: CLIP's eval transform."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if max(new_w, new_h) > MAX_FIT_ASPECT * size:
        # A sliver (say 8 x 65000 pixels, a 1 KB file well under the pixel cap) would be scaled
        # up to 224 x 1.8 million pixels (1.2 GB) before the crop: resample only the square we keep.
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        return np.asarray(img.resize((size, size), Image.BICUBIC, box=box), dtype=np.uint8)
    if (new_w, new_h) != (w, h):
        # reducing_gap: a cheap box pre-shrink before bicubic, indistinguishable at this size.
        img = img.resize((new_w, new_h), Image.BICUBIC, reducing_gap=3.0)
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def decode_for_embedding(data: bytes, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, PhotoInfo]:
    img, info = open_image(data, draft_size=size, max_pixels=max_pixels)
    return fit_square(img, size), info


def load_photo(path: Path, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, ocr_seconds: float | None = None) -> DecodedPhoto:
    """Read, hash and decode one file. Raises :class:`DecodeError` with a reason.

    ``ocr_seconds``: also read the text in the photo (:mod:`photoseek.ocr`), within that many
    seconds, onto ``info.ocr_text`` (or why not onto ``info.ocr_error``); None: no OCR. OCR
    decodes the photo again at its own, larger size, so the embedding's pixels are the same
    with or without it."""
    data = read_file(path)
    pixels, info = decode_for_embedding(data, size, max_pixels=max_pixels)
    if ocr_seconds is not None:
        from photoseek.ocr import read_photo_text  # onnxruntime and OpenCV only in runs that ask for OCR

        text, error = read_photo_text(data, ocr_seconds, max_pixels=max_pixels)
        info = replace(info, ocr_text=text, ocr_error=error)
    return DecodedPhoto(pixels=pixels, info=info, content_hash=content_hash(data), size_bytes=len(data))


def load_photo_or_reason(path: str, size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                         ocr_seconds: float | None = None) -> tuple[DecodedPhoto | None, str | None]:
    """:func:`load_photo` for the indexer's decode workers: ``(photo, None)`` or ``(None, reason)``, never raises.

    It lives here, not in ``photoseek.indexer``, so that a worker process unpickling it
    imports only this module (Pillow, NumPy), not the indexer and with it torch: that
    would cost every worker seconds of start-up and hundreds of MB.
    """
    try:
        return load_photo(Path(path), size, max_pixels=max_pixels, ocr_seconds=ocr_seconds), None
    except DecodeError as exc:
        return None, exc.reason
    except Exception as exc:  # a decoder bug must cost one file, not the run
        return None, f"could not decode: {type(exc).__name__}: {str(exc)[:200]}"


def load_text_or_reason(path: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                        ocr_seconds: float = 10.0) -> tuple[DecodedPhoto | None, str | None]:
    """The text of an indexed photo, for ``index --ocr`` on photos indexed without it: like
    :func:`load_photo_or_reason` with OCR, but no pixels for the model (``pixels`` is empty).
    Its content hash and size are those of the file as read now."""
    try:
        data = read_file(Path(path))
        _, info = open_image(data, draft_size=64, max_pixels=max_pixels)  # the facts and caption; pixels unused
        from photoseek.ocr import read_photo_text

        text, error = read_photo_text(data, ocr_seconds, max_pixels=max_pixels)
        return DecodedPhoto(np.zeros((0, 0, 3), np.uint8), replace(info, ocr_text=text, ocr_error=error),
                            content_hash(data), len(data)), None
    except DecodeError as exc:
        return None, exc.reason
    except Exception as exc:  # as load_photo_or_reason: one file, not the run
        return None, f"could not decode: {type(exc).__name__}: {str(exc)[:200]}"


def decode_worker_init(idle_priority: bool = False, parent_pid: int | None = None, ocr_slots=None) -> None:
    """Set up an indexer decode worker process (its pool's initialiser).

    * Keep decode buffers: glibc hands every block above its mmap threshold back to the
      kernel when freed, and the next photo faults it in again, zero-filled. Decoding a
      large progressive JPEG needs tens of MB of coefficient buffers (a 24 MP one: 40-60 ms
      a photo instead of 100+). A fixed 256 MB threshold keeps such buffers in the heap for
      reuse; the worker's memory stays bounded by its largest photo.
    * ``idle_priority``: Linux ``SCHED_IDLE`` (else nice 19).
    * ``parent_pid``: the indexer; the worker leaves as soon as it is gone. A worker holds the
      write end of its own task queue, so it never sees EOF: an indexer killed with SIGKILL
      otherwise leaves its workers (and their fork server) behind for good, each keeping the
      memory of its last photo.
    * ``ocr_slots``: the pool's semaphore for OCR turns (:func:`photoseek.ocr.set_slots`).
    * Ignore SIGINT: a Ctrl-C in a terminal reaches the whole foreground job, workers
      included, and a worker must not die of it with a traceback; the indexer decides when
      its workers stop (they are also born ignoring it: photoseek._forkserver_preload).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if ocr_slots is not None:
        from photoseek.ocr import set_slots  # Pillow and NumPy only; the OCR engine loads on first use

        set_slots(ocr_slots)
    if parent_pid is not None:
        threading.Thread(target=_exit_when_gone, args=(parent_pid,), name="photoseek-parent-watch",
                         daemon=True).start()
    from photoseek import malloc

    malloc.tune(mmap_threshold=256 << 20, trim_threshold=512 << 20)  # a fixed threshold also ends glibc's dynamic one
    if idle_priority:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):
            try:
                os.nice(19)
            except (AttributeError, OSError):
                pass


def _exit_when_gone(pid: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except OSError:  # exists, but not ours to signal: still there
            pass


# -- progressive JPEGs at 1/8 scale -----------------------------------------------------------
#
# Decoding a JPEG at 1/8 scale (Pillow's draft mode) computes each output pixel of a full-size
# component from its block's DC coefficient alone. A baseline JPEG interleaves DC and AC data,
# so all of it must be entropy-decoded anyway; but a progressive JPEG sends them in separate
# scans, and the AC scans (most of the file) are decoded only to be thrown away. Dropping them
# before decoding gives the same pixels for a fraction of the work.
#
# Two details of libjpeg-turbo make "the same pixels" exact rather than approximate:
# * chroma subsampled 2x both ways is decoded at 2x2 from DC *and* AC coefficients
#   (jdmaster.c scales it by IDCT instead of upsampling), so only scans of components whose
#   IDCT is 1x1 are dropped (the rule below is jdmaster.c's);
# * a component with no AC data at all gets "block smoothing", which also alters its DC
#   (jdcoefct.c, change_dc). So each dropped component gets a tiny synthetic AC scan that
#   says "every AC coefficient is exactly zero": coefficients fully known, no smoothing, and
#   a 1x1 IDCT ignores them anyway.
# Anything unexpected (not libjpeg-turbo, arithmetic coding, 12-bit, CMYK, MPO, truncated
# data) leaves the file untouched. tests/test_precision.py checks bit-exactness.

_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_SEGMENT_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # the first marker that ends entropy-coded data
_EOB_RUN_MAX = 32767  # the longest end-of-band run one Huffman symbol (EOB14 + 14 bits) can say
# A Huffman table of the 15 end-of-band-run symbols EOB0..EOB14 (0x00, 0x10, ..., 0xE0), all 4 bits long:
# canonical codes 0000..1110, so EOBr's code is r itself.
_EOB_DHT_BODY = bytes([0x10]) + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(15))
_EOB_DHT = b"\xff\xc4" + struct.pack(">H", 2 + len(_EOB_DHT_BODY)) + _EOB_DHT_BODY
_NO_RESTARTS = b"\xff\xdd\x00\x04\x00\x00"
_turbo: bool | None = None


def _libjpeg_turbo() -> bool:
    global _turbo
    if _turbo is None:
        try:
            from PIL import features

            _turbo = bool(features.check_feature("libjpeg_turbo"))
        except Exception:
            _turbo = False
    return _turbo


def _zero_ac_scan(component_id: int, blocks: int) -> bytes:
    """A progressive AC scan (coefficients 1-63, Al=0) of one component in which every block is all zeros."""
    header = bytes([1, component_id, 0x00, 1, 63, 0x00])
    acc = nbits = 0
    out = bytearray()
    left = blocks
    while left > 0:
        run = min(left, _EOB_RUN_MAX)
        r = run.bit_length() - 1
        acc, nbits = (acc << (4 + r)) | (r << r) | (run - (1 << r)), nbits + 4 + r
        left -= run
        while nbits >= 8:
            nbits -= 8
            byte = (acc >> nbits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0x00)  # byte stuffing
        acc &= (1 << nbits) - 1
    if nbits:
        byte = ((acc << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) & 0xFF  # pad with 1-bits
        out.append(byte)
        if byte == 0xFF:
            out.append(0x00)
    return _EOB_DHT + b"\xff\xda" + struct.pack(">H", 2 + len(header)) + header + bytes(out)


def progressive_dc_stream(data: bytes) -> bytes | None:
    """The progressive JPEG ``data`` without the AC scans a 1/8-scale decode never reads, or None
    when that does not apply (not progressive, nothing to drop, or anything unusual)."""
    if len(data) < 4 or data[:2] != b"\xff\xd8" or not _libjpeg_turbo():
        return None
    out = [data[:2]]
    components: dict[int, tuple[int, int]] | None = None
    dc_only: frozenset[int] = frozenset()
    dropped: set[int] = set()
    width = height = 0
    pos, n = 2, len(data)
    try:
        while True:
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0xD9:  # end of image
                break
            if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
                return None
            end = pos + 2 + ((data[pos + 2] << 8) | data[pos + 3])
            if end > n:
                return None
            if marker in _SOF_MARKERS:
                count = data[pos + 9]
                if marker != 0xC2 or components is not None or data[pos + 4] != 8 or count not in (1, 3):
                    return None
                height, width = struct.unpack_from(">HH", data, pos + 5)
                components = {}
                for i in range(count):
                    sampling = data[pos + 11 + 3 * i]
                    components[data[pos + 10 + 3 * i]] = (sampling >> 4, sampling & 15)
                if len(components) != count or not all(h and v for h, v in components.values()) or not width or not height:
                    return None
                max_h = max(h for h, _ in components.values())
                max_v = max(v for _, v in components.values())
                # jdmaster.c: at 1/8 scale a component gets a 2x2 IDCT iff it is subsampled 2x both ways.
                dc_only = frozenset(c for c, (h, v) in components.items() if max_h % (2 * h) or max_v % (2 * v))
            elif marker == 0xE2 and data[pos + 4:pos + 8] == b"MPF\x00":
                return None  # a multi-picture file: leave it whole
            elif marker == 0xDA:
                count = data[pos + 4]
                if components is None or end != pos + 8 + 2 * count:
                    return None
                ids = [data[pos + 5 + 2 * i] for i in range(count)]
                spectral_start = data[pos + 5 + 2 * count]
                after = _SEGMENT_AFTER_SCAN.search(data, end)
                if after is None:
                    return None  # truncated: let the decoder say so
                if spectral_start > 0 and count == 1 and ids[0] in dc_only:
                    dropped.add(ids[0])
                else:
                    out.append(data[pos:after.start()])
                pos = after.start()
                continue
            out.append(data[pos:end])
            pos = end
    except (IndexError, struct.error):
        return None
    if not dropped or components is None:
        return None
    max_h = max(h for h, _ in components.values())
    max_v = max(v for _, v in components.values())
    out.append(_NO_RESTARTS)
    for cid in sorted(dropped):
        h, v = components[cid]
        blocks = -(-width * h // (max_h * 8)) * -(-height * v // (max_v * 8))
        out.append(_zero_ac_scan(cid, blocks))
    out.append(b"\xff\xd9")
    return b"".join(out)


def _safe_exif(img: Image.Image) -> Image.Exif | None:
    try:
        return img.getexif()
    except Exception:  # malformed EXIF must not cost us the photo
        return None


def _upright(img: Image.Image, exif: Image.Exif | None) -> Image.Image:
    if exif is None or exif.get(0x0112) in (None, 1):
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


def _photo_info(width: int, height: int, exif: Image.Exif | None, kind: str | None = None) -> PhotoInfo:
    if exif is None:
        return PhotoInfo(width, height, file_type=kind)
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        sub = {}
    taken = _parse_exif_datetime(sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME))
    return PhotoInfo(width, height, taken, _clean_text(exif.get(_TAG_MAKE)), _clean_text(exif.get(_TAG_MODEL)), kind)


def _clean_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value[:100] or None


def _parse_exif_datetime(value: object) -> datetime | None:
    text = _clean_text(value)
    if not text:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y:%m:%d"):
        try:
            return datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
    return None
