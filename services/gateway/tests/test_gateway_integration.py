"""The gateway in-process against real Kafka and FerretDB: events in on Kafka, REST and SSE out; REST
commands out on Kafka. Each test has its own topic prefix and database."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from proxymage_dev.testing import eventually
from proxymage_shared import topics

from .harness import DCC_TOKEN, VIEWER_TOKEN, RunningGateway, base, running_gateway

TODAY = dt.date.today()
E = "enr-it-1"
M = "m-it-1"
R = "rcp-it-1"
PACS_PATIENT = {"patient_id": "P-IT-1", "issuer": "CHU"}
RECENT_CT = "1.2.999.1"
OLD_MR = "1.2.999.2"
RECENT_US = "1.2.999.3"
UNDATED_CT = "1.2.999.4"


@pytest.fixture
async def gw(stack_env: dict[str, str], unique: str) -> AsyncIterator[RunningGateway]:
    async with running_gateway(unique, sse_heartbeat_seconds=0.5) as running:
        yield running


def enrolled(enrolment_id: str = E, meeting_id: str = M, first_name: str = "Catherine") -> dict[str, Any]:
    return base(
        enrolment_id=enrolment_id,
        meeting_id=meeting_id,
        rcp_id=R,
        meeting_title="RCP ORL",
        meeting_date="2023-03-22",
        centre="3C",
        patient={
            "birth_name": "BARBE",
            "used_name": None,
            "first_name": first_name,
            "birth_date": "1956-04-12",
            "sex": "F",
        },
        consent=True,
        requested_by={"name": "Dr Paul DURAND"},
    )


def study(uid: str, date: dt.date | None, modalities: list[str]) -> dict[str, Any]:
    return {
        "study_instance_uid": uid,
        "description": f"EXAM {uid}",
        "pacs": "MIRC",
        "date": date.isoformat() if date else None,
        "modalities": modalities,
        "images": 12,
        "series": 2,
        "pacs_patient": PACS_PATIENT,
    }


def status(uid: str, version: int, state: str, **fields: Any) -> dict[str, Any]:
    return base(enrolment_id=E, study_instance_uid=uid, status=state, version=version, attempts=1, **fields)


async def enrol_with_catalogue(gw: RunningGateway) -> None:
    await gw.send(
        topics.RCP_SETTINGS,
        base(
            rcp_id=R,
            title="RCP ORL",
            centre="3C",
            imaging={"modalities": ["CT", "MR"], "date_filter": {"kind": "within_months", "months": 6}},
        ),
        R,
    )
    event = enrolled()
    await gw.send(topics.PATIENT_ENROLLED, event, E)
    await gw.send(
        topics.IDENTITY_RESOLVED,
        base(
            enrolment_id=E,
            source_event_id=event["event_id"],
            meeting_id=M,
            meeting_date="2023-03-22",
            status="matched",
            pacs_patients=[PACS_PATIENT],
        ),
        E,
    )
    studies = [
        study(RECENT_CT, TODAY - dt.timedelta(days=10), ["CT", "SR"]),
        study(OLD_MR, TODAY - dt.timedelta(days=800), ["MR"]),
        study(RECENT_US, TODAY - dt.timedelta(days=5), ["US"]),
        study(UNDATED_CT, None, ["CT"]),
    ]
    await gw.send(topics.IMAGING_CATALOGUED, base(enrolment_id=E, status="listed", studies=studies), E)


def uids(answer: dict[str, Any]) -> list[str]:
    return [item["study_instance_uid"] for item in answer["studies"]]


async def test_read_model_filters_states_and_meeting(gw: RunningGateway) -> None:
    await enrol_with_catalogue(gw)
    answer = await gw.wait_for(
        f"/api/v1/enrolments/{E}",
        lambda a: a["identity"]["status"] == "matched" and a["studies"] and a["filters"]["modalities"],
    )
    assert answer["filters"] == {"modalities": ["CT", "MR"], "date_filter": {"kind": "within_months", "months": 6}}
    assert uids(answer) == [RECENT_CT]
    assert answer["identity"] == {
        "status": "matched",
        "pacs_patients": 1,
        "near_misses": [],
        "reason": None,
        "reason_code": None,
        "reason_text": None,
    }
    first = answer["studies"][0]
    assert first["retrieval"] == {
        "status": "not_requested",
        "progress": None,
        "attempts": 0,
        "next_attempt_at": None,
        "reason": None,
        "viewer_url": None,
        "reason_code": None,
        "reason_text": None,
    }
    assert first["modalities"] == ["CT", "SR"]
    assert first["images"] == 12
    assert first["series"] == 2

    async def listed(**params: Any) -> list[str]:
        response = await gw.client.get(f"/api/v1/enrolments/{E}", params=params)
        assert response.status_code == 200, response.text
        return uids(response.json())

    assert await listed(all="true") == [RECENT_CT, OLD_MR, RECENT_US, UNDATED_CT]
    assert await listed(modalities="US") == [RECENT_US]
    assert await listed(modalities="", within_months=1) == [RECENT_CT, RECENT_US]
    old = TODAY - dt.timedelta(days=800)
    assert await listed(date_from=old.isoformat(), date_to=old.isoformat()) == [OLD_MR]

    # selection: the old MR is listed although the filter hides it
    await gw.send(
        topics.STUDIES_SELECTED,
        base(enrolment_id=E, study_instance_uids=[RECENT_CT, OLD_MR], expertise_requested=True),
        E,
    )
    answer = await gw.wait_for(f"/api/v1/enrolments/{E}", lambda a: a["expertise"]["requested"])
    assert uids(answer) == [RECENT_CT, OLD_MR]
    assert [s["retrieval"]["status"] for s in answer["studies"]] == ["queued", "queued"]

    await gw.send(topics.STUDY_STATUS, status(RECENT_CT, 2, "retrieving", progress={"done": 3, "total": 12}), E)
    await gw.send(topics.STUDY_STATUS, status(RECENT_CT, 3, "available"), E)
    await gw.send(topics.STUDY_STATUS, status(RECENT_CT, 1, "queued"), E)  # late and stale
    reason = "MIRC ne répond pas ; nouvel essai automatique"
    await gw.send(topics.STUDY_STATUS, status(OLD_MR, 2, "not_yet_available", reason=reason), E)
    await gw.send(
        topics.EXPERTISE_NOTIFICATION,
        base(enrolment_id=E, meeting_id=M, role="radiologist", status="sent", version=2),
        E,
    )
    answer = await gw.wait_for(
        f"/api/v1/enrolments/{E}",
        lambda a: (
            [s["retrieval"]["status"] for s in a["studies"]] == ["available", "not_yet_available"]
            and a["expertise"]["notifications"]
        ),
    )
    ct, mr = answer["studies"]
    # The built-in OHIF viewer on that study (gateway.ohif, reading through gateway.dicomweb).
    expected = f"{gw.settings.public_url}/viewer/viewer?StudyInstanceUIDs={RECENT_CT}"
    assert ct["retrieval"]["viewer_url"] == expected
    assert mr["retrieval"]["viewer_url"] is None
    assert mr["retrieval"]["reason"] == reason
    assert answer["expertise"]["notifications"][0]["role"] == "radiologist"
    assert answer["expertise"]["notifications"][0]["status"] == "sent"

    # removal: the study is no longer selected and shows as removed
    await gw.send(topics.STUDY_REMOVED, base(enrolment_id=E, study_instance_uid=OLD_MR), E)
    answer = await gw.wait_for(f"/api/v1/enrolments/{E}", lambda a: OLD_MR not in uids(a), all="false")
    answer = (await gw.client.get(f"/api/v1/enrolments/{E}", params={"all": "true"})).json()
    removed = next(s for s in answer["studies"] if s["study_instance_uid"] == OLD_MR)
    assert removed["selected"] is False
    assert removed["retrieval"]["status"] == "removed"

    meeting = (await gw.client.get(f"/api/v1/meetings/{M}/enrolments")).json()
    assert meeting["meeting_id"] == M
    assert meeting["title"] == "RCP ORL"
    (row,) = meeting["enrolments"]
    assert row["enrolment_id"] == E
    assert row["patient"]["birth_name"] == "BARBE"
    assert row["studies"] == {"selected": 1, "by_status": {"available": 1, "removed": 1}}
    assert (await gw.client.get("/api/v1/rcps/" + R)).json()["imaging"]["modalities"] == ["CT", "MR"]

    # the audit: reads and commands, by token name, without patient names
    from proxymage_shared.mongo import create_mongo_client

    client = create_mongo_client(gw.settings.mongo_url.get_secret_value())
    try:

        async def audited() -> bool:
            count = await client[gw.settings.database_name()]["audit"].count_documents(
                {"who": "it-dcc", "action": "read_enrolment", "enrolment_id": E}
            )
            return count > 0

        await eventually(audited, 10, "audit records")
        record = await client[gw.settings.database_name()]["audit"].find_one({"enrolment_id": E})
        assert record is not None
        assert "BARBE" not in json.dumps(record, default=str)
    finally:
        await client.close()


async def test_auth_and_errors(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url, trust_env=False) as anonymous:
        for method, path in [
            ("GET", f"/api/v1/enrolments/{E}"),
            ("GET", f"/api/v1/meetings/{M}/enrolments"),
            ("POST", "/api/v1/enrolments"),
            ("PUT", f"/api/v1/enrolments/{E}/selection"),
            ("DELETE", f"/api/v1/enrolments/{E}"),
            ("GET", "/api/v1/no-such-route"),
        ]:
            response = await anonymous.request(method, path, content=b"{not json")
            assert response.status_code == 401, (method, path)
            assert response.json() == {"detail": "a valid bearer token is required"}
        wrong = await anonymous.get(f"/api/v1/enrolments/{E}", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        for open_path in ("/healthz", "/metrics", "/openapi.json"):
            assert (await anonymous.get(open_path)).status_code == 200
        # the console's cookie is accepted like the header
        anonymous.cookies.set("proxymage_token", VIEWER_TOKEN)
        assert (await anonymous.get(f"/api/v1/enrolments/{E}")).status_code == 404
        refused = await anonymous.post(f"/api/v1/enrolments/{E}/refresh")
        assert refused.status_code == 403
        assert "detail" in refused.json()
        assert (await anonymous.delete(f"/api/v1/enrolments/{E}")).status_code == 403

    assert (await gw.client.get("/api/v1/enrolments/enr-unknown")).json() == {"detail": "unknown enrolment"}
    assert (await gw.client.get("/api/v1/meetings/m-unknown/enrolments")).status_code == 404
    assert (await gw.client.get("/api/v1/rcps/r-unknown")).status_code == 404
    for path, params in [
        ("/api/v1/enrolments/bad%20id", {}),
        (f"/api/v1/enrolments/{E}", {"within_months": "0"}),
        (f"/api/v1/enrolments/{E}", {"date_from": "2023-13-01"}),
    ]:
        response = await gw.client.get(path, params=params)
        assert response.status_code == 422, (path, params)
        assert "detail" in response.json()
    await gw.send(topics.PATIENT_ENROLLED, enrolled(), E)
    await gw.wait_for(f"/api/v1/enrolments/{E}", lambda a: True)
    for params in (
        {"date_from": "2023-01-01"},
        {"within_months": "3", "date_from": "2023-01-01", "date_to": "2023-02-01"},
    ):
        response = await gw.client.get(f"/api/v1/enrolments/{E}", params=params)
        assert response.status_code == 422
        assert isinstance(response.json()["detail"], str)
    # unknown modality codes: refused by the pattern the OpenAPI document states
    response = await gw.client.get(f"/api/v1/enrolments/{E}", params={"modalities": "CT,XX"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "modalities"]
    bad_bodies: list[tuple[str, str, Any]] = [
        ("POST", "/api/v1/enrolments", {**enrolled(), "consent": "yes"}),
        ("POST", "/api/v1/enrolments", {**enrolled(), "meeting_date": 20230322}),
        ("PUT", f"/api/v1/enrolments/{E}/selection", {"study_instance_uids": ["1.2.x"], "expertise_requested": True}),
        ("PUT", f"/api/v1/rcps/{R}/imaging-settings", {"title": "t", "centre": "c", "imaging": {"modalities": ["ZZ"]}}),
        ("PUT", f"/api/v1/meetings/{M}/experts", {"title": "t"}),
    ]
    for method, path, body in bad_bodies:
        response = await gw.client.request(method, path, json=body)
        assert response.status_code == 422, (path, body, response.text)
    response = await gw.client.post(
        "/api/v1/enrolments", content=b"\xff{", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert (await gw.client.delete(f"/api/v1/enrolments/{E}/studies/not-a-uid")).status_code == 422


async def consume(gw: RunningGateway, topic_names: list[str], count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        *[gw.settings.topic(name) for name in topic_names],
        bootstrap_servers=gw.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:

        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for items in batch.values():
                records.extend(items)
            return len(records) >= count

        await eventually(enough, 30, f"{count} command(s) on Kafka")
    finally:
        await consumer.stop()
    return records


async def test_commands_land_on_kafka(gw: RunningGateway) -> None:
    body = {k: v for k, v in enrolled().items() if k not in ("event_id", "occurred_at")}
    commands: list[tuple[str, str, Any, str]] = [
        (
            "PUT",
            f"/api/v1/rcps/{R}/imaging-settings",
            {
                "title": "RCP ORL",
                "centre": "3C",
                "imaging": {
                    "modalities": ["CT"],
                    "date_filter": {"kind": "between", "from": "2023-01-01", "to": "2023-03-31"},
                },
            },
            topics.RCP_SETTINGS,
        ),
        (
            "PUT",
            f"/api/v1/meetings/{M}/experts",
            {
                "rcp_id": R,
                "title": "RCP ORL",
                "date": "2023-03-22",
                "centre": "3C",
                "on_call_radiologist": {"name": "Dr Jeanne MARTIN", "email": "jeanne.martin@chu.mssante.fr"},
                "on_call_nuclear_physician": None,
            },
            topics.MEETING_EXPERTS,
        ),
        ("POST", "/api/v1/enrolments", body, topics.PATIENT_ENROLLED),
        (
            "PUT",
            f"/api/v1/enrolments/{E}/selection",
            {"study_instance_uids": [RECENT_CT], "expertise_requested": True},
            topics.STUDIES_SELECTED,
        ),
        ("DELETE", f"/api/v1/enrolments/{E}/studies/{RECENT_CT}", None, topics.STUDY_REMOVED),
        ("POST", f"/api/v1/enrolments/{E}/refresh", None, topics.IMAGING_REFRESH),
        ("DELETE", f"/api/v1/enrolments/{E}", {"reason": "présenté dans une autre RCP"}, topics.ENROLMENT_WITHDRAWN),
    ]
    sent: dict[str, str] = {}
    for method, path, payload, topic in commands:
        response = await gw.client.request(method, path, json=payload)
        assert response.status_code == 202, (path, response.text)
        sent[topic] = response.json()["event_id"]
    records = await consume(gw, [topic for *_, topic in commands], len(commands))
    by_topic = {record.topic.removeprefix(gw.settings.topic_prefix): record for record in records}
    assert set(by_topic) == set(sent)
    for topic, record in by_topic.items():
        value = json.loads(record.value)
        assert value["event_id"] == sent[topic]
        model = {**topics_models()}[topic]
        model.model_validate_json(record.value)  # a valid contract event
        assert record.key.decode() == value[topics.TOPIC_KEYS[topic]]
    assert json.loads(by_topic[topics.RCP_SETTINGS].value)["imaging"]["date_filter"]["from"] == "2023-01-01"
    assert json.loads(by_topic[topics.ENROLMENT_WITHDRAWN].value)["reason"] == "présenté dans une autre RCP"
    # the gateway projects its own commands like the DCC's
    await gw.wait_for(f"/api/v1/meetings/{M}", lambda a: a["on_call_radiologist"] is not None)


async def test_withdrawal_is_published_and_shown_withdrawn(gw: RunningGateway) -> None:
    await enrol_with_catalogue(gw)
    await gw.send(
        topics.STUDIES_SELECTED,
        base(enrolment_id=E, study_instance_uids=[RECENT_CT, OLD_MR], expertise_requested=True),
        E,
    )
    await gw.send(topics.STUDY_STATUS, status(RECENT_CT, 3, "available"), E)
    await gw.wait_for(
        f"/api/v1/enrolments/{E}",
        lambda a: (
            a["identity"]["status"] == "matched" and any(s["retrieval"]["status"] == "available" for s in a["studies"])
        ),
    )
    async with httpx.AsyncClient(base_url=gw.url, trust_env=False) as other:
        assert (await other.delete(f"/api/v1/enrolments/{E}")).status_code == 401
        viewer = await other.delete(f"/api/v1/enrolments/{E}", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"})
        assert viewer.status_code == 403

    response = await gw.client.delete(f"/api/v1/enrolments/{E}", params={"reason": "doublon de dossier"})
    assert response.status_code == 202, response.text
    event_id = response.json()["event_id"]
    (record,) = await consume(gw, [topics.ENROLMENT_WITHDRAWN], 1)
    value = json.loads(record.value)
    assert record.key.decode() == E
    assert value["event_id"] == event_id
    assert value["enrolment_id"] == E
    assert value["reason"] == "doublon de dossier"

    # The gateway consumes its own command like the DCC's: withdrawn at once, before any other service answers.
    answer = await gw.wait_for(f"/api/v1/enrolments/{E}", lambda a: a["identity"]["status"] == "withdrawn")
    assert answer["identity"]["reason_code"] == "enrolment_withdrawn"
    assert answer["identity"]["reason"].startswith("enrolment_withdrawn: ")
    assert answer["withdrawal"]["reason"] == "doublon de dossier"
    assert [(s["study_instance_uid"], s["retrieval"]["status"]) for s in answer["studies"]] == [
        (RECENT_CT, "removed"),
        (OLD_MR, "removed"),
    ]
    assert all(s["retrieval"]["viewer_url"] is None for s in answer["studies"])
    # The topics are consumed independently: the enrolled event (which names the meeting) may be projected after
    # the withdrawal, so the meeting's list is waited for rather than read once.
    meeting = await gw.wait_for(f"/api/v1/meetings/{M}/enrolments", lambda a: bool(a["enrolments"]))
    assert [(e["enrolment_id"], e["identity_status"]) for e in meeting["enrolments"]] == [(E, "withdrawn")]

    # A newer enrolled event re-opens it: pending until the identity-matcher answers it.
    await gw.send(topics.PATIENT_ENROLLED, enrolled(), E)
    answer = await gw.wait_for(f"/api/v1/enrolments/{E}", lambda a: a["identity"]["status"] == "pending")
    assert answer["withdrawal"] is None

    # An enrolment the read model has never seen can be withdrawn too (events may come in any order).
    unknown = "enr-it-never-seen"
    assert (await gw.client.get(f"/api/v1/enrolments/{unknown}")).status_code == 404
    assert (await gw.client.delete(f"/api/v1/enrolments/{unknown}")).status_code == 202
    answer = await gw.wait_for(f"/api/v1/enrolments/{unknown}", lambda a: a["identity"]["status"] == "withdrawn")
    assert answer["withdrawal"]["reason"] is None
    assert answer["meeting_id"] is None


def topics_models() -> dict[str, Any]:
    from proxymage_shared.events import INBOUND_EVENT_TYPES

    return dict(INBOUND_EVENT_TYPES)


class SseReader:
    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments = 0

    async def next(self, timeout: float = 20) -> dict[str, str]:
        async def read() -> dict[str, str]:
            fields: dict[str, str] = {}
            async for line in self.lines:
                if line == "":
                    if "event" in fields:
                        return fields
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            raise AssertionError("the stream ended")

        return await asyncio.wait_for(read(), timeout)


async def test_sse_order_resume_and_resync(gw: RunningGateway) -> None:
    await enrol_with_catalogue(gw)
    # Every part projected (the enrolled event comes on its own topic, possibly after the outcomes) before
    # listening, so the first message is the selection's.
    await gw.wait_for(f"/api/v1/enrolments/{E}", lambda a: a["studies"] and a["patient"] is not None)
    url = f"/api/v1/enrolments/{E}/events"
    statuses = ["queued", "retrieving", "retrieving", "available"]
    received: list[dict[str, str]] = []
    async with gw.client.stream("GET", url, timeout=httpx.Timeout(30, read=30)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        async with gw.client.stream("GET", f"/api/v1/meetings/{M}/events") as meeting_response:
            meeting_reader = SseReader(meeting_response)
            await gw.send(
                topics.STUDIES_SELECTED,
                base(enrolment_id=E, study_instance_uids=[RECENT_CT], expertise_requested=False),
                E,
            )
            selection = await reader.next()
            assert selection["event"] == "selection"
            assert json.loads(selection["data"])["selected"] == [RECENT_CT]
            for version, state in enumerate(statuses, start=1):
                progress = {"done": version, "total": 12} if state == "retrieving" else None
                await gw.send(topics.STUDY_STATUS, status(RECENT_CT, version, state, progress=progress), E)
            for _ in statuses:
                received.append(await reader.next())
            meeting_selection = await meeting_reader.next()
            assert meeting_selection["event"] == "selection"
            assert json.loads(meeting_selection["data"])["summary"]["enrolment_id"] == E
        data = [json.loads(item["data"]) for item in received]
        assert [item["event"] for item in received] == ["study-status"] * 4
        assert [d["retrieval"]["status"] for d in data] == statuses
        assert data[-1]["retrieval"]["viewer_url"] is not None
        ids = [item["id"] for item in received]
        assert [int(i.split("-")[1]) for i in ids] == sorted(int(i.split("-")[1]) for i in ids)

        await eventually(_heartbeat_seen(reader), 10, "a heartbeat")

    # resume after the first status: the three others, in order
    async with gw.client.stream("GET", url, headers={"Last-Event-ID": received[0]["id"]}) as response:
        reader = SseReader(response)
        resumed = [await reader.next() for _ in range(3)]
        assert [item["id"] for item in resumed] == [item["id"] for item in received[1:]]
    # an id this process never gave: reload
    async with gw.client.stream("GET", url, headers={"Last-Event-ID": "1-1"}) as response:
        first = await SseReader(response).next()
        assert first["event"] == "resync"
        assert "id" not in first


def _heartbeat_seen(reader: SseReader) -> Any:
    async def seen() -> bool:
        with_timeout = asyncio.wait_for(reader.lines.__anext__(), 2)
        line = await with_timeout
        if line.startswith(":"):
            reader.comments += 1
        return reader.comments >= 2  # ": connected" and at least one ": keepalive"

    return seen


def _unused() -> str:
    return str(uuid.uuid4()) + DCC_TOKEN
