"""Retention in the identity-matcher, on the real FerretDB: the enrolments whose meeting is past the retention
are deleted by the sweep, the others kept; sweeps running at once (replicas) and a second sweep delete nothing
more."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
from identity_matcher.store import EnrolmentStore
from proxymage_shared.events import EnrolmentWithdrawn, Patient, PatientEnrolled, Person
from proxymage_shared.mongo import Document, create_mongo_client
from pymongo.asynchronous.collection import AsyncCollection

pytestmark = pytest.mark.integration

CUTOFF = dt.date(2026, 10, 2)  # what the sweeper passes on 1 November with 30 days of retention


def enrolled(enrolment_id: str, meeting_date: dt.date, occurred_at: dt.datetime | None = None) -> PatientEnrolled:
    return PatientEnrolled(
        event_id=uuid.uuid4(),
        occurred_at=occurred_at or dt.datetime.now(dt.UTC),
        enrolment_id=enrolment_id,
        meeting_id=f"m-{meeting_date.isoformat()}",
        rcp_id="rcp-retention",
        meeting_title="RCP fictive",
        meeting_date=meeting_date,
        centre="3C fictif",
        patient=Patient(birth_name="FICTIF", used_name=None, first_name="Ida", birth_date=dt.date(1950, 2, 3), sex="F"),
        consent=True,
        requested_by=Person(name="Dr FICTIF"),
    )


def withdrawn(enrolment_id: str) -> EnrolmentWithdrawn:
    return EnrolmentWithdrawn(
        event_id=uuid.uuid4(), occurred_at=dt.datetime.now(dt.UTC), enrolment_id=enrolment_id, reason=None
    )


@pytest.fixture
async def collection(stack_env: dict[str, str], unique: str) -> AsyncIterator[AsyncCollection[Document]]:
    client = create_mongo_client(stack_env["PROXYMAGE_MONGO_URL"])
    name = f"it_identity_retention_{unique}"
    try:
        yield client[name]["enrolments"]
    finally:
        await client.drop_database(name)
        await client.close()


async def ids(collection: AsyncCollection[Document]) -> set[str]:
    return {str(doc["_id"]) async for doc in collection.find({}, {"_id": 1})}


async def test_expired_enrolments_are_deleted_and_live_ones_kept(collection: AsyncCollection[Document]) -> None:
    store = EnrolmentStore(collection.database)
    day_before = CUTOFF - dt.timedelta(days=1)
    await store.accept(enrolled("enr-old", dt.date(2026, 9, 1)))
    await store.accept(enrolled("enr-day-before", day_before))
    await store.accept(enrolled("enr-withdrawn-old", day_before))
    await store.accept_withdrawal(withdrawn("enr-withdrawn-old"))  # the withdrawal keeps the meeting date
    await store.accept(enrolled("enr-cutoff-day", CUTOFF))  # exactly `retention_days` after: kept
    await store.accept(enrolled("enr-live", dt.date(2026, 12, 2)))
    await store.accept_withdrawal(withdrawn("enr-only-withdrawn"))  # no meeting date known: kept
    # Re-scheduled: an older meeting replaced by a newer enrolled event for a later one.
    first = dt.datetime.now(dt.UTC)
    await store.accept(enrolled("enr-moved", dt.date(2026, 9, 1), first))
    await store.accept(enrolled("enr-moved", dt.date(2026, 12, 9), first + dt.timedelta(seconds=1)))
    # Written before retention existed: the meeting date only inside the event; copied at start.
    legacy = enrolled("enr-legacy", dt.date(2026, 8, 1))
    await collection.insert_one(
        {"_id": "enr-legacy", "kind": "enrolled", "event_id": str(legacy.event_id), "occurred_at": first,
         "event": legacy.model_dump(mode="json", by_alias=True), "consent": True, "status": "matched"}
    )  # fmt: skip
    await store.ensure_indexes()
    assert (await store.get("enr-legacy") or {}).get("meeting_date") == "2026-08-01"

    # Two replicas sweeping at once delete each expired enrolment once.
    counts = await asyncio.gather(store.sweep_expired(CUTOFF), store.sweep_expired(CUTOFF))
    assert sum(counts) == 4
    assert await ids(collection) == {"enr-cutoff-day", "enr-live", "enr-only-withdrawn", "enr-moved"}
    assert await store.sweep_expired(CUTOFF) == 0  # a re-run finds nothing
    assert await ids(collection) == {"enr-cutoff-day", "enr-live", "enr-only-withdrawn", "enr-moved"}
