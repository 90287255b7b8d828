"""The OpenAPI schema is a contract: every operation, fuzzed from the service's own schema
(Schemathesis: property-based, driven by the OpenAPI document), answers only as the schema says.

For each generated request the response must have a documented status code and content type,
a body that validates against its declared schema (timestamps RFC 3339 with an offset included),
never a server error; requests the schema allows must not be refused, and requests it forbids
must be. A constraint the server enforces but does not declare fails here.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from photoseek.web.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def web_schema(demo_index, tmp_path_factory, offline_encoder, settings_factory):
    # A copy of the demo index: the fuzzed POST /api/feedback and /api/tune write to the index they serve.
    import shutil

    from photoseek.search import Searcher

    index = tmp_path_factory.mktemp("contract") / "index"
    shutil.copytree(demo_index, index, ignore=shutil.ignore_patterns("thumbnails", "adapter.npz"))
    searcher = Searcher(index, settings_factory(index), encoder=offline_encoder)
    app = create_app(settings_factory(index), searcher)
    yield schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Host": "127.0.0.1"})
    searcher.close()


schema = schemathesis.pytest.from_fixture("web_schema")


# Searches have rules across parameters that JSON Schema cannot state (q or similar; after not later
# than before; the query syntax), and an upload must be an image whatever bytes the schema allows:
# only there may a schema-valid request be refused, with a documented 400 or 415 that says why.
SEMANTIC_RULES = {"/api/search", "/api/facets", "/api/search/image"}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_the_contract(case):
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    excluded = [positive_data_acceptance] if case.operation.path in SEMANTIC_RULES else []
    response = case.call_and_validate(headers={"Host": "127.0.0.1"}, excluded_checks=excluded)
    if response.status_code in (400, 415):
        assert response.json()["message"], response.text


def test_timestamps_are_declared_with_an_offset(web_schema):
    """date-time alone lets a server send naive times; the schema says every one carries its offset."""
    spec = web_schema.raw_schema
    photo = spec["components"]["schemas"]["PhotoOut"]["properties"]
    for field in ("indexed_at", "taken_at", "date"):
        text = str(photo[field])
        assert "date-time" in text, (field, text)
