"""Text inside photos (signs, screenshots, receipts, documents), read at index time: ``index --ocr``.

The engine is RapidOCR (PyPI ``rapidocr-onnxruntime``): PaddleOCR's PP-OCRv4 text detector and
recogniser (Chinese and English, Latin script) and its text-direction classifier, as ONNX models
inside the wheel, run by onnxruntime. Nothing is downloaded; nothing here imports torch, so it runs
in the indexer's decode workers (:func:`photoseek.imaging.load_photo_or_reason`).

Invariants:

* Models load once per process (the first photo a worker reads), on one onnxruntime thread per
  model: the decode workers are already one process per core.
* Memory: the models and their libraries take about 100 MB a worker; reading one photo takes
  about 250 MB more at ``MAX_SIDE`` 960 (the text detector's feature maps; 450 MB at 1280),
  while it runs. So the decode workers take turns (:func:`set_slots`: a semaphore shared by the
  pool, ``ocr_at_once`` photos at a time, default 1), and a worker hands that memory back to
  the system after each photo (``malloc_trim``) instead of keeping it for the next one.
* Bounded work per photo: the photo is read at most ``MAX_SIDE`` pixels on its longer side (a
  JPEG is decoded straight at that scale), at most ``MAX_BOXES`` text boxes (the largest) are
  recognised, and a deadline (``seconds``, the setting ``ocr_seconds``) stops the photo's OCR:
  checked between steps, and enforced inside a model call too (onnxruntime's terminate flag,
  set by a timer), so a text-dense photo costs at most about its budget.
* Never raises for a photo: :func:`read_photo_text` returns ``(text, None)`` or
  ``(None, reason)``; the photo is indexed either way, and the reason is what the user sees.
* Only confident text: lines scored below ``MIN_SCORE``, or with fewer than two letters or
  digits, are dropped; what is kept is in reading order (lines top to bottom, words left to
  right on a line), one line per text line, at most ``MAX_TEXT_CHARS`` characters.
  ``""`` means "read, no text found": distinct from None, "not read".

Known limits (bench/ocr.py, tests/test_ocr.py): the recogniser reads Chinese, Latin letters and
digits, not most accented letters; capitals set close together may come out as one word
("INVOICE2023" where the gap is narrow), so a keyword index over this text should also match
inside words (for example SQLite FTS5's trigram tokenizer); text smaller than about 10 px at
``MAX_SIDE`` (the fine print of a receipt photographed whole) is not read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from photoseek.errors import PhotoseekError

MAX_SIDE = 960  # px, the longer side OCR reads; see bench/ocr.py for what it costs and finds
MIN_SIDE = 16  # px: a thinner image holds no readable line
MAX_BOXES = 64  # text boxes recognised per photo (the largest); a page of small print has more
MIN_SCORE = 0.8  # recogniser confidence; below it, mostly texture read as letters ("O", "®")
MAX_TEXT_CHARS = 5000
DEFAULT_SECONDS = 10.0
_REC_CHUNK = 8  # boxes recognised between deadline checks


class OcrUnavailable(PhotoseekError):
    """``--ocr`` asked for, but the OCR engine is not installed."""

    kind = "ocr_unavailable"
    status = 400


class _OutOfTime(Exception):
    pass


def check_available() -> None:
    """Raise :class:`OcrUnavailable`, with what to do, unless the OCR engine can be imported."""
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except Exception as exc:  # ImportError, or a broken onnxruntime/OpenCV install
        raise OcrUnavailable(f"--ocr needs the OCR engine, which cannot be loaded ({type(exc).__name__}: {exc}); "
                             "install it with: pip install 'rapidocr-onnxruntime>=1.4,<2'") from None


@dataclass
class _Engine:
    ocr: Any  # rapidocr_onnxruntime.RapidOCR
    runs: list  # the run options of the call in progress (one slot), read by every model call


_engine: _Engine | None = None
_engine_lock = threading.Lock()
_slots = None  # a multiprocessing semaphore shared by the decode workers, or None (set_slots)
# How long a photo waits for its turn before reading anyway: a worker killed while reading keeps
# its slot for good (the pool that replaces it gets a new semaphore; this is the backstop).
SLOT_WAIT_SECONDS = 120.0


def set_slots(slots) -> None:
    """Make this process take turns with the others holding ``slots`` (a multiprocessing
    semaphore, or None for no turns): at most that many photos are read at once."""
    global _slots
    _slots = slots


class _InterruptibleSession:
    """An onnxruntime session whose ``run`` uses the engine's current RunOptions, so that a timer
    can stop a model call in progress (``RunOptions.terminate``)."""

    def __init__(self, session, runs: list):
        self._session, self._runs = session, runs

    def run(self, output_names, input_feed, run_options=None):
        return self._session.run(output_names, input_feed, self._runs[0] if run_options is None else run_options)

    def __getattr__(self, name):
        return getattr(self._session, name)


def _load() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            check_available()
            from rapidocr_onnxruntime import RapidOCR

            ocr = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1, det_limit_type="max",
                           det_limit_side_len=MAX_SIDE, text_score=MIN_SCORE)
            runs: list = [None]
            for holder in (ocr.text_det.infer, ocr.text_cls.infer, ocr.text_rec.session):
                holder.session = _InterruptibleSession(holder.session, runs)
            _engine = _Engine(ocr, runs)
    return _engine


def read_photo_text(data: bytes, seconds: float = DEFAULT_SECONDS, *, max_pixels: int | None = None) -> tuple[str | None, str | None]:
    """The text in the photo whose file bytes are ``data``: ``(text, None)``, ``""`` if there is
    none, or ``(None, reason)`` if it could not be read in ``seconds`` or at all. Never raises."""
    from photoseek.imaging import DEFAULT_MAX_PIXELS, DecodeError, open_image

    started = time.perf_counter()
    try:
        img, _ = open_image(data, draft_size=_draft_size(data), max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
        return read_text(img, seconds - (time.perf_counter() - started)), None
    except _OutOfTime:
        return None, f"OCR ran out of time ({seconds:g} s a photo; PHOTOSEEK_OCR_SECONDS)"
    except DecodeError as exc:
        return None, f"OCR could not decode the photo: {exc.reason}"
    except OcrUnavailable as exc:
        return None, str(exc)
    except MemoryError:
        return None, "OCR ran out of memory"
    except Exception as exc:  # an engine failure costs this photo's text, not the photo or the run
        message = str(exc).strip().splitlines()
        return None, f"OCR failed: {type(exc).__name__}: {(message[-1] if message else '')[:200]}"


def read_text(img: Image.Image, seconds: float = DEFAULT_SECONDS) -> str:
    """The confident text in ``img`` (any size: it is scaled to ``MAX_SIDE``), in reading order.
    Raises ``_OutOfTime`` past ``seconds``; engine errors propagate (see :func:`read_photo_text`)."""
    if seconds <= 0:
        raise _OutOfTime
    bgr = _model_input(img)
    if bgr is None:
        return ""
    engine = _load()  # once per process; not counted in the photo's time
    slots = _slots
    turn = slots.acquire(timeout=SLOT_WAIT_SECONDS) if slots is not None else False
    try:
        import onnxruntime

        deadline = time.perf_counter() + seconds  # waiting for a turn is not the photo's time either
        options = onnxruntime.RunOptions()
        engine.runs[0] = options
        timer = threading.Timer(max(0.0, deadline - time.perf_counter()), _terminate, args=(options,))
        timer.daemon = True
        timer.start()
        try:
            return _read(engine.ocr, bgr, deadline)
        except _OutOfTime:
            raise
        except Exception:
            if time.perf_counter() >= deadline:  # the timer stopped a model call
                raise _OutOfTime from None
            raise
        finally:
            timer.cancel()
            engine.runs[0] = None
    finally:
        del bgr
        _trim()
        if turn:
            slots.release()


def _trim() -> None:
    """Hand the memory of the photo just read back to the system (glibc keeps freed blocks,
    and the decode workers tell it to keep large ones: photoseek.imaging.decode_worker_init)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except Exception:  # not glibc
        pass


def _terminate(options) -> None:
    options.terminate = True


def _check(deadline: float) -> None:
    if time.perf_counter() >= deadline:
        raise _OutOfTime


def _read(ocr, bgr: np.ndarray, deadline: float) -> str:
    boxes, _ = ocr.text_det(bgr)
    _check(deadline)
    if boxes is None or len(boxes) == 0:
        return ""
    if len(boxes) > MAX_BOXES:  # the largest boxes: headlines and signs before small print
        areas = [cv_area(b) for b in boxes]
        keep = sorted(np.argsort(areas)[::-1][:MAX_BOXES])
        boxes = boxes[keep]
    boxes = ocr.sorted_boxes(boxes)
    crops = ocr.get_crop_img_list(bgr, boxes)
    texts: list[tuple[str, float]] = []
    for start in range(0, len(crops), _REC_CHUNK):
        chunk, _, _ = ocr.text_cls(crops[start:start + _REC_CHUNK])
        _check(deadline)
        recognised, _ = ocr.text_rec(chunk, False)
        texts += [(str(t), float(s)) for t, s, *_ in recognised]
        _check(deadline)
    return join_lines(boxes, texts)


def cv_area(box: np.ndarray) -> float:
    """Area of a quadrilateral (shoelace formula)."""
    x, y = box[:, 0], box[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def join_lines(boxes, texts: list[tuple[str, float]], min_score: float = MIN_SCORE) -> str:
    """Confident texts, one output line per text line. ``boxes`` are in reading order (top to
    bottom, left to right within about a line): a box whose top is below the previous box's
    vertical middle starts a new line."""
    lines: list[list[str]] = []
    previous_middle = None
    for box, (text, score) in zip(boxes, texts):
        text = " ".join(text.split())
        top, bottom = float(np.min(box[:, 1])), float(np.max(box[:, 1]))
        if score < min_score or sum(ch.isalnum() for ch in text) < 2:
            continue
        if previous_middle is None or top > previous_middle:
            lines.append([])
        lines[-1].append(text)
        previous_middle = (top + bottom) / 2
    out = "\n".join(" ".join(words) for words in lines)
    return out[:MAX_TEXT_CHARS].rstrip()


def _model_input(img: Image.Image) -> np.ndarray | None:
    """``img`` as the models take it: BGR, longer side at most ``MAX_SIDE``; None for a sliver."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    w, h = img.size
    scale = min(1.0, MAX_SIDE / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if min(size) < MIN_SIDE:
        return None
    if size != (w, h):
        img = img.resize(size, Image.BILINEAR, reducing_gap=2.0)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8)[:, :, ::-1])


def _draft_size(data: bytes) -> int | None:
    """The JPEG draft size (see :func:`photoseek.imaging.open_image`) that keeps the longer side
    at least ``MAX_SIDE``: draft keeps both sides at least its size, so scale it by the aspect."""
    import io

    from photoseek.imaging import photo_formats

    try:
        with Image.open(io.BytesIO(data), formats=photo_formats()) as probe:
            w, h = probe.size
    except Exception:
        return None  # open_image says what is wrong with the file
    if max(w, h) <= MAX_SIDE or min(w, h) <= 0:
        return None
    return max(1, -(-MAX_SIDE * min(w, h) // max(w, h)))
