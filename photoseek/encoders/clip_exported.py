"""A CLIP model for indexing, built from its exported towers: torch without open_clip.

All ``photoseek index`` needs of an open_clip model is its image tower in the run-time precision.
Importing open_clip brings timm, torchvision and huggingface_hub with it: seconds of one core
before the first photo is embedded, and hundreds of megabytes that stay resident for the run.
Once a model has been loaded the open_clip way (its first index, or a search that loaded it),
its image tower is exported (:mod:`photoseek.encoders.clip_image`, float32, in the
user's cache) and later runs build it here from torch's own modules, in the order open_clip
runs them: ``nn.Conv2d``, ``nn.LayerNorm``, ``nn.MultiheadAttention``, ``nn.Linear``, GELU or
QuickGELU. Each array is cast to the run-time dtype as it is read, so the weights exist once.

Invariant: for the same pixels, :class:`ExportedClipEncoder` gives the same vectors as
:class:`photoseek.encoders.clip.ClipEncoder` at the same precision, bit for bit (same weights,
same operations; a test holds them equal). Texts (the tag vocabulary, once per model) go
through the exported NumPy text tower that searches by words use; a model without one loads the
full encoder for its texts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from photoseek.encoders import array_file, clip_image, clip_text
from photoseek.encoders.base import TorchEncoder
from photoseek.encoders.precision import resolve_dtype
from photoseek.encoders.spec import ImageInputSpec


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)  # open_clip's QuickGELU, the same expression


class _Block(nn.Module):
    """open_clip's ``ResidualAttentionBlock`` without layer scale (what the export accepts)."""

    def __init__(self, width: int, heads: int, mlp_width: int, act: Callable[[], nn.Module], eps: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, mlp_width)), ("gelu", act()), ("c_proj", nn.Linear(mlp_width, width))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class VisionTower(nn.Module):
    """open_clip's ``VisionTransformer`` as the export describes it: patch convolution, class token,
    ``ln_pre``, pre-norm blocks, ``ln_post``, class-token pooling, projection."""

    def __init__(self, width: int, patch: int, grid: int, layers: int, heads: int, mlp_width: int,
                 dim: int, act: str, eps: float):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=eps)
        activation = _QuickGELU if act == "QuickGELU" else nn.GELU
        self.blocks = nn.ModuleList(_Block(width, heads, mlp_width, activation, eps) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width, eps=eps)
        self.proj = nn.Parameter(torch.empty(width, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = self.ln_pre(x + self.positional_embedding.to(x.dtype))
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)[:, 0] @ self.proj


def _state_dict(arrays: array_file.ArrayFile, layers: int, dtype: torch.dtype, width: int, patch: int):
    """(name in :class:`VisionTower`, tensor) pairs, each read from the export and cast as it is yielded.
    The export stores linear weights as (in, out) and the patch convolution flattened: put back
    into torch's own layouts, contiguous, as open_clip holds them."""

    def read(name: str, transpose: bool = False, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        array = arrays.read(name)
        array = array.T if transpose else array
        array = array.reshape(shape) if shape is not None else array
        return torch.from_numpy(np.array(array, dtype=np.float32, order="C")).to(dtype)

    yield "conv1.weight", read("patch_embedding", transpose=True, shape=(width, 3, patch, patch))
    for name in ("class_embedding", "positional_embedding"):
        yield name, read(name)
    for ln in ("ln_pre", "ln_post"):
        yield f"{ln}.weight", read(f"{ln}.weight")
        yield f"{ln}.bias", read(f"{ln}.bias")
    yield "proj", read("projection")
    for i in range(layers):
        b, e = f"blocks.{i}.", f"{i}."
        for ln in ("ln_1", "ln_2"):
            yield b + f"{ln}.weight", read(e + f"{ln}.weight")
            yield b + f"{ln}.bias", read(e + f"{ln}.bias")
        yield b + "attn.in_proj_weight", read(e + "in_proj.weight", transpose=True)
        yield b + "attn.in_proj_bias", read(e + "in_proj.bias")
        yield b + "attn.out_proj.weight", read(e + "out_proj.weight", transpose=True)
        yield b + "attn.out_proj.bias", read(e + "out_proj.bias")
        for linear in ("c_fc", "c_proj"):
            yield b + f"mlp.{linear}.weight", read(e + f"{linear}.weight", transpose=True)
            yield b + f"mlp.{linear}.bias", read(e + f"{linear}.bias")


def load_vision_tower(path: Path, dtype: torch.dtype) -> tuple[VisionTower, dict]:
    """The tower exported at ``path`` in ``dtype`` (eval mode, channels-last like the indexer's
    input), and the export's ``meta.json``."""
    meta, arrays = array_file.load(path)
    width, dim = arrays.shape("projection")
    mlp_width = arrays.shape("0.c_fc.weight")[1]
    patch, size = int(meta["patch"]), int(meta["size"])
    with torch.device("meta"):  # no memory and no random initialisation: every tensor is assigned below
        tower = VisionTower(width, patch, size // patch, int(meta["layers"]), int(meta["heads"]), mlp_width, dim,
                            meta["act"], float(meta["eps"]))
    tower.load_state_dict(dict(_state_dict(arrays, int(meta["layers"]), dtype, width, patch)), strict=True, assign=True)
    return tower.eval().to(memory_format=torch.channels_last), meta


class ExportedClipEncoder(TorchEncoder):
    """An open_clip model's encoder for ``photoseek index``, from its exports (see the module)."""

    def __init__(self, model_id: str, path: Path, *, precision: str = "auto"):
        self.model_id = model_id
        self.dtype = resolve_dtype(precision)
        self.precision = precision
        self.visual, meta = load_vision_tower(path, self.dtype)
        self.input_spec = ImageInputSpec(size=int(meta["size"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]))
        self.dim = int(self.visual.proj.shape[1])
        self._text_lock = threading.Lock()
        self._text = None

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        with self._text_lock:
            if self._text is None:
                self._text = clip_text.indexing_text_side(self.model_id, self.precision)
        return torch.from_numpy(np.asarray(self._text.encode_texts(texts), dtype=np.float32))


def load(model_id: str, *, precision: str = "auto") -> ExportedClipEncoder | None:
    """The indexing encoder of ``model_id`` from its image tower export, or None when there is none
    for its weights as they are now (then load the full encoder, which exports it)."""
    return clip_text.load_export(clip_image.path_for(model_id),
                                 lambda mid, path: ExportedClipEncoder(mid, path, precision=precision),
                                 model_id, what="image tower")
