"""The indexer end to end on real photos: incremental runs, odd files, locks, models."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from PIL import Image

from sqlalchemy import select, text

import helpers
from photoseek.storage import schema as db
from photoseek.indexer import Indexer, IndexLocked, ModelMismatch
from photoseek.search import Searcher
from photoseek.store import IndexFiles, VectorStore

FEW = ["coffee.png", "rocket.jpg", "guitar.jpg", "sea_turtle.jpg", "bear.jpg", "tent.jpg"]


@pytest.fixture()
def few_photos(tmp_path, samples_dir) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in FEW:
        shutil.copy2(samples_dir / name, folder / name)
    return folder


@pytest.fixture()
def index_few(tmp_path, few_photos, offline_encoder, settings_factory):
    index_dir = tmp_path / "index"
    settings = settings_factory(index_dir, decode_workers=0)

    def run(*roots, **kwargs):
        return Indexer(index_dir, settings, show_progress=False).run(
            list(roots) or [few_photos], encoder=kwargs.pop("encoder", offline_encoder), **kwargs)

    run.index_dir = index_dir
    run.settings = settings
    return run


def _paths(index_dir: Path) -> dict[str, int]:
    engine = helpers.sqlite_engine(IndexFiles(index_dir).database)
    with engine.connect() as conn:
        rows = dict(conn.execute(select(db.ImageRow.path, db.ImageRow.id)).all())
    engine.dispose()
    return rows


def _committed(index_dir: Path) -> tuple[int, dict[int, bytes]]:
    """The database's generation and its embeddings by photo id."""
    engine = helpers.sqlite_engine(IndexFiles(index_dir).database)
    with engine.connect() as conn:
        generation = int(helpers.meta(conn, "generation"))
        rows = dict(conn.execute(select(db.ImageRow.id, db.ImageRow.embedding)).all())
    engine.dispose()
    return generation, rows


def _top(searcher: Searcher, query: str, k: int = 3) -> list[str]:
    return [hit.photo.name for hit in searcher.search_text(query, limit=k)]


def test_first_run_embeds_everything_and_second_run_nothing(index_few, few_photos):
    first = index_few()
    assert (first.added, first.embedded, first.skipped) == (len(FEW), len(FEW), 0)
    second = index_few()
    assert (second.added, second.updated, second.moved, second.removed, second.embedded) == (0, 0, 0, 0, 0)
    assert second.unchanged == len(FEW)


def test_touched_file_is_not_reembedded_but_changed_one_is(index_few, few_photos):
    index_few()
    before = _paths(index_few.index_dir)
    touched = few_photos / "bear.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 5_000_000_000))
    changed = few_photos / "tent.jpg"
    Image.open(changed).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed, quality=80)

    summary = index_few()
    assert summary.embedded == 1 and summary.updated == 1 and summary.added == 0
    after = _paths(index_few.index_dir)
    assert after[str(touched)] == before[str(touched)]  # same row, same vector
    assert after[str(changed)] != before[str(changed)]
    assert index_few().embedded == 0  # the touched file's new mtime was recorded


def test_renamed_file_is_recognised_without_embedding(index_few, few_photos):
    index_few()
    old_id = _paths(index_few.index_dir)[str(few_photos / "rocket.jpg")]
    (few_photos / "sub").mkdir()
    (few_photos / "rocket.jpg").rename(few_photos / "sub" / "launch day.jpg")

    summary = index_few()
    assert (summary.moved, summary.embedded, summary.removed) == (1, 0, 0)
    paths = _paths(index_few.index_dir)
    assert paths[str(few_photos / "sub" / "launch day.jpg")] == old_id
    assert str(few_photos / "rocket.jpg") not in paths


def test_deleted_file_disappears_from_results(index_few, few_photos, offline_encoder):
    index_few()
    searcher = Searcher(index_few.index_dir, index_few.settings, encoder=offline_encoder)
    assert _top(searcher, "a cup of coffee", 1) == ["coffee.png"]
    (few_photos / "coffee.png").unlink()
    summary = index_few()
    assert summary.removed == 1
    assert searcher.refresh()
    assert "coffee.png" not in _top(searcher, "a cup of coffee", 10)
    assert len(searcher) == len(FEW) - 1


def test_rerun_without_folders_rescans_known_roots(index_few, few_photos, tmp_path, samples_dir):
    other = tmp_path / "more"
    other.mkdir()
    shutil.copy2(samples_dir / "puppy.jpg", other)
    index_few(few_photos)
    index_few(other)
    shutil.copy2(samples_dir / "snow.jpg", other)
    (few_photos / "bear.jpg").unlink()
    summary = Indexer(index_few.index_dir, index_few.settings, show_progress=False).run([])
    assert (summary.added, summary.removed) == (1, 1)
    assert len(_paths(index_few.index_dir)) == len(FEW) + 1


def test_hidden_and_excluded_are_left_out(index_few, few_photos, samples_dir):
    (few_photos / ".cache").mkdir()
    shutil.copy2(samples_dir / "puppy.jpg", few_photos / ".cache" / "puppy.jpg")
    (few_photos / "raw").mkdir()
    shutil.copy2(samples_dir / "snow.jpg", few_photos / "raw" / "snow.jpg")
    summary = index_few(exclude=["raw"])
    assert summary.added == len(FEW)
    summary = index_few(include_hidden=True, exclude=["raw"])
    assert summary.added == 1


def test_float32_vector_file_of_an_older_photoseek_is_rebuilt(index_few, offline_encoder):
    """Indexes written before vectors were stored as float16 keep working: the old file is
    not used as it is, searches give the same answers, and the next indexer run rewrites it."""
    import faiss

    index_few()
    files = IndexFiles(index_few.index_dir)
    generation, rows = _committed(index_few.index_dir)
    searcher = Searcher(index_few.index_dir, index_few.settings, encoder=offline_encoder)
    before = [(h.photo.id, h.score) for h in searcher.search_text("a cat", 5)]
    searcher.close()

    old = VectorStore(384, faiss.IndexIDMap2(faiss.IndexFlatIP(384)))
    old.add(np.array(list(rows)), np.stack([np.asarray(b) for b in rows.values()]))
    old.save(files.vectors, generation)
    assert VectorStore.load(files.vectors, dim=384, generation=generation) is None  # not taken as current

    searcher = Searcher(index_few.index_dir, index_few.settings, encoder=offline_encoder)
    after = [(h.photo.id, h.score) for h in searcher.search_text("a cat", 5)]
    assert [i for i, _ in after] == [i for i, _ in before]
    assert np.allclose([s for _, s in after], [s for _, s in before], atol=1e-4)
    searcher.close()
    summary = index_few()
    assert summary.embedded == 0
    generation, _ = _committed(index_few.index_dir)
    store = VectorStore.load(files.vectors, dim=384, generation=generation)
    assert store is not None and len(store) == len(rows)


def test_vector_file_matches_database(index_few):
    index_few()
    generation, rows = _committed(index_few.index_dir)
    store = VectorStore.load(IndexFiles(index_few.index_dir).vectors, dim=384, generation=generation)
    assert store is not None and len(store) == len(rows)
    for image_id, blob in rows.items():
        # The file holds the database's vectors rounded to float16 (see store.new_flat_index); FAISS's
        # own conversion may round a value the other way from NumPy's (seen on AVX2 CPUs): one step.
        rounded = np.asarray(blob).astype(np.float16)
        step = np.abs(np.nextafter(rounded, np.float16(np.inf)) - rounded).astype(np.float32)
        assert np.all(np.abs(store.vector(image_id) - rounded.astype(np.float32)) <= step)


def test_stale_vector_file_is_rebuilt_from_database(index_few, offline_encoder):
    index_few()
    IndexFiles(index_few.index_dir).vectors.write_bytes(b"garbage")
    searcher = Searcher(index_few.index_dir, index_few.settings, encoder=offline_encoder)
    assert len(searcher) == len(FEW)
    assert _top(searcher, "a rocket", 1) == ["rocket.jpg"]


def test_second_indexer_is_refused(index_few):
    index_few()
    with FileLock(str(IndexFiles(index_few.index_dir).lock)):
        with pytest.raises(IndexLocked, match="already writing"):
            index_few()


def test_other_model_is_refused(index_few):
    index_few()
    with pytest.raises(ModelMismatch, match="--rebuild"):
        Indexer(index_few.index_dir, index_few.settings, show_progress=False).run([], model="ViT-B-32:laion2b_s34b_b79k")


def test_searcher_never_reads_a_rebuilt_database_with_its_old_vectors(index_few, few_photos, samples_dir,
                                                                      offline_encoder):
    """After `index --rebuild` the file at the same path is another database whose ids start
    again from 1. A searcher opened before keeps answering from the state it has on the
    connections it holds; a connection it opens later must not silently pair its old
    vectors with the new rows: it says the index was replaced."""
    from photoseek.search import IndexReplaced

    index_few()
    searcher = Searcher(index_few.index_dir, index_few.settings, encoder=offline_encoder)
    before = [(h.photo.id, h.photo.name) for h in searcher.search_text("a cup of coffee", 3)]
    assert before[0][1] == "coffee.png"

    # Rebuild from a folder holding other photos: the same ids now name other files.
    for p in few_photos.iterdir():
        p.unlink()
    for name in ["chelsea.png", "black_cat.jpg", "mountain.jpg", "laptop.jpg", "jellyfish.jpg", "camera.jpg"]:
        shutil.copy2(samples_dir / name, few_photos / name)
    index_few(rebuild=True)

    # Pooled connections still reach the old (deleted) file: the old state, whole.
    assert [(h.photo.id, h.photo.name) for h in searcher.search_text("a cup of coffee", 3)] == before
    # A new connection reaches the new file: refused, not mixed.
    searcher.catalogue.engine.dispose()
    with pytest.raises(IndexReplaced, match="rebuilt or replaced"):
        searcher.search_text("a cup of coffee", 3)
    searcher.close()

    fresh = Searcher(index_few.index_dir, index_few.settings, encoder=offline_encoder)
    assert {h.photo.name for h in fresh.search_text("a cat", 2)} == {"chelsea.png", "black_cat.jpg"}
    fresh.close()


def test_reverse_search_finds_a_resized_reencoded_copy(demo_searcher, samples_dir):
    for name in ["rocket.jpg", "chelsea.png", "sea_turtle.jpg", "mountain.jpg"]:
        img = Image.open(samples_dir / name).convert("RGB")
        img = img.resize((img.width // 2, img.height // 2))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=70)
        hits = demo_searcher.search_image(buf.getvalue(), limit=3)
        assert hits[0].photo.name == name


@pytest.mark.parametrize("query,expected", [
    ("a cat", {"chelsea.png", "black_cat.jpg"}),
    ("a cup of coffee", {"coffee.png"}),
    ("a rocket", {"rocket.jpg"}),
    ("a sea turtle", {"sea_turtle.jpg"}),
    ("a guitar", {"guitar.jpg"}),
])
def test_text_search_on_the_demo_folder(demo_searcher, query, expected):
    assert expected & set(_top(demo_searcher, query, 3))


def test_similar_leaves_the_photo_itself_out(demo_searcher):
    photo_id = demo_searcher.search_text("a cup of coffee", limit=1)[0].photo.id
    hits = demo_searcher.similar(photo_id, limit=5)
    assert len(hits) == 5 and photo_id not in {h.photo.id for h in hits}
    assert demo_searcher.similar(10**9) is None


def test_pages_do_not_overlap(demo_searcher):
    # Words that name no tag: the plain semantic ranking, scores falling (a tag word such as "an animal"
    # puts the tagged photos first: tests/test_tags.py pages that one).
    first = demo_searcher.search_text("something furry", limit=10)
    second = demo_searcher.search_text("something furry", limit=10, offset=10)
    assert len(first) == len(second) == 10
    assert not {h.photo.id for h in first} & {h.photo.id for h in second}
    scores = [h.score for h in first + second]
    assert scores == sorted(scores, reverse=True)


def test_status_reports_model_count_and_last_run(demo_searcher):
    st = demo_searcher.status()
    assert st.image_count == 34 and st.skipped_count == 0
    assert st.model_id.startswith("offline") and st.dim == 384
    assert st.last_run.status == "finished" and st.last_run.added == 34


def test_status_is_read_the_same_without_sqlalchemy(tmp_path, samples_dir, offline_encoder, settings_factory):
    """photoseek status reads a current SQLite catalogue with the standard library alone (no SQLAlchemy,
    FAISS or NumPy imported: a quick answer at any size); what it reads is what the catalogue says."""
    import subprocess
    import sys

    from photoseek.search.engine import open_index
    from photoseek.search.status import read_status, status_of

    photos, index_dir = tmp_path / "photos", tmp_path / "index"
    photos.mkdir()
    for name in ("bear.jpg", "rocket.jpg", "red_fish.jpg"):
        shutil.copy(samples_dir / name, photos / name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    settings = settings_factory(index_dir)
    Indexer(index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
    (photos / "rocket.jpg").unlink()
    Indexer(index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)  # a second run

    light = read_status(index_dir, settings=settings)
    files = IndexFiles(index_dir.resolve())
    catalogue = open_index(files, settings)
    try:
        full = status_of(files, catalogue, light.model_id, light.search, 100)
    finally:
        catalogue.close()
    assert light == full
    assert (light.image_count, light.skipped_count, light.runs) == (2, 1, 2)
    assert light.last_run.removed == 1 and light.previous_run.added == 3 and light.skipped[0].path.endswith("broken.jpg")
    assert light.last_run.started_at.tzinfo is not None  # RFC 3339 with its offset, as the API sends it
    code = ("import sys; from photoseek.search.status import read_status; st = read_status(sys.argv[1]); "
            "print(st.image_count, sorted(m for m in ('sqlalchemy', 'faiss', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(index_dir)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "2 []", out.stderr


@pytest.fixture(scope="module")
def random_clip_checkpoint(tmp_path_factory) -> Path:
    """A ViT-B-32 with random weights saved like a user's checkpoint: same code path and speed as real weights."""
    import open_clip
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "vit-b-32-random.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), path)
    return path


def test_open_clip_checkpoint_through_the_whole_pipeline(tmp_path, few_photos, random_clip_checkpoint, settings_factory):
    index_dir = tmp_path / "clip-index"
    settings = settings_factory(index_dir, decode_workers=0)
    model = f"ViT-B-32:{random_clip_checkpoint}"
    summary = Indexer(index_dir, settings, show_progress=False).run([few_photos], model=model)
    assert summary.added == len(FEW) and summary.model_id == model

    searcher = Searcher(index_dir, settings)
    st = searcher.status()
    assert (st.model_id, st.dim, st.image_count) == (model, 512, len(FEW))
    hits = searcher.search_text("a rocket", limit=10)
    assert len(hits) == len(FEW) and all(-1.0 <= h.score <= 1.0 for h in hits)
    for name in ("rocket.jpg", "bear.jpg"):
        assert searcher.search_image((few_photos / name).read_bytes(), limit=1)[0].photo.name == name
    assert Indexer(index_dir, settings, show_progress=False).run([]).embedded == 0


def test_photoseek_index_of_a_clip_model_runs_without_torch(tmp_path, few_photos, samples_dir, random_clip_checkpoint):
    """Where the image tower runs in OpenVINO (bf16 CPUs), `photoseek index` of a CLIP model never
    imports torch after the model's first run: the tower is the converted one, and the tags' texts go
    through the exported NumPy text tower."""
    import subprocess
    import sys

    from photoseek.encoders import openvino_tower

    if not openvino_tower.runs("ViT-B-32", "auto"):
        pytest.skip("OpenVINO is not installed")
    model = f"ViT-B-32:{random_clip_checkpoint}"
    index_dir = tmp_path / "clip-index"
    helpers.run_cli("index", str(few_photos), "--index", str(index_dir), "--model", model)  # converts, once
    shutil.copy2(samples_dir / "puppy.jpg", few_photos / "puppy.jpg")
    code = ("import sys; from photoseek.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, "index", str(few_photos), "--index", str(index_dir), "--no-progress"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PHOTOSEEK_DECODE_WORKERS": "1"})
    assert "added 1," in out.stdout and out.stdout.strip().endswith("exit 0 False"), out.stdout + out.stderr


def test_each_database_gets_one_id_for_life(tmp_path):
    """The id a reader checks (see the rebuild test above): made with the database, kept
    across opens, given once to a database from before ids existed, different per database."""
    path = tmp_path / "photoseek.db"
    first = helpers.sqlite_engine(path)
    with first.connect() as conn:
        uid = helpers.meta(conn, helpers.INDEX_UID)
    first.dispose()
    assert uid and len(uid) == 32
    again = helpers.sqlite_engine(path)
    with again.connect() as conn:
        assert helpers.meta(conn, helpers.INDEX_UID) == uid
    with again.begin() as conn:  # as an index written before this id existed
        conn.execute(text("DELETE FROM meta WHERE key = :k"), {"k": helpers.INDEX_UID})
    again.dispose()
    older = helpers.sqlite_engine(path)
    with older.connect() as conn:
        given = helpers.meta(conn, helpers.INDEX_UID)
    older.dispose()
    assert given and given != uid
    other = helpers.sqlite_engine(tmp_path / "other.db")
    with other.connect() as conn:
        assert helpers.meta(conn, helpers.INDEX_UID) not in (None, uid, given)
    other.dispose()
