"""Encoders: images and texts into one L2-normalised embedding space.

``load_encoder("ViT-B-32:laion2b_s34b_b79k")`` gives an open_clip encoder (:mod:`.clip`),
``load_encoder("offline")`` the bundled offline one (:mod:`.offline`); both keep the
:class:`Encoder` contract of :mod:`.base`. open_clip and sentence-transformers are
imported only when they are needed.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from photoseek.errors import EncoderUnavailable

# Loaded on first use: the base class and the factory import torch (seconds), which a command
# that only catches EncoderUnavailable, or never loads a model (status), must not pay for.
_LAZY = {"Encoder": "base", "ImageInputSpec": "spec", "DEFAULT_CLIP_MODEL": "factory",
         "DEFAULT_OFFLINE_MODEL": "factory", "canonical_model_id": "factory", "load_encoder": "factory",
         "resolve_new_index_model": "factory"}

if TYPE_CHECKING:
    from photoseek.encoders.base import Encoder
    from photoseek.encoders.spec import ImageInputSpec
    from photoseek.encoders.factory import (
        DEFAULT_CLIP_MODEL,
        DEFAULT_OFFLINE_MODEL,
        canonical_model_id,
        load_encoder,
        resolve_new_index_model,
    )


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
