"""`DELETE /api/v1/enrolments/{id}` with the publisher and the audit replaced by recorders (no servers): what
it publishes for each way of giving the reason, what it refuses, who may call it. The real Kafka round trip is
in test_gateway_integration.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from proxymage_shared import topics
from proxymage_shared.events import EnrolmentWithdrawn

from .fakes import CommandRecorder, command_client

NOW = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.UTC)


Recorder = CommandRecorder
TOKENS = {"dcc-token": ("dcc", "dcc"), "viewer-token": ("lecteur", "viewer")}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async with command_client(recorder, NOW, TOKENS) as http:
        yield http


def published(recorder: Recorder) -> EnrolmentWithdrawn:
    (topic, key, event) = recorder.published[-1]
    assert topic == topics.ENROLMENT_WITHDRAWN
    assert isinstance(event, EnrolmentWithdrawn)
    assert key == event.enrolment_id
    return event


async def test_publishes_even_for_an_enrolment_the_read_model_does_not_know(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    answer = await client.delete("/api/v1/enrolments/enr-jamais-vu")
    assert answer.status_code == 202
    event = published(recorder)
    assert answer.json() == {"event_id": str(event.event_id)}
    assert event.enrolment_id == "enr-jamais-vu"
    assert event.reason is None
    assert event.occurred_at == NOW


@pytest.mark.parametrize(
    ("params", "body", "reason"),
    [
        ({"reason": "doublon"}, None, "doublon"),
        ({}, {"reason": "présenté dans une autre RCP"}, "présenté dans une autre RCP"),
        ({"reason": "par la requête"}, {"reason": "par le corps"}, "par le corps"),
        ({"reason": "par la requête"}, {"reason": None}, "par la requête"),
        ({}, {}, None),
        ({"reason": "   "}, None, None),
        ({}, {"reason": "x" * 500}, "x" * 500),
    ],
)
async def test_the_optional_reason(
    client: httpx.AsyncClient, recorder: Recorder, params: dict[str, str], body: Any, reason: str | None
) -> None:
    answer = await client.request("DELETE", "/api/v1/enrolments/enr-1", params=params, json=body)
    assert answer.status_code == 202, answer.text
    assert published(recorder).reason == reason


@pytest.mark.parametrize(
    ("params", "content"),
    [
        ({"reason": "x" * 501}, None),
        ({}, b'{"reason": "' + b"x" * 501 + b'"}'),
        ({}, b'{"reason": 12}'),
        ({}, b'"motif"'),
        ({}, b"{not json"),
    ],
)
async def test_refuses_what_is_not_a_reason(
    client: httpx.AsyncClient, recorder: Recorder, params: dict[str, str], content: bytes | None
) -> None:
    answer = await client.request(
        "DELETE",
        "/api/v1/enrolments/enr-1",
        params=params,
        content=content,
        headers={"content-type": "application/json"} if content is not None else {},
    )
    assert answer.status_code == 422, answer.text
    assert recorder.published == []


async def test_who_may_withdraw_and_the_audit(client: httpx.AsyncClient, recorder: Recorder) -> None:
    assert (await client.delete("/api/v1/enrolments/enr-1", headers={"Authorization": ""})).status_code == 401
    viewer = await client.delete("/api/v1/enrolments/enr-1", headers={"Authorization": "Bearer viewer-token"})
    assert viewer.status_code == 403
    assert (await client.delete("/api/v1/enrolments/pas%20un%20id")).status_code == 422
    assert recorder.published == []
    assert (await client.delete("/api/v1/enrolments/enr-1", params={"reason": "NOM PRÉNOM"})).status_code == 202
    recorder.fail = True
    assert (await client.delete("/api/v1/enrolments/enr-1")).status_code == 503


async def test_audit_records(recorder: Recorder) -> None:
    async with command_client(recorder, NOW, TOKENS) as http:
        await http.delete("/api/v1/enrolments/enr-1", params={"reason": "motif libre"})
    (record,) = recorder.audited
    assert record["action"] == "withdraw"
    assert record["status"] == 202
    assert record["who"] == "dcc"
    assert record["enrolment_id"] == "enr-1"
    assert record["event_id"] == str(published(recorder).event_id)
    assert "motif libre" not in repr(record)
