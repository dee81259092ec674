"""Retention in the gateway, on the real stack: a meeting past `retention_days` takes its enrolments, meeting
document and audit entries with it; a live meeting keeps everything. The gateway's own periodic sweep runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gateway.projection import ENROLMENTS, Json, apply_patch, member_key, patches
from gateway.store import ReadModelStore
from proxymage_dev.testing import eventually
from proxymage_shared import topics
from proxymage_shared.events import PatientEnrolled
from proxymage_shared.mongo import create_mongo_client

from .harness import RunningGateway, base, running_gateway

pytestmark = pytest.mark.integration

TODAY = dt.date.today()


@pytest.fixture
async def gw(stack_env: dict[str, str], unique: str) -> AsyncIterator[RunningGateway]:
    async with running_gateway(unique, retention_days=30, retention_sweep_seconds=0.5) as running:
        yield running


def enrolled(enrolment_id: str, meeting_id: str, meeting_date: dt.date) -> dict[str, Any]:
    return base(
        enrolment_id=enrolment_id,
        meeting_id=meeting_id,
        rcp_id="rcp-ret",
        meeting_title="RCP rétention",
        meeting_date=meeting_date.isoformat(),
        centre="3C",
        patient={
            "birth_name": "FICTIF",
            "used_name": None,
            "first_name": "Ida",
            "birth_date": "1950-02-03",
            "sex": "F",
        },
        consent=True,
        requested_by={"name": "Dr FICTIF"},
    )


async def test_a_meeting_past_its_retention_is_deleted_with_its_enrolments_and_audit(gw: RunningGateway) -> None:
    old_meeting, live_meeting = "m-ret-old", "m-ret-live"
    # 31 days ago: one day past the 30 days of retention. The other meeting is tomorrow.
    await gw.send(
        topics.PATIENT_ENROLLED, enrolled("enr-ret-old", old_meeting, TODAY - dt.timedelta(days=31)), "enr-ret-old"
    )
    await gw.send(
        topics.PATIENT_ENROLLED, enrolled("enr-ret-edge", old_meeting, TODAY - dt.timedelta(days=31)), "enr-ret-edge"
    )
    await gw.send(
        topics.PATIENT_ENROLLED, enrolled("enr-ret-live", live_meeting, TODAY + dt.timedelta(days=1)), "enr-ret-live"
    )
    await gw.send(
        topics.PATIENT_ENROLLED,
        enrolled("enr-ret-30", "m-ret-30", TODAY - dt.timedelta(days=30)),  # day 30: still kept
        "enr-ret-30",
    )

    # Whichever comes first, the sweep or the reads: the live ones must always be there, the old ones go.
    async def live_listed() -> bool:
        answer = await gw.client.get(f"/api/v1/meetings/{live_meeting}/enrolments")
        return answer.status_code == 200 and [e["enrolment_id"] for e in answer.json()["enrolments"]] == [
            "enr-ret-live"
        ]

    await eventually(live_listed, 20, "the live meeting's enrolment to be listed")
    # Audited reads of the old enrolment while it exists (or already 404 if the sweep was quicker).
    await gw.client.get("/api/v1/enrolments/enr-ret-old")
    assert (await gw.client.get("/api/v1/enrolments/enr-ret-live")).status_code == 200

    async def old_gone() -> bool:
        answers = [await gw.client.get(f"/api/v1/enrolments/{key}") for key in ("enr-ret-old", "enr-ret-edge")]
        meetings = (await gw.client.get("/api/v1/meetings")).json()
        return all(a.status_code == 404 for a in answers) and old_meeting not in {m["meeting_id"] for m in meetings}

    await eventually(old_gone, 20, "the expired meeting's enrolments and meeting to be deleted")


async def test_the_sweep_deletes_enrolments_meetings_and_audit_entries_once(
    stack_env: dict[str, str], unique: str
) -> None:
    # The gateway's own sweep keeps ten years (it would race the test); the test sweeps with a 30-day cutoff.
    async with running_gateway(unique, retention_days=3650, retention_sweep_seconds=3600) as gw:
        past = TODAY - dt.timedelta(days=31)
        await gw.send(topics.PATIENT_ENROLLED, enrolled("enr-sw-old", "m-sw-old", past), "enr-sw-old")
        await gw.send(topics.PATIENT_ENROLLED, enrolled("enr-sw-live", "m-sw-live", TODAY), "enr-sw-live")
        for key in ("enr-sw-old", "enr-sw-live"):
            await gw.wait_for(f"/api/v1/enrolments/{key}", lambda answer: True)  # audited reads (200)
        for meeting in ("m-sw-old", "m-sw-live"):
            assert (await gw.client.get(f"/api/v1/meetings/{meeting}/enrolments")).status_code == 200
        client = create_mongo_client(gw.settings.mongo_url.get_secret_value())
        database = client[gw.settings.database_name()]
        try:

            async def audited() -> bool:
                found = await database["audit"].count_documents({"enrolment_id": "enr-sw-old", "status": 200})
                return found >= 1 and await database["audit"].count_documents({"meeting_id": "m-sw-old"}) >= 1

            await eventually(audited, 10, "the reads to be audited")
            store = ReadModelStore(database)
            cutoff = TODAY - dt.timedelta(days=30)
            an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
            assert await store.sweep_expired(cutoff, an_hour_ago) == 1
            assert await database["enrolments"].find_one({"_id": "enr-sw-old"}) is None
            assert await database["meetings"].find_one({"_id": "m-sw-old"}) is None
            assert await database["audit"].count_documents({"enrolment_id": "enr-sw-old"}) == 0
            assert await database["audit"].count_documents({"meeting_id": "m-sw-old"}) == 0
            # The live enrolment, its meeting and its audit entries (younger than the audit's own limit) stay.
            assert await database["enrolments"].find_one({"_id": "enr-sw-live"}) is not None
            assert await database["meetings"].find_one({"_id": "m-sw-live"}) is not None
            assert await database["audit"].count_documents({"enrolment_id": "enr-sw-live"}) >= 1
            # Idempotent: nothing left to delete.
            assert await store.sweep_expired(cutoff, an_hour_ago) == 0
            # The audit's own limit: entries older than it go, whatever they name.
            assert await store.sweep_expired(cutoff, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)) == 0
            assert await database["audit"].count_documents({}) == 0
        finally:
            await client.close()


async def test_a_meeting_lists_its_enrolments_and_not_one_moved_to_another_meeting(gw: RunningGateway) -> None:
    when = TODAY + dt.timedelta(days=3)
    for key in ("enr-mem-1", "enr-mem-2", "enr-mem-3"):
        await gw.send(topics.PATIENT_ENROLLED, enrolled(key, "m-mem-a", when), key)
    # enr-mem-2 is enrolled again, later, in another meeting.
    await gw.send(topics.PATIENT_ENROLLED, enrolled("enr-mem-2", "m-mem-b", when), "enr-mem-2")

    async def listed() -> bool:
        a = (await gw.client.get("/api/v1/meetings/m-mem-a/enrolments")).json()
        b = (await gw.client.get("/api/v1/meetings/m-mem-b/enrolments")).json()
        return [e["enrolment_id"] for e in a.get("enrolments", [])] == ["enr-mem-1", "enr-mem-3"] and [
            e["enrolment_id"] for e in b.get("enrolments", [])
        ] == ["enr-mem-2"]

    await eventually(listed, 20, "each meeting to list its own enrolments")


def enrolment_document(enrolment_id: str, meeting_id: str) -> dict[str, Json]:
    """An `enrolments` document as the projection writes it (enrolled for a meeting in 2030)."""
    event = PatientEnrolled.model_validate(enrolled(enrolment_id, meeting_id, dt.date(2030, 1, 1)), strict=False)
    return apply_patch(None, next(patch for patch in patches(event) if patch.collection == ENROLMENTS))


async def test_a_read_model_from_before_member_lists_keeps_its_meetings_enrolments(
    stack_env: dict[str, str], unique: str
) -> None:
    client = create_mongo_client(stack_env["PROXYMAGE_MONGO_URL"])
    database = client[f"it_gw_members_{unique}"]
    try:
        # Two enrolments projected by an older gateway: their meeting has no member list.
        for key in ("enr-old-1", "enr-old-2"):
            await database["enrolments"].insert_one(enrolment_document(key, "m-old"))
        await database["meetings"].insert_one({"_id": "m-old"})
        # A meeting that lists one of its two enrolments already: only the other one is added.
        for key in ("enr-part-1", "enr-part-2"):
            await database["enrolments"].insert_one(enrolment_document(key, "m-part"))
        listed_before = {"enrolment_id": "enr-part-1", "order": "1"}
        await database["meetings"].insert_one({"_id": "m-part", "members": {member_key("enr-part-1"): listed_before}})
        store = ReadModelStore(database)
        await store.ensure_indexes()  # at start: the lists are filled once
        await store.ensure_indexes()
        # A new enrolment gives the meeting a member the new way; the older ones are still listed.
        await database["enrolments"].insert_one(enrolment_document("enr-new", "m-old"))
        await database["meetings"].update_one(
            {"_id": "m-old"}, {"$set": {f"members.{member_key('enr-new')}": {"enrolment_id": "enr-new"}}}
        )
        listed = [record.enrolment_id for record in await store.meeting_enrolments("m-old", 100)]
        assert listed == ["enr-new", "enr-old-1", "enr-old-2"]
        assert [record.enrolment_id for record in await store.meeting_enrolments("m-part", 100)] == [
            "enr-part-1",
            "enr-part-2",
        ]
        assert (await database["meetings"].find_one({"_id": "m-part"}) or {})["members"][
            member_key("enr-part-1")
        ] == listed_before  # left as the projection wrote it
    finally:
        await client.drop_database(f"it_gw_members_{unique}")
        await client.close()
