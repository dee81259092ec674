"""The identity-matcher's state in its own MongoDB database: one document per enrolment.

The document holds the enrolment's current lifecycle event (`kind`, `event_id`, `occurred_at`: an enrolled
event or a withdrawal, see `lifecycle.py`), the status of its outcome, and the newest enrolled event that
was current (`event`, patient identity included: this database is the service's own) so that an `error`
can be resolved again later without the DCC sending anything, and a withdrawal can name the meeting.
`meeting_date` (ISO text, indexed) is that event's meeting date at top level: the retention sweep deletes the
enrolments whose meeting is past `retention_days` by one query on it (`sweep_expired`). An enrolment only
ever seen withdrawn has no meeting date and is kept.

Every write is a single-document insert or a conditional update keyed by the enrolment and the lifecycle
event it answers, so replays are harmless and a late, older event never overwrites a newer one
(`proxymage_shared.idempotency`). No StudyInstanceUID is stored here (this service knows patients, not studies).

The store returns typed values (`ports.StoredEnrolment`, `ports.Claim`), never its documents.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from proxymage_shared.events import EnrolmentWithdrawn, IdentityStatus, PatientEnrolled
from proxymage_shared.idempotency import LOST_RACE, LostRace, is_duplicate_key, to_ms, until_written
from proxymage_shared.mongo import Document
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from identity_matcher.lifecycle import Acceptance, Current, LifecycleEvent, LifecycleKind, decide
from identity_matcher.ports import Claim, RecordedOutcome, StoredEnrolment

__all__ = ["PENDING", "Acceptance", "EnrolmentStore"]

PENDING: Final = "pending"
# Outcomes after which MIRC may be queried again for the enrolment (DCC refresh, durable retry). Never
# `no_consent` or `withdrawn`: no PACS is queried for such an enrolment (CONTRACT v1.1).
_QUERYABLE: Final = ("matched", "unmatched", "error")


def _current(document: Document | None) -> Current | None:
    if document is None:
        return None
    # Documents written before withdrawals existed have no `kind`: they hold an enrolled event.
    kind: LifecycleKind = "withdrawn" if document.get("kind") == "withdrawn" else "enrolled"
    event = LifecycleEvent(kind, str(document["event_id"]), to_ms(document["occurred_at"]))
    return Current(event, answered=document.get("status") != PENDING)


def _enrolled(document: Document) -> PatientEnrolled | None:
    stored = document.get("event")
    return PatientEnrolled.model_validate(stored, strict=False) if stored else None


def _stored(document: Document) -> StoredEnrolment:
    return StoredEnrolment(
        enrolment_id=str(document["_id"]),
        enrolled=_enrolled(document),
        attempts=int(document.get("attempts", 0)),
        resolutions=int(document.get("resolutions", 0)),
    )


def _claim(document: Document | None) -> Claim | None:
    """A claimed document: only a consented enrolled event is ever claimed, so it holds the event."""
    if document is None:
        return None
    stored = _stored(document)
    if stored.enrolled is None:
        raise ValueError(f"enrolment {stored.enrolment_id} was claimed without its enrolled event")
    return Claim(stored.enrolled, stored.attempts, stored.resolutions)


def _fresh_outcome() -> Document:
    return {"status": PENDING, "attempts": 0, "resolutions": 0, "next_attempt_at": None, "lease_until": None}


class EnrolmentStore:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._enrolments: AsyncCollection[Document] = database["enrolments"]

    async def ensure_indexes(self) -> None:
        await self._enrolments.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])
        await self._enrolments.create_index([("meeting_date", ASCENDING)])
        await self._backfill_meeting_dates()

    async def _backfill_meeting_dates(self) -> None:
        """Documents written before retention keep the meeting date only inside `event`: copy it to the top."""
        cursor = self._enrolments.find({"meeting_date": {"$exists": False}, "event": {"$ne": None}}, {"event": 1})
        async for document in cursor:
            meeting_date = (document.get("event") or {}).get("meeting_date")
            if meeting_date:
                await self._enrolments.update_one(
                    {"_id": document["_id"], "meeting_date": {"$exists": False}},
                    {"$set": {"meeting_date": meeting_date}},
                )

    async def accept(self, event: PatientEnrolled) -> Acceptance:
        """Records the enrolled `event` as the enrolment's current lifecycle event, unless duplicate or stale."""
        fields: Document = {
            "kind": "enrolled",
            "event_id": str(event.event_id),
            "occurred_at": to_ms(event.occurred_at),
            "event": event.model_dump(mode="json", by_alias=True),
            "meeting_date": event.meeting_date.isoformat(),
            "consent": event.consent,
            **_fresh_outcome(),
        }
        return await self._accept(event.enrolment_id, fields, on_insert={})

    async def accept_withdrawal(self, event: EnrolmentWithdrawn) -> Acceptance:
        """Records the withdrawal as the current lifecycle event, unless duplicate or stale.

        The enrolled event kept so far stays (it names the meeting); a withdrawal of an enrolment never seen
        is recorded all the same, so an older enrolled event arriving later is stale. The withdrawal's free
        text reason is not kept: nothing here needs it and it may hold anything.
        """
        fields: Document = {
            "kind": "withdrawn",
            "event_id": str(event.event_id),
            "occurred_at": to_ms(event.occurred_at),
            **_fresh_outcome(),
        }
        return await self._accept(
            event.enrolment_id, fields, on_insert={"event": None, "meeting_date": None, "consent": None}
        )

    async def _accept(self, enrolment_id: str, fields: Document, *, on_insert: Document) -> Acceptance:
        incoming = LifecycleEvent(fields["kind"], fields["event_id"], fields["occurred_at"])

        async def attempt() -> Acceptance | LostRace:
            document = await self._enrolments.find_one({"_id": enrolment_id})
            acceptance = decide(_current(document), incoming)
            if acceptance is not Acceptance.NEW:
                return acceptance
            if document is None:
                try:
                    await self._enrolments.insert_one({"_id": enrolment_id, **on_insert, **fields})
                except PyMongoError as error:
                    if is_duplicate_key(error):
                        return LOST_RACE
                    raise
                return Acceptance.NEW
            replaced = await self._enrolments.update_one(
                {"_id": enrolment_id, "event_id": document["event_id"]}, {"$set": fields}
            )
            return Acceptance.NEW if replaced.matched_count else LOST_RACE

        # A concurrent writer may change the document between our read and write.
        return await until_written(attempt, what=f"enrolment {enrolment_id}")

    async def is_current(self, enrolment_id: str, event_id: str) -> bool:
        """True while `event_id` is the enrolment's current lifecycle event (enrolled event or withdrawal)."""
        # A read by `_id` alone (then compare here) uses the `_id` index on every backend.
        current = await self._enrolments.find_one({"_id": enrolment_id}, {"event_id": 1})
        return current is not None and current.get("event_id") == event_id

    async def record_outcome(
        self,
        enrolment_id: str,
        event_id: str,
        status: IdentityStatus,
        *,
        attempts: int,
        next_attempt_at: dt.datetime | None,
        outcome_event_id: str,
        now: dt.datetime,
    ) -> bool:
        """Stores the outcome answering `event_id`; False if a newer lifecycle event replaced it meanwhile."""
        result = await self._enrolments.update_one(
            {"_id": enrolment_id, "event_id": event_id},
            {
                "$set": {
                    "status": status,
                    "attempts": attempts,
                    "next_attempt_at": next_attempt_at,
                    "lease_until": None,
                    "outcome_event_id": outcome_event_id,
                    "resolved_at": now,
                },
                "$inc": {"resolutions": 1},
            },
        )
        return result.matched_count == 1

    async def record(self, outcome: RecordedOutcome) -> bool:
        """`record_outcome` of a `RecordedOutcome` (the use cases' port)."""
        return await self.record_outcome(
            outcome.enrolment_id,
            outcome.event_id,
            outcome.status,
            attempts=outcome.attempts,
            next_attempt_at=outcome.next_attempt_at,
            outcome_event_id=outcome.outcome_event_id,
            now=outcome.at,
        )

    async def claim_due_retry(self, now: dt.datetime, lease: dt.timedelta) -> Claim | None:
        """Takes one `error` enrolment whose retry is due, with a lease so no other instance runs it.

        Only an enrolled event with consent ends in `error` today; kind and consent are checked as well so
        that a withdrawn or no-consent enrolment can never query MIRC, whatever a future change records.
        """
        claimed = await self._enrolments.find_one_and_update(
            {
                "status": "error",
                "kind": {"$ne": "withdrawn"},
                "consent": True,
                "next_attempt_at": {"$lte": now},
                "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}],
            },
            {"$set": {"lease_until": now + lease}},
            return_document=ReturnDocument.AFTER,
        )
        return _claim(claimed)

    async def claim_for_refresh(self, enrolment_id: str, now: dt.datetime, lease: dt.timedelta) -> Claim | None:
        """Takes a consented, resolved enrolment to resolve again now (DCC refresh), unless another worker holds it.

        Never a withdrawn or no-consent one: its refresh queries no PACS (CONTRACT v1.1). Nor one still
        `pending`: its resolution is running (or will, on the event's redelivery).
        """
        claimed = await self._enrolments.find_one_and_update(
            {
                "_id": enrolment_id,
                "kind": {"$ne": "withdrawn"},
                "consent": True,
                "status": {"$in": list(_QUERYABLE)},
                "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}],
            },
            {"$set": {"lease_until": now + lease}},
            return_document=ReturnDocument.AFTER,
        )
        return _claim(claimed)

    async def enrolment(self, enrolment_id: str) -> StoredEnrolment | None:
        document = await self._enrolments.find_one({"_id": enrolment_id})
        return None if document is None else _stored(document)

    async def get(self, enrolment_id: str) -> Document | None:
        """The stored document itself, for inspection (operators, tests); the use cases read `enrolment`."""
        return await self._enrolments.find_one({"_id": enrolment_id})

    async def sweep_expired(self, cutoff: dt.date) -> int:
        """Retention: deletes every enrolment whose meeting is before `cutoff`; returns how many.

        One document per enrolment holds everything this service keeps of it. Each is deleted by `_id`, on
        condition that its meeting is still past (a newer enrolled event may have moved it meanwhile), so
        several replicas may sweep at once and a second sweep finds nothing.
        """
        past: Document = {"$lt": cutoff.isoformat()}  # ISO dates: text order is date order
        expired = [str(doc["_id"]) async for doc in self._enrolments.find({"meeting_date": past}, {"_id": 1})]
        removed = 0
        for enrolment_id in expired:
            result = await self._enrolments.delete_one({"_id": enrolment_id, "meeting_date": past})
            removed += result.deleted_count
        return removed
