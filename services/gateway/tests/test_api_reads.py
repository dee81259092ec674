"""The REST reads (`gateway.api_reads`) over the in-memory read model, filled by the real projection
(`Handlers`), through the ASGI app (no server): each read's answer and its 404, the audit of the enrolment and
meeting reads, the meetings' order, the RCPs, and the 503 of a read model that cannot be reached."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from gateway.api_common import ApiContext
from gateway.audit import Auditor, AuditRecord
from gateway.handlers import Handlers
from gateway.projection import MEETINGS, RCPS
from gateway.read_model import EnrolmentRecord, MeetingRecord, RcpRecord
from proxymage_shared import events as ev
from proxymage_shared.events import Event

from .fakes import FakeReadModel, RecordingHub, api_client, api_context
from .test_meeting_day import half_available
from .test_projection import ENROLMENT, LINKS, POOL, UIDS

NOW = dt.datetime(2023, 3, 21, 13, 0, tzinfo=dt.UTC)
TOKENS = {"viewer-token": ("lecteur", "viewer")}
UNREACHABLE = {"detail": "the read model cannot be reached; try again"}


def _first(kind: type[Event]) -> Event:
    return next(event for event in POOL if isinstance(event, kind))


def _another(event: Event, **fields: Any) -> Event:
    return event.model_copy(update={"event_id": uuid.uuid4(), **fields})


MEETING_EXPERTS = _first(ev.MeetingExperts)  # m-1, 2023-03-22, an on-call radiologist
RCP_SETTINGS = _first(ev.RcpSettings)  # rcp-1, CT
THORAX_MEETING = _another(MEETING_EXPERTS, meeting_id="m-2", date=dt.date(2024, 1, 10), title="RCP thorax")
THORAX_RCP = _another(RCP_SETTINGS, rcp_id="rcp-2", title="RCP thorax")
EVENTS: list[Event] = [
    *half_available("Hélène", str(uuid.UUID(int=0xAC)), expertise_requested=True)[1],
    MEETING_EXPERTS,
    THORAX_MEETING,
    _another(MEETING_EXPERTS, meeting_id="m-0", date=dt.date(2022, 5, 2), title="RCP digestif"),
    RCP_SETTINGS,
    THORAX_RCP,
]


def _fields(event: Event) -> dict[str, Any]:
    """The event's fields as JSON, without its id and time."""
    return event.model_dump(mode="json", by_alias=True, exclude={"event_id", "occurred_at"})


async def _no_publish(topic: str, key: str, event: Event) -> None:
    raise AssertionError(f"a read published {topic}")


@dataclass
class Reads:
    http: httpx.AsyncClient
    store: FakeReadModel
    auditor: Auditor

    async def audited(self) -> list[AuditRecord]:
        await self.auditor.flush()
        return [{name: value for name, value in record.items() if name != "at"} for record in self.store.audit]


def _context(store: FakeReadModel, auditor: Auditor) -> ApiContext:
    return api_context(store, auditor, _no_publish, NOW, TOKENS)


@pytest.fixture
async def reads() -> AsyncIterator[Reads]:
    store = FakeReadModel()
    handlers = Handlers(store, RecordingHub(), LINKS)
    for event in EVENTS:
        await handlers.handle(event)
    store.documents[(RCPS, "rcp-vide")] = {"_id": "rcp-vide"}  # an RCP document without its settings
    auditor = Auditor(store.record_audit)
    async with api_client(_context(store, auditor), "viewer-token") as http:
        yield Reads(http, store, auditor)


def _audit(action: str, status: int, **ids: str | None) -> AuditRecord:
    return {
        "who": "lecteur",
        "subject": None,
        "role": "viewer",
        "action": action,
        "status": status,
        "enrolment_id": None,
        "meeting_id": None,
        "rcp_id": None,
        "event_id": None,
        **ids,
    }


async def test_an_enrolment_is_answered_with_its_rcps_filters_and_the_read_is_audited(reads: Reads) -> None:
    answer = await reads.http.get(f"/api/v1/enrolments/{ENROLMENT}")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["enrolment_id"], body["meeting_id"], body["rcp_id"]) == (ENROLMENT, "m-1", "rcp-1")
    assert body["patient"]["first_name"] == "Hélène"
    assert body["identity"]["status"] == "matched"
    assert body["filters"]["modalities"] == ["CT"]  # the RCP's default filters, read from its settings
    assert {study["study_instance_uid"]: study["retrieval"]["status"] for study in body["studies"]} == {
        UIDS[0]: "available",
        UIDS[1]: "queued",
        UIDS[2]: "not_requested",
    }
    assert body["expertise"]["requested"] is True
    assert await reads.audited() == [_audit("read_enrolment", 200, enrolment_id=ENROLMENT, meeting_id="m-1")]


@pytest.mark.parametrize(
    ("path", "detail", "audit"),
    [
        (
            "/api/v1/enrolments/enr-inconnue",
            "unknown enrolment",
            _audit("read_enrolment", 404, enrolment_id="enr-inconnue"),
        ),
        (
            "/api/v1/meetings/m-inconnue/enrolments",  # neither its details nor any patient
            "unknown meeting",
            _audit("read_meeting_enrolments", 404, meeting_id="m-inconnue"),
        ),
    ],
)
async def test_an_unknown_enrolment_or_meeting_is_404_and_the_read_is_audited(
    reads: Reads, path: str, detail: str, audit: AuditRecord
) -> None:
    answer = await reads.http.get(path)
    assert (answer.status_code, answer.json()) == (404, {"detail": detail})
    assert await reads.audited() == [audit]


async def test_a_meetings_patients_with_the_meetings_details_audited(reads: Reads) -> None:
    answer = await reads.http.get("/api/v1/meetings/m-1/enrolments")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["meeting_id"], body["title"], body["date"]) == ("m-1", "RCP ORL", "2023-03-22")
    assert body["on_call_radiologist"]["name"] == "Dr R"
    (patient,) = body["enrolments"]
    assert (patient["enrolment_id"], patient["identity_status"], patient["catalogued"]) == (ENROLMENT, "matched", 3)
    assert patient["studies"] == {"selected": 2, "by_status": {"available": 1, "queued": 1}}
    assert patient["expertise_requested"] is True
    assert await reads.audited() == [_audit("read_meeting_enrolments", 200, meeting_id="m-1")]


async def test_a_meeting_known_only_from_its_enrolments_lists_them(reads: Reads) -> None:
    del reads.store.documents[(MEETINGS, "m-1")]
    answer = await reads.http.get("/api/v1/meetings/m-1/enrolments")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["title"], body["date"]) == (None, None)
    assert [patient["enrolment_id"] for patient in body["enrolments"]] == [ENROLMENT]


async def test_a_meetings_details_and_the_404_of_an_unknown_one(reads: Reads) -> None:
    answer = await reads.http.get("/api/v1/meetings/m-2")
    assert answer.status_code == 200
    assert answer.json() == _fields(THORAX_MEETING)  # the DCC's meeting event, as it was sent
    unknown = await reads.http.get("/api/v1/meetings/m-inconnue")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "unknown meeting"})


async def test_the_meetings_most_recent_first(reads: Reads) -> None:
    answer = await reads.http.get("/api/v1/meetings")
    assert answer.status_code == 200
    assert [(meeting["meeting_id"], meeting["date"]) for meeting in answer.json()] == [
        ("m-2", "2024-01-10"),
        ("m-1", "2023-03-22"),
        ("m-0", "2022-05-02"),
    ]


async def test_the_rcps_with_settings_and_the_404_of_one_without(reads: Reads) -> None:
    listed = await reads.http.get("/api/v1/rcps")
    assert listed.status_code == 200
    assert [(rcp["rcp_id"], rcp["title"]) for rcp in listed.json()] == [("rcp-1", "RCP"), ("rcp-2", "RCP thorax")]
    one = await reads.http.get("/api/v1/rcps/rcp-2")
    assert one.status_code == 200
    assert one.json() == _fields(THORAX_RCP)
    for rcp_id in ("rcp-inconnue", "rcp-vide"):
        missing = await reads.http.get(f"/api/v1/rcps/{rcp_id}")
        assert (missing.status_code, missing.json()) == (404, {"detail": "unknown RCP"}), rcp_id


class UnreachableReadModel(FakeReadModel):
    """The read model with MongoDB gone: every read fails."""

    async def enrolment(self, enrolment_id: str) -> EnrolmentRecord | None:
        raise ConnectionError("mongo down")

    async def meeting(self, meeting_id: str) -> MeetingRecord | None:
        raise ConnectionError("mongo down")

    async def meetings(self, limit: int) -> list[MeetingRecord]:
        raise ConnectionError("mongo down")

    async def rcp(self, rcp_id: str) -> RcpRecord | None:
        raise ConnectionError("mongo down")

    async def rcps(self, limit: int) -> list[RcpRecord]:
        raise ConnectionError("mongo down")


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/enrolments/{ENROLMENT}",
        "/api/v1/meetings/m-1/enrolments",
        "/api/v1/meetings/m-1",
        "/api/v1/meetings",
        "/api/v1/rcps",
        "/api/v1/rcps/rcp-1",
    ],
)
async def test_a_read_model_that_cannot_be_reached_is_503(path: str) -> None:
    store = UnreachableReadModel()
    async with api_client(_context(store, Auditor(store.record_audit)), "viewer-token") as http:
        answer = await http.get(path)
    assert (answer.status_code, answer.json()) == (503, UNREACHABLE)
