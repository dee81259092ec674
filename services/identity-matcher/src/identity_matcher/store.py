"""The identity-matcher's state in its own MongoDB database: one document per enrolment.

Every write is a single-document insert or a conditional update keyed by the enrolment and the enrolled
event it answers, so replays are harmless and a late, older event never overwrites a newer one. The
enrolled event is kept (patient identity included: this database is the service's own) so that an
`error` can be resolved again later without the DCC sending anything.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from proxymage_shared.events import IdentityStatus, PatientEnrolled
from proxymage_shared.mongo import Document
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

PENDING = "pending"


class Acceptance(enum.Enum):
    NEW = "new"  # first or newer enrolled event for this enrolment: resolve it
    RESUME = "resume"  # the same event, not resolved yet (the process stopped midway): resolve it
    DUPLICATE = "duplicate"  # the same event, already resolved: nothing to do
    STALE = "stale"  # older than the enrolled event we have: superseded, nothing to do


def _utc(value: dt.datetime) -> dt.datetime:
    # MongoDB keeps milliseconds: compare what it can store.
    value = value.astimezone(dt.UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


class EnrolmentStore:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._enrolments: AsyncCollection[Document] = database["enrolments"]

    async def ensure_indexes(self) -> None:
        await self._enrolments.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])

    async def accept(self, event: PatientEnrolled) -> Acceptance:
        """Records `event` as the enrolment's current identity, unless it is a duplicate or stale."""
        occurred_at = _utc(event.occurred_at)
        fields: Document = {
            "event_id": str(event.event_id),
            "occurred_at": occurred_at,
            "event": event.model_dump(mode="json", by_alias=True),
            "consent": event.consent,
            "status": PENDING,
            "attempts": 0,
            "resolutions": 0,
            "next_attempt_at": None,
            "lease_until": None,
        }
        for _ in range(3):  # a concurrent writer may change the document between our read and write
            current = await self._enrolments.find_one({"_id": event.enrolment_id})
            if current is None:
                try:
                    await self._enrolments.insert_one({"_id": event.enrolment_id, **fields})
                except DuplicateKeyError:
                    continue
                return Acceptance.NEW
            if current["event_id"] == str(event.event_id):
                return Acceptance.RESUME if current["status"] == PENDING else Acceptance.DUPLICATE
            if _utc(current["occurred_at"]) >= occurred_at:
                return Acceptance.STALE
            replaced = await self._enrolments.update_one(
                {"_id": event.enrolment_id, "event_id": current["event_id"]}, {"$set": fields}
            )
            if replaced.matched_count:
                return Acceptance.NEW
        return Acceptance.STALE

    async def is_current(self, enrolment_id: str, event_id: str) -> bool:
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
        """Stores the outcome of resolving `event_id`; False if a newer enrolled event replaced it meanwhile."""
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

    async def claim_due_retry(self, now: dt.datetime, lease: dt.timedelta) -> Document | None:
        """Takes one `error` enrolment whose retry is due, with a lease so no other instance runs it."""
        return await self._enrolments.find_one_and_update(
            {
                "status": "error",
                "next_attempt_at": {"$lte": now},
                "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}],
            },
            {"$set": {"lease_until": now + lease}},
            return_document=ReturnDocument.AFTER,
        )

    async def claim_for_refresh(self, enrolment_id: str, now: dt.datetime, lease: dt.timedelta) -> Document | None:
        """Takes a consented enrolment to resolve again now (DCC refresh), unless another worker holds it."""
        return await self._enrolments.find_one_and_update(
            {
                "_id": enrolment_id,
                "consent": True,
                "status": {"$ne": PENDING},
                "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}],
            },
            {"$set": {"lease_until": now + lease}},
            return_document=ReturnDocument.AFTER,
        )

    async def get(self, enrolment_id: str) -> dict[str, Any] | None:
        return await self._enrolments.find_one({"_id": enrolment_id})
