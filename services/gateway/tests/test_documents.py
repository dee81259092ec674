"""The generated documents agree with CONTRACT.md: every topic it names is in the AsyncAPI document and
every route it names is in the OpenAPI document (CONTRACT.md lives beside the repository: ../shared)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from gateway.api import ApiContext, create_api
from gateway.asyncapi import asyncapi_json, specification
from gateway.audit import Auditor
from gateway.auth import TokenVerifier
from gateway.hub import Hub
from gateway.viewer import ViewerLinks
from proxymage_shared import topics

REPOSITORY = Path(__file__).resolve().parents[3]
CONTRACT_CANDIDATES = (REPOSITORY.parent / "shared" / "CONTRACT.md", REPOSITORY / "shared" / "CONTRACT.md")
TOPIC = re.compile(r"`([a-z]+\.[a-z-]+\.v\d+)`")
ROUTE = re.compile(r"`(GET|PUT|POST|DELETE|PATCH) (/api/[^`\s]+)`")


@pytest.fixture(scope="module")
def contract() -> str:
    for candidate in CONTRACT_CANDIDATES:
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    pytest.fail(f"CONTRACT.md not found (looked at {', '.join(map(str, CONTRACT_CANDIDATES))})")


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0])


def openapi() -> dict[str, Any]:
    context = ApiContext(
        store=None,  # type: ignore[arg-type]  # building the document touches no adapter
        hub=Hub(),
        verifier=TokenVerifier([]),
        auditor=Auditor(lambda records: None),  # type: ignore[arg-type,return-value]
        links=ViewerLinks(""),
        publish=None,  # type: ignore[arg-type]
        today=lambda: None,  # type: ignore[arg-type,return-value]
        now=lambda: None,  # type: ignore[arg-type,return-value]
    )
    document: dict[str, Any] = create_api(context).openapi()
    return document


def test_every_contract_topic_is_in_the_asyncapi_document(contract: str) -> None:
    named = set(TOPIC.findall(contract))
    assert named, "no topic found in CONTRACT.md"
    assert named <= set(topics.CONTRACT_TOPICS), "CONTRACT.md names a topic proxymage_shared.topics does not know"
    document = asyncapi_json(specification())
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert named <= addresses
    # and every topic of ARCHITECTURE.md's table (outcomes included), with its dead-letter topic
    assert set(topics.CONTRACT_TOPICS) <= addresses
    assert {topics.dead_letter_topic(topic) for topic in topics.CONTRACT_TOPICS} <= addresses
    # each topic's payload is the contract model's schema
    schemas = document["components"]["schemas"]
    assert {"PatientEnrolled", "StudyStatusChanged", "RcpSettings", "ImagingCatalogued"} <= set(schemas)


def test_every_contract_route_is_in_the_openapi_document(contract: str) -> None:
    routes = {(method.lower(), _shape(path)) for method, path in ROUTE.findall(contract)}
    # "GET /api/v1/enrolments/{id}/events and GET /api/v1/meetings/{id}/events" are written without a method
    # on the second one; pick up every /api path named anywhere too.
    paths = {_shape(path) for path in re.findall(r"`(/api/v1/[^`\s]+)`", contract)}
    document = openapi()
    available = {(method, _shape(path)) for path, item in document["paths"].items() for method in item}
    assert len(routes) >= 9
    assert routes <= available, routes - available
    assert paths <= {path for _, path in available}
    assert {"/api/v1/enrolments/{}", "/api/v1/meetings/{}/enrolments"} <= {path for _, path in routes}
    for path, item in document["paths"].items():
        for operation in item.values():
            assert "401" in operation["responses"], path


def test_commands_are_documented_as_202_with_the_event_id() -> None:
    document = openapi()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("put", "post", "delete"):
                assert "202" in operation["responses"], path
                assert "403" in operation["responses"], path
