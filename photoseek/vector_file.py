"""The vector file's layout and its folder, without FAISS: what ``photoseek status`` reads.

A vector file (``vectors.faiss``) is photoseek's header (magic, generation, count, dimension), for an
IVF-PQ store a block naming its float16 file, then FAISS's own serialisation (:mod:`photoseek.store`
writes and loads it). Reading the kind of index from the first bytes needs neither FAISS nor NumPy.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from pathlib import Path

from photoseek.errors import NotWritable

_MAGIC = b"PSKFAISS"
_HEADER = struct.Struct("<8sQQI")  # magic, generation, vector count, dimension
# FAISS's own header of an IVF index (fourcc, d, ntotal, 2 unused, is_trained, metric, nlist), packed:
# what `status` reads instead of loading the whole file.
_IVF_HEADER = struct.Struct("<4siqqqBiQ")
# An IVF-PQ vector file has this block after photoseek's header, before FAISS's payload: a mark, the
# token of the float16 file it goes with and that file's row count, clusters, bytes of code a vector.
_PQ_MARK = b"PQ16"
_PQ_BLOCK = struct.Struct("<4s16sQII")
# Candidates an IVF-PQ search takes per result asked for, re-ranked exactly on the float16 vectors.
RERANK_FACTOR = 10
EXACT_SEARCH = "exact: every photo is compared with the query"


@dataclass(frozen=True)
class IndexFiles:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "photoseek.db"

    @property
    def vectors(self) -> Path:
        return self.root / "vectors.faiss"

    @property
    def half_vectors(self) -> Path:
        """Above ``pq_above`` photos: the float16 vectors the IVF-PQ index re-ranks on."""
        return _half_path(self.vectors)

    @property
    def lock(self) -> Path:
        return self.root / "index.lock"

    @property
    def thumbnails(self) -> Path:
        return self.root / "thumbnails"

    def exists(self) -> bool:
        return self.database.is_file()

    def writable(self) -> bool:
        try:
            self.ensure_writable()
        except NotWritable:
            return False
        return True

    def ensure_writable(self) -> None:
        """Raise :class:`NotWritable`, naming the path and what to do, unless this index can
        be created or written. Checked before a run starts, so a read-only index is refused in
        one line instead of failing at its first write."""
        existed = self.root.is_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocked = next((p for p in (self.root, *self.root.parents) if p.exists()), self.root)
            raise NotWritable(
                f"cannot create the index at {self.root}: {_reason(exc)} in {blocked}. Choose a folder you can "
                "write to with --index DIR (or PHOTOSEEK_INDEX_DIR)") from None
        for path in (self.lock, self.database):
            if path == self.database and not path.exists():
                continue
            try:
                with open(path, "ab"):
                    pass
            except OSError as exc:
                what = "is read-only" if existed else "cannot be written"
                raise NotWritable(
                    f"the index at {self.root} {what} ({_reason(exc)}: {path.name}): it can be searched but not "
                    "updated. To index, use a copy you can write to (--index DIR) or ask its owner") from None


def _reason(exc: OSError) -> str:
    return {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied"}.get(exc.errno, exc.strerror or str(exc))


def _half_path(vectors: Path) -> Path:
    return vectors.with_suffix(".f16")


def _header_count(raw: bytes, *, generation: int, dim: int) -> int | None:
    """The vector count in photoseek's header of a vector file, if it is one built from ``generation``
    with ``dim``-d vectors; else None (the file is rebuilt from the database)."""
    if len(raw) < _HEADER.size:
        return None
    magic, file_generation, count, file_dim = _HEADER.unpack_from(raw)
    if magic != _MAGIC or file_generation != generation or file_dim != dim:
        return None
    return count


def _describe_ivf(nlist: int, nprobe: int) -> str:
    return f"approximate: IVF, {nlist} cluster{'s' if nlist != 1 else ''}, the nearest {nprobe} searched per query"


def _describe_pq(nlist: int, nprobe: int, code_bytes: int, rerank_factor: int) -> str:
    rerank = (f"the best {rerank_factor}x as many as asked re-ranked on float16 vectors" if rerank_factor
              else "not re-ranked")
    return (f"approximate: IVF-PQ, {nlist} cluster{'s' if nlist != 1 else ''}, the nearest {nprobe} searched per "
            f"query on {code_bytes}-byte codes, {rerank}")


def probes_for(nlist: int) -> int:
    """Lists a query visits: a quarter of them, at least 16. On photo-like vectors that finds
    every exact top result of a "more like this" query and ~91% of a text query's (text
    queries sit far from all photos, which is what makes them hard for any clustering);
    fewer lists lose more: ~72% at 1/16 (bench/run.py)."""
    return min(nlist, max(16, nlist // 4))


def describe_file(path: Path, *, generation: int, dim: int) -> str | None:
    """How the index in the vector file at ``path`` answers (``VectorStore.describe``), from its header alone (a few bytes, not the
    whole index); None when it is missing or not built from ``generation`` (searches rebuild it)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER.size + _IVF_HEADER.size + _PQ_BLOCK.size + 16)
    except OSError:
        return None
    if len(head) < _HEADER.size + 4 or _header_count(head, generation=generation, dim=dim) is None:
        return None
    fourcc = head[_HEADER.size:_HEADER.size + 4]
    if fourcc == b"IxM2":
        return EXACT_SEARCH
    if fourcc == b"IwSq" and len(head) >= _HEADER.size + _IVF_HEADER.size:
        nlist = _IVF_HEADER.unpack_from(head, _HEADER.size)[-1]
        return _describe_ivf(nlist, probes_for(nlist))
    if fourcc == _PQ_MARK and len(head) >= _HEADER.size + _PQ_BLOCK.size:
        *_, nlist, code_bytes = _PQ_BLOCK.unpack_from(head, _HEADER.size)
        return _describe_pq(nlist, probes_for(nlist), code_bytes, RERANK_FACTOR)
    return None
