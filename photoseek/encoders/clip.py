"""open_clip encoders: ``MODEL:PRETRAINED`` where PRETRAINED is an open_clip tag or a checkpoint file.

Weights for a tag come from the Hugging Face cache (``~/.cache/huggingface/hub``, or
``~/.cache/clip`` for URL-only tags), downloaded once if the network allows. Without a
network the load fails within seconds with :class:`EncoderUnavailable` telling the user how
to supply the weights, instead of hanging on retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from photoseek.encoders import clip_image, clip_text, lean_load, pages
from photoseek.encoders.model_ids import CHECKPOINT_SUFFIXES, looks_like_path, split_model_id  # noqa: F401 - their old home
from photoseek.encoders.base import EncoderUnavailable, ImageInputSpec, TorchEncoder
from photoseek.encoders.precision import resolve_dtype

log = logging.getLogger(__name__)

# Seconds to wait for the hub to answer before calling it unreachable. Downloads themselves
# are not cut short by this (it bounds connecting and each read, not the whole transfer).
HUB_TIMEOUT = 5.0
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"


@dataclass(frozen=True)
class WeightsSource:
    """Where a pretrained tag's weights live: a hub repo + file names to try, or a URL."""

    model: str
    tag: str
    hf_repo: str | None
    hf_filenames: tuple[str, ...]
    url: str | None

    @property
    def where(self) -> str:
        if self.hf_repo:
            return f"https://huggingface.co/{self.hf_repo}/resolve/main/{self.hf_filenames[0]}"
        return self.url or "?"


def is_known_model(name: str) -> bool:
    import open_clip

    return name in open_clip.list_models()


def known_tags(name: str) -> list[str]:
    import open_clip

    return list(open_clip.list_pretrained_tags_by_model(name))


def pretrained_cfg(name: str, tag: str) -> dict:
    import open_clip

    return dict(open_clip.get_pretrained_cfg(name, tag) or {})


def weights_source(name: str, tag: str) -> WeightsSource | None:
    cfg = pretrained_cfg(name, tag)
    if not cfg:
        return None
    hf_hub = cfg.get("hf_hub") or ""
    repo, filename = os.path.split(hf_hub) if hf_hub else (None, "")
    filenames: tuple[str, ...] = ()
    if repo:
        filename = filename or HF_WEIGHTS_NAME
        # open_clip prefers a .safetensors twin of the file when the repo has one.
        safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else (
            filename[:-4] + ".safetensors" if filename.endswith((".bin", ".pth")) else None)
        filenames = tuple(f for f in (safe, filename) if f)
    return WeightsSource(name, tag.lower().replace("-", "_"), repo or None, filenames, cfg.get("url") or None)


def cached_weights(source: WeightsSource) -> str | None:
    """The weights file if it is already on disk; never touches the network."""
    if source.hf_repo:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            for filename in source.hf_filenames:
                found = try_to_load_from_cache(source.hf_repo, filename)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    if source.url:
        target = Path("~/.cache/clip").expanduser() / os.path.basename(source.url)
        if target.is_file():
            return str(target)
    return None


def hf_text_tower(name: str) -> tuple[str, bool] | None:
    """The Hugging Face model whose tokenizer an open_clip model's text side reads from the Hub
    (e.g. ``xlm-roberta-base``), and whether its config is needed too (a text tower built from
    it, not only its tokenizer); None for CLIP's own tokenizer, which ships with open_clip."""
    import open_clip

    text_cfg = (open_clip.get_model_config(name) or {}).get("text_cfg") or {}
    repo = text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")
    return (repo, bool(text_cfg.get("hf_model_name"))) if repo else None


# What transformers reads to build a text tower's config and tokenizer (either tokenizer file will do).
HF_TEXT_CONFIG = "config.json"
HF_TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.json", "vocab.txt", "spiece.model")


def check_hf_text_tower(name: str, timeout: float | None = None) -> None:
    """Raise a one-line :class:`EncoderUnavailable` when ``name``'s text tower needs a Hugging Face
    model (e.g. the multilingual ``xlm-roberta-base-ViT-B-32``) whose config and tokenizer are neither
    in the local cache nor downloadable now. Without this, open_clip fails deep in transformers,
    with random weights as with real ones, and the error would blame the CLIP checkpoint."""
    found_tower = hf_text_tower(name)
    if found_tower is None:
        return
    repo, needs_config = found_tower
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - open_clip depends on it
        try_to_load_from_cache = None
    if try_to_load_from_cache is not None:
        def cached(filename: str) -> bool:
            found = try_to_load_from_cache(repo, filename)
            return isinstance(found, str) and os.path.isfile(found)

        if (cached(HF_TEXT_CONFIG) or not needs_config) and any(cached(f) for f in HF_TOKENIZER_FILES):
            return
    source = WeightsSource(name, "", repo, (HF_TEXT_CONFIG if needs_config else "tokenizer_config.json",), None)
    found, reason = _probe_hub(source, timeout)
    if found is not None:
        return
    raise EncoderUnavailable(
        f"{name} cannot be loaded here: open_clip builds its text side from the Hugging Face model {repo!r}, whose "
        f"{'config and tokenizer' if needs_config else 'tokenizer'} (a few MB) are not in the local Hugging Face "
        f"cache, and {reason}; run photoseek once with internet access "
        f"(they are then cached, with the CLIP weights), or copy a Hugging Face cache that holds {repo} "
        f"into {_hf_cache_dir()}."
    )


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return "~/.cache/huggingface/hub"


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def _hub_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT", HUB_TIMEOUT))
    except ValueError:
        return HUB_TIMEOUT


def weights_downloadable(source: WeightsSource, timeout: float | None = None) -> bool:
    """A quick HEAD request or two: could :func:`fetch_weights` download this? False when offline."""
    return _probe_hub(source, timeout)[0] is not None


def _probe_hub(source: WeightsSource, timeout: float | None = None) -> tuple[str | None, str]:
    """(the first of the source's file names the hub has, or None; why not). Plain HEAD
    requests without retries: hf_hub_download retries an unreachable hub with back-off
    (about 25 s), so this tells within seconds whether a download is worth trying."""
    if hub_offline():
        return None, "HF_HUB_OFFLINE is set"
    if not source.hf_repo:
        return None, "they are only published at a URL, not on the Hugging Face Hub"
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        return None, "huggingface_hub is not installed"
    reason = "unknown error"
    for filename in source.hf_filenames:
        try:
            get_hf_file_metadata(hf_hub_url(source.hf_repo, filename), timeout=timeout or _hub_timeout(),
                                 retry_on_errors=False)
            return filename, ""
        except EntryNotFoundError:  # the repo has no such file (404): try the next name
            reason = f"{source.hf_repo} has no {filename}"
        except Exception as exc:  # unreachable hub, proxy, gated repo: another name would fare no better
            log.debug("hub check for %s failed: %s", source.hf_repo, exc)
            return None, f"the Hugging Face Hub could not be reached ({_short_reason(exc)})"
    return None, reason


def fetch_weights(source: WeightsSource) -> str:
    """The weights file: from the cache, else downloaded with short timeouts. Raises EncoderUnavailable."""
    found = cached_weights(source)
    if found:
        return found
    filename, reason = _probe_hub(source)
    if filename is None:
        raise EncoderUnavailable(_unavailable_message(source, f"they are not in the local cache and {reason}"))
    from huggingface_hub import hf_hub_download

    log.warning("downloading CLIP weights %s/%s (once; cached afterwards)", source.hf_repo, filename)
    try:
        return hf_hub_download(source.hf_repo, filename, etag_timeout=_hub_timeout(), library_name="photoseek")
    except Exception as exc:
        raise EncoderUnavailable(
            _unavailable_message(source, f"they are not in the local cache and the download failed ({_short_reason(exc)})")
        ) from None


def _short_reason(exc: BaseException) -> str:
    """One line: the exception's first line, plus its innermost cause when it wraps one."""
    inner = exc
    while (inner.__cause__ or inner.__context__) is not None:
        inner = inner.__cause__ or inner.__context__
    outer = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
    cause = (str(inner).strip() or inner.__class__.__name__)[:200]
    return outer if inner is exc or cause in outer else f"{outer} ({cause})"


def _unavailable_message(source: WeightsSource, reason: str) -> str:
    file_model = _file_model_name(source)
    return (
        f"CLIP weights for {source.model}:{source.tag} are not available: {reason}.\n"
        f"To use this model, either\n"
        f"  - run photoseek once with internet access (the weights are then cached and used offline), or\n"
        f"  - download the checkpoint file ({source.where}) and pass it as a path:\n"
        f"      --model {file_model}:/path/to/{source.hf_filenames[0] if source.hf_filenames else 'checkpoint.pt'}"
        f"   (or PHOTOSEEK_MODEL={file_model}:/path/to/file).\n"
        f"Without CLIP weights, '--model offline' uses the bundled encoder (works offline, lower search quality)."
    )


def _file_model_name(source: WeightsSource) -> str:
    """The model name to pair with this tag's weights given as a file. A file carries no tag,
    so for tags trained with QuickGELU (OpenAI's) the '-quickgelu' config must be named."""
    import open_clip

    if pretrained_cfg(source.model, source.tag).get("quick_gelu"):
        cfg = open_clip.get_model_config(source.model) or {}
        if not cfg.get("quick_gelu") and f"{source.model}-quickgelu" in open_clip.list_models():
            return f"{source.model}-quickgelu"
    return source.model


class ClipEncoder(TorchEncoder):
    """An open_clip model, both towers in bf16 where the CPU has native bf16 (ViT-B-32 on
    AVX-512 BF16: image tower about 2x faster, text tower about 2x; embeddings agree with
    fp32 to cosine >= 0.999, checked in tests/test_precision.py).

    A text query runs only as many positions as it has tokens (see :meth:`_text_features`).

    Loading (:mod:`photoseek.encoders.lean_load`): the image tower is read from the checkpoint
    tensor by tensor straight into its run-time precision, one copy, no float32 master; the text
    tower is read (memory-mapped float32) only for its one-time export, and loaded in the run-time
    precision when a text is first encoded (indexing never does, so its memory is the image
    tower's). Checkpoints the lean loader does not read load through open_clip as before."""

    def __init__(self, model_id: str, *, precision: str = "auto", load_image: bool = True):
        """``load_image=False``: the image tower too waits on ``meta`` until first used (the text
        tower always does): :func:`write_exports` wants the model's exports and nothing else."""
        import open_clip

        name, pretrained = split_model_id(model_id)
        if not is_known_model(name):
            raise EncoderUnavailable(
                f"unknown open_clip model {name!r}. Known models with pretrained weights include: "
                f"{', '.join(sorted({m for m, _ in open_clip.list_pretrained()})[:12])}, ..."
                " (python -c 'import open_clip; print(open_clip.list_pretrained())' lists them all)"
            )
        check_hf_text_tower(name)
        force_cfg: dict = {}
        quick_gelu = False
        if looks_like_path(pretrained) and not pretrained_cfg(name, pretrained):
            checkpoint = os.path.abspath(os.path.expanduser(pretrained))
            if not os.path.isfile(checkpoint):
                raise EncoderUnavailable(
                    f"checkpoint file not found: {checkpoint} (model {name}). Pass an existing file saved with "
                    f"torch.save(model.state_dict(), path) or an open_clip .safetensors/.bin, e.g. "
                    f"--model {name}:/abs/path/to/open_clip_model.safetensors"
                )
            self.model_id = f"{name}:{checkpoint}"
        else:
            source = weights_source(name, pretrained)
            if source is None:
                tags = known_tags(name)
                raise EncoderUnavailable(
                    f"{pretrained!r} is neither a pretrained tag of {name} nor an existing checkpoint file. "
                    + (f"Tags for {name}: {', '.join(tags)}." if tags else f"open_clip has no pretrained tags for {name}.")
                )
            checkpoint = fetch_weights(source)
            cfg = pretrained_cfg(name, pretrained)
            # Given a file, open_clip keeps default preprocessing: carry the tag's over explicitly.
            force_cfg = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
            # ... and the activation the tag was trained with (open_clip only warns on a mismatch).
            quick_gelu = bool(cfg.get("quick_gelu", False))
            self.model_id = f"{name}:{source.tag}"

        self.dtype = resolve_dtype(precision)
        self._tower_lock = threading.Lock()
        self._text_keys: list[str] = []  # the text tower's tensors, while they wait on 'meta' (lean load)
        self._image_keys: list[str] = []  # the image tower's, likewise (load_image=False)
        self.tokenizer = open_clip.get_tokenizer(name)
        try:
            model = self._load_lean(open_clip, name, checkpoint, quick_gelu, force_cfg)
        except lean_load.NotLean as why:  # a layout open_clip converts, a legacy pickle: open_clip loads it
            log.debug("loading %s with open_clip (%s)", checkpoint, why)
            model = self._load_with_open_clip(open_clip, name, checkpoint, quick_gelu, force_cfg)
        model.eval()
        model.visual.to(memory_format=torch.channels_last)
        self._model = model
        if load_image:
            self._ensure_image()
        # A causal text tower pooled at the end-of-text token (CLIP's own design) never looks at
        # the padding after that token, so a query can stop there: 5-15 positions instead of 77.
        self._truncate_text = (
            isinstance(model, open_clip.CLIP)
            and getattr(model, "text_pool_type", None) == "argmax"
            and isinstance(getattr(model, "attn_mask", None), torch.Tensor)
        )
        cfg = open_clip.get_model_config(name) or {}
        self.dim = int(cfg.get("embed_dim") or self._probe_dim())

    def _set_input_spec(self, open_clip, model, name: str) -> None:
        """How the decode workers and :meth:`encode_pixels` prepare pixels, from the model's own
        preprocessing config (set before the exports: the towers exported need it too)."""
        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp.get("size", 224)
        if isinstance(size, (tuple, list)):
            if len(set(size)) != 1:
                raise EncoderUnavailable(f"{name} wants non-square {size} input; photoseek decodes square crops only")
            size = size[0]
        if pp.get("resize_mode", "shortest") != "shortest" or pp.get("interpolation", "bicubic") != "bicubic":
            log.warning(
                "%s was trained with %s/%s resizing; photoseek decodes with bicubic shortest-side + centre crop",
                name, pp.get("interpolation"), pp.get("resize_mode"),
            )
        self.input_spec = ImageInputSpec(size=int(size), mean=tuple(pp["mean"]), std=tuple(pp["std"]))

    def _load_lean(self, open_clip, name: str, checkpoint: str, quick_gelu: bool, force_cfg: dict):
        """The image tower in its run-time precision, from the checkpoint tensor by tensor
        (:mod:`photoseek.encoders.lean_load`); the text tower only read (float32, memory-mapped) for
        its one-time export, then left unloaded until a text is encoded (:meth:`_ensure_text`).
        Raises :class:`lean_load.NotLean` for checkpoints open_clip must convert."""
        with _quiet_root_log():  # open_clip warns that a model without weights is random: it is a skeleton
            model = lean_load.skeleton(open_clip, name, force_quick_gelu=quick_gelu,
                                       force_preprocess_cfg=force_cfg or None)
        self._set_input_spec(open_clip, model, name)
        keys = list(model.state_dict())
        image_keys = [k for k in keys if k.startswith(("visual.", "logit_"))]
        text_keys = [k for k in keys if k not in image_keys]
        if self._exports_needed():
            # Once per weights file, from the float32 weights as stored (memory-mapped: only what an
            # export reads is read, and each array's pages are handed back once it is written), then
            # dropped again.
            lean_load.load_into(model, checkpoint, dtype=torch.float32, as_stored=True)
            self._export(model, release=pages.releaser(checkpoint))
            lean_load.unload(model, keys)
        self._checkpoint = checkpoint
        self._text_keys = text_keys
        self._image_keys = image_keys  # loaded by __init__ unless load_image=False
        return model.eval()

    def _load_with_open_clip(self, open_clip, name: str, checkpoint: str, quick_gelu: bool, force_cfg: dict):
        """open_clip's own loader (both towers, float32, then converted): for the checkpoints the
        lean loader does not read."""
        try:
            model = open_clip.create_model(
                name, pretrained=checkpoint, precision="fp32", device="cpu",
                force_quick_gelu=quick_gelu, force_preprocess_cfg=force_cfg or None, weights_only=True,
            )
        except EncoderUnavailable:
            raise
        except Exception as exc:
            if "weights only load failed" in str(exc).lower():
                why = "it holds pickled Python objects (a whole model?), not just tensors; photoseek only loads tensors"
            elif "error(s) in loading state_dict" in str(exc).lower():
                why = "its tensors do not fit this architecture (missing, unexpected or mis-shaped keys)"
            else:
                why = _short_reason(exc)[:400]
            raise EncoderUnavailable(
                f"could not load {checkpoint} as {name} weights: {why}. The file must be an open_clip/CLIP "
                f"state dict for exactly this architecture, e.g. saved with torch.save(model.state_dict(), path)."
            ) from None
        model.eval()
        self._set_input_spec(open_clip, model, name)
        self._export(model)
        return model.to(dtype=self.dtype)

    def _exports_needed(self) -> bool:
        """Whether :meth:`_export` would write anything (then the lean loader reads the float32 weights for it)."""
        return any(_export_needed(path_for, self.model_id) for path_for in (clip_text.path_for, clip_image.path_for))

    def _export(self, model, release=None) -> None:
        """What is written once per weights file from the float32 model (``self.input_spec`` is
        set): the text tower, which later searches by words run without torch
        (photoseek.encoders.clip_text), and the image tower, for searches by an image file
        (photoseek.encoders.clip_image)."""
        clip_text.export(self.model_id, model, self.tokenizer, release=release)
        clip_image.export(self.model_id, model, self.input_spec, release=release)

    def _ensure_image(self) -> None:
        """Load the image tower if it waits on ``meta`` (``load_image=False``), channels-last as the
        decoders' batches arrive."""
        if not self._image_keys:
            return
        with self._tower_lock:
            if self._image_keys:
                lean_load.load_into(self._model, self._checkpoint, dtype=self.dtype, keys=self._image_keys)
                self._model.visual.to(memory_format=torch.channels_last)
                self._image_keys = []

    def _ensure_text(self) -> None:
        """Load the text tower (lean load leaves it out: indexing needs only the image tower)."""
        if not self._text_keys:
            return
        with self._tower_lock:
            if self._text_keys:
                lean_load.load_into(self._model, self._checkpoint, dtype=self.dtype, keys=self._text_keys)
                self._text_keys = []

    @property
    def text_tower_loaded(self) -> bool:
        return not self._text_keys

    @property
    def model(self):
        """The whole open_clip model, both towers loaded (the encoder itself loads the text tower
        only when it first encodes a text)."""
        self._ensure_image()
        self._ensure_text()
        return self._model

    def _probe_dim(self) -> int:
        with torch.inference_mode():
            return int(self._text_features(["a photo"]).shape[-1])

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        self._ensure_image()
        return self._model.encode_image(x)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        self._ensure_text()
        tokens = self.tokenizer(texts)
        if not self._truncate_text:
            return self.model.encode_text(tokens)
        # open_clip's CLIP.encode_text on the first `length` positions. Exact: with the causal
        # mask, position i only attends to positions <= i, and the pooled end-of-text token
        # (the largest token id) is at or before length - 1 in every row.
        m = self.model
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1
        tokens = tokens[:, :length]
        cast_dtype = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast_dtype) + m.positional_embedding[:length].to(cast_dtype)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length].to(cast_dtype))
        x = m.ln_final(x)[torch.arange(len(tokens)), eot]
        return m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection


def write_exports(model_id: str) -> None:
    """Write ``model_id``'s exports (its text and image towers, float32) if they are missing, loading
    neither tower: what the OpenVINO converter needs on a model's first run. Raises
    :class:`EncoderUnavailable` as loading the model would."""
    ClipEncoder(model_id, load_image=False)


def _export_needed(path_for, model_id: str) -> bool:
    """Whether an export (``path_for``: :func:`clip_text.path_for`, :func:`clip_image.path_for`) would
    write now (a folder for these weights, not yet complete)."""
    try:
        path = path_for(model_id)
    except Exception:  # no cache folder here: export would not write either
        return False
    return path is not None and not clip_text.complete(path)


@contextlib.contextmanager
def _quiet_root_log():
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)
