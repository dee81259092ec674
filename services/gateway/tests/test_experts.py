"""Experts at entry (issue 15, point 4), without servers: the MSSanté rule on `PUT /api/v1/meetings/{id}/experts`
(422 with a French message, nothing published) and the known experts (`GET /api/v1/experts`, pure derivation
from the meetings)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway.api_models import ExpertOut, Meeting
from gateway.api_types import EXCLUDED_IN_EMAIL
from gateway.experts import known_experts, refused_experts
from gateway.read_model import MeetingRecord
from gateway.settings import Settings
from proxymage_shared import topics
from proxymage_shared.events import MeetingExperts
from proxymage_shared.mssante import address_pattern

from .fakes import CommandRecorder, command_client

NOW = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.UTC)
DOMAINS = ("*.mssante.fr", "*.mssante.test")


Recorder = CommandRecorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async with command_client(recorder, NOW, {"dcc-token": ("dcc", "dcc")}, expert_domains=DOMAINS) as http:
        yield http


def experts_body(radiologist: str, nuclear: str | None) -> dict[str, Any]:
    return {
        "rcp_id": "rcp-orl-fictif",
        "title": "RCP ORL FICTIVE",
        "date": "2026-12-09",
        "centre": "3C FICTIF",
        "on_call_radiologist": {"name": "Dr Jeanne FICTIVE", "email": radiologist},
        "on_call_nuclear_physician": {"name": "Dr Paul EXEMPLE", "email": nuclear} if nuclear else None,
    }


async def test_a_gmail_address_is_refused_at_entry_in_french(client: httpx.AsyncClient, recorder: Recorder) -> None:
    answer = await client.put(
        "/api/v1/meetings/m-essai/experts",
        json=experts_body("jeanne.fictive@chu-fictif.mssante.fr", "paul.exemple@gmail.com"),
    )
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["type"] == "mssante_domain"
    assert error["loc"] == ["body", "on_call_nuclear_physician", "email"]
    assert error["msg"] == (
        "Adresse refusée : ce n'est pas une adresse de messagerie sécurisée de santé (MSSanté). "
        "Domaines admis : *.mssante.fr, *.mssante.test"
    )
    assert recorder.published == []


async def test_both_refused_addresses_are_named(client: httpx.AsyncClient, recorder: Recorder) -> None:
    answer = await client.put(
        "/api/v1/meetings/m-essai/experts", json=experts_body("radio@mssante.fr.evil.example", "paul@gmail.com")
    )
    assert answer.status_code == 422
    assert [error["loc"][1] for error in answer.json()["detail"]] == [
        "on_call_radiologist",
        "on_call_nuclear_physician",
    ]
    assert recorder.published == []


async def test_mssante_addresses_and_no_expert_are_published(client: httpx.AsyncClient, recorder: Recorder) -> None:
    answer = await client.put(
        "/api/v1/meetings/m-essai/experts", json=experts_body("Jeanne.Fictive@CHU-FICTIF.MSSANTE.FR", None)
    )
    assert answer.status_code == 202
    ((topic, key, event),) = recorder.published
    assert (topic, key) == (topics.MEETING_EXPERTS, "m-essai")
    assert isinstance(event, MeetingExperts)
    assert event.on_call_radiologist is not None
    assert event.on_call_radiologist.email == "Jeanne.Fictive@CHU-FICTIF.MSSANTE.FR"
    assert event.on_call_nuclear_physician is None


def test_the_rule_reads_only_the_expert_fields() -> None:
    fields = experts_body("a@chu.mssante.fr", "b@gmail.com") | {"centre": "x@gmail.com"}
    assert refused_experts(fields, DOMAINS) == ["on_call_nuclear_physician"]
    assert refused_experts({"on_call_radiologist": None, "on_call_nuclear_physician": None}, DOMAINS) == []


def test_the_gateway_reads_the_notifiers_domain_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXYMAGE_ENV_FILE", raising=False)
    monkeypatch.setenv("PROXYMAGE_SMTP__ALLOWED_DOMAINS", '["*.mssante.fr", "*.mssante.test"]')
    settings = Settings(public_url="https://proxymage.exemple.test")
    assert settings.smtp.allowed_domains == DOMAINS
    monkeypatch.setenv("PROXYMAGE_CONSOLE_CONTACT", "javascript:alert(1)")
    with pytest.raises(ValueError, match="mailto"):
        Settings(public_url="https://proxymage.exemple.test")
    monkeypatch.setenv("PROXYMAGE_CONSOLE_CONTACT", "mailto:3c@3c-fictif.mssante.test")
    assert Settings(public_url="https://proxymage.exemple.test").console_contact == "mailto:3c@3c-fictif.mssante.test"


def meeting(meeting_id: str, date: str | None, radiologist: Any = None, nuclear: Any = None) -> Meeting:
    return Meeting(
        meeting_id=meeting_id,
        rcp_id="rcp-fictif",
        title="RCP FICTIVE",
        date=dt.date.fromisoformat(date) if date else None,
        centre="3C FICTIF",
        on_call_radiologist=ExpertOut(name=radiologist[0], email=radiologist[1]) if radiologist else None,
        on_call_nuclear_physician=ExpertOut(name=nuclear[0], email=nuclear[1]) if nuclear else None,
    )


def test_known_experts_one_per_address_named_as_in_the_latest_meeting() -> None:
    meetings = [
        meeting(
            "m-1", "2026-11-02", ("Dr Jeanne FICTIVE", "jeanne@chu.mssante.fr"), ("Dr Paul EXEMPLE", "p@chu.mssante.fr")
        ),
        meeting("m-2", "2026-11-30", ("Dr Jeanne FICTIVE-ESSAI", "Jeanne@CHU.mssante.fr"), None),
        meeting("m-3", None, None, ("Dr Jeanne FICTIVE", "jeanne@chu.mssante.fr")),
        meeting("m-4", "2026-12-01", ("Dr Ana GMAIL", "ana@gmail.com"), None),
    ]
    experts = known_experts(meetings, DOMAINS)
    assert [(e.name, e.email, e.roles, e.last_meeting_date) for e in experts] == [
        (
            "Dr Jeanne FICTIVE-ESSAI",
            "Jeanne@CHU.mssante.fr",
            ["radiologist", "nuclear_physician"],
            dt.date(2026, 11, 30),
        ),
        ("Dr Paul EXEMPLE", "p@chu.mssante.fr", ["nuclear_physician"], dt.date(2026, 11, 2)),
    ]


async def test_the_experts_route_lists_the_known_meetings_experts(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    recorder.stored_meetings = [
        MeetingRecord.model_validate(
            {
                "_id": "m-essai",
                "experts": {
                    "order": "1",
                    "event_id": "e-1",
                    "occurred_at": "2026-12-01T08:00:00.000000Z",
                    "meeting_id": "m-essai",
                    "rcp_id": "rcp-fictif",
                    "title": "RCP FICTIVE",
                    "date": "2026-12-09",
                    "centre": "3C FICTIF",
                    "on_call_radiologist": {"name": "Dr Jeanne FICTIVE", "email": "jeanne@chu-fictif.mssante.fr"},
                    "on_call_nuclear_physician": None,
                },
            }
        ),
        MeetingRecord.model_validate({"_id": "m-sans-experts"}),
    ]
    answer = await client.get("/api/v1/experts")
    assert answer.status_code == 200
    assert answer.json() == [
        {
            "name": "Dr Jeanne FICTIVE",
            "email": "jeanne@chu-fictif.mssante.fr",
            "roles": ["radiologist"],
            "last_meeting_date": "2026-12-09",
        }
    ]
    assert (await client.get("/api/v1/experts", headers={"Authorization": "Bearer faux"})).status_code == 401


async def test_the_openapi_document_states_the_address_rule(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    email = document["components"]["schemas"]["ExpertBody"]["properties"]["email"]
    assert email["pattern"] == address_pattern(DOMAINS, EXCLUDED_IN_EMAIL)
    assert email["maxLength"] == 254
    assert re.fullmatch(email["pattern"], "jeanne@chu-fictif.mssante.test")
    assert not re.fullmatch(email["pattern"], "jeanne@gmail.com")
