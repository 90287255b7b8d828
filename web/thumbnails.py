"""Thumbnails made on first request and kept on disk (``INDEX/thumbnails``).

WebP, EXIF orientation applied, no metadata copied (so no GPS position leaks into a
thumbnail). A file's name carries the photo's version (see
:func:`photoseek.web.schemas.photo_version`), so a re-indexed photo gets a fresh
thumbnail and its URL can be cached by browsers for good; the stale one is removed.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from pathlib import Path

import platformdirs
from PIL import Image

from photoseek.errors import PhotoseekError
from photoseek.files import atomic_write
from photoseek.imaging import DecodeError, open_image, read_file
from photoseek.search import Photo
from photoseek.store import IndexFiles

from .schemas import photo_version

SIZES = {"small": 320, "large": 1600}
QUALITY = {"small": 78, "large": 82}


def thumbnail_dir(files: IndexFiles) -> Path:
    """``INDEX/thumbnails`` when the index can be written; for a read-only index (a read-only
    mount, another user's index) a folder of its own in this user's cache directory."""
    try:
        files.thumbnails.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=files.thumbnails, prefix=".probe-")
        probe.close()
        return files.thumbnails
    except OSError:
        key = hashlib.sha256(os.fsencode(files.root)).hexdigest()[:16]
        return Path(platformdirs.user_cache_dir("photoseek", appauthor=False)) / "thumbnails" / key


class ThumbnailError(PhotoseekError):
    def __init__(self, status: int, message: str):
        super().__init__(message, status=status, kind="thumbnail")


class ThumbnailCache:
    """Thread-safe; each thumbnail is made once even when asked for by many requests at a time."""

    def __init__(self, root: Path, *, max_pixels: int, workers: int | None = None):
        self.root = root
        self.max_pixels = max_pixels
        # Decoding big photos is CPU and memory hungry: at most this many at a time.
        self._slots = threading.BoundedSemaphore(workers or max(1, min(4, os.cpu_count() or 1)))
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def path_for(self, photo: Photo, size: str) -> Path:
        return self.root / size / f"{photo.id % 256:02x}" / f"{photo.id}-{photo_version(photo)}.webp"

    def get(self, photo: Photo, source: Path, size: str = "small") -> Path:
        """The cached thumbnail's path, making it first if needed. Raises ThumbnailError."""
        target = self.path_for(photo, size)
        if target.is_file():
            return target
        with self._lock_for(target):
            try:
                if target.is_file():
                    return target
                with self._slots:
                    data = make_thumbnail(source, SIZES[size], QUALITY[size], self.max_pixels)
                self._store(target, data, photo.id)
            finally:
                with self._locks_guard:
                    self._locks.pop(target, None)
        return target

    def _lock_for(self, path: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(path, threading.Lock())

    def _store(self, target: Path, data: bytes, image_id: int) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data)
        for stale in target.parent.glob(f"{image_id}-*.webp"):  # older versions of the same photo
            if stale != target:
                stale.unlink(missing_ok=True)


def make_thumbnail(source: Path, long_side: int, quality: int, max_pixels: int) -> bytes:
    try:
        data = read_file(source)
    except DecodeError as exc:
        status = 404 if "disappeared" in exc.reason or "not a file" in exc.reason else 500
        raise ThumbnailError(status, f"cannot read the photo: {exc.reason}") from None
    try:  # open_image only decodes photo formats, whatever the file is called
        img, _ = open_image(data, draft_size=long_side, max_pixels=max_pixels)
    except DecodeError as exc:
        raise ThumbnailError(500, f"cannot decode the photo: {exc.reason}") from None
    img.thumbnail((long_side, long_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    out = io.BytesIO()
    img.save(out, "WEBP", quality=quality, method=4)
    return out.getvalue()

