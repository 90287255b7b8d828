"""OpenVINO graphs built from exported NumPy arrays: no torch, no tracing.

The towers photoseek runs in OpenVINO are exported first as float32 arrays (one ``.npy`` file
each, in the layouts the NumPy towers read: linear weights as (in, out)). The helpers here turn
those arrays into OpenVINO operations with the NumPy towers' arithmetic, operation for operation
(:func:`photoseek.encoders.clip_text.run_blocks`): a converter needs OpenVINO and the export,
nothing else, so it runs in a few hundred megabytes instead of torch's gigabyte.

Invariant: weights enter a graph as float32 constants that share the export's memory-mapped pages
(nothing is copied while the graph is built); ``save_model`` then writes them once (float16 for a bf16 IR, float32 otherwise).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def openvino():
    """The ``openvino`` module, imported without its telemetry. OpenVINO reports loading and
    converting models to Google Analytics, from forked copies of the process, unless its telemetry
    package is missing; made missing, it uses its own no-op stand-in. A tool for one's own photos
    sends nothing anywhere (a test watches for forks and network lookups)."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino as ov

    return ov


def ops():
    """OpenVINO's operation set this module builds with."""
    openvino()
    import openvino.opset13 as opset

    return opset


def export_arrays(path: Path) -> dict[str, np.ndarray]:
    """An export's arrays by name, memory-mapped copy-on-write, as :func:`const` needs them to share
    their pages; never written."""
    from photoseek.encoders import array_file

    return array_file.load(path)[1].mapped(copy_on_write=True)


def const(array) -> object:
    """A float32 constant over ``array``'s own memory where it already is float32 and contiguous
    (OpenVINO shares writable arrays only: load exports with ``mmap_mode="c"``, never written). The
    constant holds a reference to the array it shares."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    return openvino().op.Constant(array, shared_memory=True)


def i64(values: Sequence[int]) -> object:
    return ops().constant(np.asarray(values, dtype=np.int64))


def linear(x, w: Mapping[str, np.ndarray], name: str) -> object:
    """``x @ w[name.weight] + w[name.bias]`` (weight stored (in, out))."""
    o = ops()
    weight = w[f"{name}.weight"]
    if weight.flags.f_contiguous and not weight.flags.c_contiguous:
        # Exports hold torch's (out, in) weights transposed, so saved in Fortran order: shared as they
        # lie, with the product transposing them, rather than copied into (in, out) rows.
        product = o.matmul(x, const(weight.T), False, True)
    else:
        product = o.matmul(x, const(weight), False, False)
    return o.add(product, const(w[f"{name}.bias"]))


def layer_norm(x, w: Mapping[str, np.ndarray], name: str, eps: float) -> object:
    """LayerNorm over the last axis, as torch computes it: ``(x - mean) / sqrt(var + eps)``."""
    o = ops()
    normed = o.mvn(x, i64([-1]), normalize_variance=True, eps=float(eps), eps_mode="inside_sqrt")
    return o.add(o.multiply(normed, const(w[f"{name}.weight"])), const(w[f"{name}.bias"]))


def attention_blocks(x, w: Mapping[str, np.ndarray], *, layers: int, heads: int, width: int, act: str,
                     eps: float, causal: bool = False, first_token_only: bool = False) -> object:
    """open_clip's pre-norm residual attention blocks over ``x`` (batch, tokens, width): the graph of
    :func:`photoseek.encoders.clip_text.run_blocks` (layer i's arrays ``w[f"{i}.…"]``), with each token
    attending only to those before it when ``causal`` (a text tower), to all of them otherwise.
    ``first_token_only``: as in ``run_blocks``, the last layer for the first token alone (one token out)."""
    o = ops()
    head = width // heads
    by_heads = i64([0, 0, heads, head])  # (batch, tokens, width) -> (batch, tokens, heads, head)
    merged = i64([0, 0, width])
    for i in range(layers):
        p = f"{i}."
        qkv = linear(layer_norm(x, w, p + "ln_1", eps), w, p + "in_proj")
        parts = list(o.split(qkv, o.constant(np.int64(-1)), 3).outputs())
        if first_token_only and i == layers - 1:  # every token's key and value, the first one's query
            first = lambda t: o.slice(t, i64([0]), i64([1]), i64([1]), i64([1]))  # noqa: E731 - token 0 of axis 1
            parts[0], x = first(parts[0]), first(x)
        q, k, v = (o.transpose(o.reshape(part, by_heads, special_zero=True), i64([0, 2, 1, 3])) for part in parts)
        context = o.scaled_dot_product_attention(q, k, v, causal=causal)  # softmax(q k^T / sqrt(head)) v
        context = o.reshape(o.transpose(context, i64([0, 2, 1, 3])), merged, special_zero=True)
        x = o.add(x, linear(context, w, p + "out_proj"))
        h = linear(layer_norm(x, w, p + "ln_2", eps), w, p + "c_fc")
        if act == "QuickGELU":
            h = o.multiply(h, o.sigmoid(o.multiply(h, o.constant(np.float32(1.702)))))
        else:
            h = o.gelu(h, approximation_mode="erf")
        x = o.add(x, linear(h, w, p + "c_proj"))
    return x


def with_pixel_input(model, mean: Sequence[float], std: Sequence[float]):
    """``model`` (taking float32 (N, 3, size, size)) taking uint8 (N, size, size, 3) pixels instead,
    normalised as :class:`photoseek.encoders.base.TorchEncoder` does: ``(x / 255 - mean) / std``."""
    ov = openvino()
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0).mean(list(mean)).scale(list(std))
    return ppp.build()
