"""Model ids -> encoders, and which model a new index gets.

Model ids:

* ``MODEL:TAG`` – an open_clip model with a pretrained tag, e.g. ``ViT-B-32:laion2b_s34b_b79k``;
* ``MODEL:/abs/path/checkpoint.pt`` – an open_clip model with weights from a local file;
* ``offline:lite0`` / ``offline:lite2`` – the bundled offline encoder (``offline`` = the default variant);
* ``offline:multilingual`` (alias ``offline-multilingual``) – the same with a multilingual text side
  (USE multilingual v3): queries in 16 languages;
* ``clip`` – alias of :data:`DEFAULT_CLIP_MODEL`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from typing import TYPE_CHECKING

from photoseek.errors import EncoderUnavailable

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # torch: only once an encoder is loaded, not to settle a model id
    from photoseek.encoders.base import Encoder

DEFAULT_CLIP_MODEL = "ViT-B-32:laion2b_s34b_b79k"
# lite0 over lite2: on the labelled demo photos the two are within a query or two of each
# other (bench/offline_quality.py), and lite0 embeds images about 3x faster.
DEFAULT_OFFLINE_MODEL = "offline:lite0"
MULTILINGUAL_OFFLINE_MODEL = "offline:multilingual"
OFFLINE_PREFIX = "offline"

_ALIASES = {
    "offline": DEFAULT_OFFLINE_MODEL,
    "offline-multilingual": MULTILINGUAL_OFFLINE_MODEL,
    "clip": DEFAULT_CLIP_MODEL,
}


def canonical_model_id(spec: str) -> str:
    """The one spelling of a model id that an index records: aliases resolved, open_clip
    names and tags normalised, checkpoint paths made absolute. Checks syntax, not whether
    the weights exist (that is :func:`load_encoder`'s job)."""
    spec = (spec or "").strip()
    if not spec:
        raise EncoderUnavailable("empty model id; use e.g. 'ViT-B-32:laion2b_s34b_b79k' or 'offline'")
    spec = _ALIASES.get(spec.lower(), spec)
    head, sep, rest = spec.partition(":")
    if head.lower() == OFFLINE_PREFIX:
        from photoseek.encoders.offline_config import available_variants

        variant = rest.strip().lower()
        if variant not in available_variants():
            raise EncoderUnavailable(
                f"unknown offline encoder {spec!r}; available: "
                + ", ".join(f"{OFFLINE_PREFIX}:{v}" for v in available_variants())
            )
        return f"{OFFLINE_PREFIX}:{variant}"

    from photoseek.encoders.model_ids import looks_like_path, split_model_id

    name, pretrained = split_model_id(spec)
    if looks_like_path(pretrained):  # a file: no pretrained tag has a path's shape, so open_clip need not be asked
        return f"{name}:{os.path.abspath(os.path.expanduser(pretrained))}"
    from photoseek.encoders import clip

    if clip.pretrained_cfg(name, pretrained):
        return f"{name}:{_clean_tag(pretrained)}"
    return f"{name}:{pretrained}"


def load_encoder(model_id: str, *, precision: str = "auto") -> Encoder:
    """Build the encoder for ``model_id`` (any spelling :func:`canonical_model_id` accepts).

    ``precision``: ``"auto"`` | ``"bf16"`` | ``"fp32"`` (see each encoder for what auto means).
    Raises :class:`EncoderUnavailable` with a user-facing message when it cannot be had.
    """
    model_id = canonical_model_id(model_id)
    head, _, rest = model_id.partition(":")
    if head == OFFLINE_PREFIX:
        from photoseek.encoders.offline import OfflineEncoder

        return OfflineEncoder(rest, precision=precision)
    from photoseek.encoders.clip import ClipEncoder

    return ClipEncoder(model_id, precision=precision)


def load_indexing_encoder(model_id: str, *, precision: str = "auto", openvino: bool = True) -> Encoder:
    """The encoder ``photoseek index`` runs: as :func:`load_encoder`, except that a model whose image
    tower was converted earlier (:func:`prepare_indexing_encoder`) runs it in OpenVINO without
    importing torch (:mod:`photoseek.encoders.openvino_tower`), unless ``openvino`` is off; an
    open_clip model whose tower was exported earlier is built from that export without importing
    open_clip (:mod:`photoseek.encoders.clip_exported`; the same vectors). ``model_id`` as an index
    records it (canonical: settling a pretrained tag's spelling would import open_clip)."""
    if openvino:
        from photoseek.encoders import openvino_tower

        encoder = openvino_tower.load(model_id, precision=precision)
        if encoder is not None:
            return encoder
    if model_id.partition(":")[0] != OFFLINE_PREFIX:
        from photoseek.encoders import clip_exported  # imports torch

        encoder = clip_exported.load(model_id, precision=precision)
        if encoder is not None:
            return encoder
    return load_encoder(model_id, precision=precision)


def prepare_indexing_encoder(model_id: str, *, precision: str = "auto", stop: threading.Event | None = None,
                             openvino: bool = True) -> None:
    """Convert a model's image tower for OpenVINO, once per model and weights, in a process of its
    own (which has the tower exported by torch in another on a model's first run): seconds, then
    :func:`load_indexing_encoder` loads the IR. Returns early, nothing converted, once ``stop`` is
    set; a model that does not convert, or a failure, is logged and leaves the torch encoders to
    do the work."""
    if not openvino:
        return
    from photoseek.encoders import openvino_tower

    if not openvino_tower.runs(model_id, precision) or openvino_tower.converted(model_id, precision):
        return
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "photoseek.encoders.openvino_tower", model_id, precision or "auto"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        while True:
            try:
                code = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if stop is not None and stop.is_set():
                    proc.terminate()
                    proc.wait()
                    return
        if code == 3:
            log.info("%s: its image tower is not one OpenVINO runs here; indexing with torch", model_id)
        elif code != 0 and not (stop is not None and stop.is_set()):
            err.seek(0)
            reason = err.read().decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {code}"]
            log.warning("could not convert the image tower of %s for OpenVINO (%s): indexing with torch, "
                        "which is slower and takes more memory", model_id, reason[0])


def resolve_new_index_model(requested: str | None) -> tuple[str, str | None]:
    """The model a NEW index should use, and a warning for the user (or None).

    An explicit request wins. Otherwise CLIP (:data:`DEFAULT_CLIP_MODEL`) if its weights are
    cached or the hub answers within seconds; else the bundled offline encoder, with a
    warning that says what that costs and how to get CLIP.
    """
    if requested is not None and requested.strip():
        return canonical_model_id(requested), None
    if clip_weights_obtainable(DEFAULT_CLIP_MODEL):
        return DEFAULT_CLIP_MODEL, None
    return DEFAULT_OFFLINE_MODEL, offline_fallback_warning()


def clip_weights_obtainable(model_id: str = DEFAULT_CLIP_MODEL, *, timeout: float | None = None) -> bool:
    """Cached on disk, or downloadable right now (one short HEAD request; never when HF_HUB_OFFLINE=1)."""
    from photoseek.encoders import clip

    name, tag = clip.split_model_id(canonical_model_id(model_id))
    source = clip.weights_source(name, tag)
    if source is None:
        return False
    return clip.cached_weights(source) is not None or clip.weights_downloadable(source, timeout=timeout)


def offline_fallback_warning() -> str:
    from photoseek.encoders import clip

    name, tag = clip.split_model_id(DEFAULT_CLIP_MODEL)
    source = clip.weights_source(name, tag)
    where = source.where if source else "the Hugging Face Hub"
    return (
        "WARNING: CLIP weights are not available (not cached, and the Hugging Face Hub cannot be reached), "
        f"so this new index uses the bundled offline encoder ({DEFAULT_OFFLINE_MODEL}).\n"
        "  Search quality is much lower: it only knows the 1000 ImageNet object classes, so queries about "
        "scenes, people, text, colours or activities often miss.\n"
        "  For CLIP: run once with internet access, or download the checkpoint "
        f"({where}) and index with --model {name}:/path/to/{os.path.basename(where)}.\n"
        "  An index keeps its model: switching later needs 'photoseek index --rebuild --model ...'."
    )


def _clean_tag(tag: str) -> str:
    return tag.lower().replace("-", "_")
