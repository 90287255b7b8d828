"""A CLIP model's text tower without torch: what a terminal search by words needs of open_clip.

Importing torch and open_clip and loading both towers is most of a ``photoseek search`` on a
CLIP index, though a text query needs neither the image tower nor torch. So when photoseek
has a CLIP model loaded anyway (indexing, or the first search), it exports the text tower's
tensors once (:func:`export`: float32, in one file, memory-mapped when read, so a query pages in
the layers and only its tokens' rows of the embedding table) into
the user's cache folder,
keyed by the model id, the checkpoint file (path, size, modification time) and the open_clip
version; a later search by words runs the tower from that file in NumPy (:func:`load`).

Only what it can run exactly is exported: open_clip's ``CLIP`` with pre-norm residual blocks
(``nn.MultiheadAttention`` + MLP, GELU or QuickGELU), a causal mask, pooling at the end-of-text
token and CLIP's own BPE tokenizer (ported below, MIT, from openai/CLIP via open_clip); any other
model is searched with the full encoder. A test holds the vectors to open_clip's own tower
(cosine >= 0.999, the same top 10). A stale or unreadable file is ignored, never trusted.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from photoseek.encoders import array_file

log = logging.getLogger(__name__)

FORMAT = 3  # bump when the folder's layout changes: older ones are then ignored


# -- where the file lives ------------------------------------------------------------------------


def _open_clip_version() -> str | None:
    try:
        return importlib.metadata.version("open_clip_torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def path_for(model_id: str, folder: str = "text-towers", version: int = FORMAT) -> Path | None:
    """The text tower file for ``model_id`` as its weights are now (``folder``: another tower's exports,
    :mod:`photoseek.encoders.clip_image`). A checkpoint file is known by its size and modification time
    too (replaced, its tower is exported again); a pretrained tag's weights never change. None for a
    checkpoint file that is gone."""
    _, _, pretrained = model_id.partition(":")
    checkpoint = os.path.expanduser(pretrained)
    stamp: list = []
    if os.sep in pretrained or os.path.isfile(checkpoint):
        try:
            st = os.stat(checkpoint)
        except OSError:
            return None
        stamp = [os.path.abspath(checkpoint), st.st_size, st.st_mtime_ns]
    key = json.dumps([version, model_id, *stamp, _open_clip_version()])
    import platformdirs

    cache = Path(platformdirs.user_cache_dir("photoseek", appauthor=False)) / folder
    return cache / hashlib.sha256(key.encode()).hexdigest()[:24]


# -- export (torch side) ---------------------------------------------------------------------------


def export(model_id: str, model, tokenizer, release=None) -> Path | None:
    """Write the text tower of ``model`` (an open_clip model in float32, as loaded) for later
    searches, unless it is there already or the model is not one this module runs. Never raises
    for want of a cache folder: the search then simply loads the full encoder."""
    # CLIP's BPE merges, uncompressed and only those it uses: read in milliseconds instead of
    # gunzipped in a tenth of a second.
    return write_export(path_for(model_id), model_id, lambda: _tensors(model, tokenizer),
                        {"bpe_merges.txt": _used_merges}, what="text tower", release=release)


def _used_merges() -> bytes:
    """The BPE merges file as CLIP reads it: its header line and the merges it uses."""
    return b"\n".join(gzip.open(_bpe_path()).read().split(b"\n", USED_MERGES + 1)[:USED_MERGES + 1])


def complete(path: Path | None) -> bool:
    """Whether an export folder (of :func:`write_export`, or an OpenVINO IR's) is there whole: its
    ``meta.json`` is written last, and the folder renamed into place after."""
    return path is not None and (path / "meta.json").is_file()


def write_export(path: Path | None, model_id: str, tensors, files: dict | None = None, *, what: str,
                 writer=None, release=None) -> Path | None:
    """Write ``tensors()`` (a dict of arrays plus ``"meta"``; None: a model this cannot run) into one
    file (:mod:`photoseek.encoders.array_file`), ``files`` (name -> bytes maker), what
    ``writer(folder)`` writes, and ``meta.json`` into ``path``, unless it is there already;
    ``release(array)`` after each array is written (:func:`photoseek.encoders.pages.releaser`). Exports of the same model for
    weights since replaced are removed: one per model."""
    try:
        if path is None or complete(path):
            return path
        arrays = tensors()
        if arrays is None:
            return None
        # Written beside, then renamed into place: a reader sees the whole folder or none of it.
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        try:
            meta = arrays.pop("meta") | {"model_id": model_id}
            meta["arrays"] = array_file.write(staging, arrays, release)
            for name, make in (files or {}).items():
                (staging / name).write_bytes(make())
            if writer is not None:
                writer(staging)
            (staging / "meta.json").write_text(json.dumps(meta))
            try:
                os.rename(staging, path)
            except OSError:  # another process put it there first
                if not complete(path):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _remove_stale(path, model_id)
        return path
    except OSError as exc:
        log.warning("could not save the %s for fast searches: %s", what, exc)
        return None


def _remove_stale(path: Path, model_id: str) -> None:
    """Other exports of ``model_id`` beside ``path`` were made from weights since replaced (or by
    another open_clip): never read again, so not kept (a tower is hundreds of megabytes)."""
    for other in path.parent.iterdir():
        if other == path or other.name.startswith("."):
            continue
        try:
            if json.loads((other / "meta.json").read_text()).get("model_id") == model_id:
                shutil.rmtree(other, ignore_errors=True)
        except (OSError, ValueError):
            continue


def _tensors(m, tokenizer) -> dict | None:
    import open_clip
    import torch

    if not (isinstance(m, open_clip.CLIP) and getattr(m, "text_pool_type", None) == "argmax"
            and isinstance(getattr(m, "attn_mask", None), torch.Tensor)
            and type(tokenizer).__name__ == "SimpleTokenizer" and getattr(tokenizer, "reduction_fn", None) is None
            and _clean_name(tokenizer) is not None):
        return None
    blocks = block_arrays(list(m.transformer.resblocks))
    if blocks is None:
        return None
    projection = m.text_projection
    out = {
        "token_embedding": _f32(m.token_embedding.weight),
        "positional_embedding": _f32(m.positional_embedding),
        "ln_final.weight": _f32(m.ln_final.weight), "ln_final.bias": _f32(m.ln_final.bias),
        "text_projection": _f32(projection.weight.T) if isinstance(projection, torch.nn.Linear) else _f32(projection),
        "meta": blocks.pop("meta") | {"eps": float(m.ln_final.eps), "context_length": int(tokenizer.context_length),
                                      "clean": _clean_name(tokenizer)},
    }
    if isinstance(projection, torch.nn.Linear) and projection.bias is not None:
        out["text_projection_bias"] = _f32(projection.bias)
    return out | blocks


def _f32(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def block_arrays(blocks: list) -> dict | None:
    """The arrays of open_clip residual attention blocks (pre-norm, ``nn.MultiheadAttention``, MLP with
    GELU or QuickGELU, no layer scale), as :func:`run_blocks` reads them, plus ``"meta"`` (heads,
    layers, act); None for blocks of another kind."""
    import torch

    acts = set()
    for b in blocks:
        if not (isinstance(b.attn, torch.nn.MultiheadAttention) and isinstance(b.ls_1, torch.nn.Identity)
                and isinstance(b.ls_2, torch.nn.Identity) and isinstance(getattr(b, "ln_attn", torch.nn.Identity()),
                                                                         torch.nn.Identity)):
            return None
        acts.add(type(b.mlp.gelu).__name__)
    if len(acts) != 1 or acts - {"GELU", "QuickGELU"}:
        return None
    out: dict = {"meta": {"heads": blocks[0].attn.num_heads, "layers": len(blocks), "act": acts.pop()}}
    for i, b in enumerate(blocks):
        p = f"{i}."
        out |= {p + "ln_1.weight": _f32(b.ln_1.weight), p + "ln_1.bias": _f32(b.ln_1.bias),
                p + "ln_2.weight": _f32(b.ln_2.weight), p + "ln_2.bias": _f32(b.ln_2.bias),
                p + "in_proj.weight": _f32(b.attn.in_proj_weight.T), p + "in_proj.bias": _f32(b.attn.in_proj_bias),
                p + "out_proj.weight": _f32(b.attn.out_proj.weight.T), p + "out_proj.bias": _f32(b.attn.out_proj.bias),
                p + "c_fc.weight": _f32(b.mlp.c_fc.weight.T), p + "c_fc.bias": _f32(b.mlp.c_fc.bias),
                p + "c_proj.weight": _f32(b.mlp.c_proj.weight.T), p + "c_proj.bias": _f32(b.mlp.c_proj.bias)}
    return out


def _clean_name(tokenizer) -> str | None:
    fn = getattr(tokenizer, "clean_fn", None)
    name = getattr(fn, "__name__", "")
    return {"_clean_lower": "lower", "_clean_whitespace": "whitespace"}.get(name)


# -- the tower in NumPy ----------------------------------------------------------------------------


class ClipTextTower:
    """Text queries through an exported CLIP text tower: ``model_id``, ``dim``, ``encode_texts``."""

    def __init__(self, model_id: str, path: Path):
        meta, arrays = array_file.load(path)
        self.weights = arrays.mapped()
        self.model_id = model_id
        self.heads, self.layers, self.act, self.eps = meta["heads"], meta["layers"], meta["act"], meta["eps"]
        self.tokenizer = Tokenizer(meta["clean"], meta["context_length"], merges=path / "bpe_merges.txt")
        self.dim = int(self.weights["text_projection"].shape[1])

    def encode_texts(self, texts) -> np.ndarray:
        """Texts -> (N, dim) unit vectors. A query runs alone; many texts (a tag vocabulary) run in
        batches of similar length, each text's tokens padded to the batch's longest: with the
        causal mask the padding after a text's end changes nothing it sees."""
        from threadpoolctl import threadpool_limits

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        # open_clip pools at the first end-of-text token (the highest id; one typed into the text comes
        # first): with the causal mask nothing after it counts, so nothing after it runs.
        eot = self.tokenizer.eot
        tokens = [t[:t.index(eot) + 1] for t in map(self.tokenizer.encode, texts)]
        out = np.empty((len(texts), self.dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(tokens[i]))
        for start in range(0, len(order), TEXT_BATCH):
            batch = order[start:start + TEXT_BATCH]
            rows = sum(len(tokens[i]) for i in batch)
            # Small matrices (a query) on one BLAS thread, see photoseek.encoders.minilm; batches on all.
            with threadpool_limits(1 if rows < 256 else None, user_api="blas"):
                out[batch] = self._encode_batch([tokens[i] for i in batch])
        return out

    def _encode_batch(self, tokens: list[list[int]]) -> np.ndarray:
        w = self.weights
        lengths = np.array([len(t) for t in tokens])  # each up to its end-of-text token
        length = int(lengths.max())
        ids = np.zeros((len(tokens), length), np.int64)
        for row, t in enumerate(tokens):
            ids[row, :len(t)] = t
        x = w["token_embedding"][ids] + w["positional_embedding"][:length]
        pooled = self._pooled(x.astype(np.float32, copy=False), lengths - 1)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def _pooled(self, x: np.ndarray, last: np.ndarray) -> np.ndarray:
        """The blocks over embedded tokens ``x`` (N, length, width), then each row's token ``last[row]``
        (its end of text) through ``ln_final`` and the projection: (N, dim), not yet unit length."""
        w, length = self.weights, x.shape[1]
        causal = np.triu(np.full((length, length), -np.inf, np.float32), 1)
        x = run_blocks(x, w, self.layers, self.heads, self.act, self.eps, causal)
        pooled = layer_norm(x[np.arange(len(x)), last], w, "ln_final", self.eps) @ w["text_projection"]
        if "text_projection_bias" in w:
            pooled = pooled + w["text_projection_bias"]
        return pooled


class OpenVinoTextTower(ClipTextTower):
    """The exported text tower with its blocks run by OpenVINO, compiled from an IR file
    (:func:`graph`, saved by :mod:`photoseek.encoders.openvino_tower` beside the image tower's): what
    an indexing process, which has OpenVINO loaded for the image tower anyway, embeds a model's tag
    vocabulary with (thousands of prompts, a few times faster than NumPy). Tokens are looked up in
    NumPy, from the memory-mapped table, so the compiled copy holds the blocks only.

    Invariant: the compiled model is made from a file OpenVINO maps itself, never from a graph over
    NumPy's arrays: a compiled model that shares Python-owned memory can outlive it (or release it
    without the interpreter's lock) and crash the process long after."""

    def __init__(self, model_id: str, path: Path, compiled):
        super().__init__(model_id, path)
        self._request = compiled.create_infer_request()  # holds the compiled model
        self._lock = threading.Lock()

    def _pooled(self, x: np.ndarray, last: np.ndarray) -> np.ndarray:
        with self._lock:  # one request: one call at a time
            return np.array(self._request.infer({"tokens": x, "last": last.astype(np.int64)})[0], dtype=np.float32)


def graph(path: Path):
    """The blocks of the text tower exported at ``path`` as an OpenVINO model: embedded tokens (N,
    length, width) and each row's end-of-text position (N,) -> (N, dim), the arithmetic of
    :meth:`ClipTextTower._pooled` (causal attention, ``ln_final``, the projection)."""
    from photoseek.encoders import ov_graph

    ov, o = ov_graph.openvino(), ov_graph.ops()
    meta = json.loads((path / "meta.json").read_text())
    w = ov_graph.export_arrays(path)  # the token table among them, mapped but never read here
    width, eps = int(w["positional_embedding"].shape[1]), float(meta["eps"])
    tokens = o.parameter([-1, -1, width], np.float32, name="tokens")
    last = o.parameter([-1], np.int64, name="last")
    x = ov_graph.attention_blocks(tokens, w, layers=int(meta["layers"]), heads=int(meta["heads"]), width=width,
                                  act=meta["act"], eps=eps, causal=True)
    pooled = o.gather(x, last, o.constant(np.int64(1)), 1)  # row i's token last[i]: (N, width)
    pooled = o.matmul(ov_graph.layer_norm(pooled, w, "ln_final", eps), ov_graph.const(w["text_projection"]),
                      False, False)
    if "text_projection_bias" in w:
        pooled = o.add(pooled, ov_graph.const(w["text_projection_bias"]))
    return ov.Model([o.result(pooled)], [tokens, last], "clip-text-tower")


TEXT_BATCH = 64  # texts per forward pass when there are many (tags): long enough matrices for BLAS


def layer_norm(x: np.ndarray, w, prefix: str, eps: float) -> np.ndarray:
    """LayerNorm over the last axis with ``w[prefix + ".weight"]`` and ``.bias``."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    weight, bias = (np.asarray(w[f"{prefix}.{n}"], dtype=np.float32) for n in ("weight", "bias"))
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def run_blocks(x: np.ndarray, w, layers: int, heads: int, act: str, eps: float,
               mask: np.ndarray | None = None, first_token_only: bool = False) -> np.ndarray:
    """open_clip's residual attention blocks (see :func:`block_arrays`) on one sequence ``x`` (tokens,
    width), or a batch of them (batch, tokens, width), in float32: ``w[f"{i}.{name}"]`` are layer i's
    arrays (any float type: converted as used). ``first_token_only``: only the first token's output
    is wanted (a class token): the last layer runs its query, projection and MLP for it alone, and
    the result has one token."""
    shape = x.shape
    *lead, length, width = shape
    head = width // heads
    x = x.reshape(-1, width)  # the linear layers as one product over every token of the batch

    def a(name: str) -> np.ndarray:
        return np.asarray(w[name], dtype=np.float32)

    def split(t: np.ndarray) -> np.ndarray:  # (tokens, width) -> (..., heads, length, head)
        return np.swapaxes(t.reshape(*lead, length, heads, head), -2, -3)

    for i in range(layers):
        p = f"{i}."
        h = layer_norm(x, w, p + "ln_1", eps)
        qkv = h @ a(p + "in_proj.weight") + a(p + "in_proj.bias")
        q, k, v = (split(qkv[:, j * width:(j + 1) * width]) for j in range(3))
        if first_token_only and i == layers - 1:  # every token's key and value, the first one's query
            q = q[..., :1, :]
            x = x.reshape(*lead, length, width)[..., :1, :].reshape(-1, width)
            mask = mask[:1] if mask is not None else None
        scores = q @ np.swapaxes(k, -1, -2) / np.float32(np.sqrt(head))
        if mask is not None:
            scores = scores + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        attention = scores / scores.sum(axis=-1, keepdims=True)
        context = np.swapaxes(attention @ v, -2, -3).reshape(-1, width)
        x = x + context @ a(p + "out_proj.weight") + a(p + "out_proj.bias")
        h = layer_norm(x, w, p + "ln_2", eps)
        h = h @ a(p + "c_fc.weight") + a(p + "c_fc.bias")
        h = h * _sigmoid(1.702 * h) if act == "QuickGELU" else _gelu(h)
        x = x + h @ a(p + "c_proj.weight") + a(p + "c_proj.bias")
    return x.reshape(*lead, -1, width)


def indexing_text_side(model_id: str, precision: str = "auto"):
    """What an indexing encoder built from exports (no open_clip model in hand) embeds texts with (the
    tag vocabulary, once per model): the exported tower searches by words run, else, for a model
    without one, the full encoder."""
    tower = load(model_id)
    if tower is None:
        from photoseek.encoders.factory import load_encoder

        return load_encoder(model_id, precision=precision)
    return tower


def load(model_id: str) -> ClipTextTower | None:
    """The exported text tower of ``model_id``, or None when there is none for its weights as they are now."""
    return load_export(path_for(model_id), ClipTextTower, model_id, what="text tower")


def load_export(path: Path | None, tower, model_id: str, *, what: str):
    """``tower(model_id, path)`` for an export at ``path``; None when there is none (or it is damaged)."""
    try:
        if not complete(path):
            return None
        return tower(model_id, path)
    except Exception as exc:  # noqa: BLE001 - a damaged cache file costs speed, never the search
        log.warning("ignoring the saved %s of %s: %s", what, model_id, exc)
        return None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x: np.ndarray) -> np.ndarray:
    from photoseek.encoders.minilm import _gelu as gelu

    return gelu(x)


# -- CLIP's tokenizer (openai/CLIP's SimpleTokenizer, as open_clip ships it) -------------------------


def _bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it (and torch)
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


@lru_cache()
def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


_PLAIN = re.compile(r"[ -%'-~]*")  # printable ASCII but "&"
_PLAIN_PATTERN = re.compile(r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+""",
                            re.IGNORECASE | re.ASCII)
USED_MERGES = 49152 - 256 - 2  # CLIP uses the first merges of the file's 262,000 ("a b" lines, best first)


class Tokenizer:
    """CLIP's byte-level BPE: ``encode(text)`` -> token ids from start- to end-of-text, truncated to
    the context length as open_clip does (the end-of-text token kept last)."""

    def __init__(self, clean: str, context_length: int, merges: Path | None = None):
        raw = merges.read_bytes() if merges is not None else gzip.open(_bpe_path()).read()
        merges = raw.decode("utf-8").split("\n", USED_MERGES + 1)[1:USED_MERGES + 1]
        vocab = list(_bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab] + [m.replace(" ", "") for m in merges]
        vocab += ["<start_of_text>", "<end_of_text>"]
        # dict(zip()) builds in C: a tenth of the time of comprehensions over the 49,000 entries, paid by
        # every terminal search. Ranks are keyed by the merge's own line, "first second".
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.sot, self.eot = self.encoder["<start_of_text>"], self.encoder["<end_of_text>"]
        self.clean, self.context_length = clean, context_length
        self._pattern = None
        self.cache = {t: t for t in ("<start_of_text>", "<end_of_text>")}  # typed in a query: the special tokens

    @property
    def pattern(self):
        """CLIP's pre-tokenising pattern (letters, digits, other runs), from the ``regex`` module for
        its Unicode classes."""
        if self._pattern is None:
            import regex

            self._pattern = regex.compile(r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|"""
                                          r"""[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
        return self._pattern

    def _bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = set(zip(word, word[1:]))
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(f"{pair[0]} {pair[1]}", float("inf")))
            first, second = bigram
            if f"{first} {second}" not in self.bpe_ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = set(zip(word, word[1:]))
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        plain = _PLAIN.fullmatch(text) is not None
        if not plain:  # ftfy leaves printable ASCII without entities as it is: skip its import
            import ftfy

            text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        text = " ".join(text.split()).strip()
        if self.clean == "lower":
            text = text.lower()
        byte_encoder = _bytes_to_unicode()
        ids: list[int] = []
        # In printable ASCII the Unicode classes are [a-z] and [0-9]: the standard library's re splits
        # such a text exactly as CLIP's pattern does, without importing the regex module.
        for token in (_PLAIN_PATTERN if plain else self.pattern).findall(text):
            token = "".join(byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(token).split(" "))
        ids = [self.sot, *ids][: self.context_length - 1]
        return [*ids, self.eot]
