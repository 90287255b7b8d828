"""The two reference points photoseek is measured against.

* limit: the image tower alone, on pre-decoded, pre-resized, pre-normalised tensors, at its
  best batch size, precision and split of the cores (one call over all of them, or one
  call per core at once): what the hardware allows;
* naive: what a simple script does: open each file with Pillow at full size, preprocess
  with torchvision (open_clip's own eval transform), embed one at a time in float32.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from photoseek.encoders import Encoder, load_encoder
from photoseek.encoders.precision import native_bf16_supported
from photoseek.settings import usable_cores


@dataclass
class LimitResult:
    best_ips: float = 0.0
    best_batch: int = 0
    best_precision: str = ""
    best_workers: int = 1  # calls at once, each on cores / workers threads
    grid: dict[str, float] = field(default_factory=dict)  # "bf16/bs32" -> images/s
    threads: int = 0
    load_seconds: dict[str, float] = field(default_factory=dict)


def _best_rate(call, batch_size: int, seconds: float, trials: int, workers: int) -> float:
    """Images/s of ``call()`` (one batch) with ``workers`` threads calling it at once, best of ``trials``."""

    def loop(budget: float, counts: list[int], slot: int) -> None:
        n, started = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - started < budget:
            call()
            n += 1
        counts[slot] = n

    best = 0.0
    for _ in range(trials):
        counts = [0] * workers
        threads = [threading.Thread(target=loop, args=(seconds / trials, counts, i)) for i in range(workers)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best = max(best, sum(counts) * batch_size / (time.perf_counter() - started))
    return best


def tower_ips(encoder: Encoder, batch_size: int, seconds: float, trials: int = 2, workers: int = 1) -> float:
    """Images/s of ``encoder``'s image tower on ready tensors (best of ``trials``), with
    ``workers`` calls running at once, each on its share of the cores."""
    size = encoder.input_spec.size
    x = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(encoder.dtype).contiguous(memory_format=torch.channels_last)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, usable_cores() // workers))

    def call() -> None:
        with torch.inference_mode():  # per thread: the mode is thread-local
            encoder._image_features(x)

    try:
        call()  # warm-up: allocations, oneDNN primitive caches
        return _best_rate(call, batch_size, seconds, trials, workers)
    finally:
        torch.set_num_threads(threads_before)


def openvino_ips(encoder, batch_size: int, seconds: float, trials: int = 2, workers: int = 1) -> float:
    """Images/s of an OpenVINO image tower (photoseek.encoders.openvino_tower) as the indexer runs it:
    ``workers`` calls at once on uint8 pixels (its pixel normalisation is part of the model, so it is
    counted here and not in :func:`tower_ips`), best of ``trials``."""
    size = encoder.input_spec.size
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    with encoder.inference_threads(workers):
        encoder.encode_pixels(pixels)  # warm-up: the first allocation
        return _best_rate(lambda: encoder.encode_pixels(pixels), batch_size, seconds, trials, workers)


def worker_splits() -> list[int]:
    """One call over every core, and one call per core at once (if there is more than one)."""
    return [1, usable_cores()] if usable_cores() > 1 else [1]


def precisions() -> list[str]:
    return ["bf16", "fp32"] if native_bf16_supported() else ["fp32"]


def measure_limit(model_id: str, batch_sizes: Sequence[int], seconds: float, echo=print) -> LimitResult:
    result = LimitResult(threads=torch.get_num_threads())
    for precision in precisions():
        started = time.perf_counter()
        encoder = load_encoder(model_id, precision=precision)
        result.load_seconds[precision] = time.perf_counter() - started
        _grid(result, precision, batch_sizes, lambda bs, workers: tower_ips(encoder, bs, seconds, workers=workers), echo)
        del encoder
        gc.collect()
    _measure_openvino(model_id, batch_sizes, seconds, result, echo)
    return result


def _grid(result: LimitResult, label: str, batch_sizes: Sequence[int], measure, echo) -> None:
    """``measure(batch, workers)`` (images/s) over every batch size and split of the cores, into
    ``result.grid`` as "label/bsN/CALLSxTHREADS", keeping the best."""
    for bs in batch_sizes:
        for workers in worker_splits():
            ips = measure(bs, workers)
            split = f"{workers}x{max(1, usable_cores() // workers)}"
            result.grid[f"{label}/bs{bs}/{split}"] = ips
            echo(f"  limit {label:4s} batch {bs:3d} calls x threads {split}: {ips:7.1f} images/s")
            if ips > result.best_ips:
                result.best_ips, result.best_batch, result.best_precision, result.best_workers = ips, bs, label, workers


def _measure_openvino(model_id: str, batch_sizes: Sequence[int], seconds: float, result: LimitResult, echo) -> None:
    """The OpenVINO tower the indexer runs for a CLIP model (bf16 or float32, as ``auto`` resolves here),
    in the same grid ("openvino/...")."""
    from photoseek.encoders import openvino_tower
    from photoseek.encoders.factory import prepare_indexing_encoder

    if not openvino_tower.runs(model_id, "auto"):
        return
    prepare_indexing_encoder(model_id)
    started = time.perf_counter()
    encoder = openvino_tower.load(model_id)
    if encoder is None:
        echo("  limit openvino: the model did not convert")
        return
    result.load_seconds["openvino"] = time.perf_counter() - started
    _grid(result, "openvino", batch_sizes, lambda bs, workers: openvino_ips(encoder, bs, seconds, workers=workers), echo)
    del encoder
    gc.collect()


def recheck_limit(model_id: str, result: LimitResult, seconds: float, echo=print) -> float:
    """Measure the best configuration again (the machine may have got busier or quieter)."""
    if result.best_precision == "openvino":
        from photoseek.encoders import openvino_tower

        encoder = openvino_tower.load(model_id)
        ips = openvino_ips(encoder, result.best_batch, seconds, workers=result.best_workers)
    else:
        encoder = load_encoder(model_id, precision=result.best_precision)
        ips = tower_ips(encoder, result.best_batch, seconds, workers=result.best_workers)
    split = f"{result.best_workers}x{max(1, usable_cores() // result.best_workers)}"
    echo(f"  limit {result.best_precision} batch {result.best_batch} calls x threads {split} again: {ips:.1f} images/s")
    key = f"{result.best_precision}/bs{result.best_batch}/{split}/again"
    result.grid[key] = ips
    result.best_ips = max(result.best_ips, ips)
    del encoder
    gc.collect()
    return ips


@dataclass
class NaiveResult:
    ips: float
    images: int
    seconds: float


def naive_transform(encoder: Encoder):
    """open_clip's eval preprocessing for this encoder's input spec (torchvision, on the full-size image)."""
    from torchvision import transforms as T

    spec = encoder.input_spec
    return T.Compose([
        T.Resize(spec.size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(spec.size),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])


def measure_naive(model_id: str, paths: Sequence[Path], echo=print) -> NaiveResult:
    encoder = load_encoder(model_id, precision="fp32")
    transform = naive_transform(encoder)
    with torch.no_grad():  # warm-up on one image, as a script's first iteration would be excluded
        encoder._image_features(transform(Image.open(paths[0]).convert("RGB")).unsqueeze(0))
    started = time.perf_counter()
    vectors = []
    with torch.no_grad():
        for path in paths:
            img = Image.open(path).convert("RGB")
            features = encoder._image_features(transform(img).unsqueeze(0))
            vectors.append((features / features.norm(dim=-1, keepdim=True)).numpy())
    seconds = time.perf_counter() - started
    assert np.isfinite(np.concatenate(vectors)).all()
    del encoder
    gc.collect()
    return NaiveResult(len(paths) / seconds, len(paths), seconds)
