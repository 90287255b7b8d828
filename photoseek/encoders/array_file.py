"""An exported tower's arrays in one file: ``arrays.bin`` holds each array's bytes (64-byte aligned)
and the export's ``meta.json`` indexes them, ``"arrays": {name: [dtype, shape, offset]}``.

One open and one mapping for a whole tower, where one ``.npy`` file per array cost a file open, a
header parse and a mapping each (a CLIP text tower has 149 arrays): a share of every terminal search
that had nothing to do with searching. Arrays come back as views of one read-only (or copy-on-write)
mapping (:meth:`ArrayFile.mapped`), or one at a time copied into fresh memory (:meth:`ArrayFile.read`)
for a reader that drops each once used. :func:`map_safetensors` maps a safetensors file (a bundled
model's weights) the same way, where reading it whole cost a search the copy and its memory.

Invariant: ``meta.json``, the index, is written after the file it describes (by
:func:`photoseek.encoders.clip_text.write_export`, which renames the folder into place last), and
an index entry reaching past the end of the file makes the export unreadable, never a wrong array.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

FILE = "arrays.bin"
ALIGN = 64  # bytes: every array starts on a cache line, as SIMD loads prefer


def write(folder: Path, arrays: Mapping[str, np.ndarray],
          release: Callable[[np.ndarray], None] | None = None) -> dict[str, list]:
    """Write ``arrays`` into ``folder/arrays.bin``; ``release(array)`` after each one is written
    (:func:`photoseek.encoders.pages.releaser`). Returns the index to keep in ``meta.json``."""
    index: dict[str, list] = {}
    offset = 0
    with open(folder / FILE, "wb") as f:
        for name, array in arrays.items():
            data = np.asarray(array, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
            pad = -offset % ALIGN
            f.write(b"\0" * pad)
            offset += pad
            f.write(data.reshape(-1).view(np.uint8).data if data.nbytes else b"")
            index[name] = [data.dtype.str, list(data.shape), offset]
            offset += data.nbytes
            if release is not None:
                release(array)
    return index


def load(folder: Path) -> tuple[dict, ArrayFile]:
    """An export folder's ``meta.json`` and its arrays."""
    meta = json.loads((folder / "meta.json").read_text())
    return meta, ArrayFile(folder, meta.get("arrays", {}))


class ArrayFile:
    """The arrays of one export: names, shapes, and the arrays themselves mapped or read."""

    def __init__(self, folder: Path, index: Mapping[str, list]):
        self.path = folder / FILE
        self.entries = {name: (np.dtype(dtype), tuple(shape), int(offset)) for name, (dtype, shape, offset)
                        in index.items()}
        size = self.path.stat().st_size if self.entries else 0
        for name, (dtype, shape, offset) in self.entries.items():
            if offset + dtype.itemsize * int(np.prod(shape, dtype=np.int64)) > size:
                raise ValueError(f"{self.path} is shorter than its index says (array {name!r}): export it again")
        self._fd: int | None = None

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def mapped(self, copy_on_write: bool = False) -> dict[str, np.ndarray]:
        """Every array as a view of one mapping of the file: read-only, or ``copy_on_write`` (writable
        arrays whose writes stay in this process, as OpenVINO needs to share them; never written)."""
        if not self.entries:
            return {}
        with open(self.path, "rb") as f:
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY if copy_on_write else mmap.ACCESS_READ)
        return {name: np.frombuffer(mapping, dtype, count=int(np.prod(shape, dtype=np.int64)), offset=offset)
                .reshape(shape) for name, (dtype, shape, offset) in self.entries.items()}

    def read(self, name: str) -> np.ndarray:
        """One array copied from the file into memory of its own (nothing stays mapped)."""
        dtype, shape, offset = self.entries[name]
        out = np.empty(shape, dtype)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
            weakref.finalize(self, os.close, self._fd)
        view = out.reshape(-1).view(np.uint8)
        done = 0
        while done < out.nbytes:
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n <= 0:
                raise OSError(f"{self.path} ended early (array {name!r})")
            done += n
        return out


_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                       "I8": "i1", "U8": "u1", "BOOL": "?"}


def safetensors_header(fd: int) -> tuple[dict, int]:
    """The header of the safetensors file open at ``fd`` (``{name: {dtype, shape, data_offsets}}``,
    without ``__metadata__``) and where its data starts: an 8-byte header length, the JSON header,
    then the data (the format's whole definition). Raises ValueError, struct.error or OSError."""
    (length,) = struct.unpack("<Q", os.pread(fd, 8, 0))
    header = json.loads(os.pread(fd, length, 8))
    header.pop("__metadata__", None)
    return header, 8 + length


def map_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as read-only views of one mapping: only the pages a forward
    pass touches are read (a text query reads a few rows of the token-embedding table, not all of it)."""
    with open(path, "rb") as f:
        header, start = safetensors_header(f.fileno())
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    out = {}
    for name, entry in header.items():
        if entry["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} is {entry['dtype']}, which this reader does not map")
        dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
        begin, end = entry["data_offsets"]
        count = (end - begin) // dtype.itemsize
        if count != int(np.prod(entry["shape"], dtype=np.int64)) or start + end > len(mapping):
            raise ValueError(f"{path}: tensor {name!r} does not fit its header: the file is damaged")
        out[name] = np.frombuffer(mapping, dtype, count=count, offset=start + begin).reshape(entry["shape"])
    return out
