"""What an index's catalogue holds, for every back end: the tables, and how values are stored.

The catalogue is the source of truth: every photo's metadata *and* its embedding. Vector
files and in-memory indexes are caches rebuilt from it. The same models serve SQLite and
PostgreSQL; the few types that differ say so themselves (:class:`FsPath`, :class:`Embedding`).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import BigInteger, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from photoseek.files import display_path  # noqa: F401 - re-exported: its old home
from photoseek.times import as_utc, utcnow  # noqa: F401 - re-exported: their old home


class FsPath(TypeDecorator):
    """A file system path, stored as its raw bytes.

    File names need not be valid UTF-8 (Linux allows any bytes); SQLite text must be.
    Bytes round-trip exactly through ``os.fsencode``/``os.fsdecode``.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else os.fsencode(value)

    def process_result_value(self, value, dialect):
        return None if value is None else os.fsdecode(bytes(value))


class Embedding(TypeDecorator):
    """A photo's unit embedding, read and written as a float32 NumPy vector.

    SQLite keeps the float32 bytes (little-endian). PostgreSQL keeps a pgvector ``halfvec``
    (float16: half the size, and what its HNSW index searches); the vector files and in-memory
    indexes hold float16 codes as well, so both back ends rank from the same precision."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            from pgvector.sqlalchemy import HALFVEC

            return dialect.type_descriptor(HALFVEC())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value, dialect):
        if value is None or isinstance(value, (bytes, bytearray, memoryview)):
            return value
        vector = np.asarray(value, dtype=np.float32)
        return vector if dialect.name == "postgresql" else vector.astype("<f4").tobytes()

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "postgresql":
            return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)
        return np.frombuffer(bytes(value), dtype="<f4")


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the index: schema version, model, dimension, generation."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(4096))


class Root(Base):
    __tablename__ = "roots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ImageRow(Base):
    """One indexed photo. Its ``id`` is also its vector id in FAISS; ids are never reused."""

    __tablename__ = "images"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    root_id: Mapped[int | None] = mapped_column(ForeignKey("roots.id", ondelete="SET NULL"), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime)
    camera_make: Mapped[str | None] = mapped_column(String(100))
    camera_model: Mapped[str | None] = mapped_column(String(100))
    indexed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    embedding: Mapped[np.ndarray] = mapped_column(Embedding, deferred=True)
    # Schema 2, for filters and sorting by date:
    file_type: Mapped[str | None] = mapped_column(String(8), index=True)  # jpeg, png, heif, ... (what the bytes are)
    # When the photo was taken (EXIF), else when the file was last modified (UTC): what date filters and
    # "newest first" use. ``date_source`` says which: "exif" or "file".
    photo_date: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    date_source: Mapped[str | None] = mapped_column(String(4))
    # Schema 4 (0004): the words it can be found by (written with the row, deleted with it).
    text: Mapped[PhotoText | None] = relationship(cascade="all, delete-orphan", passive_deletes=True, lazy="raise")

    @property
    def display_path(self) -> str:
        """The path as text for people: undecodable bytes shown as U+FFFD."""
        return display_path(self.path)


class PhotoText(Base):
    """The words a photo can be found by besides its pixels' meaning: its file name, its folders'
    names, the caption and keywords written into it (EXIF/IPTC/XMP) and, with ``photoseek index
    --ocr``, the text read in it. One row per photo, removed with it. Each back end keeps a
    full-text index over these columns (SQLite: FTS5; PostgreSQL: a tsvector with GIN), built by
    :mod:`photoseek.storage.sqlite` / :mod:`photoseek.storage.postgres`, and answers
    :meth:`photoseek.storage.Catalogue.keyword_search`."""

    __tablename__ = "photo_text"
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(1000), default="")
    folders: Mapped[str] = mapped_column(String(4000), default="")
    caption: Mapped[str] = mapped_column(String(4000), default="")
    keywords: Mapped[str] = mapped_column(String(4000), default="")
    # None: OCR has not read this photo (not asked for, or it failed: ocr_error says why); "": it read
    # the photo and found no text. ``photoseek index --ocr`` reads the photos with neither.
    ocr: Mapped[str | None] = mapped_column(String(8000))
    ocr_error: Mapped[str | None] = mapped_column(String(500))


class SkippedFile(Base):
    """A file that could not be indexed, and why. Retried only when it changes."""

    __tablename__ = "skipped"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(500))
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    @property
    def display_path(self) -> str:
        return display_path(self.path)


class IndexRun(Base):
    """One ``photoseek index`` run; a run that never finished stays ``running``."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")
    added: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    moved: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)


def photo_date(taken_at: datetime | None, mtime_ns: int) -> tuple[datetime, str]:
    """The date a photo is filtered and sorted by, and where it came from."""
    if taken_at is not None:
        return taken_at, "exif"
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).replace(tzinfo=None), "file"


class PhotoTag(Base):
    """Schema 3: a tag a photo carries (photoseek.tags), with its zero-shot score. ``via``: the tag it was
    derived from when it is an ancestor in the vocabulary's hierarchy ("dog" via "golden retriever");
    None when the photo was scored for it directly. Goes with its photo (ON DELETE CASCADE)."""

    __tablename__ = "photo_tags"
    __table_args__ = (Index("ix_photo_tags_tag_score", "tag", "score"),)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    via: Mapped[str | None] = mapped_column(String(100))


class TaggedPhoto(Base):
    """Schema 3: which vocabulary (:meth:`photoseek.tags.Vocabulary.version`) a photo was tagged with,
    written in the same transaction as its tags. A photo without a row, or with another version, is
    tagged (again) by the next run: a crash never leaves a photo looking tagged when it is not."""

    __tablename__ = "tagged_photos"
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    vocabulary: Mapped[str] = mapped_column(String(64), index=True)


class FeedbackMark(Base):
    """Schema 5 (0005): a person's mark on a result of a text query, kept as a training signal for
    ``photoseek tune`` (:mod:`photoseek.feedback`): "right" makes (query, photo) a training pair,
    "wrong" a hard negative. One mark per (query, photo): marking again replaces it. ``query`` is
    stored normalised (stripped, runs of spaces collapsed), so "a  dog " and "a dog" are one query.
    Goes with its photo (ON DELETE CASCADE)."""

    __tablename__ = "feedback"
    __table_args__ = (CheckConstraint("mark IN ('right', 'wrong')", name="ck_feedback_mark"),)
    query: Mapped[str] = mapped_column(String(1000), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True)
    mark: Mapped[str] = mapped_column(String(5))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
