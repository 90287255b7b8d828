"""photoseek tune (issue 13): adapters trained on a person's own captions change what their words find.

The loss and the adapter are checked as formulas; the story runs on the real demo photos: four fish
photos captioned with a made-up name ("Gus"), the fifth left uncaptioned, and a query by the name
should then find the fifth fish while the hand-labelled demo queries keep their recall.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from photoseek.demo_labels import LABELS
from photoseek.errors import BadInput
from photoseek.search import Searcher
from photoseek.tune import ADAPTER_FILE, NotApplied, load_adapter, tune, undo
from photoseek.tuning import TEST, TRAIN, VALIDATION, Adapter, info_nce, split_by_photo
from tests import helpers

GUS = ("blue_tang.jpg", "fighter_fish.jpg", "gold_fish.jpg", "green_fish.jpg")
UNCAPTIONED_FISH = "red_fish.jpg"


# -- the formulas ------------------------------------------------------------------------------


def test_symmetric_infonce_matches_the_hand_computed_value():
    torch = pytest.importorskip("torch")
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    words = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits (scale e^0 = 1): image->text [[1, .6], [0, .8]]; text->image is its transpose [[1, 0], [.6, .8]]
    e = math.exp
    image_to_text = -math.log(e(1) / (e(1) + e(0.6))) - math.log(e(0.8) / (e(0) + e(0.8)))
    text_to_image = -math.log(e(1) / (e(1) + e(0))) - math.log(e(0.8) / (e(0.6) + e(0.8)))
    expected = (image_to_text / 2 + text_to_image / 2) / 2
    got = info_nce(image, words, torch.tensor(0.0))
    assert got.item() == pytest.approx(expected, rel=1e-6)

    # A hard negative [0, 1] of image 0 adds the logit 0 to image 0's row only.
    hard_row0 = -math.log(e(1) / (e(1) + e(0.6) + e(0)))
    expected_hard = ((hard_row0 - math.log(e(0.8) / (e(0) + e(0.8)))) / 2 + text_to_image / 2) / 2
    got_hard = info_nce(image, words, torch.tensor(0.0), torch.tensor([[0.0, 1.0]]), torch.tensor([0]))
    assert got_hard.item() == pytest.approx(expected_hard, rel=1e-6)
    assert got_hard.item() > got.item()


def test_an_untrained_adapter_is_the_identity_and_survives_a_round_trip():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((5, 32)).astype(np.float32)
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    adapter = Adapter.identity(32, rank=4)
    assert np.array_equal(adapter.project_images(units), units)
    np.testing.assert_allclose(adapter.fold_query(units), units, atol=1e-6)

    adapter.image_b[:] = rng.standard_normal(adapter.image_b.shape)
    adapter.summary = {"version": 3}
    again = Adapter.from_bytes(adapter.to_bytes())
    assert again.summary == {"version": 3}
    np.testing.assert_array_equal(again.image_b, adapter.image_b)
    # The folded query ranks photos exactly as the trained score <W_i x, normalise(W_t t)> does.
    photos = units
    trained = adapter.project_images(photos) @ adapter.project_text(units[0])[0]
    folded = photos @ adapter.fold_query(units[0])
    assert np.array_equal(np.argsort(-trained), np.argsort(-folded))


def test_held_out_pairs_are_whole_photos_and_a_shared_caption_is_in_every_role():
    photo_of_pair = np.array([1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    captions = ["Rex", "our dog", "Rex", "Rex", "Rex", "a", "b", "c", "d", "e", "f", "g"]
    roles = split_by_photo(photo_of_pair, captions, seed=3)
    assert roles[0] == roles[1]  # both captions of photo 1 in the same role
    rex_roles = {int(r) for p, r in zip(photo_of_pair, roles) if p in (1, 2, 3, 4)}
    assert rex_roles == {TRAIN, VALIDATION, TEST}  # learnt from, chooses the epoch, judges the result
    held = {int(p) for p, r in zip(photo_of_pair, roles) if r != TRAIN}
    assert len(held) == 3  # a quarter of 11 photos
    assert np.array_equal(roles, split_by_photo(photo_of_pair, captions, seed=3))  # deterministic


# -- the story on real photos ---------------------------------------------------------------------


@pytest.fixture
def story_index(tmp_path, demo_index) -> Path:
    """A copy of the demo index (the photos stay where the demo index found them)."""
    index = tmp_path / "index"
    shutil.copytree(demo_index, index, ignore=shutil.ignore_patterns("thumbnails", "index.lock"))
    return index


def photo_paths(index: Path) -> dict[str, str]:
    paths = [os.fsdecode(bytes(p)) for (p,) in helpers.query_rows(index, "SELECT path FROM images")]
    return {Path(p).name: p for p in paths}


def write_captions(path: Path, index: Path, name: str = "Gus") -> Path:
    """The fish photos but one get the name; every other photo its file name's words."""
    rows = []
    for file_name, full in sorted(photo_paths(index).items()):
        if file_name == UNCAPTIONED_FISH:
            continue
        if file_name in GUS:
            rows += [(full, f"{name} in his tank"), (full, f"our {name}")]
        else:
            rows.append((full, Path(file_name).stem.replace("_", " ")))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("path", "caption"), *rows])
    return path


def rank_of(searcher: Searcher, query: str, file_name: str) -> int:
    names = [h.photo.name for h in searcher.search_text(query, limit=len(searcher))]
    return names.index(file_name) + 1


def generic_recall_at_10(searcher: Searcher) -> float:
    """R@10 of the hand-labelled demo queries, through the real search path."""
    relevant: dict[str, set[str]] = {}
    for name, queries in LABELS.items():
        for q in queries:
            relevant.setdefault(q, set()).add(name)
    recalls = []
    for q, names in sorted(relevant.items()):
        top = {h.photo.name for h in searcher.search_text(q, limit=10, offset=0)}
        recalls.append(len(top & names) / min(10, len(names)))
    return float(np.mean(recalls))


def test_a_made_up_name_finds_the_uncaptioned_photo_of_its_subject(story_index, tmp_path, offline_encoder,
                                                                   settings_factory):
    settings = settings_factory(story_index)
    searcher = Searcher(story_index, settings, encoder=offline_encoder)
    queries = ["Gus", "a photo of Gus"]
    before = [rank_of(searcher, q, UNCAPTIONED_FISH) for q in queries]
    generic_before = generic_recall_at_10(searcher)
    fish_id = searcher.search_text("a goldfish", limit=1)[0].photo.id
    like_fish = [h.photo.id for h in searcher.similar(fish_id, limit=10)]

    outcome = tune(story_index, settings, captions=write_captions(tmp_path / "captions.csv", story_index),
                   encoder=offline_encoder)

    assert outcome.applied and outcome.report.recall_after > outcome.report.recall_before
    after = [rank_of(searcher, q, UNCAPTIONED_FISH) for q in queries]
    assert all(a <= 5 < b for a, b in zip(after, before)), (before, after)
    top4 = {h.photo.name for h in searcher.search_text("Gus", limit=4)}
    assert top4 <= set(GUS) | {UNCAPTIONED_FISH}  # the name finds fish, nothing else
    assert generic_recall_at_10(searcher) >= generic_before - 0.01
    assert outcome.generic_after >= outcome.generic_before - 0.01
    # A photo-to-photo search is not touched by an adapter for words.
    assert [h.photo.id for h in searcher.similar(fish_id, limit=10)] == like_fish

    # The JSON API says what the adapter learned, timestamps with their offset.
    from fastapi.testclient import TestClient

    from photoseek.web.app import create_app

    with TestClient(create_app(settings, searcher), base_url="http://127.0.0.1") as api:
        body = api.get("/api/tune").json()["adapter"]
        assert body["version"] == 1 and body["recall_after"] > body["recall_before"]
        assert datetime.fromisoformat(body["trained_at"]).utcoffset() is not None  # RFC 3339, "Z" or "+00:00"
        assert body["generic_before"] is not None
        assert UNCAPTIONED_FISH in api.get("/api/search", params={"q": "Gus", "limit": 5}).text
        assert "tuned to your words (v1" in api.get("/", params={"q": "Gus"}).text  # the page says so
        undo(story_index)
        assert api.get("/api/tune").json() == {"adapter": None}
        assert "tuned to your words" not in api.get("/", params={"q": "Gus"}).text

    assert [rank_of(searcher, q, UNCAPTIONED_FISH) for q in queries] == before  # undone above
    assert not undo(story_index)
    searcher.close()


def test_the_cli_tunes_reports_and_undoes(story_index, tmp_path):
    captions = write_captions(tmp_path / "captions.csv", story_index)
    done = helpers.run_cli("tune", "--captions", str(captions), "--index", str(story_index))
    assert "applied adapter v1" in done.stdout and "held-out recall@10" in done.stdout
    report = json.loads(helpers.run_cli("tune", "--report", "--json", "--index", str(story_index)).stdout)
    assert report["version"] == 1 and report["pairs"] == 37 and report["photos"] == 33
    assert report["recall_after"] > report["recall_before"]
    found = helpers.run_cli("search", "Gus", "-k", "4", "--json", "--index", str(story_index)).stdout
    assert UNCAPTIONED_FISH in found
    assert "pretrained space again" in helpers.run_cli("tune", "--undo", "--index", str(story_index)).stdout
    assert "no adapter" in helpers.run_cli("tune", "--report", "--index", str(story_index)).stdout


def test_captions_stored_in_the_photos_are_learnt_from(story_index, offline_encoder, settings_factory):
    paths = photo_paths(story_index)
    engine = helpers.sqlite_engine(story_index / "photoseek.db")
    with engine.begin() as conn:
        for file_name in paths:
            if file_name in GUS:
                caption, keywords = "Gus in his tank", "Gus, pets"
            elif file_name == UNCAPTIONED_FISH:
                caption, keywords = "", ""
            else:
                caption, keywords = Path(file_name).stem.replace("_", " "), ""
            conn.execute(text("UPDATE photo_text SET caption = :c, keywords = :k WHERE image_id = "
                              "(SELECT id FROM images WHERE path = :p)"),
                         dict(c=caption, k=keywords, p=paths[file_name].encode()))
    engine.dispose()
    outcome = tune(story_index, settings_factory(story_index), encoder=offline_encoder)
    assert outcome.applied
    summary = load_adapter(story_index).summary
    # 29 captions of other photos, 4 x (caption + 2 keywords) of the fish
    assert (summary["source"], summary["pairs"], summary["photos"]) == ("catalogue", 41, 33)


# -- bad input changes nothing --------------------------------------------------------------------


def test_bad_captions_are_refused_with_the_reason_and_leave_the_adapter_alone(story_index, tmp_path, offline_encoder,
                                                                                settings_factory):
    settings = settings_factory(story_index)
    good = write_captions(tmp_path / "good.csv", story_index)
    tune(story_index, settings, captions=good, encoder=offline_encoder)
    adapter_bytes = (story_index / ADAPTER_FILE).read_bytes()
    lines = good.read_text().splitlines()
    fish = photo_paths(story_index)["gold_fish.jpg"]

    def refused(name: str, content: str | bytes, *needles: str, kind: str = "bad_input") -> None:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(BadInput) as err:
            tune(story_index, settings, captions=path, encoder=offline_encoder)
        assert err.value.kind == kind
        for needle in needles:
            assert needle in err.value.message
        assert (story_index / ADAPTER_FILE).read_bytes() == adapter_bytes

    refused("unknown.csv", "\n".join(lines + ["/nowhere/rex.jpg,Rex"]), "not in this index", "/nowhere/rex.jpg",
            f"line {len(lines) + 1}")
    refused("empty.csv", "\n".join(lines + [f"{fish},  "]), "empty", f"line {len(lines) + 1}")
    refused("duplicate.csv", "\n".join(lines + [f"{fish},our gus"]), "repeats line", "remove the duplicate")
    refused("latin1.csv", "\n".join(lines + [f"{fish},Gus à la plage"]).encode("latin-1"), "not UTF-8",
            kind="bad_encoding")
    few = "\n".join(json.dumps({"path": p, "caption": "Gus"}) for p in list(photo_paths(story_index).values())[:5])
    refused("few.jsonl", few, "5 in", "at least 8 needed", kind="too_few_pairs")


def test_an_adapter_without_a_held_out_gain_is_not_applied_without_force(story_index, tmp_path, offline_encoder,
                                                                          settings_factory, monkeypatch):
    import photoseek.tune as tune_module
    from photoseek import tuning

    settings = settings_factory(story_index)
    captions = write_captions(tmp_path / "captions.csv", story_index)

    def no_gain(*args, **kwargs):  # a real training run whose test photos got no better
        adapter, report = tuning.train(*args, **kwargs)
        return adapter, dataclasses.replace(report, recall_after=report.recall_before, mrr_after=report.mrr_before)

    monkeypatch.setattr(tune_module, "train", no_gain)
    with pytest.raises(NotApplied) as err:
        tune(story_index, settings, captions=captions, encoder=offline_encoder)
    assert err.value.kind == "not_applied" and "did not improve held-out recall" in err.value.message
    assert load_adapter(story_index) is None
    forced = tune(story_index, settings, captions=captions, encoder=offline_encoder, force=True)
    assert forced.applied and load_adapter(story_index).summary["forced"]


# -- both back ends ------------------------------------------------------------------------------


def test_tuning_works_on_postgresql(demo_pg_searcher, tmp_path, offline_encoder):
    searcher = demo_pg_searcher
    index = searcher.files.root
    with searcher.catalogue.engine.connect() as conn:
        paths = {Path(p).name: p for _, p, *_ in searcher.catalogue.photo_words(conn)}
    rows = [(p, "Gus in his tank") for n, p in paths.items() if n in GUS]
    rows += [(p, Path(n).stem.replace("_", " ")) for n, p in paths.items() if n not in GUS + (UNCAPTIONED_FISH,)]
    with open(tmp_path / "c.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    before = rank_of(searcher, "Gus", UNCAPTIONED_FISH)
    try:
        outcome = tune(index, searcher.settings, captions=tmp_path / "c.csv", encoder=offline_encoder)
        assert outcome.applied
        assert rank_of(searcher, "Gus", UNCAPTIONED_FISH) < before
    finally:
        undo(index)  # the shared PostgreSQL demo index is left as it was
    assert rank_of(searcher, "Gus", UNCAPTIONED_FISH) == before


def test_a_tune_interrupted_while_training_leaves_the_previous_adapter(story_index, tmp_path, offline_encoder,
                                                                       settings_factory, monkeypatch):
    import photoseek.tune as tune_module

    settings = settings_factory(story_index)
    captions = write_captions(tmp_path / "captions.csv", story_index)
    tune(story_index, settings, captions=captions, encoder=offline_encoder)
    previous = (story_index / ADAPTER_FILE).read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C mid-training

    monkeypatch.setattr(tune_module, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        tune(story_index, settings, captions=write_captions(tmp_path / "rex.csv", story_index, "Rex"),
             encoder=offline_encoder)
    assert (story_index / ADAPTER_FILE).read_bytes() == previous
    assert not list(story_index.glob(f".{ADAPTER_FILE}-*"))  # no temp file left behind either


def test_an_adapter_made_for_another_model_is_ignored(tmp_path):
    from photoseek.tune import CurrentAdapter, adapter_path

    adapter = Adapter.identity(8, rank=2)
    adapter.text_b[:] = 1.0  # far from the identity
    adapter.summary = {"version": 1, "model_id": "offline:lite0"}
    adapter_path(tmp_path).write_bytes(adapter.to_bytes())
    current = CurrentAdapter(tmp_path)
    query = np.eye(8, dtype=np.float32)[0]
    assert not np.allclose(current.apply(query, "offline:lite0", 8), query)
    assert np.array_equal(current.apply(query, "ViT-B-32/laion2b_s34b_b79k", 8), query)  # index rebuilt with CLIP
    adapter_path(tmp_path).write_bytes(b"not an adapter")  # a damaged file: the pretrained space
    assert np.array_equal(current.apply(query, "offline:lite0", 8), query)
