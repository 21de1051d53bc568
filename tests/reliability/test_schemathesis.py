"""Schemathesis against the service's own OpenAPI schema, calls sent to a live uvicorn: never a 500.

Every operation in the schema (predict, similar-reports, embed, model, health, readiness, metrics) gets
inputs generated from it, valid ones and invalid ones (wrong types, missing fields, absurd query values). The
check: no 5xx but 503, and every error is problem+json with a documented code. The schema is taken from the
app the server runs (``create_app().openapi()`` needs no bundle loaded), so the test set is known at
collection; the calls go over real sockets to the module's live server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from acula.service.api.errors import ERROR_MAP
from acula.service.app import create_app
from acula.service.settings import Settings
from tests.reliability.mutations import GENERATED
from tests.support.server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(bundle=Path("unused"))).openapi())
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}
EXAMPLES = 60  # per operation and mode: about 600 requests in all


def _cases() -> list[tuple[str, GenerationMode]]:
    """Every operation with valid inputs; those that take inputs also with invalid ones."""
    cases = []
    for label, operation in sorted(OPERATIONS.items()):
        cases.append((label, GenerationMode.POSITIVE))
        if list(operation.iter_parameters()) or len(operation.body):
            cases.append((label, GenerationMode.NEGATIVE))
    return cases


@pytest.mark.parametrize(("label", "mode"), _cases(), ids=lambda v: getattr(v, "value", v))
def test_no_input_the_schema_allows_or_forbids_gets_a_500(live: LiveServer, label: str, mode) -> None:
    operation = OPERATIONS[label]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        GENERATED["schemathesis"] += 1
        response = case.call(base_url=live.url, timeout=30)
        assert response.status_code < 500 or response.status_code == 503, (
            case.as_curl_command(),
            response.text,
        )
        if response.status_code >= 400:
            content_type = {k.lower(): v for k, v in response.headers.items()}["content-type"]
            assert "application/problem+json" in str(content_type), response.text
            assert response.json()["code"] in ERROR_MAP, response.text

    check()
