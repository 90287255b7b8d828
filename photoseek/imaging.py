"""Decoding photos into model-ready pixels, defensively.

This module runs inside the indexer's decode worker processes, so it imports neither
torch nor the database: only Pillow and NumPy. Every failure becomes a
:class:`DecodeError` whose ``reason`` is short and human-readable, because it is
shown to the user in ``photoseek status``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import struct
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

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
_open_formats: tuple[str, ...] | None = None
DEFAULT_MAX_PIXELS = 120_000_000
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


class DecodeError(Exception):
    """A file that cannot be indexed; ``reason`` says why, for the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PhotoInfo:
    """What we record about a photo besides its embedding."""

    width: int
    height: int
    taken_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None


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
                raise DecodeError(f"file too large ({size} bytes)")
            data = fh.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise DecodeError(f"file too large (over {MAX_FILE_BYTES} bytes)")
            return data
    except PermissionError:
        raise DecodeError("cannot read file: permission denied") from None
    except FileNotFoundError:
        raise DecodeError("file disappeared before it could be read") from None
    except IsADirectoryError:
        raise DecodeError("not a file") from None
    except NotRegularFile:
        raise DecodeError("not a file: a FIFO, socket or device") from None
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None


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
                raise DecodeError(f"image too large: {width} x {height} pixels (limit {max_pixels:,})")
            exif = _safe_exif(img)
            if draft_size and img.format in ("JPEG", "MPO"):
                img.draft("RGB", (draft_size, draft_size))
            img.load()  # the first frame of an animation; raises on truncated or corrupt data
            img = _upright(img, exif)
            if exif is not None and exif.get(0x0112) in (5, 6, 7, 8):
                width, height = height, width
            img = to_rgb(img)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        raise DecodeError(f"image too large: {size} (limit {max_pixels:,}); a decompression bomb?") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, EOFError,
            MemoryError, RuntimeError, struct.error) as exc:
        message = str(exc).strip() or type(exc).__name__
        raise DecodeError(f"corrupt or truncated image: {message[:200]}") from None
    return img, _photo_info(width, height, exif)


def photo_formats() -> tuple[str, ...]:
    """PHOTO_FORMATS that this Pillow can open (``Image.open(formats=...)`` rejects unknown names)."""
    global _open_formats
    if _open_formats is None:
        Image.init()
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
    if (new_w, new_h) != (w, h):
        # reducing_gap: a cheap box pre-shrink before bicubic, indistinguishable at this size.
        img = img.resize((new_w, new_h), Image.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def decode_for_embedding(data: bytes, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, PhotoInfo]:
    img, info = open_image(data, draft_size=size, max_pixels=max_pixels)
    return fit_square(img, size), info


def load_photo(path: Path, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedPhoto:
    """Read, hash and decode one file. Raises :class:`DecodeError` with a reason."""
    data = read_file(path)
    pixels, info = decode_for_embedding(data, size, max_pixels=max_pixels)
    return DecodedPhoto(pixels=pixels, info=info, content_hash=content_hash(data), size_bytes=len(data))


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


def _photo_info(width: int, height: int, exif: Image.Exif | None) -> PhotoInfo:
    if exif is None:
        return PhotoInfo(width, height)
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        sub = {}
    taken = _parse_exif_datetime(sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME))
    return PhotoInfo(width, height, taken, _clean_text(exif.get(_TAG_MAKE)), _clean_text(exif.get(_TAG_MODEL)))


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
