"""A CLIP model's image tower without torch: what ``photoseek search --image`` needs of open_clip.

Like the text tower (:mod:`photoseek.encoders.clip_text`, whose keys, export and transformer blocks
this shares), a ViT image tower is exported once, when photoseek has the model loaded anyway
(indexing, or a search that loaded it), into the user's cache folder (``image-towers``, float32),
and a later search by an image file runs it in NumPy: no torch to import, no text
tower to load. Each layer's arrays are read while the layer before it computes (on another thread:
the products run on one core) and dropped after use, so the process holds about two layers' weights
at a time, not the tower (float16 on disk would halve the file but cost more to convert on every
query than reading float32 does).

Only what it can run exactly is exported: open_clip's ``VisionTransformer`` with a plain patch
embedding (a convolution without bias whose stride is its size), class-token pooling after
``ln_post``, a projection, and the pre-norm blocks the text tower has; any other model is searched
with the full encoder. Pixels are prepared as the indexer prepares them
(:func:`photoseek.imaging.fit_square`, then the model's mean and std). A test holds the vectors
to open_clip's own float32 tower (cosine >= 0.999, the same top 10).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from photoseek.encoders import array_file, clip_text
from photoseek.encoders.image_side import NumpyImageSide
from photoseek.encoders.spec import ImageInputSpec

FORMAT = 2  # bump when the folder's layout changes: older ones are then ignored
FOLDER = "image-towers"


def path_for(model_id: str) -> Path | None:
    return clip_text.path_for(model_id, FOLDER, FORMAT)


def export(model_id: str, model, input_spec, release=None) -> Path | None:
    """Write the image tower of ``model`` (open_clip, float32 as loaded) for later searches by image,
    unless it is there or the model is not one this module runs (``release``: see
    :func:`photoseek.encoders.clip_text.write_export`). Never raises for want of a cache."""
    return clip_text.write_export(path_for(model_id), model_id, lambda: _tensors(model, input_spec),
                                  what="image tower", release=release)


def _tensors(model, spec) -> dict | None:
    from open_clip.transformer import VisionTransformer
    from torch import nn

    v = getattr(model, "visual", None)
    if not (isinstance(v, VisionTransformer) and getattr(v, "attn_pool", None) is None
            and getattr(v, "pool_type", None) == "tok" and not getattr(v, "final_ln_after_pool", False)
            and not getattr(v, "output_tokens", False) and isinstance(v.ln_pre, nn.LayerNorm)
            and isinstance(v.ln_post, nn.LayerNorm) and v.proj is not None
            and isinstance(v.conv1, nn.Conv2d) and v.conv1.bias is None
            and v.conv1.kernel_size == v.conv1.stride and v.conv1.kernel_size[0] == v.conv1.kernel_size[1]
            and v.conv1.padding in ((0, 0), "valid")):
        return None
    patch = int(v.conv1.kernel_size[0])
    grid = spec.size // patch
    if spec.size % patch or v.positional_embedding.shape[0] != grid * grid + 1:
        return None
    blocks = clip_text.block_arrays(list(v.transformer.resblocks))
    if blocks is None:
        return None
    width = v.conv1.out_channels
    f32 = clip_text._f32
    out = {
        "patch_embedding": f32(v.conv1.weight.reshape(width, -1).T),  # (3 * patch * patch, width), (c, y, x) order
        "class_embedding": f32(v.class_embedding),
        "positional_embedding": f32(v.positional_embedding),
        "ln_pre.weight": f32(v.ln_pre.weight), "ln_pre.bias": f32(v.ln_pre.bias),
        "ln_post.weight": f32(v.ln_post.weight), "ln_post.bias": f32(v.ln_post.bias),
        "projection": f32(v.proj),
    } | blocks
    meta = out.pop("meta") | {"eps": float(v.ln_pre.eps), "patch": patch, "size": int(spec.size),
                              "mean": list(spec.mean), "std": list(spec.std)}
    return out | {"meta": meta}


def graph(path: Path, meta: dict):
    """The tower exported at ``path`` as an OpenVINO model taking normalised float32 (N, 3, size,
    size) (:mod:`photoseek.encoders.openvino_tower`): patch convolution, class token, ``ln_pre``,
    the blocks, ``ln_post`` on the class token, projection; the arithmetic of :class:`ClipImageTower`."""
    from photoseek.encoders import ov_graph

    ov, o = ov_graph.openvino(), ov_graph.ops()
    w = ov_graph.export_arrays(path)
    patch, size, eps = int(meta["patch"]), int(meta["size"]), float(meta["eps"])
    width = int(w["projection"].shape[0])
    pixels = o.parameter([-1, 3, size, size], np.float32, name="pixels")
    # The export holds the convolution as (3 * patch * patch, width) in (channel, y, x) order.
    kernel = np.asarray(w["patch_embedding"]).T.reshape(width, 3, patch, patch)
    x = o.convolution(pixels, ov_graph.const(kernel), [patch, patch], [0, 0], [0, 0], [1, 1])
    x = o.transpose(o.reshape(x, ov_graph.i64([0, width, -1]), special_zero=True), ov_graph.i64([0, 2, 1]))
    batch = o.gather(o.shape_of(pixels), ov_graph.i64([0]), o.constant(np.int64(0)))
    cls = o.broadcast(ov_graph.const(np.asarray(w["class_embedding"]).reshape(1, 1, width)),
                      o.concat([batch, ov_graph.i64([1, width])], 0))
    x = o.add(o.concat([cls, x], 1), ov_graph.const(w["positional_embedding"]))
    x = ov_graph.layer_norm(x, w, "ln_pre", eps)
    x = ov_graph.attention_blocks(x, w, layers=int(meta["layers"]), heads=int(meta["heads"]), width=width,
                                  act=meta["act"], eps=eps, first_token_only=True)
    pooled = o.gather(x, o.constant(np.int64(0)), o.constant(np.int64(1)))  # the class token: (N, width)
    pooled = o.matmul(ov_graph.layer_norm(pooled, w, "ln_post", eps), ov_graph.const(w["projection"]), False, False)
    return ov.Model([o.result(pooled)], [pixels], "clip-image-tower")


class ClipImageTower(NumpyImageSide):
    """Query images through an exported CLIP image tower: ``model_id``, ``dim``, ``input_spec``,
    ``encode_pixels`` and ``encode_images``, as :class:`photoseek.encoders.Encoder` has them."""

    def __init__(self, model_id: str, path: Path):
        meta, arrays = array_file.load(path)
        self.weights = _Weights(arrays)
        self.model_id = model_id
        self.heads, self.layers, self.act, self.eps = meta["heads"], meta["layers"], meta["act"], meta["eps"]
        self.patch = meta["patch"]
        self.input_spec = ImageInputSpec(size=meta["size"], mean=tuple(meta["mean"]), std=tuple(meta["std"]))
        self.dim = int(arrays.shape("projection")[1])

    def _encode_one(self, pixels: np.ndarray) -> np.ndarray:
        w, p = self.weights.forward_pass(), self.patch
        mean, std = np.float32(self.input_spec.mean), np.float32(self.input_spec.std)
        x = (pixels.astype(np.float32) / np.float32(255.0) - mean) / std  # (size, size, 3)
        grid = x.shape[0] // p
        # The patch convolution as one product: each patch's pixels in the weight's (channel, y, x) order.
        patches = x.reshape(grid, p, grid, p, 3).transpose(0, 2, 4, 1, 3).reshape(grid * grid, 3 * p * p)
        x = patches @ np.asarray(w["patch_embedding"], dtype=np.float32)
        x = np.concatenate([np.asarray(w["class_embedding"], dtype=np.float32)[None], x])
        x = x + np.asarray(w["positional_embedding"], dtype=np.float32)
        x = clip_text.layer_norm(x, w, "ln_pre", self.eps)
        x = clip_text.run_blocks(x, w, self.layers, self.heads, self.act, self.eps, first_token_only=True)
        pooled = clip_text.layer_norm(x[:1], w, "ln_post", self.eps) @ np.asarray(w["projection"], dtype=np.float32)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)


class _Weights:
    """The tower's arrays on disk; :meth:`forward_pass` gives one pass its :class:`_ReadAhead`."""

    def __init__(self, arrays: array_file.ArrayFile):
        self.arrays = arrays
        self.names = arrays.names
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="photoseek-tower-read")

    def forward_pass(self) -> _ReadAhead:
        return _ReadAhead(self)


class _ReadAhead(Mapping):
    """One forward pass's arrays by name, each read from its file when asked for, or before: asking
    for any array of layer i starts reading all of layer i + 1's (anything before the blocks: layer
    0's), so the reading overlaps the products. Nothing is kept: the caller drops each array once used."""

    def __init__(self, weights: _Weights):
        self.weights = weights
        self._pending: dict[str, Future] = {}
        self._started: set[int] = set()

    def _read(self, name: str) -> np.ndarray:
        return self.weights.arrays.read(name)

    def _read_ahead(self, layer: int) -> None:
        if layer in self._started:
            return
        self._started.add(layer)
        for name in sorted(n for n in self.weights.names if n.startswith(f"{layer}.")):
            self._pending[name] = self.weights._reader.submit(self._read, name)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.weights.names:
            raise KeyError(name)
        layer, dot, _ = name.partition(".")
        self._read_ahead(int(layer) + 1 if layer.isdigit() else 0)
        future = self._pending.pop(name, None)
        return future.result() if future is not None else self._read(name)

    def __iter__(self):
        return iter(self.weights.names)

    def __len__(self) -> int:
        return len(self.weights.names)


def load(model_id: str) -> ClipImageTower | None:
    """The exported image tower of ``model_id``, or None when there is none for its weights as they are now."""
    return clip_text.load_export(path_for(model_id), ClipImageTower, model_id, what="image tower")
