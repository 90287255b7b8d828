"""A model's image tower run by OpenVINO for ``photoseek index``: no torch in the indexing process.

The torch build this project pins is a CUDA build: importing it takes seconds of one core and
hundreds of megabytes that stay resident for the whole run, before a photo is embedded, and torch
keeps the activations of every batch it ran in its allocator. OpenVINO runs the same tower from an
intermediate representation (IR) with a runtime a fraction of that size and memory planned ahead
(README, Benchmarks). So the image tower is converted once per model, and the indexing process
loads only the IR. Two families of models convert (:data:`FAMILIES`): open_clip ViTs
(:mod:`photoseek.encoders.clip_image`) and the bundled offline encoder
(:mod:`photoseek.encoders.offline_image`), each from the export its NumPy image side reads.

The conversion runs in a process of its own (``python -m photoseek.encoders.openvino_tower
MODEL_ID PRECISION``, started by :func:`photoseek.encoders.factory.prepare_indexing_encoder`) and
needs no torch: it builds the tower's graph from its float32 export with OpenVINO's own operations
(:mod:`photoseek.encoders.ov_graph`) and saves the IR into the user's cache
(``openvino-towers``, keyed by the export, which is keyed by the model and its weights). A model
without an export yet has it written first, by torch in a process of its own that ends before the
graph is built, so the two never share one process's memory. The pixel normalisation is part of
the IR, so a batch goes in as the decoders deliver it, uint8 height x width x channels. A family
with a text graph (CLIP) has its text tower's blocks saved beside it (``text.xml``): a model's first
run embeds its tag vocabulary with them, after the image tower's compiled copy is let go.

Invariants:

* It runs at the indexer's precision: bf16 for ``--precision bf16``, and for ``auto`` where the CPU
  does bf16 natively and the family allows it (CLIP; the offline encoder's vectors do not survive
  bf16, so ``auto`` keeps it float32, as with torch), from an IR with float16 weights (rounded to
  bf16 when compiled); float32 otherwise, from an IR with float32 weights (float16 ones would be
  widened in every product).
* Once the runtime has its own copy of the weights (when compiled, and after a request's first
  call), the IR's memory-mapped pages are handed back: they would otherwise stay resident beside
  that copy for the whole run.
* Its vectors agree with the torch encoder's (cosine >= 0.999, the same top 10 on the demo photos;
  tests check both families), but are not bit-identical: an index whose photos were embedded by
  both differs by rounding, as between bf16 and fp32.
* A model this cannot convert, or a conversion that fails, costs speed and memory, never the run:
  the indexer then uses the torch encoders, as without OpenVINO.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from photoseek.encoders import clip_text, ov_graph, pages
from photoseek.encoders.base import Encoder, threads_per_call
from photoseek.encoders.spec import ImageInputSpec

log = logging.getLogger(__name__)

FORMAT = 4  # bump when the IR's graph or folder layout changes: older ones are then ignored
FOLDER = "openvino-towers"
IR_NAME = "image.xml"  # and image.bin beside it
TEXT_IR_NAME = "text.xml"  # the text tower's blocks, for families with a text graph
# Photos per inference call. Each stream keeps the activations of the largest batch it has run (with
# two streams, a ViT-B-32 in float32 held 160 MB more at 32 than at 8, EfficientNet-Lite0 430 MB),
# and both towers embed as many photos a second at 8 as at 32 (README, Benchmarks).
INFER_BATCH = 8
PRECISIONS = ("auto", "bf16", "fp32")


# -- the families of models that convert -----------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """What converting and running one family's image tower takes (functions of the model id)."""

    export_path: Callable[[str], Path | None]  # the export the graph is built from
    write_exports: Callable[[str], None]  # writes it (torch: run in a process of its own)
    graph: Callable[[Path, dict], object]  # export folder, its meta -> ov.Model: normalised NCHW -> (N, dim)
    text_side: Callable[[str, str], object]  # (model id, precision) -> what embeds texts (the tag vocabulary)
    tag_prompts: Callable[[str], tuple[str, ...] | None]  # see photoseek.tags.prompts_for
    auto_bf16: bool  # whether "auto" runs in bf16 on a CPU with native bf16
    # The text tower's blocks as a graph (model id -> ov.Model, or None when it has no export), and what
    # embeds texts with them compiled ((model id, compiled model) -> encode_texts): none for a family
    # whose texts run elsewhere.
    text_graph: Callable[[str], object | None] | None = None
    compiled_text_side: Callable[[str, object], object] | None = None


def _clip() -> Family:
    from photoseek.encoders import clip_image

    def write_exports(model_id: str) -> None:
        from photoseek.encoders.clip import write_exports

        write_exports(model_id)

    def text_graph(model_id: str):
        path = clip_text.path_for(model_id)
        return clip_text.graph(path) if clip_text.complete(path) else None

    def compiled_text_side(model_id: str, compiled):
        return clip_text.OpenVinoTextTower(model_id, clip_text.path_for(model_id), compiled)

    return Family(clip_image.path_for, write_exports, clip_image.graph, clip_text.indexing_text_side,
                  lambda model_id: None, auto_bf16=True, text_graph=text_graph,
                  compiled_text_side=compiled_text_side)


def _offline() -> Family:
    from photoseek.encoders import offline_image, text_side
    from photoseek.encoders.offline_config import OfflineConfig

    def config(model_id: str) -> OfflineConfig:
        return OfflineConfig.load(model_id.partition(":")[2])

    return Family(offline_image.path_for, offline_image.write_exports, offline_image.graph,
                  lambda model_id, precision: text_side.TextEncoder(model_id, config(model_id)),
                  lambda model_id: config(model_id).class_templates, auto_bf16=False)


FAMILIES: dict[str, Callable[[], Family]] = {"offline": _offline}  # by model id prefix; anything else: open_clip


def family(model_id: str) -> Family:
    return FAMILIES.get(model_id.partition(":")[0], _clip)()


# -- where and how it runs -------------------------------------------------------------------------


def installed() -> bool:
    """Whether the OpenVINO runtime can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def engine_precision(model_id: str, precision: str) -> str | None:
    """What ``model_id``'s tower, asked to run at ``precision``, runs in here: ``"bf16"`` (asked, or
    ``auto`` on a CPU with native bf16 for a family that allows it), ``"fp32"`` otherwise, None
    without OpenVINO."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS or not installed():
        return None
    bf16 = precision == "bf16" or (precision == "auto" and family(model_id).auto_bf16 and native_bf16())
    return "bf16" if bf16 else "fp32"


def runs(model_id: str, precision: str) -> bool:
    """Whether ``model_id``'s image tower runs in OpenVINO at ``precision`` here."""
    return engine_precision(model_id, precision) is not None


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether OpenVINO finds bf16 arithmetic in this CPU's hardware (AVX-512 BF16, AMX)."""
    return "BF16" in ov_graph.openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def path_for(model_id: str, precision: str = "auto") -> Path | None:
    """Where the IR of ``model_id`` for runs at ``precision`` lives: beside its export, under the
    export's own key, float16 weights for bf16 runs and float32 ones for float32 runs."""
    exported = family(model_id).export_path(model_id)
    if exported is None:
        return None
    folder = FOLDER if engine_precision(model_id, precision) == "bf16" else f"{FOLDER}-fp32"
    return exported.parent.parent / folder / f"{exported.name}-{FORMAT}"


def converted(model_id: str, precision: str = "auto") -> bool:
    """Whether the IR of ``model_id`` as its weights are now, for runs at ``precision``, is in the cache."""
    return clip_text.complete(path_for(model_id, precision))


# -- conversion (its own process; the export, when there is none yet, in another) ------------------


def convert(model_id: str, precision: str = "auto") -> Path | None:
    """Write the IR of ``model_id``'s image tower for runs at ``precision`` unless it is there; its
    folder, or None when the model is not one its family's export runs (or there is no cache folder)."""
    fam = family(model_id)
    path = path_for(model_id, precision)
    if path is None or clip_text.complete(path):
        return path
    if not clip_text.complete(fam.export_path(model_id)):
        _write_exports(model_id)
    exported = fam.export_path(model_id)
    if not clip_text.complete(exported):
        return None
    ov = ov_graph.openvino()
    meta = json.loads((exported / "meta.json").read_text())
    model = ov_graph.with_pixel_input(fam.graph(exported, meta), meta["mean"], meta["std"])
    dim = int(model.output(0).get_partial_shape()[1].get_length())
    info = {"size": int(meta["size"]), "mean": list(meta["mean"]), "std": list(meta["std"]), "dim": dim,
            "openvino": ov.__version__}
    text = fam.text_graph(model_id) if fam.text_graph is not None else None
    half = engine_precision(model_id, precision) == "bf16"  # float16 weights, rounded to bf16 when compiled

    def writer(folder: Path) -> None:
        ov.save_model(model, folder / IR_NAME, compress_to_fp16=half)
        if text is not None:
            ov.save_model(text, folder / TEXT_IR_NAME, compress_to_fp16=half)

    return clip_text.write_export(path, model_id, lambda: {"meta": info}, what="OpenVINO image tower", writer=writer)


def _write_exports(model_id: str) -> None:
    """The model's export, written once per weights by torch in a process of its own: its gigabyte
    is gone before the graph is built. Raises KeyboardInterrupt when that process was interrupted,
    RuntimeError when it failed (its reason is on stderr, shared)."""
    code = subprocess.run([sys.executable, "-m", "photoseek.encoders.openvino_tower", "--exports", model_id],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        raise RuntimeError(f"writing the export of {model_id} failed (exit status {code})")


def main(argv: list[str] | None = None) -> int:
    """``python -m photoseek.encoders.openvino_tower MODEL_ID [PRECISION]``: 0 when the IR for runs
    at PRECISION (default auto) is there afterwards, 3 when the model is not one this converts, 130
    on Ctrl-C or SIGTERM, 1 on failure (the reason on stderr). ``--exports MODEL_ID``: write the
    model's export only (:func:`_write_exports`)."""
    import signal
    import warnings

    argv = sys.argv[1:] if argv is None else argv
    exports = argv[:1] == ["--exports"]
    valid = len(argv) == 2 if exports else len(argv) == 1 or (len(argv) == 2 and argv[1] in PRECISIONS)
    if not valid:
        print("usage: python -m photoseek.encoders.openvino_tower {--exports MODEL_ID | MODEL_ID [auto|bf16|fp32]}",
              file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")  # torch's and open_clip's notices while exporting: the parent logs failures only
    signal.signal(signal.SIGTERM, _interrupt)  # stopped by the indexer: a child writing the export goes too
    try:
        if exports:
            family(argv[1]).write_exports(argv[1])
            return 0
        return 0 if convert(*argv) is not None else 3
    except KeyboardInterrupt:
        return 130


def _interrupt(signum, frame):
    raise KeyboardInterrupt


# -- the encoder ----------------------------------------------------------------------------------


class OpenVinoEncoder(Encoder):
    """A model's encoder for ``photoseek index`` with its image tower in OpenVINO (see the module).
    Texts (the tag vocabulary, once per model) go through the text side its family's searches use."""

    def __init__(self, model_id: str, path: Path, *, precision: str = "auto"):
        ov = ov_graph.openvino()
        meta = json.loads((path / "meta.json").read_text())
        self.model_id = model_id
        self.precision = (precision or "auto").lower()
        self.inference_precision = "bf16" if engine_precision(model_id, self.precision) == "bf16" else "f32"
        self.input_spec = ImageInputSpec(size=int(meta["size"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]))
        self.dim = int(meta["dim"])
        self._family = family(model_id)
        self.tag_prompts = self._family.tag_prompts(model_id)
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
                if isinstance(self._text, clip_text.OpenVinoTextTower):
                    self._text = None  # and the text tower's (see encode_texts)
                self._compiled = self._compile_file(self._ir, config)
                self._compiled_for = (streams, threads)
            return self._compiled

    def _compile_file(self, ir: Path, config: dict):
        """The IR at ``ir`` compiled with ``config``; its weights' mapped pages handed back once the
        runtime has its own copy (see encode_pixels)."""
        compiled = self._core.compile_model(self._core.read_model(ir), "CPU", config)
        pages.drop_file(ir.with_suffix(".bin"))
        return compiled

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
        features = np.empty((len(pixels), self.dim), np.float32)
        for start in range(0, len(pixels), INFER_BATCH):
            part = np.ascontiguousarray(pixels[start:start + INFER_BATCH])
            features[start:start + len(part)] = request.infer({0: part})[0]
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
                self._text = self._compiled_text_side() or self._family.text_side(self.model_id, self.precision)
        return np.asarray(self._text.encode_texts(list(texts)), dtype=np.float32)  # unit vectors already

    def _compiled_text_side(self):
        """The text tower's blocks compiled from their IR file, or None (a family without them, an IR
        converted before they were saved, or a compile that failed: texts then run in NumPy)."""
        ir = self._ir.with_name(TEXT_IR_NAME)
        if self._family.compiled_text_side is None or not ir.is_file():
            return None
        # Texts (a run's tag vocabulary) come after its photos: the image tower's compiled copy goes first,
        # so the two copies are never held at once (photos after this compile it again).
        self._compiled, self._compiled_for, self._local = None, None, threading.local()
        try:
            from photoseek.settings import usable_cores

            config = {"INFERENCE_PRECISION_HINT": self.inference_precision, "INFERENCE_NUM_THREADS": usable_cores()}
            return self._family.compiled_text_side(self.model_id, self._compile_file(ir, config))
        except Exception as exc:  # noqa: BLE001 - a damaged cache file costs speed, never the run
            log.warning("embedding texts in NumPy: the OpenVINO text tower of %s did not load: %s", self.model_id, exc)
            return None


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32, copy=False)


def load(model_id: str, *, precision: str = "auto") -> OpenVinoEncoder | None:
    """The indexing encoder of ``model_id`` from its IR, or None when there is none for its weights
    as they are now, or OpenVINO is not installed."""
    from photoseek.encoders import clip_text

    if not runs(model_id, precision):
        return None
    return clip_text.load_export(path_for(model_id, precision),
                                 lambda mid, path: OpenVinoEncoder(mid, path, precision=precision),
                                 model_id, what="OpenVINO image tower")


if __name__ == "__main__":
    sys.exit(main())
