"""Shared fixtures: the real demo photos, the bundled offline encoder, a demo index."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
EDGE = REPO / "data" / "edge"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def edge_dir() -> Path:
    return EDGE


@pytest.fixture(scope="session")
def offline_encoder():
    """The bundled encoder, loaded once for the whole session (it is read-only)."""
    from photoseek.encoders import load_encoder

    return load_encoder("offline")


@pytest.fixture(scope="session")
def settings_factory():
    from photoseek.settings import Settings

    def make(index_dir: Path, **overrides) -> Settings:
        # One decode worker keeps the suite light on a 2-core machine.
        return Settings(index_dir=index_dir, decode_workers=overrides.pop("decode_workers", 1), **overrides)

    return make


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory, offline_encoder, settings_factory) -> Path:
    """An index of a copy of the demo folder, built once; tests must not modify it."""
    from photoseek.indexer import Indexer

    base = tmp_path_factory.mktemp("demo")
    photos = base / "photos"
    shutil.copytree(SAMPLES, photos)
    index_dir = base / "index"
    Indexer(index_dir, settings_factory(index_dir), show_progress=False).run([photos], encoder=offline_encoder)
    return index_dir


@pytest.fixture(scope="session")
def demo_searcher(demo_index, offline_encoder, settings_factory):
    from photoseek.search import Searcher

    searcher = Searcher(demo_index, settings_factory(demo_index), encoder=offline_encoder)
    yield searcher
    searcher.close()
