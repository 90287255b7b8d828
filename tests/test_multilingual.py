"""Queries in other languages: the offline:multilingual encoder (USE multilingual v3 text side),
the script hint an English-only index gives, and the multilingual open_clip model that cannot
be built without the Hugging Face Hub."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import helpers
from helpers import run_cli
from photoseek.encoders import EncoderUnavailable, canonical_model_id, load_encoder
from photoseek.encoders import offline as offline_module
from photoseek.encoders.languages import (
    MULTILINGUAL_CLIP,
    MULTILINGUAL_OFFLINE,
    dominant_script,
    language_hint,
    supported_scripts,
    unsupported_script,
)

# query -> a photo that must be among its top 3 (the English labels of tests/test_encoders.py, translated)
QUERIES = {
    "a cat": "chelsea.png",
    "eine Katze": "chelsea.png",
    "un chat noir": "black_cat.jpg",  # a bare "un chat" misses: "chat" is an English word too
    "un gato": "chelsea.png",
    "кошка": "chelsea.png",
    "a guitar": "guitar.jpg",
    "eine Gitarre": "guitar.jpg",
    "une guitare": "guitar.jpg",
    "una guitarra": "guitar.jpg",
    "гитара": "guitar.jpg",
    "ein Motorrad": "motorcycle_left.png",
    "une tortue de mer": "sea_turtle.jpg",
    "una tienda de campaña": "tent.jpg",
    "ракета": "rocket.jpg",
    "eine Tasse Kaffee": "coffee.png",
    "ein Hund": "puppy.jpg",
    "un chien": "puppies.jpg",
    "собака": "puppies.jpg",
    "猫": "chelsea.png",
}


@pytest.fixture(scope="module")
def multilingual_index(tmp_path_factory, samples_dir) -> Path:
    """The demo photos indexed with --model offline-multilingual from the command line, once."""
    return helpers.cli_demo_index(tmp_path_factory, samples_dir, "multilingual", "offline-multilingual")


@pytest.fixture(scope="module")
def multilingual_searcher(multilingual_index, settings_factory):
    from photoseek.search import Searcher

    searcher = Searcher(multilingual_index, settings_factory(multilingual_index))
    yield searcher
    searcher.close()


def _top(searcher, query: str, k: int = 3) -> list[str]:
    from photoseek.search.query import SearchRequest, Term

    page = searcher.search(SearchRequest(terms=(Term(text=query),), limit=k))
    return [hit.photo.name for hit in page.hits]


# -- the encoder ---------------------------------------------------------------------------------


def test_multilingual_variant_is_registered_and_canonical():
    assert "multilingual" in offline_module.available_variants()
    for spelling in ("offline-multilingual", "offline:multilingual", " Offline:Multilingual "):
        assert canonical_model_id(spelling) == MULTILINGUAL_OFFLINE
    cfg = offline_module.OfflineConfig.load("multilingual")
    assert cfg.text_model == "use-multilingual" and cfg.dim == 512 and cfg.backbone == "efficientnet-lite0"


def test_multilingual_encoder_embeds_offline(multilingual_searcher):
    encoder = multilingual_searcher.encoder
    assert encoder.model_id == MULTILINGUAL_OFFLINE and encoder.dim == 512 and encoder.multilingual
    assert encoder.describe()["text_model"] == "use-multilingual"
    texts = encoder.encode_texts(["a cat", "eine Katze", "кошка", "a rocket"])
    assert texts.shape == (4, 512) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    # the same thing in three languages is closer than another thing in the same language
    assert min(texts[0] @ texts[1], texts[0] @ texts[2]) > texts[0] @ texts[3] + 0.2
    pixels = np.zeros((2, 224, 224, 3), np.uint8)
    images = encoder.encode_pixels(pixels)
    assert images.shape == (2, 512)
    # its class matrix is cached apart from MiniLM's (another model, another width)
    assert any(np.load(p).shape == (1000, 512) for p in offline_module.cache_dir().glob("classes-*.npy"))


@pytest.mark.parametrize("query", QUERIES)
def test_queries_in_six_languages_find_the_photo(multilingual_searcher, query):
    assert QUERIES[query] in _top(multilingual_searcher, query), query


def test_status_and_search_on_the_command_line(multilingual_index):
    status = json.loads(run_cli("status", "--index", str(multilingual_index), "--json").stdout)
    assert status["model"] == MULTILINGUAL_OFFLINE and status["dim"] == 512 and status["image_count"] > 30
    out = run_cli("search", "кошка", "--index", str(multilingual_index), "--limit", "3", "--json")
    response = json.loads(out.stdout)
    assert "chelsea.png" in [h["photo"]["name"] for h in response["results"]]
    assert response["language_hint"] is None and "hint:" not in out.stderr


# -- the script hint -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, script", [
    ("a cat", "Latin"), ("eine Katze über dem Fluß", "Latin"), ("café crème", "Latin"),
    ("кошка", "Cyrillic"), ("γάτα", "Greek"), ("猫", "Han"), ("ねこ", "Kana"), ("고양이", "Hangul"),
    ("قطة", "Arabic"), ("חתול", "Hebrew"), ("แมว", "Thai"), ("बिल्ली", "Devanagari"),
    ("2024 !?", None), ("", None),
])
def test_dominant_script(text, script):
    assert dominant_script(text) == script


def test_unsupported_script_needs_most_of_the_letters():
    english = frozenset({"Latin"})
    assert unsupported_script("кошка на диване", english) == "Cyrillic"
    assert unsupported_script("the Москва river at night", english) is None  # a name in another script
    assert unsupported_script("猫 cat", english) is None  # one Han letter against three Latin ones
    assert unsupported_script("12345", english) is None


def test_which_models_read_which_scripts():
    assert supported_scripts("offline:lite0") == supported_scripts("offline:lite2") == frozenset({"Latin"})
    assert supported_scripts("ViT-B-32:laion2b_s34b_b79k") == frozenset({"Latin"})
    assert {"Latin", "Cyrillic", "Han", "Arabic"} <= supported_scripts(MULTILINGUAL_OFFLINE)
    assert "Greek" not in supported_scripts(MULTILINGUAL_OFFLINE)
    assert supported_scripts(MULTILINGUAL_CLIP) is None  # XLM-RoBERTa: about 100 languages
    assert supported_scripts(None) is None


def test_language_hint():
    assert language_hint("offline:lite0", ["a cat"]) is None
    assert language_hint("offline:lite0", []) is None
    hint = language_hint("offline:lite0", ["кошка"])
    assert hint.script == "Cyrillic" and hint.suggested_model == MULTILINGUAL_OFFLINE
    assert "English only" in hint.message and "--model offline:multilingual" in hint.message
    assert language_hint(MULTILINGUAL_OFFLINE, ["кошка"]) is None
    greek = language_hint(MULTILINGUAL_OFFLINE, ["γάτα"])
    assert greek.script == "Greek" and greek.suggested_model == MULTILINGUAL_CLIP
    clip = language_hint("ViT-B-32:laion2b_s34b_b79k", ["猫"])
    assert clip.suggested_model == MULTILINGUAL_CLIP and MULTILINGUAL_OFFLINE in clip.message
    assert language_hint(MULTILINGUAL_CLIP, ["γάτα"]) is None


def test_english_index_hints_in_the_api_the_page_and_the_cli(demo_index, demo_searcher, settings_factory):
    from photoseek.web.app import create_app

    assert demo_searcher.model_id == "offline:lite0"
    app = create_app(settings_factory(demo_index), demo_searcher)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        r = c.get("/api/search", params={"q": "кошка на диване", "limit": 3})
        assert r.status_code == 200 and len(r.json()["results"]) == 3  # a warning next to results, not an error
        hint = r.json()["language_hint"]
        assert hint["script"] == "Cyrillic" and hint["model"] == "offline:lite0"
        assert hint["suggested_model"] == MULTILINGUAL_OFFLINE
        assert c.get("/api/search", params={"q": "a cat"}).json()["language_hint"] is None
        r = c.post("/api/search", json={"terms": [{"text": "猫"}], "limit": 2})
        assert r.json()["language_hint"]["script"] == "Han"
        page = c.get("/", params={"q": "кошка"}).text
        assert "encoder may not understand these words" in page and "offline:multilingual" in page
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert "language_hint" in schema["SearchResponse"]["properties"]
        assert set(schema["LanguageHintOut"]["required"]) >= {"script", "model", "message"}
    out = run_cli("search", "кошка", "--index", str(demo_index), "--limit", "2")
    assert "hint: This query is in Cyrillic script" in out.stderr and "offline:multilingual" in out.stderr
    assert len(out.stdout.splitlines()) == 2  # the results are still printed


# -- the multilingual open_clip model --------------------------------------------------------------


def test_multilingual_clip_without_the_hub_fails_in_one_line(monkeypatch, tmp_path):
    """open_clip builds xlm-roberta-base-ViT-B-32's text tower from the Hugging Face model
    xlm-roberta-base (config and tokenizer), even with random weights: without the Hub or a
    cache holding it, the model cannot be built here at all. photoseek says so in one line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    assert canonical_model_id("xlm-roberta-base-ViT-B-32:laion5b-s13b-b90k") == MULTILINGUAL_CLIP
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"not read")
    for model_id in (MULTILINGUAL_CLIP, f"xlm-roberta-base-ViT-B-32:{checkpoint}"):
        with pytest.raises(EncoderUnavailable) as err:
            load_encoder(model_id)
        message = str(err.value)
        assert "\n" not in message and "model 'xlm-roberta-base'" in message and "HF_HUB_OFFLINE" in message
        assert "could not load" not in message  # not blamed on the CLIP checkpoint
