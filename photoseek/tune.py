"""``photoseek tune``: teach an index a person's own words (issue 13), on top of :mod:`photoseek.tuning`.

Pairs (photo, caption) come from a captions file (CSV ``path,caption`` or JSON lines
``{"path": ..., "caption": ...}``), else from the captions and keywords stored in the catalogue
(EXIF/IPTC/XMP, read at index time), plus folder names with ``folders=True``, plus the feedback marks
(:mod:`photoseek.feedback`: a "right" mark is a (query, photo) pair, a "wrong" mark a hard negative)
unless ``feedback=False``. Images are the stored
embeddings (no photo is decoded); captions go through the index's own encoder's text side.

Invariants:

* Bad input (unknown paths, empty captions, duplicate rows, a file not in UTF-8, too few photos)
  raises :class:`BadInput` before anything is written.
* The adapter lives in one file of the index folder, ``adapter.npz``, replaced atomically and
  durably: a tune killed mid-way leaves the previous adapter (or none) in place, and a searcher
  sees the old adapter or the new one, never a mix. It is written only when held-out recall
  improves and generic recall (the hand-labelled demo queries, when the index holds those photos)
  drops by at most :data:`MAX_GENERIC_DROP`, unless forced. ``undo`` removes it: the pretrained
  space again.
* The adapter records the model it was trained for; a searcher ignores one made for another model
  (an index rebuilt with another encoder).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from photoseek.demo_labels import LABELS
from photoseek.errors import BadInput, PhotoseekError, Unavailable
from photoseek.files import atomic_write
from photoseek.settings import Settings
from photoseek.storage import open_catalogue
from photoseek.store import IndexFiles
from photoseek.tuning import RECALL_AT, Adapter, HardNegatives, TrainReport, train

ADAPTER_FILE = "adapter.npz"
MIN_PHOTOS = 8  # captioned photos needed: a quarter are held out, and held-out recall needs at least two
MAX_GENERIC_DROP = 0.01  # one point of generic recall@10
MIN_LABELLED_PHOTOS = 20  # demo photos the index must hold for the generic check to mean anything


class TooFewPairs(BadInput):
    """Too few captioned or marked photos to learn from: a mistake on the command line (exit 2); over
    HTTP a state of the index, not of the request (409: caption or mark more, then ask again)."""

    kind = "too_few_pairs"
    status = 409


class NotApplied(PhotoseekError):
    """The trained adapter did not earn its place (no held-out gain, or generic recall fell)."""

    kind = "not_applied"
    status = 409


@dataclass(frozen=True)
class Pair:
    photo_id: int
    caption: str


def adapter_path(index_dir: Path) -> Path:
    return Path(index_dir) / ADAPTER_FILE


def load_adapter(index_dir: Path) -> Adapter | None:
    path = adapter_path(index_dir)
    try:
        return Adapter.from_bytes(path.read_bytes())
    except FileNotFoundError:
        return None


# -- captions ----------------------------------------------------------------------------------


def read_captions(path: Path) -> list[tuple[int, str, str]]:
    """(line, path, caption) rows of a captions file: CSV ``path,caption`` (a header row with those
    names is optional) or JSON lines. Paths relative to the file's folder are resolved against it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise BadInput(f"--captions: cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise BadInput(f"--captions: {path} is not UTF-8 (line {line}): save it as UTF-8 and run again",
                       kind="bad_encoding") from None
    base = Path(path).resolve().parent
    rows: list[tuple[int, str, str]] = []
    stripped = text.lstrip()
    if stripped.startswith("{"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                rows.append((number, str(item["path"]), str(item["caption"])))
            except (ValueError, KeyError, TypeError):
                raise BadInput(f'--captions: line {number} of {path} is not {{"path": ..., "caption": ...}}') from None
    else:
        for number, record in enumerate(csv.reader(io.StringIO(text)), 1):
            if not record or not "".join(record).strip():
                continue
            if number == 1 and [c.strip().lower() for c in record] == ["path", "caption"]:
                continue
            if len(record) != 2:
                raise BadInput(f"--captions: line {number} of {path} has {len(record)} fields; each line is "
                               "path,caption (quote a caption that holds a comma)")
            rows.append((number, record[0], record[1]))
    return [(n, str((base / os.path.expanduser(p)).resolve()) if p.strip() else p, " ".join(c.split()))
            for n, p, c in rows]


def pairs_from_file(catalogue, conn, path: Path) -> list[Pair]:
    rows = read_captions(path)
    empty = [n for n, p, c in rows if not c or not p.strip()]
    if empty:
        raise BadInput(f"--captions: empty path or caption on line{'s' if len(empty) > 1 else ''} "
                       f"{', '.join(map(str, empty[:10]))} of {path}: give every row a photo and a caption")
    seen: dict[tuple[str, str], int] = {}
    for n, p, c in rows:
        if (p, c.casefold()) in seen:
            raise BadInput(f"--captions: line {n} of {path} repeats line {seen[(p, c.casefold())]} "
                           f"({Path(p).name}: {c!r}); remove the duplicate")
        seen[(p, c.casefold())] = n
    ids = catalogue.ids_of_paths(conn, sorted({p for _, p, _ in rows}))
    unknown = [(n, p) for n, p, _ in rows if p not in ids]
    if unknown:
        listed = "; ".join(f"line {n}: {p}" for n, p in unknown[:5])
        raise BadInput(f"--captions: {len(unknown)} row{'s' if len(unknown) > 1 else ''} of {path} name "
                       f"photo{'s' if len(unknown) > 1 else ''} not in this index ({listed}); index them "
                       "first or fix the paths")
    return [Pair(ids[p], c) for _, p, c in rows]


def pairs_from_catalogue(catalogue, conn, *, folders: bool, stored: bool = True) -> list[Pair]:
    """Each photo's stored caption and keywords (one pair each; not with ``stored=False``) and, with
    ``folders``, its folder names."""
    pairs: list[Pair] = []
    for image_id, _path, caption, keywords, folder_names in catalogue.photo_words(conn):
        texts = [caption] + [k for k in (keywords or "").split(",")] if stored else []
        if folders:
            texts += [f for f in (folder_names or "").split(" / ")[1:]]  # the indexed folder's own name says little
        seen = set()
        for text in texts:
            text = " ".join((text or "").split())
            if text and text.casefold() not in seen:
                seen.add(text.casefold())
                pairs.append(Pair(image_id, text))
    return pairs


# -- the generic check ---------------------------------------------------------------------------


def generic_queries(catalogue, conn, ids: np.ndarray) -> tuple[list[str], list[set[int]]] | None:
    """The hand-labelled demo queries and their photos' ids, when the index holds enough of those
    photos (matched by file name); else None: there is nothing labelled to check generic recall with."""
    by_name: dict[str, list[int]] = {}
    for image_id, path, *_ in catalogue.photo_words(conn):
        by_name.setdefault(os.path.basename(path), []).append(image_id)
    present = {name: by_name[name] for name in LABELS if len(by_name.get(name, ())) == 1}
    if len(present) < MIN_LABELLED_PHOTOS:
        return None
    relevant: dict[str, set[int]] = {}
    for name, queries in LABELS.items():
        for q in queries:
            relevant.setdefault(q, set())
            if name in present:
                relevant[q].add(present[name][0])
    queries = sorted(q for q, r in relevant.items() if r)
    return queries, [relevant[q] for q in queries]


def generic_recall(query_vectors: np.ndarray, relevant: list[set[int]], photos: np.ndarray, ids: np.ndarray,
                   k: int = RECALL_AT) -> float:
    """Mean recall@k of labelled queries (R@k as bench/offline_quality.py counts it)."""
    order = np.argsort(-(query_vectors @ photos.T), axis=1, kind="stable")[:, :k]
    return float(np.mean([len(rel & set(ids[row].tolist())) / min(k, len(rel)) for row, rel in zip(order, relevant)]))


# -- the command -------------------------------------------------------------------------------


@dataclass
class Outcome:
    applied: bool
    report: TrainReport
    generic_before: float | None
    generic_after: float | None
    note: str
    version: int


def _text_encoder(model_id: str, settings: Settings):
    """The model's text side without torch where it has one (photoseek.encoders.text_side), else the full encoder."""
    from photoseek.encoders.text_side import load_text_encoder

    text_side = load_text_encoder(model_id)
    if text_side is not None:
        return text_side
    from photoseek.encoders import load_encoder

    return load_encoder(model_id, precision=settings.precision)


def marks_for_tuning(catalogue, conn, pairs: list[Pair]) -> tuple[list[Pair], list[Pair], int]:
    """``pairs`` (captions) with the feedback marks (:mod:`photoseek.feedback`): (the pairs to train on:
    those captions, plus one per "right" mark not already a caption of its photo; the hard negatives,
    one per "wrong" mark; how many "right" marks there are). A "wrong" mark also drops a caption that
    says the same of its photo: the person's latest word wins. Marks come sorted, so the order they were
    made in does not change the training."""
    right, wrong = [], []
    for query, image_id, _path, mark, _when in catalogue.feedback_marks(conn):
        (right if mark == "right" else wrong).append(Pair(int(image_id), query))
    right.sort(key=lambda p: (p.caption, p.photo_id))
    wrong.sort(key=lambda p: (p.caption, p.photo_id))
    overruled = {(p.photo_id, p.caption.casefold()) for p in wrong}
    kept = [p for p in pairs if (p.photo_id, p.caption.casefold()) not in overruled]
    known = {(p.photo_id, p.caption.casefold()) for p in kept}
    return kept + [p for p in right if (p.photo_id, p.caption.casefold()) not in known], wrong, len(right)


def tune(index_dir: Path, settings: Settings, *, captions: Path | None = None, folders: bool = False,
         force: bool = False, seed: int = 0, encoder=None, feedback: bool = True,
         progress: Callable[[str], None] = lambda _: None) -> Outcome:
    """Train an adapter from the index's captions (or ``captions``), plus its feedback marks unless
    ``feedback`` is false, and keep it if it earns its place (see the module's invariants).
    ``encoder``: one already loaded for the index's model (tests)."""
    files = IndexFiles(Path(index_dir).expanduser().resolve())
    files.ensure_writable()
    catalogue = open_catalogue(files.root, settings.database_url)
    try:
        with catalogue.engine.connect() as conn:
            _generation, dim, model_id = catalogue.index_state(conn)
            if not model_id or not dim:
                raise Unavailable(f"the index at {files.root} is empty: run 'photoseek index FOLDER' first")
            if captions is not None:
                captions = Path(captions).expanduser().resolve()
                pairs = pairs_from_file(catalogue, conn, captions)
                if folders:
                    known = {(p.photo_id, p.caption.casefold()) for p in pairs}
                    pairs += [p for p in pairs_from_catalogue(catalogue, conn, folders=True, stored=False)
                              if (p.photo_id, p.caption.casefold()) not in known]
            else:
                pairs = pairs_from_catalogue(catalogue, conn, folders=folders)
            negatives: list[Pair] = []
            right_marks = 0
            if feedback:
                pairs, negatives, right_marks = marks_for_tuning(catalogue, conn, pairs)
            photos = len({p.photo_id for p in pairs})
            if photos < MIN_PHOTOS:
                source = (f"{captions}" if captions is not None else
                          "the captions and keywords stored in the photos" + (" and their folder names" if folders else ""))
                marked = (f" and {right_marks} 'right' mark{'s' if right_marks != 1 else ''}" if feedback
                          else " (feedback marks left out: --no-feedback)")
                raise TooFewPairs(f"too few captioned photos to learn from: {photos} in {source}{marked}, at least "
                               f"{MIN_PHOTOS} needed (a quarter are held out to check the result). Caption or mark "
                               "more photos ('right' on results in the web page, or 'photoseek feedback --right'), "
                               "add --folders, or give a file with --captions")
            id_chunks, vector_chunks = zip(*catalogue.iter_embeddings(conn))
            all_ids, all_photos = np.concatenate(id_chunks), np.concatenate(vector_chunks).astype(np.float32)
            generic = generic_queries(catalogue, conn, all_ids)
        row = {int(i): n for n, i in enumerate(all_ids)}
        encoder = encoder or _text_encoder(model_id, settings)
        progress(f"embedding {len(pairs)} captions of {photos} photos")
        texts = sorted({p.caption for p in pairs})
        text_vectors = dict(zip(texts, np.asarray(encoder.encode_texts(texts), np.float32)))
        photo_of_pair = np.array([p.photo_id for p in pairs], np.int64)
        images = all_photos[[row[int(i)] for i in photo_of_pair]]
        captions_v = np.stack([text_vectors[p.caption] for p in pairs])
        hard = None
        if negatives:
            known_texts = {c: v for c, v in text_vectors.items()}
            missing = sorted({p.caption for p in negatives} - set(known_texts))
            if missing:
                known_texts.update(zip(missing, np.asarray(encoder.encode_texts(missing), np.float32)))
            hard = HardNegatives(np.array([p.photo_id for p in negatives], np.int64),
                                 all_photos[[row[p.photo_id] for p in negatives]],
                                 np.stack([known_texts[p.caption] for p in negatives]), [p.caption for p in negatives])
        progress(f"training on {len(pairs)} pairs" + (f" ({right_marks} from 'right' marks) and "
                                                      f"{len(negatives)} 'wrong' marks" if feedback else ""))
        adapter, report = train(images, captions_v, photo_of_pair, all_photos, all_ids,
                                captions=[p.caption for p in pairs], seed=seed, hard=hard)
        generic_before = generic_after = None
        if generic is not None:
            queries, relevant = generic
            q = np.asarray(encoder.encode_texts(queries), np.float32)
            generic_before = generic_recall(q, relevant, all_photos, all_ids)
            generic_after = generic_recall(adapter.fold_query(q), relevant, all_photos, all_ids)
        improved = report.recall_after > report.recall_before or (
            report.recall_after == report.recall_before and report.mrr_after > report.mrr_before)
        kept_general = generic_before is None or generic_after >= generic_before - MAX_GENERIC_DROP - 1e-9
        note = ("generic recall checked on the hand-labelled demo queries" if generic is not None else
                "generic recall not checked: this index does not hold the labelled demo photos")
        previous = load_adapter(files.root)
        version = int(previous.summary.get("version", 0)) + 1 if previous is not None else 1
        outcome = Outcome(False, report, generic_before, generic_after, note, version)
        if not force and not improved:
            raise NotApplied(f"the adapter did not improve held-out recall@{report.k} "
                             f"({report.recall_before:.3f} -> {report.recall_after:.3f}, MRR {report.mrr_before:.3f} "
                             f"-> {report.mrr_after:.3f}); nothing changed. More or more varied captions may help; "
                             "--force applies it anyway")
        if not force and not kept_general:
            raise NotApplied(f"the adapter costs generic recall@{RECALL_AT} {generic_before:.3f} -> "
                             f"{generic_after:.3f} (more than {MAX_GENERIC_DROP * 100:.0f} point); nothing changed. "
                             "--force applies it anyway")
        adapter.summary = {
            "version": version, "model_id": model_id, "dim": int(dim),
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": (str(captions) if captions is not None else "catalogue") + ("+folders" if folders else "")
            + ("+feedback" if feedback and (right_marks or negatives) else ""),
            "marks_right": right_marks if feedback else 0, "marks_wrong": len(negatives),
            "forced": bool(force and not (improved and kept_general)),
            "generic_before": generic_before, "generic_after": generic_after, "note": note, **report.as_dict()}
        atomic_write(adapter_path(files.root), adapter.to_bytes(), durable=True)
        outcome.applied = True
        return outcome
    finally:
        catalogue.close()


def undo(index_dir: Path) -> bool:
    """Back to the pretrained space. True if there was an adapter to remove."""
    path = adapter_path(Path(index_dir).expanduser().resolve())
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


class CurrentAdapter:
    """The index's adapter as a searcher applies it to text queries: re-read when the file changes
    (a stat per query), ignored when made for another model or dimension. Thread-safe: the pair
    (signature, adapter) is swapped in one assignment."""

    def __init__(self, index_dir: Path):
        self.path = adapter_path(index_dir)
        self._state: tuple[tuple | None, Adapter | None] = (None, None)

    def get(self) -> Adapter | None:
        try:
            st = os.stat(self.path)
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            signature = None
        known, adapter = self._state
        if signature != known:
            try:
                adapter = load_adapter(self.path.parent) if signature is not None else None
            except (OSError, ValueError, KeyError):
                adapter = None  # unreadable: the pretrained space, as without one
            self._state = (signature, adapter)
        return adapter

    def apply(self, text_vector: np.ndarray, model_id: str | None, dim: int) -> np.ndarray:
        adapter = self.get()
        if adapter is None or adapter.summary.get("model_id") != model_id or adapter.dim != dim:
            return text_vector
        return adapter.fold_query(text_vector)


def describe(summary: dict) -> list[str]:
    """What an adapter learned, for people (``photoseek tune --report`` and after a tune)."""
    lines = [(f"adapter v{summary.get('version')} for {summary.get('model_id')}, trained {summary.get('trained_at')} "
             f"from {summary.get('source')}") + (" (applied with --force)" if summary.get("forced") else ""),
             (f"pairs: {summary.get('pairs')} captions of {summary.get('photos')} photos; held out: "
             f"{summary.get('held_out_pairs')} captions of {summary.get('held_out_photos')} photos (recall measured on "
             f"{summary.get('test_photos')} of them, the others chose when to stop)"),
             (f"held-out recall@{summary.get('k')}: {summary.get('recall_before'):.3f} -> {summary.get('recall_after'):.3f}"
             f" (MRR {summary.get('mrr_before'):.3f} -> {summary.get('mrr_after'):.3f}), best after "
             f"{summary.get('epochs')} epochs, {summary.get('seconds')} s")]
    if summary.get("marks_right") or summary.get("marks_wrong"):
        lines.insert(2, f"feedback marks: {summary.get('marks_right', 0)} 'right' (training pairs), "
                        f"{summary.get('marks_wrong', 0)} 'wrong' (hard negatives)")
    if summary.get("generic_before") is not None:
        lines.append(f"generic recall@{RECALL_AT} (hand-labelled demo queries): {summary['generic_before']:.3f} -> "
                     f"{summary['generic_after']:.3f}")
    else:
        lines.append(summary.get("note", ""))
    return lines
