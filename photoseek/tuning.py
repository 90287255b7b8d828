"""Contrastive fine-tuning of small adapters on a person's own captions (issue 13): the pure logic.

Two low-rank residual projections sit on the frozen towers, ``W = I + B A`` (rank ``r``), one on the
image side and one on the text side, with a learnable temperature. ``B`` starts at zero, so an
untrained adapter is exactly the identity. They are trained with CLIP's symmetric InfoNCE loss over
in-batch negatives (plus optional hard negatives, feedback's "wrong" marks: a text that must *not* match
an image, an extra negative on both sides of the loss) on stored
image embeddings (no photo is decoded) and the index encoder's text embeddings of the captions.

Invariants:

* The score of a photo for a text query is ``<W_i x, normalise(W_t t)>``, the image side **not**
  renormalised. That bilinear form folds into the query: ``<x, W_i^T normalise(W_t t)>``. So applying
  an adapter changes only the query vector (:meth:`Adapter.fold_query`): the stored vectors, the FAISS
  file and PostgreSQL's table stay the pretrained ones, which makes applying and undoing atomic (one
  file replaced), instant, and the same on both back ends. Photo-to-photo searches ("more like this",
  an uploaded photo) are untouched: the adapter is about words.
* Held-out pairs are split by photo, never by caption, and the split and the training are
  deterministic for a seed.
* Nothing here reads or writes the index; :mod:`photoseek.tune` does.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch  # imported when training, never by a search

RANK = 16
EPOCHS = 200
PATIENCE = 40  # epochs without a better held-out score before training stops
BATCH = 256
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-2  # on the low-rank factors: pulls the adapter back toward the identity
HOLDOUT_SHARE = 0.25
RECALL_AT = 10
INITIAL_LOGIT_SCALE = float(np.log(1 / 0.07))  # CLIP's initial temperature
MAX_LOGIT_SCALE = float(np.log(100.0))  # CLIP's clamp


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


@dataclass
class Adapter:
    """The trained projections (float32 NumPy) and what they were trained on."""

    image_a: np.ndarray  # (r, d)
    image_b: np.ndarray  # (d, r)
    text_a: np.ndarray
    text_b: np.ndarray
    logit_scale: float
    summary: dict = field(default_factory=dict)

    @classmethod
    def identity(cls, dim: int, rank: int = RANK, seed: int = 0) -> Adapter:
        """The untrained adapter: A random, B zero, so W = I exactly."""
        rng = np.random.default_rng(seed)
        # Rows of A near unit length: A x is a few random projections of the unit vector x, each small,
        # so an optimiser step on B moves every vector a little (larger A: one step wrecks the space).
        a = lambda: (rng.standard_normal((rank, dim)) / np.sqrt(dim)).astype(np.float32)  # noqa: E731
        zero = np.zeros((dim, rank), np.float32)
        return cls(a(), zero.copy(), a(), zero.copy(), INITIAL_LOGIT_SCALE)

    @property
    def dim(self) -> int:
        return int(self.image_a.shape[1])

    def project_text(self, texts: np.ndarray) -> np.ndarray:
        """normalise(W_t t) for rows of ``texts``."""
        t = np.atleast_2d(np.asarray(texts, np.float32))
        return _unit(t + (t @ self.text_a.T) @ self.text_b.T).astype(np.float32)

    def project_images(self, images: np.ndarray) -> np.ndarray:
        """W_i x for rows of ``images`` (not renormalised: see the module's invariants)."""
        x = np.atleast_2d(np.asarray(images, np.float32))
        return (x + (x @ self.image_a.T) @ self.image_b.T).astype(np.float32)

    def fold_query(self, text_vector: np.ndarray) -> np.ndarray:
        """The unit query vector q with <x, q> proportional to <W_i x, normalise(W_t t)> for every x:
        q = normalise(W_i^T normalise(W_t t)). Ranks exactly as the trained score does."""
        u = self.project_text(text_vector)
        q = u + (u @ self.image_b) @ self.image_a
        out = _unit(q).astype(np.float32)
        return out[0] if np.ndim(text_vector) == 1 else out

    # -- a file of its own -------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, image_a=self.image_a, image_b=self.image_b, text_a=self.text_a, text_b=self.text_b,
                 logit_scale=np.float32(self.logit_scale), summary=np.frombuffer(
                     json.dumps(self.summary).encode(), dtype=np.uint8))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Adapter:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            return cls(data["image_a"], data["image_b"], data["text_a"], data["text_b"], float(data["logit_scale"]),
                       json.loads(bytes(data["summary"]).decode()))


# -- the loss ----------------------------------------------------------------------------------


def info_nce(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
             hard: torch.Tensor | None = None, hard_owner: torch.Tensor | None = None,
             hard_images: torch.Tensor | None = None, hard_image_owner: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: row i of ``image`` matches row i of ``text``; every other row is a
    negative. mean(CE(s I T^T, diag), CE(s T I^T, diag)) with s = exp(logit_scale).

    ``hard`` (m, d): texts that must not match the image at ``hard_owner`` (m,): each is an extra
    negative in its owner's image->text row only. ``hard_images`` (m', d): images that must not match
    the text at ``hard_image_owner`` (m',): each an extra negative in that text->image row only. (A
    "wrong" feedback mark is both: its query must not find its photo, and its photo must not have it.)"""
    import torch
    import torch.nn.functional as F

    scale = logit_scale.exp()
    logits = scale * image @ text.T
    target = torch.arange(len(image))
    image_rows = logits
    if hard is not None and len(hard):
        extra = scale * image @ hard.T  # (n, m)
        mine = hard_owner.unsqueeze(0) == torch.arange(len(image)).unsqueeze(1)
        image_rows = torch.cat([logits, extra.masked_fill(~mine, float("-inf"))], dim=1)
    text_rows = logits.T
    if hard_images is not None and len(hard_images):
        extra = scale * text @ hard_images.T  # (n, m')
        mine = hard_image_owner.unsqueeze(0) == torch.arange(len(text)).unsqueeze(1)
        text_rows = torch.cat([text_rows, extra.masked_fill(~mine, float("-inf"))], dim=1)
    return (F.cross_entropy(image_rows, target) + F.cross_entropy(text_rows, target)) / 2


# -- held-out scoring ---------------------------------------------------------------------------


def retrieval(queries: np.ndarray, targets: np.ndarray, photos: np.ndarray, photo_ids: np.ndarray,
              k: int = RECALL_AT) -> tuple[float, float]:
    """(recall@k, MRR) of captions ``queries`` (already folded query vectors) finding their photo
    ``targets`` (ids) among all ``photos`` (vectors, ids ``photo_ids``)."""
    if not len(queries):
        return 0.0, 0.0
    scores = queries @ photos.T  # (q, n)
    column = {int(p): i for i, p in enumerate(photo_ids)}
    own = scores[np.arange(len(queries)), [column[int(t)] for t in targets]]
    ranks = (scores > own[:, None]).sum(axis=1)  # 0: first
    return float((ranks < k).mean()), float((1.0 / (ranks + 1)).mean())


TRAIN, VALIDATION, TEST = 0, 1, 2


def split_by_photo(photo_of_pair: np.ndarray, captions: list[str] | None = None, share: float = HOLDOUT_SHARE,
                   seed: int = 0) -> np.ndarray:
    """The role of each pair: TRAIN, VALIDATION (early stopping) or TEST (the figure reported and the
    decision to apply). All the captions of a photo share its role; about ``share`` of the photos are
    held out (at least two), half for validation, half for test. The test photos are never used to
    choose anything: picking the best epoch on them would find "gains" in noise.

    With ``captions`` (one per pair), a caption shared by three or more photos ("Rex") has photos in
    each role, so held-out recall asks what a tune is for: whether a word learnt on some photos finds
    another photo of the same subject. The rest are drawn at random."""
    photos = np.unique(photo_of_pair)
    rng = np.random.default_rng(seed)
    order = [int(p) for p in rng.permutation(photos)]
    wanted = max(2, round(share * len(photos)))
    role: dict[int, int] = {}

    def hold(members: list[int]) -> None:
        count = {r: sum(1 for v in role.values() if v == r) for r in (VALIDATION, TEST)}
        first = VALIDATION if count[VALIDATION] <= count[TEST] else TEST
        for j, p in enumerate(members):
            role[p] = first if j % 2 == 0 else VALIDATION + TEST - first

    if captions is not None:
        photos_of: dict[str, list[int]] = {}
        for p, c in zip(photo_of_pair, captions):
            photos_of.setdefault(c.casefold(), []).append(int(p))
        rank = {p: i for i, p in enumerate(order)}
        for caption in sorted(photos_of, key=lambda c: (-len(set(photos_of[c])), c)):
            members = sorted(set(photos_of[caption]), key=rank.__getitem__)
            if len(members) < 3 or any(role.get(m) is not None for m in members) or len(role) + 2 > wanted:
                continue
            hold(members[:max(2, round(share * len(members)))])  # the rest (at least one) is learnt from
    hold([p for p in order if p not in role][:max(0, wanted - len(role))])
    return np.array([role.get(int(p), TRAIN) for p in photo_of_pair], np.int8)


@dataclass
class TrainReport:
    pairs: int
    photos: int
    train_pairs: int
    held_out_pairs: int
    held_out_photos: int
    test_photos: int  # of the held-out photos, those the recall figures are measured on (the rest chose the epoch)
    recall_before: float
    recall_after: float
    mrr_before: float
    mrr_after: float
    epochs: int
    seconds: float
    k: int = RECALL_AT

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class HardNegatives:
    """Texts that must not match photos (feedback's "wrong" marks): row k says ``captions[k]`` (text
    vector ``texts[k]``) is wrong for the photo ``photo_ids[k]`` (stored vector ``images[k]``)."""

    photo_ids: np.ndarray  # (m,)
    images: np.ndarray  # (m, d)
    texts: np.ndarray  # (m, d)
    captions: list[str]

    def __len__(self) -> int:
        return len(self.photo_ids)


def _batch_negatives(hard: HardNegatives, batch_photos: np.ndarray, batch_captions: list[str]):
    """The hard negatives that concern a batch, as (text rows, their image-row owners, image rows, their
    text-row owners) indices into ``hard``: a wrong text for a photo in the batch is an extra negative in
    that photo's image->text row; a wrong photo for a caption in the batch, in that caption's text->image row."""
    by_photo: dict[int, list[int]] = {}
    by_caption: dict[str, list[int]] = {}
    for i, p in enumerate(batch_photos):
        by_photo.setdefault(int(p), []).append(i)
    for j, c in enumerate(batch_captions):
        by_caption.setdefault(c.casefold(), []).append(j)
    texts, text_owner, images, image_owner = [], [], [], []
    for k in range(len(hard)):
        for i in by_photo.get(int(hard.photo_ids[k]), ()):
            texts.append(k)
            text_owner.append(i)
        for j in by_caption.get(hard.captions[k].casefold(), ()):
            images.append(k)
            image_owner.append(j)
    return texts, text_owner, images, image_owner


def train(image_vectors: np.ndarray, text_vectors: np.ndarray, photo_of_pair: np.ndarray,
          all_photos: np.ndarray, all_ids: np.ndarray, *, captions: list[str] | None = None, seed: int = 0,
          rank: int = RANK, epochs: int = EPOCHS, roles: np.ndarray | None = None,
          hard: HardNegatives | None = None) -> tuple[Adapter, TrainReport]:
    """Train an adapter on pairs (row i of ``image_vectors`` is the photo ``photo_of_pair[i]``, captioned
    by row i of ``text_vectors``), holding out pairs by photo (``roles``, default :func:`split_by_photo`),
    keep the epoch with the best validation (recall@k, MRR) over all ``all_photos``, and report
    recall before/after on the test photos. ``captions``: the pairs' captions, for the split (and, with
    ``hard``, to find the texts that hard negatives concern). ``hard``: feedback's "wrong" marks, extra
    negatives in the loss (:func:`info_nce`); a held-out photo's are left out with it."""
    import torch

    started = time.monotonic()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dim = image_vectors.shape[1]
    roles = split_by_photo(photo_of_pair, captions, seed=seed) if roles is None else roles
    held, val, test = roles != TRAIN, roles == VALIDATION, roles == TEST
    adapter = Adapter.identity(dim, rank, seed)
    params = {name: torch.nn.Parameter(torch.from_numpy(getattr(adapter, name).copy()))
              for name in ("image_a", "image_b", "text_a", "text_b")}
    logit_scale = torch.nn.Parameter(torch.tensor(adapter.logit_scale))
    optimiser = torch.optim.AdamW([{"params": list(params.values()), "weight_decay": WEIGHT_DECAY},
                                   {"params": [logit_scale], "weight_decay": 0.0}], lr=LEARNING_RATE)
    x_train = torch.from_numpy(np.ascontiguousarray(image_vectors[~held], np.float32))
    t_train = torch.from_numpy(np.ascontiguousarray(text_vectors[~held], np.float32))
    p_train = photo_of_pair[~held]
    c_train = [c for c, h in zip(captions or [""] * len(photo_of_pair), held) if not h]
    if hard is not None and len(hard):
        keep = ~np.isin(hard.photo_ids, photo_of_pair[held])  # a held-out photo's marks would leak into training
        hard = HardNegatives(hard.photo_ids[keep], hard.images[keep], hard.texts[keep],
                             [c for c, k in zip(hard.captions, keep) if k])
        hard_texts = torch.from_numpy(np.ascontiguousarray(hard.texts, np.float32))
        hard_images = torch.from_numpy(np.ascontiguousarray(hard.images, np.float32))
    else:
        hard = None

    def snapshot() -> Adapter:
        return Adapter(*(params[n].detach().numpy().copy() for n in ("image_a", "image_b", "text_a", "text_b")),
                       float(logit_scale.detach()))

    def score_on(mask: np.ndarray, candidate: Adapter) -> tuple[float, float]:
        return retrieval(candidate.fold_query(text_vectors[mask]), photo_of_pair[mask], all_photos, all_ids)

    best, best_adapter, best_epoch, stale, epoch = score_on(val, adapter), adapter, 0, 0, 0
    by_photo: dict[int, list[int]] = {}
    for i, p in enumerate(p_train):
        by_photo.setdefault(int(p), []).append(i)
    groups = list(by_photo.values())
    for epoch in range(1, epochs + 1):
        # One caption per photo per batch: two captions of one photo in a batch would be each other's negatives.
        chosen = np.array([g[rng.integers(len(g))] for g in groups])
        rng.shuffle(chosen)
        for start in range(0, len(chosen), BATCH):
            rows = torch.from_numpy(chosen[start:start + BATCH])
            if len(rows) < 2:
                continue
            x, t = x_train[rows], t_train[rows]
            xi = x + (x @ params["image_a"].T) @ params["image_b"].T
            ti = t + (t @ params["text_a"].T) @ params["text_b"].T
            ti = ti / ti.norm(dim=1, keepdim=True)
            extra = {}
            if hard is not None:
                picked = chosen[start:start + BATCH]
                texts, text_owner, images, image_owner = _batch_negatives(hard, p_train[picked],
                                                                          [c_train[i] for i in picked])
                if texts:
                    h = hard_texts[texts]
                    h = h + (h @ params["text_a"].T) @ params["text_b"].T
                    extra.update(hard=h / h.norm(dim=1, keepdim=True), hard_owner=torch.tensor(text_owner))
                if images:
                    h = hard_images[images]
                    extra.update(hard_images=h + (h @ params["image_a"].T) @ params["image_b"].T,
                                 hard_image_owner=torch.tensor(image_owner))
            loss = info_nce(xi, ti, logit_scale, **extra)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        score = score_on(val, snapshot())
        if score > best:
            best, best_adapter, best_epoch, stale = score, snapshot(), epoch, 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    before, after = score_on(test, adapter), score_on(test, best_adapter)
    report = TrainReport(
        pairs=len(photo_of_pair), photos=len(np.unique(photo_of_pair)), train_pairs=int((~held).sum()),
        held_out_pairs=int(held.sum()), held_out_photos=len(np.unique(photo_of_pair[held])),
        test_photos=len(np.unique(photo_of_pair[test])),
        recall_before=before[0], recall_after=after[0], mrr_before=before[1], mrr_after=after[1],
        epochs=best_epoch, seconds=round(time.monotonic() - started, 2))
    return best_adapter, report
