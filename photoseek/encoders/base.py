"""The contract every encoder keeps: images and texts into one L2-normalised space.

:class:`Encoder` is the contract alone and imports no torch: an encoder run by another engine
(:mod:`photoseek.encoders.openvino_tower`) keeps a process free of it. :class:`TorchEncoder` is the
torch implementation the others share.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from photoseek.encoders.spec import ImageInputSpec  # noqa: F401 - re-exported: its old home
from photoseek.errors import EncoderUnavailable  # noqa: F401 - re-exported: its old home
from photoseek.imaging import fit_square, to_rgb
from photoseek.settings import usable_cores

if TYPE_CHECKING:
    import torch


class Encoder(ABC):
    """An aligned image/text encoder: :meth:`encode_pixels` and :meth:`encode_texts` give float32
    vectors of unit length in one space."""

    model_id: str  # recorded in the index; an index is only ever searched with the encoder that built it
    dim: int
    input_spec: ImageInputSpec

    @abstractmethod
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 -> (N, dim) float32, unit length."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, dim) float32, unit length."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Convenience for query images already decoded with Pillow."""
        size = self.input_spec.size
        pixels = np.stack([fit_square(to_rgb(img), size) for img in images]) if images else np.zeros((0, size, size, 3), np.uint8)
        return self.encode_pixels(pixels)

    def prepare_images(self, stop: threading.Event | None = None) -> bool:
        """Load what the image side loads lazily, before a run's first batch; work that takes
        long checks ``stop`` and gives up once it is set (returns False). Default: nothing to do."""
        return True

    def inference_threads(self, workers: int, threads_per_worker: int | None = None) -> AbstractContextManager:
        """Set up ``workers`` concurrent :meth:`encode_pixels` calls (the indexer's model threads)
        for the duration of the ``with`` block. Default: nothing to set up."""
        return nullcontext()

    def warm_up(self) -> None:
        """Load whatever loads lazily and run each tower once, so that a server's first
        query costs what every later one does."""
        self.encode_texts(["a photo"])
        self.encode_pixels(np.zeros((1, self.input_spec.size, self.input_spec.size, 3), np.uint8))

    def _check_pixels(self, pixels: np.ndarray) -> None:
        if pixels.ndim != 4 or pixels.shape[1:] != (self.input_spec.size, self.input_spec.size, 3):
            raise ValueError(f"expected (N, {self.input_spec.size}, {self.input_spec.size}, 3) pixels, got {pixels.shape}")


class TorchEncoder(Encoder):
    """An encoder whose towers are torch modules.

    Subclasses set ``dtype`` and implement :meth:`_image_features` (normalised NCHW float tensor in)
    and :meth:`_text_features`; this class handles pixel normalisation, precision,
    ``inference_mode`` and the final L2 normalisation to float32.
    """

    dtype: torch.dtype

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        self._check_pixels(pixels)
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
            mean = torch.tensor(self.input_spec.mean).view(1, 3, 1, 1)
            std = torch.tensor(self.input_spec.std).view(1, 3, 1, 1)
            x = x.sub_(mean).div_(std).contiguous(memory_format=torch.channels_last)
            features = self._image_features(x.to(self.dtype))
            return _normalise(features)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            return _normalise(self._text_features(list(texts)))

    def inference_threads(self, workers: int, threads_per_worker: int | None = None) -> AbstractContextManager:
        return torch_threads_per_worker(workers, threads_per_worker)

    @abstractmethod
    def _image_features(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _text_features(self, texts: list[str]) -> torch.Tensor: ...


def threads_per_call(workers: int, threads_per_worker: int | None = None) -> int:
    """Threads for each of ``workers`` concurrent model calls: as asked, else a share of the cores
    (at least one)."""
    return threads_per_worker or max(1, usable_cores() // max(1, workers))


@contextmanager
def torch_threads_per_worker(workers: int, threads_per_worker: int | None = None) -> Iterator[int]:
    """Give each of ``workers`` inference threads its share of the cores (at least one), and
    restore torch's setting afterwards: it is per process, and the caller may be a server."""
    import torch

    threads = threads_per_call(workers, threads_per_worker)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32, copy=False)
