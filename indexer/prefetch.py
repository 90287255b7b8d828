"""Decoding that starts before the model is loaded.

Loading the model (importing torch and open_clip, reading the weights) takes one core for
seconds, and until it is done nothing can be embedded. The decode workers need nothing from the
model but its input size, so :class:`DecodeAhead` starts them first: a thread pulls
:func:`photoseek.indexer.decode_pool.decode_all`'s results into a bounded queue while the model
loads, and the embedding loop then reads from that queue as it would from ``decode_all``.

Invariants: results come out in job order, each once, as ``decode_all`` gives them; at most
``max_ahead`` decoded photos wait in memory (plus ``decode_all``'s own window), and once the
model is loaded the caller lowers that to a batch (:meth:`DecodeAhead.limit`); :meth:`close`
(or leaving the ``with`` block) stops the thread and shuts the decode pool down before it
returns, whether or not the results were all read; an exception in the decode thread is raised
to the reader.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing

from .decode_pool import DecodeJob, DecodeResult, decode_all

# Decoded photos held while the model loads: 224 x 224 x 3 bytes each (150 KB), so 128 are ~20 MB;
# about what two decoders do while a ViT-B-32 loads (1-2 s).
MAX_AHEAD = 128
_POLL_SECONDS = 0.05
_DONE = object()


class _Either:
    """Set when either event is: what decode_all polls (it only calls ``is_set``)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class DecodeAhead:
    """``decode_all(jobs, ...)`` running in a thread from construction on; iterate it for the results."""

    def __init__(self, jobs: Iterable[DecodeJob], *, workers: int, stop: threading.Event | None = None,
                 ocr_at_once: int | None = None, max_ahead: int = MAX_AHEAD, size: int = 0):
        self.size = size  # the input size the jobs decode to (the caller checks it against the model's)
        self._halt = threading.Event()
        self._stop = _Either(self._halt, *([stop] if stop is not None else []))
        self._queue: queue.Queue = queue.Queue()
        self._max_ahead = max(1, max_ahead)
        self._room = threading.Event()  # set by the reader each time it takes a photo
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(jobs, workers, ocr_at_once), name="photoseek-decode-ahead", daemon=True)
        self._thread.start()

    def _run(self, jobs, workers, ocr_at_once) -> None:
        try:
            with closing(decode_all(jobs, workers=workers, stop=self._stop, ocr_at_once=ocr_at_once)) as results:
                for result in results:
                    if not self._put(result):
                        return
        except BaseException as exc:  # handed to the reader
            self._error = exc
        finally:
            self._put(_DONE, force=True)

    def _put(self, item, force: bool = False) -> bool:
        while self._queue.qsize() >= self._max_ahead and not force:
            if self._halt.is_set():
                return False
            self._room.wait(_POLL_SECONDS)
            self._room.clear()
        if self._halt.is_set() and not force:
            return False
        self._queue.put(item)
        return True

    def limit(self, max_ahead: int) -> None:
        """From now on hold at most ``max_ahead`` decoded photos (the model is loaded: only enough
        to keep it fed, as ``decode_all``'s own window does)."""
        self._max_ahead = max(1, max_ahead)

    def __iter__(self) -> Iterator[DecodeResult]:
        while True:
            try:
                item = self._queue.get(timeout=_POLL_SECONDS)
                self._room.set()
            except queue.Empty:
                if self._stop.is_set() and not self._thread.is_alive():
                    return
                continue
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        """Stop decoding and wait until the decode pool is shut down (its workers gone)."""
        self._halt.set()
        self._thread.join()
        while not self._queue.empty():  # what was decoded and not read: its memory goes now
            self._queue.get_nowait()

    def __enter__(self) -> DecodeAhead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def predicted_input_size(model_id: str) -> int | None:
    """The square input size ``model_id``'s encoder will ask for, without loading it (nor importing
    torch): the offline variants' config files, open_clip's model config (its JSON file, or
    open_clip's own table once imported). None when it cannot be told: decoding then waits for the
    model. A wrong guess costs only time: the caller compares it with the loaded encoder's size."""
    import json
    import os
    import sys

    head, _, rest = model_id.partition(":")
    try:
        if head == "offline":
            from photoseek.encoders.offline_config import OfflineConfig

            return OfflineConfig.load(rest).image_size
        if head.startswith(("hf-hub", "local-dir")) or not head:
            return None
        if "open_clip" in sys.modules:
            cfg = sys.modules["open_clip"].get_model_config(head) or {}
        else:
            import importlib.util

            spec = importlib.util.find_spec("open_clip")  # finds the package without running it
            folder = (spec.submodule_search_locations or [None])[0] if spec else None
            path = os.path.join(folder, "model_configs", f"{head}.json") if folder else None
            if not path or not os.path.isfile(path):
                return None
            with open(path, encoding="utf-8") as fh:
                cfg = json.load(fh)
        size = (cfg.get("vision_cfg") or {}).get("image_size")
        if isinstance(size, (list, tuple)):
            size = size[0] if len(set(size)) == 1 else None
        return int(size) if size else None
    except Exception:  # any doubt: wait for the model
        return None
