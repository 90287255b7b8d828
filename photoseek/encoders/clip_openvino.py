"""A CLIP model's image tower run by OpenVINO for ``photoseek index``: no torch in the indexing process.

The torch build this project pins is a CUDA build: importing it takes seconds of one core and
hundreds of megabytes that stay resident for the whole run, before a photo is embedded. OpenVINO
runs the same tower from an intermediate representation (IR) with a runtime a fraction of that
size, and on a CPU with native bf16 it runs it in bf16 as torch does, a little faster (README,
Benchmarks). So the image tower is converted once per model, and the indexing process loads only
the IR.

The conversion runs in a process of its own (``python -m photoseek.encoders.clip_openvino
MODEL_ID``, started by :func:`photoseek.encoders.factory.prepare_indexing_encoder`) and needs no
torch: it builds the tower's graph from its float32 export (:mod:`photoseek.encoders.clip_image`)
with OpenVINO's own operations (:mod:`photoseek.encoders.ov_graph`) and saves the IR into the
user's cache (``openvino-towers``, keyed like the other exports by the model id and the checkpoint
file's size and time). A model without exports yet has them written first, by open_clip and torch
in a process of their own that ends before the graph is built, so the two never share one
process's memory. The pixel normalisation is part of the IR, so a batch goes in as the decoders
deliver it, uint8 height x width x channels.

Invariants:

* It runs at the indexer's precision: bf16 for ``--precision bf16``, and for ``auto`` where the CPU
  does bf16 natively, from an IR with float16 weights (rounded to bf16 when compiled); float32
  otherwise, from an IR with float32 weights (float16 ones would be widened in every product).
  Once the runtime has its own copy of the weights (when compiled, and after a request's first
  call), the IR's memory-mapped pages are handed back: they would otherwise stay resident beside
  that copy for the whole run.
* Its vectors agree with open_clip's own tower (cosine >= 0.999, the same top 10 on the demo
  queries; a test checks), but are not bit-identical to torch's: an index whose photos were
  embedded by both differs by rounding, as between bf16 and fp32.
* A model this cannot convert, or a conversion that fails, costs speed and memory, never the run:
  the indexer then uses the torch encoders, as without OpenVINO.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from photoseek.encoders import clip_image, clip_text, ov_graph, pages
from photoseek.encoders.base import Encoder, threads_per_call
from photoseek.encoders.spec import ImageInputSpec

FORMAT = 1  # bump when the folder's layout changes: older ones are then ignored
FOLDER = "openvino-towers"
IR_NAME = "image.xml"  # and image.bin beside it


def installed() -> bool:
    """Whether the OpenVINO runtime can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def engine_precision(precision: str) -> str | None:
    """What a tower asked to run at ``precision`` runs in, in OpenVINO here: ``"bf16"`` (asked, or
    ``auto`` on a CPU with native bf16), ``"fp32"`` (asked, or ``auto`` without), None without
    OpenVINO."""
    precision = (precision or "auto").lower()
    if precision not in ("auto", "bf16", "fp32") or not installed():
        return None
    return "bf16" if precision == "bf16" or (precision == "auto" and native_bf16()) else "fp32"


def runs(precision: str) -> bool:
    """Whether an image tower runs in OpenVINO at ``precision`` here."""
    return engine_precision(precision) is not None


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether OpenVINO finds bf16 arithmetic in this CPU's hardware (AVX-512 BF16, AMX)."""
    return "BF16" in ov_graph.openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def path_for(model_id: str, precision: str = "auto") -> Path | None:
    """Where the IR of ``model_id`` for runs at ``precision`` lives: float16 weights for bf16 runs,
    float32 ones for float32 runs (see the module)."""
    folder = FOLDER if engine_precision(precision) == "bf16" else f"{FOLDER}-fp32"
    return clip_text.path_for(model_id, folder, FORMAT)


def converted(model_id: str, precision: str = "auto") -> bool:
    """Whether the IR of ``model_id`` as its weights are now, for runs at ``precision``, is in the cache."""
    return _complete(path_for(model_id, precision))


def _complete(path: Path | None) -> bool:
    """Whether an export folder is there, whole (``meta.json`` is written last)."""
    return path is not None and (path / "meta.json").is_file()


# -- conversion (its own process; the exports, when there are none yet, in another) ----------------


def convert(model_id: str, precision: str = "auto") -> Path | None:
    """Write the IR of ``model_id``'s image tower for runs at ``precision`` unless it is there; its
    folder, or None when the model is not one the export runs (or there is no cache folder)."""
    path = path_for(model_id, precision)
    if path is None or _complete(path):
        return path
    if not _complete(clip_image.path_for(model_id)):
        _write_exports(model_id)
    exported = clip_image.path_for(model_id)
    if not _complete(exported):
        return None
    ov = ov_graph.openvino()
    meta = json.loads((exported / "meta.json").read_text())
    model = ov_graph.with_pixel_input(_vision_graph(exported, meta), meta["mean"], meta["std"])
    dim = int(model.output(0).get_partial_shape()[1].get_length())
    info = {"size": int(meta["size"]), "mean": list(meta["mean"]), "std": list(meta["std"]), "dim": dim,
            "openvino": ov.__version__}
    half = engine_precision(precision) == "bf16"  # float16 weights, rounded to bf16 when compiled
    return clip_text.write_export(path, model_id, lambda: {"meta": info}, what="OpenVINO image tower",
                                  writer=lambda folder: ov.save_model(model, folder / IR_NAME, compress_to_fp16=half))


def _write_exports(model_id: str) -> None:
    """The model's exports, written once per weights file by open_clip and torch in a process of
    their own: their gigabyte is gone before the graph is built. Raises KeyboardInterrupt when that
    process was interrupted, RuntimeError when it failed (its reason is on stderr, shared)."""
    code = subprocess.run([sys.executable, "-m", "photoseek.encoders.clip_openvino", "--exports", model_id],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        raise RuntimeError(f"writing the exports of {model_id} failed (exit status {code})")


def _vision_graph(path: Path, meta: dict):
    """open_clip's ``VisionTransformer`` as exported (:mod:`photoseek.encoders.clip_image`) as an
    OpenVINO model taking normalised float32 (N, 3, size, size): patch convolution, class token,
    ``ln_pre``, the blocks, ``ln_post`` on the class token, projection; the arithmetic of
    :class:`photoseek.encoders.clip_image.ClipImageTower`."""
    ov, o = ov_graph.openvino(), ov_graph.ops()
    w = {f.stem: np.load(f, mmap_mode="c", allow_pickle=False) for f in path.glob("*.npy")}  # see ov_graph.const
    patch, size, eps = int(meta["patch"]), int(meta["size"]), float(meta["eps"])
    width = int(w["projection"].shape[0])
    pixels = o.parameter([-1, 3, size, size], np.float32, name="pixels")
    # The export holds the convolution as (3 * patch * patch, width) in (channel, y, x) order.
    kernel = np.asarray(w["patch_embedding"]).T.reshape(width, 3, patch, patch)
    x = o.convolution(pixels, ov_graph.const(kernel), [patch, patch], [0, 0], [0, 0], [1, 1])
    x = o.transpose(o.reshape(x, ov_graph.i64([0, width, -1]), special_zero=True), ov_graph.i64([0, 2, 1]))
    batch = o.gather(o.shape_of(pixels), ov_graph.i64([0]), o.constant(np.int64(0)))
    cls = o.broadcast(ov_graph.const(np.asarray(w["class_embedding"]).reshape(1, 1, width)),
                      o.concat([batch, ov_graph.i64([1, width])], 0))
    x = o.add(o.concat([cls, x], 1), ov_graph.const(w["positional_embedding"]))
    x = ov_graph.layer_norm(x, w, "ln_pre", eps)
    x = ov_graph.attention_blocks(x, w, layers=int(meta["layers"]), heads=int(meta["heads"]), width=width,
                                  act=meta["act"], eps=eps)
    pooled = o.gather(x, o.constant(np.int64(0)), o.constant(np.int64(1)))  # the class token: (N, width)
    pooled = o.matmul(ov_graph.layer_norm(pooled, w, "ln_post", eps), ov_graph.const(w["projection"]), False, False)
    return ov.Model([o.result(pooled)], [pixels], "clip-image-tower")


def main(argv: list[str] | None = None) -> int:
    """``python -m photoseek.encoders.clip_openvino MODEL_ID [PRECISION]``: 0 when the IR for runs
    at PRECISION (default auto) is there afterwards, 3 when the model is not one this converts, 130
    on Ctrl-C or SIGTERM, 1 on failure (the reason on stderr). ``--exports MODEL_ID``: write the
    model's exports only (:func:`_write_exports`)."""
    import signal
    import warnings

    argv = sys.argv[1:] if argv is None else argv
    exports = argv[:1] == ["--exports"]
    valid = len(argv) == 2 if exports else len(argv) == 1 or (len(argv) == 2 and argv[1] in ("auto", "bf16", "fp32"))
    if not valid:
        print("usage: python -m photoseek.encoders.clip_openvino {--exports MODEL_ID | MODEL_ID [auto|bf16|fp32]}",
              file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")  # open_clip's notices while it writes exports: the parent logs failures only
    signal.signal(signal.SIGTERM, _interrupt)  # stopped by the indexer: a child writing exports goes too
    try:
        if exports:
            from photoseek.encoders.clip import write_exports

            write_exports(argv[1])
            return 0
        return 0 if convert(*argv) is not None else 3
    except KeyboardInterrupt:
        return 130


def _interrupt(signum, frame):
    raise KeyboardInterrupt


# -- the encoder ----------------------------------------------------------------------------------


class OpenVinoClipEncoder(Encoder):
    """An open_clip model's encoder for ``photoseek index`` with its image tower in OpenVINO (see
    the module). Texts (the tag vocabulary, once per model) go through the exported NumPy text tower
    that searches by words use; a model without one loads the full encoder for its texts."""

    def __init__(self, model_id: str, path: Path, *, precision: str = "auto"):
        ov = ov_graph.openvino()
        meta = json.loads((path / "meta.json").read_text())
        self.model_id = model_id
        self.precision = (precision or "auto").lower()
        self.inference_precision = "bf16" if engine_precision(self.precision) == "bf16" else "f32"
        self.input_spec = ImageInputSpec(size=int(meta["size"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]))
        self.dim = int(meta["dim"])
        self._core = ov.Core()
        self._ir = path / IR_NAME
        self._lock = threading.Lock()
        self._compiled = None
        self._compiled_for: tuple[int, int] | None = None
        self._local = threading.local()
        self._text = None

    def _compile(self, streams: int, threads: int):
        """The model compiled for ``streams`` concurrent calls of ``threads`` threads each (one
        compiled model at a time: each holds its own copy of the weights in the run-time layout)."""
        with self._lock:
            if self._compiled_for != (streams, threads):
                config = {"NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": streams * threads,
                          "INFERENCE_PRECISION_HINT": self.inference_precision}
                self._compiled = None  # the old copy goes before the new one is made
                self._compiled = self._core.compile_model(self._core.read_model(self._ir), "CPU", config)
                self._compiled_for = (streams, threads)
                pages.drop_file(self._ir.with_suffix(".bin"))  # see encode_pixels
            return self._compiled

    @contextmanager
    def inference_threads(self, workers: int, threads_per_worker: int | None = None) -> Iterator[int]:
        threads = threads_per_call(workers, threads_per_worker)
        self._compile(max(1, workers), threads)
        yield threads

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self._check_pixels(pixels)
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        compiled = self._compiled if self._compiled is not None else self._compile(1, threads_per_call(1))
        request = getattr(self._local, "request", None)
        first = request is None or getattr(self._local, "compiled", None) is not compiled
        if first:
            request = compiled.create_infer_request()  # one per thread: calls on several run at once
            self._local.request, self._local.compiled = request, compiled
        features = np.array(request.infer({0: np.ascontiguousarray(pixels)})[0], dtype=np.float32)
        if first:
            # The runtime has its own copy of the weights by now (most made when compiled, the rest
            # on a request's first call): the IR's pages, mapped read-only, would otherwise stay
            # resident beside it for the whole run.
            pages.drop_file(self._ir.with_suffix(".bin"))
        return _unit(features)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if self._text is None:
                self._text = clip_text.indexing_text_side(self.model_id, self.precision)
        return np.asarray(self._text.encode_texts(list(texts)), dtype=np.float32)  # unit vectors already


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32, copy=False)


def load(model_id: str, *, precision: str = "auto") -> OpenVinoClipEncoder | None:
    """The indexing encoder of ``model_id`` from its IR, or None when there is none for its weights
    as they are now, or it does not run at ``precision`` here (:func:`runs`)."""
    if not runs(precision):
        return None
    return clip_text.load_export(path_for(model_id, precision),
                                 lambda mid, path: OpenVinoClipEncoder(mid, path, precision=precision),
                                 model_id, what="OpenVINO image tower")


if __name__ == "__main__":
    sys.exit(main())
