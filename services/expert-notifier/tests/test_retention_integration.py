"""Retention in the expert-notifier, on the real FerretDB: the facts and notification slots of the enrolments
whose meeting is past the retention, and those meetings, are deleted by the sweep; live ones are kept; sweeps
running at once (replicas) and a second sweep delete nothing more. The documents are written by the service's
own handlers (no SMTP, no Kafka: the e-mail sender and the publication are fakes)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from expert_notifier.handlers import Handlers, NotifierOptions
from expert_notifier.message import MailSettings
from expert_notifier.store import NotifierStore
from proxymage_shared.events import (
    Expert,
    ExpertiseNotification,
    MeetingExperts,
    Patient,
    PatientEnrolled,
    Person,
    StudiesSelected,
)
from proxymage_shared.kafka import Delivery
from proxymage_shared.mongo import Document, create_mongo_client
from pymongo.asynchronous.database import AsyncDatabase

pytestmark = pytest.mark.integration

PARIS = ZoneInfo("Europe/Paris")
NOW = dt.datetime(2026, 9, 15, 10, tzinfo=dt.UTC)
CUTOFF = dt.date(2026, 10, 2)  # what the sweeper passes on 1 November with 30 days of retention
DELIVERY = Delivery(topic="test", partition=0, offset=0, key=None)


class NoMail:
    async def send(self, message: EmailMessage, *, sender: str, recipient: str, proceed: Any = None) -> bool:
        raise AssertionError("nothing is sent in these tests")


async def nowhere(outcome: ExpertiseNotification) -> None:
    return None


def fields() -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "occurred_at": NOW}


def meeting(meeting_id: str, date: dt.date) -> MeetingExperts:
    radiologist = Expert(name="Dr Jeanne FICTIVE", email="jeanne.fictive@chu-fictif.mssante.fr")
    return MeetingExperts(
        **fields(), meeting_id=meeting_id, rcp_id="rcp-ret", title="RCP fictive", date=date, centre="3C fictif",
        on_call_radiologist=radiologist, on_call_nuclear_physician=None,
    )  # fmt: skip


def enrolled(enrolment_id: str, meeting_id: str, date: dt.date) -> PatientEnrolled:
    return PatientEnrolled(
        **fields(), enrolment_id=enrolment_id, meeting_id=meeting_id, rcp_id="rcp-ret", meeting_title="RCP fictive",
        meeting_date=date, centre="3C fictif",
        patient=Patient(birth_name="FICTIF", used_name=None, first_name="Ida", birth_date=dt.date(1950, 2, 3), sex="F"),
        consent=True, requested_by=Person(name="Dr FICTIF"),
    )  # fmt: skip


def selected(enrolment_id: str) -> StudiesSelected:
    return StudiesSelected(
        **fields(), enrolment_id=enrolment_id, study_instance_uids=("1.2.3",), expertise_requested=True
    )


@pytest.fixture
async def database(stack_env: dict[str, str], unique: str) -> AsyncIterator[AsyncDatabase[Document]]:
    client = create_mongo_client(stack_env["PROXYMAGE_MONGO_URL"])
    name = f"it_notifier_retention_{unique}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


async def ids(database: AsyncDatabase[Document], collection: str) -> set[str]:
    return {str(doc["_id"]) async for doc in database[collection].find({}, {"_id": 1})}


async def test_expired_enrolments_and_meetings_are_deleted_and_live_ones_kept(
    database: AsyncDatabase[Document],
) -> None:
    store = NotifierStore(database)
    await store.ensure_indexes()
    options = NotifierOptions(
        mail=MailSettings("Proxymage <p@3c.mssante.test>", None, "https://dcc.invalid/", "3c.mssante.test"),
        envelope_from="p@3c.mssante.test",
        zone=PARIS,
    )
    notifier = Handlers(store, NoMail(), nowhere, options, clock=lambda: NOW)
    old_day, live_day = dt.date(2026, 9, 1), dt.date(2026, 12, 2)
    await notifier.on_meeting_experts(meeting("m-old", old_day), DELIVERY)
    await notifier.on_meeting_experts(meeting("m-cutoff", CUTOFF), DELIVERY)  # exactly the retention: kept
    await notifier.on_meeting_experts(meeting("m-live", live_day), DELIVERY)
    for enrolment_id, meeting_id, day in (
        ("enr-old", "m-old", old_day),
        ("enr-old-2", "m-old", old_day),
        ("enr-cutoff", "m-cutoff", CUTOFF),
        ("enr-live", "m-live", live_day),
    ):
        await notifier.on_enrolled(enrolled(enrolment_id, meeting_id, day), DELIVERY)
        await notifier.on_selected(selected(enrolment_id), DELIVERY)
    await notifier.on_selected(selected("enr-never-enrolled"), DELIVERY)  # no meeting date known: kept
    kept = {"enr-cutoff", "enr-live", "enr-never-enrolled"}
    slots = {f"{e}|{role}" for e in kept for role in ("radiologist", "nuclear_physician")}
    assert await ids(database, "enrolments") == kept | {"enr-old", "enr-old-2"}
    assert len(await ids(database, "slots")) == len(slots) + 4

    # Two replicas sweeping at once delete each expired enrolment once.
    counts = await asyncio.gather(store.sweep_expired(CUTOFF, PARIS), store.sweep_expired(CUTOFF, PARIS))
    assert sum(counts) == 2
    assert await ids(database, "enrolments") == kept
    assert await ids(database, "slots") == slots
    assert await ids(database, "meetings") == {"m-cutoff", "m-live"}
    assert await store.sweep_expired(CUTOFF, PARIS) == 0  # a re-run finds nothing
    assert await ids(database, "enrolments") == kept

    # Facts of an enrolment never enrolled go at their `purge_at`, with their slots; enrolled ones stay.
    assert await store.purge_enrolments(NOW + dt.timedelta(days=400)) == 1
    assert await ids(database, "enrolments") == {"enr-cutoff", "enr-live"}
    assert await ids(database, "slots") == {s for s in slots if not s.startswith("enr-never-enrolled")}
