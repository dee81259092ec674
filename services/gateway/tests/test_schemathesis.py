"""Property-based tests of the REST API from its own OpenAPI document (schemathesis), against the gateway
running in-process on the real stack: every operation of the document (the SSE streams excepted: their answers
never end), valid and invalid inputs, every check schemathesis has (no server error, answers conform to the
document in status, type, headers and schema, valid data accepted, invalid data refused, authentication
enforced, ...); without a token every /api route answers 401.

Valid requests go to unknown ids and, half of them, to an RCP, a meeting and an enrolment sent first, so that
real answers are checked against the document too. One rule cannot be in the document (the date overrides'
combination: a parameter's schema cannot name another parameter); it is written in the parameters' descriptions
and given to schemathesis as a `filter_query` hook for valid requests, checked equal to the server's rule."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from gateway import filters as flt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from .fakes import enrolment_body
from .harness import DCC_TOKEN, GatewayThread

load_all_checks()
ALL_CHECKS = CHECKS.get_all()  # every registered check, by name below: none is left out

# schemathesis 4 draws from `random` inside its strategies, which hypothesis flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


# Known to the read model before the fuzzing starts (sent as commands), so that valid requests reach existing
# resources too, not only unknown ids (404).
KNOWN = {"rcp_id": "rcp-fuzz", "meeting_id": "m-fuzz", "enrolment_id": "enr-fuzz"}
SEEDS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "PUT",
        "/api/v1/rcps/rcp-fuzz/imaging-settings",
        {
            "title": "RCP fictive",
            "centre": "CHU Fictif",
            "imaging": {"modalities": ["CT", "PT"], "date_filter": {"kind": "within_months", "months": 6}},
        },
    ),
    (
        "PUT",
        "/api/v1/meetings/m-fuzz/experts",
        {
            "rcp_id": "rcp-fuzz",
            "title": "RCP fictive",
            "date": "2026-12-10",
            "centre": "CHU Fictif",
            "on_call_radiologist": {"name": "Dr Radio Fictif", "email": "radio.fictif@chu.mssante.fr"},
            "on_call_nuclear_physician": None,
        },
    ),
    (
        "POST",
        "/api/v1/enrolments",
        enrolment_body(
            enrolment_id="enr-fuzz",
            meeting_id="m-fuzz",
            rcp_id="rcp-fuzz",
            requested_by={"name": "Dr Demandeur Fictif"},
            patient={"first_name": "Essai"},
        ),
    ),
)


@pytest.fixture(scope="module")
def gateway_url(stack_env: dict[str, str]) -> Iterator[str]:
    import uuid

    with GatewayThread(uuid.uuid4().hex[:10]) as running:
        auth = {"Authorization": f"Bearer {DCC_TOKEN}"}
        for method, path, body in SEEDS:
            answer = requests.request(method, f"{running.url}{path}", json=body, headers=auth, timeout=10)
            assert answer.status_code == 202, answer.text
        for path in ("/api/v1/rcps/rcp-fuzz", "/api/v1/meetings/m-fuzz", "/api/v1/enrolments/enr-fuzz"):
            deadline = time.monotonic() + 30
            while requests.get(f"{running.url}{path}", headers=auth, timeout=10).status_code != 200:
                assert time.monotonic() < deadline, f"{path} never became known"
                time.sleep(0.2)
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


def follows_the_date_override_rule(query: dict[str, Any]) -> bool:
    """The one rule of the API that an OpenAPI parameter list cannot state (a parameter's schema cannot name
    another parameter), written in the parameters' descriptions of `GET /api/v1/enrolments/{enrolment_id}`:
    `date_from` only with `date_to` and not after it, neither with `within_months`."""
    named = {name for name in ("date_from", "date_to", "within_months") if query.get(name) is not None}
    if "within_months" in named and named != {"within_months"}:
        return False
    if named == {"date_from", "date_to"}:
        return str(query["date_from"]) <= str(query["date_to"])  # ISO dates: their text sorts like the dates
    return named <= {"within_months"}


@given(
    date_from=st.none() | st.dates(),
    date_to=st.none() | st.dates(),
    within_months=st.none() | st.integers(1, 1200),
)
def test_the_rule_is_the_servers(date_from: dt.date | None, date_to: dt.date | None, within_months: int | None) -> None:
    query = {"date_from": date_from and date_from.isoformat(), "date_to": date_to and date_to.isoformat()}
    try:
        flt.effective_filters(None, flt.Overrides(None, date_from, date_to, within_months))
        accepted = True
    except flt.InvalidFilterError:
        accepted = False
    assert follows_the_date_override_rule({**query, "within_months": within_months}) == accepted


FILTERED_QUERIES: list[dict[str, Any]] = []


def _filter_query(context: Any, query: dict[str, Any] | None) -> bool:
    del context
    if query is None or follows_the_date_override_rule(query):
        return True
    FILTERED_QUERIES.append(query)
    return False


@pytest.fixture(scope="module")
def api_schemas(gateway_url: str) -> dict[GenerationMode, Any]:
    """The document for each mode: valid requests also follow the rule above (schemathesis's hook for rules
    across parameters); invalid ones are generated from the document alone."""
    valid = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    valid.hook("filter_query")(_filter_query)
    return {
        GenerationMode.POSITIVE: valid,
        GenerationMode.NEGATIVE: schemathesis.openapi.from_url(f"{gateway_url}/openapi.json"),
    }


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_server_error_and_answers_conform(
    api_schemas: dict[GenerationMode, Any], gateway_url: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schemas[mode][path][method]

    @given(case=operation.as_strategy(generation_mode=mode), known=st.booleans())
    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any, known: bool) -> None:
        if known and mode == GenerationMode.POSITIVE and case.path_parameters:
            # a valid request on existing resources (an invalid one keeps its generated ids: they may be its fault)
            case.path_parameters = {name: KNOWN.get(name, value) for name, value in case.path_parameters.items()}
        case.call_and_validate(
            base_url=gateway_url,
            headers={"Authorization": f"Bearer {DCC_TOKEN}"},
            checks=ALL_CHECKS,
            timeout=20,
        )

    check()
    if mode == GenerationMode.POSITIVE and path == "/api/v1/enrolments/{enrolment_id}":
        assert FILTERED_QUERIES, "the generator never broke the date rule: the hook is not exercised"


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
