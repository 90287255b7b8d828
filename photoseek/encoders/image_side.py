"""An index's encoder for query images only, without torch, where one was exported: a CLIP model's
ViT image tower (:mod:`.clip_image`) or the offline encoder's network (:mod:`.offline_image`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from photoseek.encoders.spec import ImageInputSpec


def load_image_encoder(model_id: str):
    """The image side alone of the encoder ``model_id`` built an index with, once exported (loading the
    full encoder exports it); None otherwise (then load the full encoder)."""
    if model_id.partition(":")[0] == "offline":
        from photoseek.encoders import offline_image

        return offline_image.load(model_id)
    from photoseek.encoders import clip_image

    return clip_image.load(model_id)


class NumpyImageSide:
    """What the torch-free image sides share: ``encode_images`` and ``encode_pixels`` as
    :class:`photoseek.encoders.Encoder` has them, over a subclass's ``_encode_one(pixels)`` ->
    (1, dim) unit vector; ``input_spec``, ``dim`` and ``model_id`` are the subclass's."""

    input_spec: ImageInputSpec
    dim: int
    model_id: str

    def encode_images(self, images: Sequence) -> np.ndarray:
        from photoseek.imaging import fit_square, to_rgb

        size = self.input_spec.size
        return self.encode_pixels(np.stack([fit_square(to_rgb(img), size) for img in images]) if images
                                  else np.zeros((0, size, size, 3), np.uint8))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 -> (N, dim) float32, unit length."""
        size = self.input_spec.size
        if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
            raise ValueError(f"expected (N, {size}, {size}, 3) pixels, got {pixels.shape}")
        if not len(pixels):
            return np.zeros((0, self.dim), np.float32)
        from threadpoolctl import threadpool_limits

        # One BLAS thread: for one image, threads that spin while the other core is busy cost several
        # times what they save (measured with ViT-B-32: 0.45 s against 2.6 s next to a busy core).
        with threadpool_limits(1, user_api="blas"):
            return np.concatenate([self._encode_one(p) for p in pixels])

    def _encode_one(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError
