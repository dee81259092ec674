"""Property-based tests of the REST API from its own OpenAPI document (schemathesis), against the gateway
running in-process on the real stack: every operation of the document (the SSE streams excepted: their answers
never end), valid and invalid inputs, every check schemathesis has (no server error, answers conform to the
document in status, type, headers and schema, valid data accepted, invalid data refused, authentication
enforced, ...); without a token every /api route answers 401."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from .harness import DCC_TOKEN, GatewayThread

load_all_checks()
ALL_CHECKS = CHECKS.get_all()  # every registered check, by name below: none is left out

# schemathesis 4 draws from `random` inside its strategies, which hypothesis flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


@pytest.fixture(scope="module")
def gateway_url(stack_env: dict[str, str]) -> Iterator[str]:
    import uuid

    with GatewayThread(uuid.uuid4().hex[:10]) as running:
        yield running.url


def _operations() -> list[tuple[str, str]]:
    from .test_documents import openapi

    return [
        (method, path)
        for path, item in openapi()["paths"].items()
        for method in item
        # SSE answers never end: they are checked by the integration tests, not fuzzed.
        if not path.endswith("/events")
    ]


@pytest.fixture(scope="module")
def api_schema(gateway_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_server_error_and_answers_conform(
    api_schema: Any, gateway_url: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=gateway_url,
            headers={"Authorization": f"Bearer {DCC_TOKEN}"},
            checks=ALL_CHECKS,
            timeout=20,
        )

    check()


def test_every_check_runs() -> None:
    names = {check.__name__ for check in ALL_CHECKS}
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "missing_required_header",
        "unsupported_method",
        "ignored_auth",
        "use_after_free",
        "ensure_resource_availability",
    } <= names
    assert len(ALL_CHECKS) == len(CHECKS.get_all_names())


SAMPLES = {"enrolment_id": "enr-1", "meeting_id": "m-1", "rcp_id": "rcp-1", "study_instance_uid": "1.2.3"}


def test_every_api_route_needs_a_token(gateway_url: str) -> None:
    document = requests.get(f"{gateway_url}/openapi.json", timeout=10).json()
    checked = 0
    for path, item in document["paths"].items():
        if not path.startswith("/api/"):
            continue
        concrete = re.sub(r"\{([^}]+)\}", lambda match: SAMPLES[match.group(1)], path)
        for method in item:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {DCC_TOKEN}"}):
                response = requests.request(
                    method, f"{gateway_url}{concrete}", headers=headers, json={}, timeout=10, stream=True
                )
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                response.close()
                checked += 1
    assert checked >= 3 * 14
