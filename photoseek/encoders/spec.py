"""How an encoder wants its pixels: shared by the encoders (torch) and the torch-free towers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageInputSpec:
    """How pixels must be prepared: resize the short side to ``size`` (bicubic), centre-crop
    a square, then per channel ``(x / 255 - mean) / std``. The first part runs in the
    decode workers (:func:`photoseek.imaging.fit_square`), the second in :meth:`Encoder.encode_pixels`."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
