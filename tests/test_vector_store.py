"""The vector index: exact for small collections, clustered (IVF) for large ones."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from photoseek.store import IndexFiles, VectorStore, clusters_for, new_ivf_index

from helpers import generation

DIM = 64


def clustered(n: int, clusters: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight groups, as photo embeddings are (bursts, events, subjects)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    points = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def exact_top(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    return [int(ids[i]) for i in np.argsort(-(vectors @ query), kind="stable")[:k]]


@pytest.fixture(scope="module")
def large():
    vectors = clustered(20_000, clusters=300)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    store = VectorStore(DIM, new_ivf_index(DIM, vectors, len(vectors)))
    store.add(ids, vectors)
    return store, ids, vectors


def test_approximate_search_finds_nearly_every_exact_result_with_exact_scores(large):
    store, ids, vectors = large
    assert store.approximate and store.index.nlist == clusters_for(20_000)
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(len(vectors), 40, replace=False)] + 0.3 * rng.standard_normal((40, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    found = total = 0
    for query in queries:
        scores, got = store.search(query, 24)
        want = exact_top(vectors, ids, query, 24)
        found += len(set(got[0].tolist()) & set(want))
        total += len(want)
        np.testing.assert_allclose(scores[0], vectors[got[0] - 1] @ query, atol=2e-3)
    assert found / total >= 0.95


def test_a_deep_page_is_filled_even_beyond_the_nearest_clusters(large):
    store, _, vectors = large
    _, got = store.search(vectors[0], 6_000)  # more than the probed lists hold
    assert (got[0] >= 0).all() and len(set(got[0].tolist())) == 6_000


def test_removed_photos_are_never_returned_and_kept_ones_read_back(large):
    _, ids, vectors = large
    store = VectorStore(DIM, new_ivf_index(DIM, vectors, len(vectors)))
    store.add(ids, vectors)
    gone = ids[:2_000]
    store.remove(gone.tolist())
    assert len(store) == len(ids) - len(gone)
    for query in vectors[:20]:
        _, got = store.search(query, 50)
        assert not set(got[0].tolist()) & set(gone.tolist())
    assert store.vector(int(gone[0])) is None
    np.testing.assert_allclose(store.vector(int(ids[-1])), vectors[-1], atol=1e-3)


def test_each_kind_fits_its_collection_size(large):
    store, ids, vectors = large
    assert store.fits(exact_up_to=10_000)
    assert not store.fits(exact_up_to=50_000)  # small enough to be exact again
    flat = VectorStore(DIM)
    flat.add(ids, vectors)
    assert flat.fits(exact_up_to=50_000) and not flat.fits(exact_up_to=10_000)
    coarse = VectorStore(DIM, new_ivf_index(DIM, vectors[:400], 400))  # trained when the collection was tiny
    coarse.add(ids, vectors)
    assert not coarse.fits(exact_up_to=10_000)


def test_indexer_switches_to_approximate_search_above_the_limit_and_back(tmp_path, samples_dir, offline_encoder,
                                                                        settings_factory):
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher

    photos = tmp_path / "photos"
    shutil.copytree(samples_dir, photos)
    index_dir = tmp_path / "index"
    settings = settings_factory(index_dir, exact_search_up_to=20)
    summary = Indexer(index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
    assert summary.embedded > 20

    searcher = Searcher(index_dir, settings, encoder=offline_encoder)
    try:
        assert searcher._index.store.approximate and len(searcher) == summary.embedded
        assert searcher.status().search.startswith("approximate: IVF")
        assert searcher.search_text("a cup of coffee", 3)[0].photo.name == "coffee.png"

        for path in sorted(photos.iterdir())[: summary.embedded - 10]:
            if path.name != "coffee.png":
                path.unlink()
        Indexer(index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
        assert searcher.refresh()
        assert not searcher._index.store.approximate and len(searcher) <= 20
        assert searcher.status().search.startswith("exact")
        assert searcher.search_text("a cup of coffee", 3)[0].photo.name == "coffee.png"
    finally:
        searcher.close()
    assert IndexFiles(index_dir).vectors.is_file()


def test_a_run_that_dies_while_clustering_costs_a_rebuild_not_a_wrong_answer(tmp_path, samples_dir, offline_encoder,
                                                                            settings_factory, monkeypatch):
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher

    photos = tmp_path / "photos"
    shutil.copytree(samples_dir, photos)
    index_dir = tmp_path / "index"
    exact = settings_factory(index_dir)
    Indexer(index_dir, exact, show_progress=False).run([photos], encoder=offline_encoder)
    (photos / "coffee.png").rename(photos / "coffee-moved.png")
    (photos / "black_cat.jpg").unlink()

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # the process dies after its last commit, before the vector file is written

    monkeypatch.setattr(VectorStore, "refit", killed)
    clustered = settings_factory(index_dir, exact_search_up_to=20)
    with pytest.raises(KeyboardInterrupt):
        Indexer(index_dir, clustered, show_progress=False).run([photos], encoder=offline_encoder)
    monkeypatch.undo()

    searcher = Searcher(index_dir, clustered, encoder=offline_encoder)  # the file is stale: rebuilt in memory
    try:
        hits = searcher.search_text("a cup of coffee", 50)
        assert hits[0].photo.name == "coffee-moved.png"
        assert "black_cat.jpg" not in {h.photo.name for h in hits}
        assert searcher._index.store.approximate  # rebuilt as what the database's size calls for
    finally:
        searcher.close()
    Indexer(index_dir, clustered, show_progress=False).run([photos], encoder=offline_encoder)
    assert VectorStore.load(IndexFiles(index_dir).vectors, dim=offline_encoder.dim,
                            generation=generation(index_dir)).approximate


def test_status_reads_the_kind_of_index_from_the_file_header_alone(large, tmp_path):
    """`photoseek status` describes the vector index without loading it: the header must say the same
    as the loaded index does, and nothing for a file of another generation (it will be rebuilt)."""
    store, ids, vectors = large
    flat = VectorStore(DIM)
    flat.add(ids[:100], vectors[:100])
    for kind, s in (("ivf", store), ("flat", flat)):
        path = tmp_path / f"{kind}.faiss"
        s.save(path, generation=7)
        assert VectorStore.describe_file(path, generation=7, dim=DIM) == s.describe()
        assert VectorStore.describe_file(path, generation=8, dim=DIM) is None
    assert "approximate: IVF" in store.describe()
    assert VectorStore.describe_file(tmp_path / "missing.faiss", generation=7, dim=DIM) is None


# -- IVF-PQ: codes in memory, re-ranked on memory-mapped float16 vectors -----------------------------

from contextlib import contextmanager

import faiss

from photoseek.store import RERANK_FACTOR, load_vectors, new_pq_index, pq_code_bytes


def photo_like_queries(vectors: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """"More like this" queries: a photo's vector, moved a little."""
    rng = np.random.default_rng(seed)
    queries = vectors[rng.choice(len(vectors), n, replace=False)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def recall(store: VectorStore, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    _, got = store.search(queries, k)
    want = [exact_top(vectors, ids, q, k) for q in queries]
    return float(np.mean([len(set(g.tolist()) & set(w)) / k for g, w in zip(got, want)]))


@pytest.fixture(scope="module")
def pq_trained(large):
    _, _, vectors = large
    return new_pq_index(DIM, vectors, len(vectors))  # trained once; each test adds to a copy


def pq_store(trained, ids, vectors) -> VectorStore:
    store = VectorStore(DIM, faiss.clone_index(trained))
    store.add(ids, vectors)
    return store


def test_pq_search_re_ranked_on_float16_vectors_finds_the_exact_top_results(large, pq_trained):
    _, ids, vectors = large
    store = pq_store(pq_trained, ids, vectors)
    assert store.quantized and store.approximate and store.index.code_size == pq_code_bytes(DIM) == DIM // 8
    assert store.describe().startswith(f"approximate: IVF-PQ, {clusters_for(len(ids))} clusters")
    assert "re-ranked" in store.describe()
    queries = photo_like_queries(vectors, 60)
    reranked = recall(store, vectors, ids, queries)
    store.rerank_factor = 0  # the PQ scores as they are
    raw = recall(store, vectors, ids, queries)
    assert reranked >= 0.9 and reranked >= raw + 0.2, (reranked, raw)
    store.rerank_factor = RERANK_FACTOR
    scores, got = store.search(queries[:5], 10)
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", vectors[got - 1], queries[:5]), atol=2e-3)
    assert (np.diff(scores, axis=1) <= 0).all()  # best first


def test_pq_filters_return_only_allowed_photos_and_their_best(large, pq_trained):
    _, ids, vectors = large
    store = pq_store(pq_trained, ids, vectors)
    queries = photo_like_queries(vectors, 20, seed=3)
    for allowed in (ids[::7], ids[::40][:300]):  # a bitmap selector, a batch selector (and more lists visited)
        found = total = 0
        for query in queries:
            _, got = store.search(query, 10, allowed=allowed)
            assert (got[0] >= 0).all() and set(got[0].tolist()) <= set(allowed.tolist())
            want = exact_top(vectors[allowed - 1], allowed, query, 10)
            found += len(set(got[0].tolist()) & set(want))
            total += 10
        assert found / total >= 0.9
    _, got = store.search(queries[0], 10, allowed=ids[:3])
    assert sorted(got[0].tolist()) == ids[:3].tolist()


def test_pq_store_saves_and_loads_with_vectors_read_from_the_mapped_file(large, pq_trained, tmp_path):
    _, ids, vectors = large
    store = pq_store(pq_trained, ids, vectors)
    path = tmp_path / "vectors.faiss"
    store.save(path, generation=3)
    assert (tmp_path / "vectors.f16").stat().st_size == 4096 + len(ids) * DIM * 2 + len(ids) * 8
    assert not store.half.pending  # saved rows are read from the file now
    loaded = VectorStore.load(path, dim=DIM, generation=3)
    assert loaded is not None and loaded.quantized and len(loaded) == len(ids)
    assert VectorStore.describe_file(path, generation=3, dim=DIM) == loaded.describe() == store.describe()
    queries = photo_like_queries(vectors, 10, seed=5)
    for a, b in zip(store.search(queries, 10), loaded.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    got, held = loaded.vectors(np.array([5, 999_999, 17]))
    assert held.tolist() == [5, 17]
    np.testing.assert_allclose(got, vectors[[4, 16]], atol=1e-3)
    assert loaded.vector(999_999) is None
    np.testing.assert_allclose(loaded.vector(int(ids[-1])), vectors[-1], atol=1e-3)
    # Saved again with nothing changed: the float16 file is kept as it is, not written again.
    inode = (tmp_path / "vectors.f16").stat().st_ino
    loaded.save(path, generation=4)
    assert (tmp_path / "vectors.f16").stat().st_ino == inode
    assert VectorStore.load(path, dim=DIM, generation=4) is not None


def test_a_wrong_or_damaged_float16_file_is_never_used(large, pq_trained, tmp_path):
    _, ids, vectors = large
    store = pq_store(pq_trained, ids[:5_000], vectors[:5_000])
    path, half = tmp_path / "vectors.faiss", tmp_path / "vectors.f16"
    store.save(path, generation=1)
    first = path.read_bytes()
    assert VectorStore.load(path, dim=DIM, generation=2) is None  # another generation
    # A crash between the two writes: the float16 file of the next save beside the vector file of this one.
    store.remove([1, 2, 3])
    store.save(path, generation=2)
    path.write_bytes(first)
    assert VectorStore.load(path, dim=DIM, generation=1) is None
    store.save(path, generation=2)
    whole = half.read_bytes()
    half.write_bytes(whole[:-100])  # truncated
    assert VectorStore.load(path, dim=DIM, generation=2) is None
    half.unlink()
    assert VectorStore.load(path, dim=DIM, generation=2) is None
    corrupt = bytearray(whole)
    corrupt[20] ^= 0xFF  # its token
    half.write_bytes(bytes(corrupt))
    assert VectorStore.load(path, dim=DIM, generation=2) is None
    half.write_bytes(whole)
    assert VectorStore.load(path, dim=DIM, generation=2) is not None


def test_pq_remove_and_add_keep_codes_and_vectors_together(large, pq_trained, tmp_path):
    _, ids, vectors = large
    store = pq_store(pq_trained, ids[:10_000], vectors[:10_000])
    path = tmp_path / "vectors.faiss"
    store.save(path, generation=1)  # rows now in the file; later additions are held until the next save
    gone = ids[:1_000]
    store.remove(gone.tolist())
    store.add(ids[10_000:12_000], vectors[10_000:12_000])  # as an indexer run adds its batches
    store.add(ids[12_000:13_000], vectors[12_000:13_000])
    kept = np.concatenate([ids[1_000:13_000]])
    assert len(store) == len(kept) == store.half.live
    queries = photo_like_queries(vectors[10_000:13_000], 20, seed=7)
    for s in (store, None):
        if s is None:
            store.save(path, generation=2)
            s = VectorStore.load(path, dim=DIM, generation=2)
        assert recall(s, vectors[kept - 1], kept, queries) >= 0.9
        for query in queries:
            _, got = s.search(query, 30)
            assert not set(got[0].tolist()) & set(gone.tolist())
        assert s.vector(int(gone[0])) is None
        np.testing.assert_allclose(s.vector(12_500), vectors[12_499], atol=1e-3)
    assert (tmp_path / "vectors.f16").stat().st_size == 4096 + len(kept) * (DIM * 2 + 8)  # removed rows dropped


class FakeCatalogue:
    """What VectorStore.from_database reads of a catalogue, over arrays."""

    def __init__(self, ids, vectors, path):
        self.ids, self.vecs, self.path = ids, vectors, path
        self.engine = self

    @contextmanager
    def connect(self):
        yield None

    def photo_ids(self, conn):
        return self.ids

    def photo_count(self, conn):
        return len(self.ids)

    def embeddings_of(self, conn, ids):
        return ids, self.vecs[np.searchsorted(self.ids, ids)]

    def iter_embeddings(self, conn, batch):
        for start in range(0, len(self.ids), batch):
            yield self.ids[start:start + batch], self.vecs[start:start + batch]


def test_above_pq_above_the_catalogue_is_rebuilt_as_ivf_pq_and_a_damaged_file_rebuilt(large, tmp_path, monkeypatch):
    _, ids, vectors = large
    cat = FakeCatalogue(ids[:12_000], vectors[:12_000], tmp_path / "photoseek.db")
    files = IndexFiles(tmp_path)
    store = load_vectors(files, cat, dim=DIM, generation=4, persist=True, exact_up_to=1_000, pq_above=5_000)
    assert store.quantized and store.fits(1_000, 5_000) and files.vectors.is_file()
    assert not store.fits(1_000, 20_000) and not store.fits(20_000, 5_000)
    assert VectorStore.load(files.vectors, dim=DIM, generation=4).quantized
    half = tmp_path / "vectors.f16"
    half.write_bytes(half.read_bytes()[:-DIM])  # cut short
    rebuilt = load_vectors(files, cat, dim=DIM, generation=4, persist=True, exact_up_to=1_000, pq_above=5_000)
    assert rebuilt.quantized and len(rebuilt) == 12_000
    assert VectorStore.load(files.vectors, dim=DIM, generation=4) is not None  # written again, whole
    queries = photo_like_queries(vectors[:12_000], 20, seed=9)
    assert recall(rebuilt, vectors[:12_000], ids[:12_000], queries) >= 0.9
    # Below pq_above the same vectors go back to the float16 IVF kind, and the float16 file goes.
    ivf = rebuilt.refit(cat, 1_000, 20_000)
    assert ivf.approximate and not ivf.quantized
    ivf.save(files.vectors, 5)
    assert not half.exists()
    monkeypatch.setenv("PHOTOSEEK_PQ_ABOVE", "5000")  # the setting, when the caller names no limit
    assert not ivf.fits(1_000) and rebuilt.fits(1_000)


def test_indexer_and_searcher_use_ivf_pq_above_the_setting(tmp_path, samples_dir, offline_encoder, settings_factory,
                                                            monkeypatch):
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher

    monkeypatch.setenv("PHOTOSEEK_PQ_ABOVE", "15")
    photos = tmp_path / "photos"
    shutil.copytree(samples_dir, photos)
    index_dir = tmp_path / "index"
    settings = settings_factory(index_dir, exact_search_up_to=10)
    summary = Indexer(index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
    assert summary.embedded > 15 and (index_dir / "vectors.f16").is_file()
    searcher = Searcher(index_dir, settings, encoder=offline_encoder)
    try:
        assert searcher.status().search.startswith("approximate: IVF-PQ")
        assert searcher.search_text("a cup of coffee", 3)[0].photo.name == "coffee.png"
    finally:
        searcher.close()
    assert VectorStore.load(IndexFiles(index_dir).vectors, dim=offline_encoder.dim,
                            generation=generation(index_dir)).quantized


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_a_searcher_reads_the_vectors_from_the_file_mapped_and_answers_the_same(large, tmp_path, kind):
    """Searchers load the vector file mapped (no copy: it opens at once at any size); the answers are
    those of the loaded copy, the store refuses changes, and a file replaced meanwhile (as an indexer
    replaces it) leaves the mapped one answering from the old file."""
    _, ids, vectors = large
    if kind == "exact":
        store = VectorStore(DIM)
    else:
        store = VectorStore(DIM, new_ivf_index(DIM, vectors, len(vectors)))
    store.add(ids, vectors)
    path = tmp_path / "vectors.faiss"
    store.save(path, generation=5)
    copied = VectorStore.load(path, dim=DIM, generation=5)
    mapped = VectorStore.load(path, dim=DIM, generation=5, mapped=True)
    assert mapped.approximate == (kind == "ivf") and len(mapped) == len(ids)
    queries = clustered(8, clusters=3, seed=9)
    for a, b in zip(copied.search(queries, 10), mapped.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError, match="read-only"):
        mapped.add(ids[:1], vectors[:1])
    with pytest.raises(RuntimeError, match="read-only"):
        mapped.remove([1])
    VectorStore(DIM).save(path, generation=6)  # replaced whole, by rename
    for a, b in zip(copied.search(queries, 10), mapped.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    assert VectorStore.load(path, dim=DIM, generation=5, mapped=True) is None  # the new file is another generation
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])  # truncated: never used
    assert VectorStore.load(path, dim=DIM, generation=6, mapped=True) is None
    path.write_bytes(b"")
    assert VectorStore.load(path, dim=DIM, generation=6, mapped=True) is None
