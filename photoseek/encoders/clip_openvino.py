"""A CLIP model's image tower run by OpenVINO for ``photoseek index``: no torch in the indexing process.

The torch build this project pins is a CUDA build: importing it takes seconds of one core and
hundreds of megabytes that stay resident for the whole run, before a photo is embedded. OpenVINO
runs the same tower from an intermediate representation (IR) with a runtime a fraction of that
size, and on a CPU with native bf16 it runs it in bf16 as torch does, a little faster (README,
Benchmarks). So the image tower is converted once per model, and the indexing process loads only
the IR.

The conversion runs in a process of its own (``python -m photoseek.encoders.clip_openvino
MODEL_ID``, started by :func:`photoseek.encoders.factory.prepare_indexing_encoder`): it builds the
tower from its float32 export (:mod:`photoseek.encoders.clip_exported`, which needs torch; when a
model has no export yet, open_clip loads it first and writes one), traces it and saves the IR into
the user's cache (``openvino-towers``, keyed like the other exports by the model id and the
checkpoint file's size and time). The pixel normalisation is part of the IR, so a batch goes in as
the decoders deliver it, uint8 height x width x channels.

Invariants:

* It runs in bf16 only: for ``--precision bf16``, and for ``auto`` where the CPU does bf16
  natively. The IR keeps the weights in float16 (they are rounded to bf16 when compiled; float32
  weights would stay mapped beside the compiled copy for the whole run). Float32 runs, and CPUs
  without native bf16, keep the torch encoders.
* Its vectors agree with open_clip's own tower (cosine >= 0.999, the same top 10 on the demo
  queries; a test checks), but are not bit-identical to torch's: an index whose photos were
  embedded by both differs by rounding, as between bf16 and fp32.
* A model this cannot convert, or a conversion that fails, costs speed and memory, never the run:
  the indexer then uses the torch encoders, as without OpenVINO.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from photoseek.encoders import clip_image, clip_text
from photoseek.encoders.base import Encoder, threads_per_call
from photoseek.encoders.spec import ImageInputSpec

FORMAT = 1  # bump when the folder's layout changes: older ones are then ignored
FOLDER = "openvino-towers"
IR_NAME = "image.xml"  # and image.bin beside it


def installed() -> bool:
    """Whether the OpenVINO runtime can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def runs(precision: str) -> bool:
    """Whether an image tower runs in OpenVINO at ``precision`` here (see the module's invariants)."""
    precision = (precision or "auto").lower()
    if precision not in ("auto", "bf16") or not installed():
        return False
    return precision == "bf16" or native_bf16()


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether OpenVINO finds bf16 arithmetic in this CPU's hardware (AVX-512 BF16, AMX)."""
    return "BF16" in openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino():
    """The ``openvino`` module, imported without its telemetry. OpenVINO reports loading and
    converting models to Google Analytics, from forked copies of the process, unless its telemetry
    package is missing; made missing, it uses its own no-op stand-in. A tool for one's own photos
    sends nothing anywhere (a test watches for forks and network lookups)."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino as ov

    return ov


def path_for(model_id: str) -> Path | None:
    return clip_text.path_for(model_id, FOLDER, FORMAT)


def converted(model_id: str) -> bool:
    """Whether the IR of ``model_id`` as its weights are now is in the cache."""
    return _complete(path_for(model_id))


def _complete(path: Path | None) -> bool:
    """Whether an export folder is there, whole (``meta.json`` is written last)."""
    return path is not None and (path / "meta.json").is_file()


# -- conversion (its own process: imports torch, and open_clip when there is no export yet) -------


def convert(model_id: str) -> Path | None:
    """Write the IR of ``model_id``'s image tower unless it is there; its folder, or None when the
    model is not one the export runs (or there is no cache folder)."""
    path = path_for(model_id)
    if path is None or _complete(path):
        return path
    if not _complete(clip_image.path_for(model_id)):
        from photoseek.encoders.factory import load_encoder

        load_encoder(model_id)  # a model's first load writes its exports
    exported = clip_image.path_for(model_id)
    if not _complete(exported):
        return None
    ov = openvino()
    import torch

    from photoseek.encoders.clip_exported import load_vision_tower

    tower, meta = load_vision_tower(exported, torch.float32)
    tower = tower.to(memory_format=torch.contiguous_format)
    size = int(meta["size"])
    with torch.no_grad():
        # Tracing's own check runs the tower twice more and compares graphs that differ only in
        # names: the agreement that matters is checked on the vectors (tests).
        traced = torch.jit.trace(tower, torch.zeros(1, 3, size, size), check_trace=False)
    model = ov.convert_model(traced, input=[(-1, 3, size, size)])
    model = _with_pixel_input(ov, model, meta["mean"], meta["std"])
    dim = int(model.output(0).get_partial_shape()[1].get_length())
    info = {"size": size, "mean": list(meta["mean"]), "std": list(meta["std"]), "dim": dim,
            "openvino": ov.__version__}
    return clip_text.write_export(path, model_id, lambda: {"meta": info}, what="OpenVINO image tower",
                                  writer=lambda folder: ov.save_model(model, folder / IR_NAME, compress_to_fp16=True))


def _with_pixel_input(ov, model, mean: Sequence[float], std: Sequence[float]):
    """``model`` taking uint8 (N, size, size, 3) pixels, normalised as :class:`TorchEncoder` does:
    ``(x / 255 - mean) / std``."""
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0).mean(list(mean)).scale(list(std))
    return ppp.build()


def main(argv: list[str] | None = None) -> int:
    """``python -m photoseek.encoders.clip_openvino MODEL_ID``: 0 when the IR is there afterwards,
    3 when the model is not one this converts, 130 on Ctrl-C, 1 on failure (the reason on stderr)."""
    import warnings

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m photoseek.encoders.clip_openvino MODEL_ID", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")  # tracing's deprecation notices: the parent logs failures only
    try:
        return 0 if convert(argv[0]) is not None else 3
    except KeyboardInterrupt:
        return 130


# -- the encoder ----------------------------------------------------------------------------------


class OpenVinoClipEncoder(Encoder):
    """An open_clip model's encoder for ``photoseek index`` with its image tower in OpenVINO (see
    the module). Texts (the tag vocabulary, once per model) go through the exported NumPy text tower
    that searches by words use; a model without one loads the full encoder for its texts."""

    def __init__(self, model_id: str, path: Path, *, precision: str = "auto"):
        ov = openvino()
        meta = json.loads((path / "meta.json").read_text())
        self.model_id = model_id
        self.precision = (precision or "auto").lower()
        self.input_spec = ImageInputSpec(size=int(meta["size"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]))
        self.dim = int(meta["dim"])
        self._core = ov.Core()
        self._model = self._core.read_model(path / IR_NAME)
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
                          "INFERENCE_PRECISION_HINT": "bf16"}
                self._compiled = None  # the old copy goes before the new one is made
                self._compiled = self._core.compile_model(self._model, "CPU", config)
                self._compiled_for = (streams, threads)
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
        if request is None or getattr(self._local, "compiled", None) is not compiled:
            request = compiled.create_infer_request()  # one per thread: calls on several run at once
            self._local.request, self._local.compiled = request, compiled
        features = np.array(request.infer({0: np.ascontiguousarray(pixels)})[0], dtype=np.float32)
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
    return clip_text.load_export(path_for(model_id),
                                 lambda mid, path: OpenVinoClipEncoder(mid, path, precision=precision),
                                 model_id, what="OpenVINO image tower")


if __name__ == "__main__":
    sys.exit(main())
