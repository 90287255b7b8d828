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
        assert searcher._vectors.approximate and len(searcher) == summary.embedded
        assert searcher.status().search.startswith("approximate: IVF")
        assert searcher.search_text("a cup of coffee", 3)[0].photo.name == "coffee.png"

        for path in sorted(photos.iterdir())[: summary.embedded - 10]:
            if path.name != "coffee.png":
                path.unlink()
        Indexer(index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
        assert searcher.refresh()
        assert not searcher._vectors.approximate and len(searcher) <= 20
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

    def killed(self, engine, exact_up_to):
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
        assert searcher._vectors.approximate  # rebuilt as what the database's size calls for
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
