"""``photoseek index``: bring an index up to date with the folders it covers.

One run: take the writer's lock, scan the roots, plan (unchanged / touched / moved /
new / changed / deleted), embed only what must be, and checkpoint to SQLite every
batch so that a killed run resumes where it stopped. The FAISS file is rewritten
atomically at the end (and now and then on long runs); if a crash leaves it stale,
the next open rebuilds it from the database.

The decode workers start as soon as the plan says what to embed, before the model is loaded
(:mod:`photoseek.indexer.prefetch`): loading takes one core for seconds, and the others decode
meanwhile; the photos decoded ahead wait in a bounded queue, cut to one batch once the model is in.

Stopping: once the indexer's ``stop`` event is set (Ctrl-C or SIGTERM, see
:mod:`photoseek.interrupts`) a run stops within moments: between scanned files, between
decode results, before and after loading the model. It submits no more work, writes the
batches already being embedded (at most one per inference thread), records itself as
``interrupted`` with what it saved, saves the vector file, shuts its decode workers down,
and returns a summary with ``interrupted`` set. The next run carries on from there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.orm import Session
from tqdm import tqdm

from photoseek.encoders.factory import (canonical_model_id, load_indexing_encoder, prepare_indexing_encoder,
                                        resolve_new_index_model)
from photoseek.errors import PhotoseekError
from photoseek.files import is_under
from photoseek.imaging import IMAGE_EXTENSIONS, DecodedPhoto, hash_file
from photoseek.settings import Settings, usable_cores
from photoseek.storage import Catalogue, IndexLocked, open_catalogue  # noqa: F401  (IndexLocked: re-exported)
from photoseek.storage.schema import Root, utcnow
from photoseek.store import IndexFiles, VectorStore, load_vectors

from .decode_pool import DecodeJob, decode_all
from .inference import BatchSizes, InferencePool
from .prefetch import DecodeAhead, predicted_input_size
from .scan import FoundFile, Unreadable, walk

if TYPE_CHECKING:
    from photoseek.encoders import Encoder

log = logging.getLogger("photoseek.indexer")

SAVE_VECTORS_EVERY_SECONDS = 300.0
MAX_INFERENCE_WORKERS = 4


class IndexingError(PhotoseekError, RuntimeError):
    """A run that cannot start; the message says why and what to do."""

    kind = "cannot_index"


class ModelMismatch(IndexingError):
    pass


class _Stopped(Exception):
    """The run was asked to stop; what it committed stays."""


@dataclass
class RunSummary:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    skipped: int = 0
    unchanged: int = 0
    embedded: int = 0
    seconds: float = 0.0
    model_id: str = ""
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped before its work was done (Ctrl-C, SIGTERM); what it did is saved
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): the first few of this run
    photos: int = 0  # in the index after the run
    found: int = 0  # image files found under the folders indexed
    # index --ocr: photos read (with or without text found), with text, and whose OCR failed
    # (indexed without their text); the first few failures with their reasons.
    ocr_read: int = 0
    ocr_with_text: int = 0
    ocr_failed: int = 0
    ocr_failures: list[tuple[str, str]] = field(default_factory=list)
    text_read_again: int = 0  # photos indexed earlier without --ocr whose text this run read (no embedding)
    tagged: int = 0  # photos given automatic tags (photoseek.tags): new ones, or all after a vocabulary change

    @property
    def saved(self) -> int:
        """Photos this run embedded and committed."""
        return self.added + self.updated

    def stopped_line(self, resume: str) -> str:
        """What to tell someone whose Ctrl-C stopped this run; ``resume``: the command that carries on."""
        photos = f"{self.saved} photo{'' if self.saved == 1 else 's'} saved"
        if not self.interrupted:  # the signal came as the run finished: nothing was left to do
            return f"interrupted as the run finished: {photos}, the index is up to date"
        return f"interrupted: {photos}, run '{resume}' to continue"

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        rate = f", {self.images_per_second:.1f} images/s" if self.embedded else ""
        return (
            f"added {self.added}, updated {self.updated}, moved {self.moved}, removed {self.removed}, "
            f"skipped {self.skipped}, unchanged {self.unchanged} in {self.seconds:.1f} s{rate}; "
            f"the index holds {self.photos} photo{'' if self.photos == 1 else 's'}"
        )

    def note_skip(self, path: str, reason: str) -> None:
        self.skipped += 1
        if len(self.skipped_files) < SKIPPED_NAMED:
            self.skipped_files.append((path, reason))

    def note_ocr(self, path: str, info) -> None:
        """Count one photo's OCR outcome (``info``: its PhotoInfo, embedded or read again)."""
        if info.ocr_error is not None:
            self.ocr_failed += 1
            if len(self.ocr_failures) < SKIPPED_NAMED:
                self.ocr_failures.append((path, info.ocr_error))
        elif info.ocr_text is not None:
            self.ocr_read += 1
            self.ocr_with_text += bool(info.ocr_text)

    def ocr_line(self) -> str | None:
        """What OCR did in this run, or None if it read nothing."""
        if not (self.ocr_read or self.ocr_failed):
            return None
        failed = f"; {self.ocr_failed} could not be read (indexed without their text)" if self.ocr_failed else ""
        earlier = f" ({self.text_read_again} of them indexed earlier without --ocr)" if self.text_read_again else ""
        return f"OCR: text found in {self.ocr_with_text} of {self.ocr_read + self.ocr_failed} photos{earlier}{failed}"


SKIPPED_NAMED = 5  # skipped files a run's summary names; 'photoseek status' lists them all


def no_images_message(folders: Sequence[str]) -> str:
    names = ", ".join(folders)
    return (f"no images found in {names} (photoseek indexes {' '.join(sorted(IMAGE_EXTENSIONS))}, and image files "
            "without an extension; hidden files and folders only with --hidden)")


@dataclass
class _Plan:
    embed: list[FoundFile] = field(default_factory=list)
    replaced_ids: dict[str, int] = field(default_factory=dict)  # path -> row id of the changed file's old version
    touched: list[tuple[int, FoundFile]] = field(default_factory=list)  # same content, new mtime
    moves: list[tuple[int, FoundFile]] = field(default_factory=list)
    removed_ids: list[int] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    unchanged: int = 0
    found_paths: set[str] = field(default_factory=set)
    live_roots: list[str] = field(default_factory=list)


class Indexer:
    """Writes one index directory. Use as ``Indexer(dir, settings).run(roots)``.

    ``stop``: an event that, once set (from a signal handler or another thread), makes a
    run stop early and cleanly, its summary flagged ``interrupted``; see
    :class:`photoseek.interrupts.StopSignals` for Ctrl-C and SIGTERM.
    """

    def __init__(self, index_dir: Path, settings: Settings | None = None, *, show_progress: bool | None = None,
                 echo: Callable[[str], None] | None = None, stop: threading.Event | None = None,
                 ray_address: str | None = None):
        self.stop = stop if stop is not None else threading.Event()
        self.settings = settings or Settings()
        # Decode and embed on Ray ('local', 'auto' or an address; see indexer.ray_runner) instead of here.
        self.ray_address = ray_address or self.settings.ray_address
        if self.ray_address:
            from .ray_runner import check_available

            check_available()  # no Ray installed: one line now, not after the scan
        if self.settings.ocr:
            from photoseek.ocr import check_available as check_ocr

            check_ocr()  # the same for --ocr
        self.files = IndexFiles(Path(index_dir).expanduser().resolve())
        self.show_progress = show_progress
        self.echo = echo or (lambda msg: log.warning(msg))
        self._encoder: Encoder | None = None
        self._root_cache: list[tuple[str, int]] | None = None

    # -- public ------------------------------------------------------------------------

    def run(
        self,
        roots: Sequence[Path] = (),
        *,
        model: str | None = None,
        rebuild: bool = False,
        exclude: Sequence[str] = (),
        include_hidden: bool = False,
        encoder: Encoder | None = None,
    ) -> RunSummary:
        for root in roots:  # before anything is created or loaded: a mistyped folder costs nothing
            if not os.path.isdir(os.path.expanduser(root)):
                raise IndexingError(f"not a folder: {root}")
        # A read-only index is refused in one line, before anything starts (the index folder holds the
        # SQLite catalogue and the vector file; with another back end, only thumbnails).
        self.files.ensure_writable()
        catalogue = open_catalogue(self.files.root, self.settings.database_url)
        try:
            with catalogue.writer_lock():
                if self.stop.is_set():  # stopped before it began (e.g. while the command line started up)
                    return RunSummary(interrupted=True)
                if rebuild:
                    # Without folders, --rebuild re-indexes the index's own folders: read them before the
                    # wipe, or it loses them and the run stops ("no folder to index") on an emptied index.
                    roots = list(roots) or self._known_roots(catalogue)
                    catalogue = self._wipe(catalogue)
                self.catalogue = catalogue
                return self._run_locked(catalogue, roots, model, exclude, include_hidden, encoder)
        finally:
            catalogue.close()

    # -- steps ---------------------------------------------------------------------------

    def _known_roots(self, catalogue: Catalogue) -> list[Path]:
        try:
            with catalogue.engine.connect() as conn:
                return [Path(p) for p in catalogue.root_paths(conn)]
        except Exception:  # a database too damaged to read has no folders to keep
            return []

    def _wipe(self, catalogue: Catalogue) -> Catalogue:
        """An empty catalogue in place of ``catalogue`` (under the writer's lock)."""
        self.files.vectors.unlink(missing_ok=True)
        self.files.half_vectors.unlink(missing_ok=True)
        catalogue.wipe()
        if catalogue.uses_vector_file:  # its file is gone: a new one
            return open_catalogue(self.files.root, self.settings.database_url)
        return catalogue

    def _run_locked(self, cat: Catalogue, roots, model, exclude, include_hidden, encoder) -> RunSummary:
        started = time.perf_counter()
        Session = cat.sessions
        summary = RunSummary()
        with Session.begin() as session:
            model_id, dim = self._settle_model(session, model, encoder, summary)
            generation = cat.generation(session)
            root_rows = self._settle_roots(session, roots)
            run = cat.start_run(session)
        summary.model_id = model_id
        self._encoder = encoder
        # The back end's own search needs no vector file; VectorStore-less runs only write rows.
        vectors = load_vectors(self.files, cat, dim=dim, generation=generation, persist=True,
                               exact_up_to=self.settings.exact_search_up_to, pq_above=self.settings.pq_above) if dim and cat.uses_vector_file else None
        first_generation = generation

        with Session() as session:
            try:
                with session.begin():
                    plan = self._plan(session, root_rows, exclude, include_hidden)
                summary.unchanged = plan.unchanged
                summary.found = len(plan.found_paths) + len(plan.unreadable)
                self._check_stop()
                generation = self._apply_cheap_changes(session, plan, vectors, summary, generation, run.id)
                if plan.embed:
                    self._check_stop()
                    # A model's first run converts its image tower (a process of its own, seconds): before
                    # the decoders start, so that the two never hold their memory at once. Not for an
                    # encoder the caller handed in: this run would not use the conversion.
                    if self._encoder is None:
                        prepare_indexing_encoder(model_id, precision=self.settings.precision, stop=self.stop,
                                                 openvino=self.settings.openvino)
                    self._check_stop()
                    # The decode workers start now, while the model loads (seconds of one core).
                    ahead = self._decode_ahead(plan, model_id)
                    try:
                        encoder = self._get_encoder(model_id)  # seconds for a large model: checked after, too
                        self._check_stop()
                        if not encoder.prepare_images(self.stop):  # e.g. a first run's class matrix
                            raise _Stopped
                        if ahead is not None and ahead.size != encoder.input_spec.size:
                            ahead.close()  # guessed wrong: decode again at the model's size
                            ahead = None
                        elif ahead is not None:
                            ahead.limit(self.settings.batch_size)  # the model is here: memory as without it
                        if not dim:
                            dim = encoder.dim
                            with session.begin():
                                cat.set_meta(session, "dim", str(dim))
                        if vectors is None and cat.uses_vector_file:
                            vectors = VectorStore(dim)
                        generation = self._embed(session, plan, encoder, vectors, summary, generation, run.id,
                                                 started, ahead)  # returns early, summary.interrupted set, if stopped
                    finally:
                        if ahead is not None:
                            ahead.close()
                if self.settings.ocr and not summary.interrupted:
                    self._check_stop()
                    generation = self._read_missing_text(session, plan, summary, generation)
                if dim and not summary.interrupted and self.settings.tags:
                    generation = self._tag(cat, model_id, generation, summary)
            except _Stopped:
                summary.interrupted = True
            summary.seconds = time.perf_counter() - started
            with session.begin():
                cat.update_run(session, run.id, status="interrupted" if summary.interrupted else "finished",
                               finished_at=utcnow(), seconds=summary.seconds, **_counts(summary))
        with cat.engine.connect() as conn:
            summary.photos = cat.photo_count(conn)
        if vectors is not None and not (summary.interrupted and generation == first_generation):
            if not summary.interrupted:
                # Exact search while the collection is small, clusters once it is large (see store).
                # A stopped run saves its vectors as they are (clustering can take a while):
                # correct, and the next run that finishes refits them.
                vectors = vectors.refit(cat, self.settings.exact_search_up_to, self.settings.pq_above)
            vectors.save(self.files.vectors, generation)
        if not summary.interrupted:
            cat.prepare_search(dim, self.settings)
        summary.seconds = time.perf_counter() - started
        return summary

    def _settle_model(self, session: Session, requested: str | None, encoder: Encoder | None, summary: RunSummary) -> tuple[str, int]:
        recorded = self.catalogue.get_meta(session, "model_id")
        if encoder is not None:
            requested = encoder.model_id
        if recorded is not None:
            if requested is not None and canonical_model_id(requested) != recorded:
                raise ModelMismatch(
                    f"this index was built with {recorded!r}; it cannot mix in embeddings from {requested!r}. "
                    f"Re-index with: photoseek index --model {requested} --rebuild"
                )
            return recorded, int(self.catalogue.get_meta(session, "dim") or 0)
        if requested is not None:
            model_id, warning = canonical_model_id(requested), None
        else:
            model_id, warning = resolve_new_index_model(self.settings.model)
        if warning:
            summary.warnings.append(warning)
            self.echo(warning)
        self.catalogue.set_meta(session, "model_id", model_id)
        self.catalogue.set_meta(session, "created_at", utcnow().isoformat())
        return model_id, 0

    def _settle_roots(self, session: Session, roots: Sequence[Path]) -> list[Root]:
        known = {r.path: r for r in self.catalogue.roots(session)}
        if not roots:
            if not known:
                raise IndexingError("no folder to index: name one, e.g. 'photoseek index ~/Pictures'")
            return list(known.values())
        chosen = []
        for root in roots:
            path = os.path.realpath(os.path.expanduser(root))
            if not os.path.isdir(path):
                raise IndexingError(f"not a folder: {root}")
            row = known.get(path)
            if row is None:
                row = known[path] = self.catalogue.add_root(session, path)
            chosen.append(row)
        return chosen

    def _plan(self, session: Session, root_rows: list[Root], exclude, include_hidden) -> _Plan:
        plan = _Plan()
        all_roots = [Path(r.path) for r in self.catalogue.roots(session)]
        root_paths = [r.path for r in root_rows]
        live_roots = [p for p in root_paths if os.path.isdir(p)]
        for missing in set(root_paths) - set(live_roots):
            # An unmounted drive must not empty the index: keep its photos until it is back.
            self.echo(f"warning: {missing} is not reachable; its photos stay in the index until it is")

        found: dict[str, FoundFile] = {}
        for root in live_roots:
            for item in walk(Path(root), all_roots=all_roots, exclude=exclude, include_hidden=include_hidden,
                             stop=self.stop):
                if isinstance(item, Unreadable):
                    plan.unreadable.append(item)
                else:
                    found[item.path] = item
        # A scan cut short must change nothing: the files it did not reach would look deleted.
        self._check_stop()
        plan.found_paths = set(found)
        plan.live_roots = live_roots

        known = self.catalogue.known_files(session)
        skipped = self.catalogue.skipped_signatures(session)

        under_roots = [p for p in known if is_under(p, live_roots)]
        gone = {p: known[p] for p in under_roots if p not in found}
        gone_by_size: dict[int, list[str]] = defaultdict(list)
        for p, (_, size, _, _) in gone.items():
            gone_by_size[size].append(p)

        for path, f in found.items():
            self._check_stop()  # planning may hash files (touched or moved ones)
            old = known.get(path)
            if old is not None:
                row_id, size, mtime, chash = old
                if size == f.size and mtime == f.mtime_ns:
                    plan.unchanged += 1
                elif size == f.size and _hash_or_none(path) == chash:
                    plan.touched.append((row_id, f))
                else:
                    plan.replaced_ids[path] = row_id
                    plan.embed.append(f)
                continue
            if skipped.get(path) == (f.size, f.mtime_ns):
                plan.unchanged += 1  # still the same unreadable file: don't retry
                continue
            candidates = gone_by_size.get(f.size)
            if candidates:
                chash = _hash_or_none(path)
                match = next((p for p in candidates if gone[p][3] == chash), None)
                if match is not None:
                    candidates.remove(match)
                    plan.moves.append((gone.pop(match)[0], f))
                    continue
            plan.embed.append(f)
        plan.removed_ids = [row_id for row_id, *_ in gone.values()]
        return plan

    def _apply_cheap_changes(self, session: Session, plan: _Plan, vectors: VectorStore | None, summary: RunSummary,
                             generation: int, run_id: int) -> int:
        """Moves, touches, deletions and unreadable entries: no model needed."""
        with session.begin():
            for row_id, f in plan.touched:
                self.catalogue.touch(session, row_id, f.mtime_ns)
            for row_id, f in plan.moves:
                root_id, root = self._root(session, f.path)
                self.catalogue.touch(session, row_id, f.mtime_ns, path=f.path, root_id=root_id, root=root)
            self.catalogue.remove_photos(session, plan.removed_ids)
            # Skipped entries of files that are gone (or now found fine) are dropped; unreadable ones recorded.
            self.catalogue.forget_skips(session, [p for p in self.catalogue.skipped_paths(session)
                                      if is_under(p, plan.live_roots) and p not in plan.found_paths])
            for item in plan.unreadable:
                self.catalogue.record_skip(session, item.path, 0, 0, item.reason)
                summary.note_skip(item.path, item.reason)
            summary.moved, summary.removed = len(plan.moves), len(plan.removed_ids)
            summary.unchanged += len(plan.touched)
            generation += 1
            self.catalogue.set_generation(session, generation)
            self.catalogue.update_run(session, run_id, **_counts(summary))
        if vectors is not None and plan.removed_ids:
            vectors.remove(plan.removed_ids)
        return generation

    def _decode_jobs(self, plan: _Plan, size: int) -> Iterator[DecodeJob]:
        s = self.settings
        ocr_seconds = s.ocr_seconds if s.ocr else None
        return (DecodeJob(f.path, size, s.max_image_pixels, ocr_seconds) for f in plan.embed)

    def _decode_ahead(self, plan: _Plan, model_id: str) -> DecodeAhead | None:
        """Decoding of ``plan.embed`` started before the model is loaded, at the size it will ask
        for (indexer.prefetch); None when that size is not known beforehand, or on Ray."""
        if self.ray_address:
            return None
        size = self._encoder.input_spec.size if self._encoder is not None else predicted_input_size(model_id)
        if not size:
            return None
        s = self.settings
        return DecodeAhead(self._decode_jobs(plan, size), workers=self._decode_workers(), stop=self.stop,
                           ocr_at_once=s.ocr_at_once if s.ocr else None, size=size)

    def _embed(self, session: Session, plan: _Plan, encoder: Encoder, vectors: VectorStore | None,
               summary: RunSummary, generation: int, run_id: int, started: float,
               ahead: DecodeAhead | None = None) -> int:
        s = self.settings
        ocr_seconds = s.ocr_seconds if s.ocr else None
        jobs = self._decode_jobs(plan, encoder.input_spec.size)
        by_path = {f.path: f for f in plan.embed}
        progress = tqdm(total=len(plan.embed), unit="img", desc="embedding", dynamic_ncols=True,
                        disable=(not self.show_progress) if self.show_progress is not None else None)
        batch: list[tuple[FoundFile, DecodedPhoto]] = []
        last_vector_save = time.perf_counter()

        def write(done: list[tuple[FoundFile, DecodedPhoto]], embeddings: np.ndarray) -> None:
            nonlocal generation, last_vector_save
            with session.begin():  # one checkpoint
                replaced = [i for i in (plan.replaced_ids.get(f.path) for f, _ in done) if i is not None]
                for f, photo in done:
                    summary.note_ocr(f.path, photo.info)
                summary.updated += len(replaced)
                summary.added += len(done) - len(replaced)
                rows = []
                for (f, photo), vector in zip(done, embeddings):
                    root_id, root = self._root(session, f.path)
                    rows.append(self.catalogue.new_photo(f.path, root_id, f.mtime_ns, photo.info, photo.size_bytes,
                                                         photo.content_hash, vector, root=root))
                new_ids = self.catalogue.write_batch(session, rows, replaced)
                generation += 1
                self.catalogue.set_generation(session, generation)
                self.catalogue.update_run(session, run_id, **_counts(summary), seconds=time.perf_counter() - started)
            if vectors is not None:
                vectors.remove(replaced)
                if new_ids:
                    vectors.add(np.asarray(new_ids), np.asarray(embeddings))
            summary.embedded += len(done)
            progress.update(len(done))
            if vectors is not None and time.perf_counter() - last_vector_save > SAVE_VECTORS_EVERY_SECONDS:
                vectors.save(self.files.vectors, generation)  # lets a running server see progress
                last_vector_save = time.perf_counter()

        def submit(pool: InferencePool) -> None:
            if batch:
                pixels = np.stack([photo.pixels for _, photo in batch])
                for done, embeddings in pool.submit(list(batch), pixels):
                    write(done, embeddings)
                batch.clear()

        if self.ray_address:
            # Decoded and embedded on Ray (indexer.ray_runner); skipped and written here as below.
            from .ray_runner import embed_on_ray

            try:
                with closing(embed_on_ray(self.ray_address, list(by_path), size=encoder.input_spec.size,
                                          max_pixels=s.max_image_pixels, model_id=encoder.model_id,
                                          precision=s.precision, batch_size=s.batch_size, cores=usable_cores(),
                                          torch_threads=s.torch_threads, stop=self.stop,
                                          ocr_seconds=ocr_seconds)) as finished:
                    for block in finished:  # returns after the block in hand once stopped, Ray work shut down
                        for path, reason in block.skipped:
                            self._skip(session, by_path[path], reason, plan, vectors, summary)
                            progress.update(1)
                        if block.photos:
                            write([(by_path[p], photo) for p, photo in block.photos], block.embeddings)
                if self.stop.is_set():
                    summary.interrupted = True
            finally:
                progress.close()
            return generation

        # Decoding and inference share the cores: decode processes, and one model thread per
        # core (see indexer.inference for why not one model call over all cores).
        workers = self._inference_workers()
        sizes = BatchSizes(len(plan.embed), workers, s.batch_size)
        stop = self.stop
        try:
            with encoder.inference_threads(workers, s.torch_threads), InferencePool(encoder.encode_pixels, workers) as pool:
                # closing(): leaving early shuts the decode pool down (its workers gone) right here.
                decoded = ahead if ahead is not None else decode_all(
                    jobs, workers=self._decode_workers(), stop=stop, ocr_at_once=s.ocr_at_once if s.ocr else None)
                with closing(decoded) as results:
                    for result in results:
                        if stop.is_set():
                            break
                        f = by_path[result.path]
                        if result.photo is None:
                            self._skip(session, f, result.error or "unknown error", plan, vectors, summary)
                            progress.update(1)
                            sizes.taken(1)
                            continue
                        batch.append((f, result.photo))
                        if len(batch) >= sizes.target():
                            sizes.taken(len(batch))
                            submit(pool)
                if stop.is_set():
                    # Stopping: no new batch; photos decoded but not embedded are left for the next run.
                    # The batches being embedded (one per inference thread at most) cannot be cut short:
                    # wait for them and save them.
                    summary.interrupted = True
                    batch.clear()
                else:
                    submit(pool)
                for done, embeddings in pool.drain():
                    write(done, embeddings)
        finally:
            progress.close()
        return generation

    def _read_missing_text(self, session: Session, plan: _Plan, summary: RunSummary, generation: int) -> int:
        """``index --ocr`` over photos indexed without it: read the text of the photos the catalogue
        has none for, in the decode workers, with no model and no embedding; one checkpoint every
        ``checkpoint_every`` photos. Which photos is the catalogue's to say (its
        ``photos_without_text``: never read, so neither those OCR read and found nothing in, nor
        those whose OCR failed); the text goes to its ``set_photo_text``. A file that cannot be
        read now is left for the next scan to deal with."""
        s = self.settings
        with session.begin():
            todo = [(pid, path) for pid, path in self.catalogue.photos_without_text(session)
                    if is_under(path, plan.live_roots)]
        if not todo:
            return generation
        ids = {path: pid for pid, path in todo}
        jobs = (DecodeJob(path, 0, s.max_image_pixels, s.ocr_seconds, text_only=True) for _, path in todo)
        progress = tqdm(total=len(todo), unit="img", desc="reading text", dynamic_ncols=True,
                        disable=(not self.show_progress) if self.show_progress is not None else None)
        read: list[tuple[int, object]] = []

        def write() -> None:
            nonlocal generation
            with session.begin():
                for pid, info in read:
                    self.catalogue.set_photo_text(session, pid, info)
                generation += 1
                self.catalogue.set_generation(session, generation)
            read.clear()

        try:
            with closing(decode_all(jobs, workers=self._decode_workers(), stop=self.stop,
                                    ocr_at_once=s.ocr_at_once)) as results:
                for result in results:
                    if self.stop.is_set():
                        break
                    progress.update(1)
                    if result.photo is None:
                        continue
                    summary.note_ocr(result.path, result.photo.info)
                    summary.text_read_again += 1
                    read.append((ids[result.path], result.photo.info))
                    if len(read) >= s.checkpoint_every:
                        write()
            if read:
                write()  # stopping too: what was read is kept
        finally:
            progress.close()
        if self.stop.is_set():
            summary.interrupted = True
        return generation

    def _tag(self, cat: Catalogue, model_id: str, generation: int, summary: RunSummary) -> int:
        """Tag the photos not yet tagged with the index's vocabulary, from their stored embeddings
        (photoseek.tags): this run's new photos, or all of them when the vocabulary changed."""
        from photoseek.tags import tag_pending, vocabulary_for

        with cat.engine.connect() as conn:
            vocabulary = vocabulary_for(cat, conn, self.settings.tag_vocabulary)
        summary.tagged, generation = tag_pending(cat, vocabulary, lambda: self._get_encoder(model_id),
                                                 model_id=model_id, generation=generation, stop=self.stop)
        return generation

    def _skip(self, session: Session, f: FoundFile, reason: str, plan: _Plan, vectors: VectorStore | None,
              summary: RunSummary) -> None:
        with session.begin():
            self.catalogue.record_skip(session, f.path, f.size, f.mtime_ns, reason)
            old_id = plan.replaced_ids.pop(f.path, None)
            if old_id is not None:  # it was a good photo once; its changed content is not
                self.catalogue.remove_photos(session, [old_id])
                summary.removed += 1
        if old_id is not None and vectors is not None:
            vectors.remove([old_id])
        summary.note_skip(f.path, reason)

    # -- helpers ---------------------------------------------------------------------------

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Stopped

    def _get_encoder(self, model_id: str) -> Encoder:
        if self._encoder is None:
            self._encoder = load_indexing_encoder(model_id, precision=self.settings.precision,
                                                  openvino=self.settings.openvino)
        return self._encoder

    def _inference_workers(self) -> int:
        """Default: one single-thread model call per core (see indexer.inference), but at most
        MAX_INFERENCE_WORKERS batches at once: each holds its activations in memory, so on a
        many-core machine the cores are shared out as threads instead. With ``torch_threads``
        set, as many calls as those threads fit in the cores."""
        if self.settings.inference_workers is not None:
            return self.settings.inference_workers
        return max(1, min(MAX_INFERENCE_WORKERS, usable_cores() // (self.settings.torch_threads or 1)))

    def _decode_workers(self) -> int:
        """Default: one decode process per core (up to 8). They share the cores with the
        model threads; more would only cost memory."""
        if self.settings.decode_workers is not None:
            return self.settings.decode_workers
        return max(1, min(8, usable_cores()))

    def _root(self, session: Session, path: str) -> tuple[int | None, str | None]:
        """The id and path of the indexed folder ``path`` is in (the innermost, if nested)."""
        if self._root_cache is None:
            self._root_cache = sorted(self.catalogue.root_ids(session), key=lambda r: -len(r[0]))
        return next(((i, p) for p, i in self._root_cache if is_under(path, [p])), (None, None))


def _hash_or_none(path: str) -> str | None:
    try:
        return hash_file(Path(path))
    except OSError:
        return None


def _counts(summary: RunSummary) -> dict[str, int]:
    return dict(added=summary.added, updated=summary.updated, moved=summary.moved, removed=summary.removed,
                skipped=summary.skipped)
