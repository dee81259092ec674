"""The store's lists read by `_id` (issue 11), on the real FerretDB: the sender's claim list (`due_slots`) and each
meeting's members. What they must keep: every due slot is claimable (entries written before the slot, migrated
for older databases, stale ones corrected), and a meeting's enrolments are those whose facts name it."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from expert_notifier.domain import Enrolled, Notification, RoleSlot, Stamp
from expert_notifier.message import PatientFacts
from expert_notifier.store import NotifierStore, SlotRecord, _slot_doc
from proxymage_shared.events import Expert, MeetingExperts
from proxymage_shared.idempotency import to_ms as ms
from proxymage_shared.mongo import Document, create_mongo_client
from pymongo.asynchronous.database import AsyncDatabase

pytestmark = pytest.mark.integration

NOW = ms(dt.datetime(2026, 9, 15, 10, tzinfo=dt.UTC))
LEASE = dt.timedelta(minutes=5)
EMAIL = "jeanne.fictive@chu-fictif.mssante.fr"


@pytest.fixture
async def database(stack_env: dict[str, str], unique: str) -> AsyncIterator[AsyncDatabase[Document]]:
    client = create_mongo_client(stack_env["PROXYMAGE_MONGO_URL"])
    name = f"it_notifier_store_{unique}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


def slot(enrolment_id: str, due_at: dt.datetime | None) -> RoleSlot:
    item = (
        Notification(EMAIL, "Dr Jeanne FICTIVE", "pending", attempts=1, next_attempt_at=due_at)
        if due_at is not None
        else Notification(EMAIL, "Dr Jeanne FICTIVE", "sent", attempts=1, sent_at=NOW)
    )
    return RoleSlot(enrolment_id, "radiologist", "m-1", "wanted", current=EMAIL, notifications=(item,))


def enrolled(meeting_id: str) -> Enrolled:
    return Enrolled(
        Stamp.of(NOW, uuid.uuid4()), meeting_id, dt.date(2026, 10, 1), True, PatientFacts("Mme", "Ida F.", "Dr X")
    )


async def entries(database: AsyncDatabase[Document]) -> dict[str, dt.datetime]:
    return {str(doc["_id"]): ms(doc["next_due_at"]) async for doc in database["due_slots"].find({})}


async def test_due_slots_are_claimed_and_the_list_follows_them(database: AsyncDatabase[Document]) -> None:
    store = NotifierStore(database)
    await store.ensure_indexes()
    early, late = NOW - dt.timedelta(minutes=2), NOW - dt.timedelta(minutes=1)
    a = await store.save_slot(None, slot("enr-a", late), NOW)
    b = await store.save_slot(None, slot("enr-b", early), NOW)
    assert a is not None
    assert b is not None
    await store.save_slot(None, slot("enr-c", None), NOW)
    assert await entries(database) == {"enr-a|radiologist": late, "enr-b|radiologist": early}

    first = await store.claim_due(NOW, LEASE, "t1")
    assert first is not None
    assert first.slot.enrolment_id == "enr-b"
    second = await store.claim_due(NOW, LEASE, "t2")
    assert second is not None
    assert second.slot.enrolment_id == "enr-a"
    assert await store.claim_due(NOW, LEASE, "t3") is None  # both leased: entries kept
    assert set(await entries(database)) == {"enr-a|radiologist", "enr-b|radiologist"}

    # Sent: no longer due, its entry goes with the write.
    assert await store.save_slot(second, slot("enr-a", None), NOW, release_lease=True) is not None
    assert set(await entries(database)) == {"enr-b|radiologist"}
    # A retry later: the entry moves to it (here through the claim's correction of the earlier date).
    retry = NOW + dt.timedelta(minutes=10)
    assert await store.save_slot(first, slot("enr-b", retry), NOW, release_lease=True) is not None
    assert await store.claim_due(NOW, LEASE, "t4") is None
    assert await entries(database) == {"enr-b|radiologist": retry}
    claimed = await store.claim_due(retry, LEASE, "t5")
    assert claimed is not None
    assert claimed.slot.enrolment_id == "enr-b"


async def test_stale_entries_are_dropped_and_one_announced_is_kept(database: AsyncDatabase[Document]) -> None:
    store = NotifierStore(database)
    await store.ensure_indexes()
    await store.save_slot(None, slot("enr-a", None), NOW)  # rev 1
    due = database["due_slots"]
    # Stale: the slot says not due; the other's slot is gone (its write announced long ago never came).
    await due.insert_one({"_id": "enr-a|radiologist", "next_due_at": NOW, "rev": 1, "announced_at": NOW})
    await due.insert_one({"_id": "enr-gone|radiologist", "next_due_at": NOW, "rev": 1, "announced_at": NOW - LEASE})
    assert await store.claim_due(NOW, LEASE, "t") is None
    assert await entries(database) == {}
    # An entry announcing a write not yet on the slot (rev 2 > 1) stays while that write may be on the way.
    await due.insert_one({"_id": "enr-a|radiologist", "next_due_at": NOW, "rev": 2, "announced_at": NOW})
    await due.insert_one({"_id": "enr-new|radiologist", "next_due_at": NOW, "rev": 1, "announced_at": NOW})
    assert await store.claim_due(NOW, LEASE, "t") is None
    assert set(await entries(database)) == {"enr-a|radiologist", "enr-new|radiologist"}
    assert await store.claim_due(NOW + LEASE, LEASE, "t") is None  # not on the way any more: dropped
    assert await entries(database) == {}


async def test_due_slots_of_an_older_database_are_migrated_at_start(database: AsyncDatabase[Document]) -> None:
    due_at = NOW - dt.timedelta(minutes=1)
    await database["slots"].insert_many(
        [_slot_doc(SlotRecord(slot("enr-a", due_at), rev=3)), _slot_doc(SlotRecord(slot("enr-b", None), rev=3))]
    )
    store = NotifierStore(database)
    await store.ensure_indexes()
    assert await entries(database) == {"enr-a|radiologist": due_at}
    claimed = await store.claim_due(NOW, LEASE, "t")
    assert claimed is not None
    assert claimed.slot.enrolment_id == "enr-a"


async def test_enrolments_of_a_meeting_come_from_its_members(database: AsyncDatabase[Document]) -> None:
    store = NotifierStore(database)
    await store.ensure_indexes()
    for enrolment_id, meeting_id in (("enr-a", "m-1"), ("enr-b", "m-1"), ("enr-c", "m-2")):
        fact = enrolled(meeting_id)
        assert await store.change_facts(enrolment_id, lambda f, fact=fact: f.with_enrolled(fact), purge_at=NOW)
    assert await store.enrolments_of_meeting("m-1") == ["enr-a", "enr-b"]
    assert await store.get_meeting("m-1") is None  # only its members are known: not a meeting yet
    experts = MeetingExperts(
        event_id=uuid.uuid4(), occurred_at=NOW, meeting_id="m-1", rcp_id="rcp", title="RCP fictive",
        date=dt.date(2026, 10, 1), centre="3C fictif", on_call_radiologist=Expert(name="Dr J", email=EMAIL),
        on_call_nuclear_physician=None,
    )  # fmt: skip
    assert await store.accept_meeting(experts)
    meeting = await store.get_meeting("m-1")
    assert meeting is not None
    assert meeting.title == "RCP fictive"

    # Moved to another meeting: left out of the first one.
    later = replace(enrolled("m-2"), stamp=Stamp.of(NOW + dt.timedelta(hours=1), uuid.uuid4()))
    assert await store.change_facts("enr-b", lambda f: f.with_enrolled(later), purge_at=NOW)
    assert await store.enrolments_of_meeting("m-1") == ["enr-a"]
    assert await store.enrolments_of_meeting("m-2") == ["enr-b", "enr-c"]
    assert await store.enrolments_of_meeting("m-unknown") == []


async def test_enrolments_of_an_older_database_are_found(database: AsyncDatabase[Document]) -> None:
    await database["meetings"].insert_one({"_id": "m-1", "date": "2026-10-01", "event_at": NOW})
    await database["enrolments"].insert_many(
        [{"_id": "enr-a", "meeting_id": "m-1"}, {"_id": "enr-b", "meeting_id": "m-2"}]
    )
    store = NotifierStore(database)
    assert await store.enrolments_of_meeting("m-1") == ["enr-a"]  # no `members`: the query on every enrolment
    await store.ensure_indexes()  # the migration lists them
    meeting = await database["meetings"].find_one({"_id": "m-1"})
    assert meeting is not None
    assert set(meeting["members"].values()) == {"enr-a"}
    assert await store.enrolments_of_meeting("m-1") == ["enr-a"]
    assert await store.enrolments_of_meeting("m-2") == ["enr-b"]


async def test_closing_and_unpublished_slots_come_from_their_lists(database: AsyncDatabase[Document]) -> None:
    ended = NOW - dt.timedelta(hours=1)
    waiting = RoleSlot("enr-a", "radiologist", "m-1", "waiting", closes_at=ended)
    sent = replace(slot("enr-b", None), closes_at=ended)
    await database["slots"].insert_many(  # an older database: the lists are made at start
        [
            _slot_doc(SlotRecord(waiting, rev=2, version=1, view=waiting.view(), view_at=ended, dirty=True)),
            _slot_doc(SlotRecord(sent, rev=2, version=1, view=sent.view(), view_at=ended)),
        ]
    )
    store = NotifierStore(database)
    await store.ensure_indexes()
    assert await store.closing(NOW) == ["enr-a"]
    assert await store.closing(ended - dt.timedelta(seconds=1)) == []
    [record] = await store.unpublished(NOW)
    assert record.slot.enrolment_id == "enr-a"
    await store.mark_published(record)
    assert await store.unpublished(NOW) == []
    assert [doc async for doc in database["unpublished_slots"].find({})] == []

    # Written by the store: a new view is listed until published; a role closed leaves the closing list.
    saved = await store.save_slot(record, replace(waiting, mode="not_requested"), NOW)
    assert saved is not None
    assert saved.dirty
    assert await store.closing(NOW) == []
    assert [r.slot.enrolment_id for r in await store.unpublished(NOW)] == ["enr-a"]
    assert [doc["_id"] async for doc in database["closing_slots"].find({})] == []
