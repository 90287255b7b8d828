"""Encoders: images and texts into one L2-normalised embedding space.

``load_encoder("ViT-B-32:laion2b_s34b_b79k")`` gives an open_clip encoder (:mod:`.clip`),
``load_encoder("offline")`` the bundled offline one (:mod:`.offline`); both keep the
:class:`Encoder` contract of :mod:`.base`. open_clip and sentence-transformers are
imported only when they are needed.
"""

from photoseek.encoders.base import Encoder, EncoderUnavailable, ImageInputSpec
from photoseek.encoders.factory import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_OFFLINE_MODEL,
    canonical_model_id,
    load_encoder,
    resolve_new_index_model,
)

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_OFFLINE_MODEL",
    "Encoder",
    "EncoderUnavailable",
    "ImageInputSpec",
    "canonical_model_id",
    "load_encoder",
    "resolve_new_index_model",
]
