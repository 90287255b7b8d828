"""``photoseek index --ray ADDRESS``: decode and embed on a Ray cluster, write here.

The driver (the ``photoseek index`` process) scans and plans as always; only the photos to
embed go to Ray Data as a dataset of paths:

* decode: ``map_batches`` over CPU tasks calling :func:`photoseek.imaging.load_photo_or_reason`
  exactly as :mod:`photoseek.indexer.decode_pool` does (same size, same pixel limit, same
  reasons for the files it skips). These tasks import Pillow and NumPy, never torch: their
  function is shipped by value (see :func:`_ship_by_value`), as importing anything from
  ``photoseek.indexer`` by name would import the indexer, and with it torch, in every task.
* embed: ``map_batches`` with a callable class on an actor pool; each actor loads the
  encoder once (``load_indexing_encoder(model_id, precision=...)``) and calls ``encode_pixels``;
  one GPU per actor where the cluster has GPUs. Rows that failed to decode pass through
  with their reason, without pixels.
* the driver streams the finished blocks back (``iter_batches``) and writes each as one
  checkpoint, as the built-in pipeline does, so a driver that dies leaves the catalogue
  consistent and the next run resumes.

Ray Data's streaming executor gives the back-pressure (a bounded number of blocks in
flight, whatever the number of photos) and retries the tasks and actors of a worker that
dies. Ray is imported here only, and only when a run asks for it.

``ADDRESS``: ``local`` starts Ray in this process (one CPU per usable core) and shuts it
down afterwards; ``auto`` joins the cluster this machine belongs to; anything else is
passed to ``ray.init(address=...)``. A Ray already initialised in this process (a test
session, a notebook) is used as it is. Every node needs photoseek installed.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from photoseek.errors import PhotoseekError
from photoseek.imaging import DecodedPhoto, load_photo_or_reason

log = logging.getLogger("photoseek.indexer.ray")

DECODE_BATCH = 8  # photos per decode task: small, so one large photo holds up few others
DECODE_MEMORY = 512 << 20  # bytes a decode task may use: one large photo (RGB + decoder buffers)
OCR_MEMORY = 384 << 20  # and with OCR: its models and libraries, and reading one photo (photoseek.ocr)
MAX_CPU_ACTORS = 4  # as MAX_INFERENCE_WORKERS: each actor holds a model and a batch's activations
INSTALL_HINT = "pip install 'photoseek[ray]'"
QUIET_LOGGERS = ("ray.data._internal.progress", "ray.data._internal.execution.streaming_executor")


class RayUnavailable(PhotoseekError):
    """``--ray`` asked for, but Ray is not installed or its cluster cannot be reached."""

    kind = "ray_unavailable"


def check_available() -> None:
    """Raise :class:`RayUnavailable` (one line) if Ray Data cannot be imported; imports nothing."""
    if importlib.util.find_spec("ray") is None:
        raise RayUnavailable(f"--ray needs Ray, which is not installed: {INSTALL_HINT}")


@dataclass
class RayBatch:
    """One finished block: photos with their embeddings (same order), and files skipped with why."""

    photos: list[tuple[str, DecodedPhoto]]
    embeddings: np.ndarray
    skipped: list[tuple[str, str]]


# -- the work (runs in Ray workers) --------------------------------------------------------

def _decode_batch(batch: dict, size: int, max_pixels: int, ocr_seconds: float | None = None) -> dict:
    """Paths -> pixels (zeros for a file that failed), its reason ('' when fine) and its facts."""
    paths = [str(p) for p in batch["path"]]
    pixels = np.zeros((len(paths), size, size, 3), np.uint8)
    errors, meta = [], []
    for i, path in enumerate(paths):
        photo, error = load_photo_or_reason(path, size, max_pixels, ocr_seconds)
        if photo is None:
            errors.append(error or "unknown error")
            meta.append(b"")
        else:
            pixels[i] = photo.pixels
            errors.append("")
            meta.append(pickle.dumps((photo.info, photo.content_hash, photo.size_bytes)))
    return {"path": np.array(paths, dtype=object), "error": np.array(errors, dtype=object),
            "meta": np.array(meta, dtype=object), "pixels": pixels}


class _EmbedActor:
    """Loads the encoder once per actor; each call embeds the rows that decoded."""

    def __init__(self, model_id: str, precision: str, torch_threads: int | None):
        import torch

        from photoseek.encoders.factory import load_indexing_encoder

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.encoder = load_indexing_encoder(model_id, precision=precision)

    def __call__(self, batch: dict) -> dict:
        errors = batch["error"]
        ok = np.array([not e for e in errors], dtype=bool)
        embeddings = np.zeros((len(errors), self.encoder.dim), np.float32)
        if ok.any():
            embeddings[ok] = self.encoder.encode_pixels(np.asarray(batch["pixels"])[ok])
        return {"path": batch["path"], "error": errors, "meta": batch["meta"], "embedding": embeddings}


def _ship_by_value() -> None:
    """Pickle this module's functions and classes by value, so that a Ray worker running them
    imports what they use (photoseek.imaging; the encoders in the actors) and not
    ``photoseek.indexer``, whose package imports torch."""
    from ray import cloudpickle

    module = sys.modules[__name__]
    try:
        cloudpickle.register_pickle_by_value(module)
    except ValueError:  # already registered
        pass


# -- the driver ----------------------------------------------------------------------------

def connect(address: str, cores: int) -> bool:
    """Initialise Ray for ``address`` unless it already is; True if this call started a Ray
    instance (``local``), which the caller then shuts down."""
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra
    except ImportError as exc:
        raise RayUnavailable(f"--ray needs Ray Data, which is not installed ({exc}): {INSTALL_HINT}") from None
    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True)
    try:
        if address == "local":
            ray.init(num_cpus=max(1, cores), **quiet)
            return True
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "the Ray cluster this machine belongs to" if address == "auto" else f"the Ray cluster at {address}"
        raise RayUnavailable(f"could not connect to {where}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    return False


def _actors(torch_threads: int | None) -> dict:
    """map_batches arguments for the embed actors: one per GPU where there are GPUs, else
    one single-thread actor per two CPUs (the other half decodes), at most MAX_CPU_ACTORS."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return dict(compute=ray.data.ActorPoolStrategy(size=gpus), num_gpus=1, num_cpus=1)
    cpus = int(resources.get("CPU", 1))
    threads = torch_threads or 1
    actors = max(1, min(MAX_CPU_ACTORS, cpus // (2 * threads)))
    return dict(compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads)


def embed_on_ray(address: str, paths: Sequence[str], *, size: int, max_pixels: int, model_id: str, precision: str,
                 batch_size: int, cores: int, torch_threads: int | None = None,
                 stop: threading.Event | None = None, ocr_seconds: float | None = None) -> Iterator[RayBatch]:
    """Decode and embed ``paths`` on Ray; yield the finished blocks as they come (any order).

    Once ``stop`` is set, nothing more is yielded: the generator returns after the block in
    hand, and the Ray work is shut down (its tasks cancelled, its actors gone) before it
    returns. Close the generator (``contextlib.closing``) when leaving it early.
    """
    started = connect(address, cores)
    import ray

    try:
        _ship_by_value()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the indexer shows its own
        context.print_on_execution_start = False
        for name in QUIET_LOGGERS:  # Ray Data's notes on its own progress (disabled, started, finished)
            logging.getLogger(name).setLevel(logging.ERROR)
        ds = ray.data.from_items([{"path": p} for p in paths])
        # memory: what a decode task may need, so that a node runs no more of them than it can
        # hold; it also keeps Ray Data from fusing decoding into the embed actors (same
        # resources would), which would decode in the model's process, one photo at a time.
        # A task whose worker dies is run again (Ray's default: 3 times).
        ds = ds.map_batches(_decode_batch, batch_size=DECODE_BATCH, batch_format="numpy", num_cpus=1,
                            memory=DECODE_MEMORY + (OCR_MEMORY if ocr_seconds is not None else 0),
                            fn_kwargs=dict(size=size, max_pixels=max_pixels, ocr_seconds=ocr_seconds))
        ds = ds.map_batches(_EmbedActor, batch_size=batch_size, batch_format="numpy",
                            fn_constructor_kwargs=dict(model_id=model_id, precision=precision,
                                                       torch_threads=torch_threads),
                            **_actors(torch_threads))
        blocks = iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1))
        try:
            for block in blocks:
                yield _unpack(block)
                if stop is not None and stop.is_set():
                    return
        except Exception:
            if stop is not None and stop.is_set():
                return  # workers ended by the same signal (e.g. Ctrl-C to the whole process group)
            raise
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()  # shuts the streaming executor down: its tasks and actors go
    finally:
        if started:
            ray.shutdown()


def _unpack(block: dict) -> RayBatch:
    photos, vectors, skipped = [], [], []
    for path, error, meta, vector in zip(block["path"], block["error"], block["meta"], block["embedding"]):
        path = str(path)
        if error:
            skipped.append((path, str(error)))
            continue
        info, content_hash, size_bytes = pickle.loads(meta)
        # The driver writes the photo's facts, not its pixels: those stayed on the cluster.
        photos.append((path, DecodedPhoto(np.zeros((0, 0, 3), np.uint8), info, content_hash, size_bytes)))
        vectors.append(np.asarray(vector, dtype=np.float32))
    embeddings = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
    return RayBatch(photos, embeddings, skipped)
