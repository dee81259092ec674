"""The expert-notifier's state in its own MongoDB database (`proxymage_notifier` by default).

- `meetings`: one document per meeting, the latest `dcc.meeting-experts` by `occurred_at`.
- `enrolments`: one document per enrolment with two independently versioned parts: what the e-mail needs
  of the enrolment (civility, display name, requesting doctor, meeting id; no birth date) and whether the
  current selection requests expertise. Deleted after a retention (`purge_at`; FerretDB has no TTL index,
  so a periodic delete does it, which works on MongoDB too).
- `slots`: one document per (enrolment, role): the `RoleSlot` aggregate (every notification of that role,
  unique by address), plus the lease of the instance sending it and the published view (`version`,
  `dirty` until published: an outbox).

Every write is a single-document insert or conditional update: "newer event wins" parts compare
`occurred_at`; slots are replaced only if their revision `rev` is the one read (optimistic concurrency), so
two instances (or the consumer and the sender of one instance) never overwrite each other's decisions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any, cast

from proxymage_shared.events import ExpertRole, MeetingExperts, NotificationStatus
from proxymage_shared.mongo import Document
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from expert_notifier.domain import ExpertContact, MeetingFacts, Notification, RoleSlot, SlotMode, View
from expert_notifier.message import PatientFacts

# FerretDB reports a unique-key violation of an update/upsert as OperationFailure code 1; MongoDB as 11000.
_DUPLICATE_CODES = frozenset({1, 11000, 11001})


def utc_ms(value: dt.datetime) -> dt.datetime:
    """MongoDB keeps milliseconds: compare what it can store."""
    value = value.astimezone(dt.UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def slot_id(enrolment_id: str, role: ExpertRole) -> str:
    # Business ids cannot contain "|" (events.BusinessId), so the key is unambiguous.
    return f"{enrolment_id}|{role}"


def notification_key(enrolment_id: str, role: ExpertRole, email: str) -> str:
    """The unique key of one e-mail: (enrolment, role, expert address)."""
    return f"{enrolment_id}|{role}|{email.lower()}"


@dataclass(frozen=True, slots=True)
class EnrolmentRecord:
    enrolment_id: str
    meeting_id: str | None
    patient: PatientFacts | None
    expertise_requested: bool | None


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """A slot as stored: the aggregate plus what only the store manages."""

    slot: RoleSlot
    rev: int = 0
    version: int = 0
    view: View | None = None
    view_at: dt.datetime | None = None
    published_meeting_id: str | None = None
    lease_until: dt.datetime | None = None
    lease_token: str | None = None
    dirty: bool = False

    def leased(self, now: dt.datetime) -> bool:
        return self.lease_until is not None and self.lease_until > now


def _notification_doc(item: Notification) -> Document:
    return {
        "email": item.email,
        "name": item.name,
        "status": item.status,
        "reason": item.reason,
        "attempts": item.attempts,
        "next_attempt_at": item.next_attempt_at,
        "deadline": item.deadline,
        "sent_at": item.sent_at,
        "superseded": item.superseded,
    }


def _notification(doc: Document) -> Notification:
    return Notification(
        email=doc["email"],
        name=doc["name"],
        status=cast(NotificationStatus, doc["status"]),
        reason=doc.get("reason"),
        attempts=int(doc.get("attempts", 0)),
        next_attempt_at=doc.get("next_attempt_at"),
        deadline=doc.get("deadline"),
        sent_at=doc.get("sent_at"),
        superseded=bool(doc.get("superseded", False)),
    )


def _slot_record(doc: Document) -> SlotRecord:
    view = doc.get("view")
    slot = RoleSlot(
        enrolment_id=doc["enrolment_id"],
        role=cast(ExpertRole, doc["role"]),
        meeting_id=doc.get("meeting_id"),
        mode=cast(SlotMode, doc.get("mode", "waiting")),
        mode_reason=doc.get("mode_reason"),
        current=doc.get("current"),
        notifications=tuple(_notification(item) for item in doc.get("notifications", [])),
        sending=doc.get("sending"),
    )
    return SlotRecord(
        slot=slot,
        rev=int(doc.get("rev", 0)),
        version=int(doc.get("version", 0)),
        view=View(view["status"], view.get("reason")) if view else None,
        view_at=doc.get("view_at"),
        published_meeting_id=doc.get("published_meeting_id"),
        lease_until=doc.get("lease_until"),
        lease_token=doc.get("lease_token"),
        dirty=bool(doc.get("dirty", False)),
    )


def _slot_doc(record: SlotRecord) -> Document:
    slot = record.slot
    return {
        "_id": slot_id(slot.enrolment_id, slot.role),
        "enrolment_id": slot.enrolment_id,
        "role": slot.role,
        "meeting_id": slot.meeting_id,
        "mode": slot.mode,
        "mode_reason": slot.mode_reason,
        "current": slot.current,
        "sending": slot.sending,
        "notifications": [_notification_doc(item) for item in slot.notifications],
        # Indexed copy of the aggregate's earliest due retry, for the sender's claim query.
        "next_due_at": slot.next_due_at(),
        "rev": record.rev,
        "version": record.version,
        "view": {"status": record.view.status, "reason": record.view.reason} if record.view else None,
        "view_at": record.view_at,
        "published_meeting_id": record.published_meeting_id,
        "lease_until": record.lease_until,
        "lease_token": record.lease_token,
        "dirty": record.dirty,
    }


def _is_duplicate(error: OperationFailure) -> bool:
    return isinstance(error, DuplicateKeyError) or error.code in _DUPLICATE_CODES


class NotifierStore:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._meetings: AsyncCollection[Document] = database["meetings"]
        self._enrolments: AsyncCollection[Document] = database["enrolments"]
        self._slots: AsyncCollection[Document] = database["slots"]

    async def ensure_indexes(self) -> None:
        await self._enrolments.create_index([("meeting_id", ASCENDING)])
        await self._enrolments.create_index([("purge_at", ASCENDING)])
        await self._slots.create_index([("enrolment_id", ASCENDING)])
        await self._slots.create_index([("next_due_at", ASCENDING)])
        await self._slots.create_index([("dirty", ASCENDING)])
        await self._slots.create_index([("lease_token", ASCENDING)])

    # --- newer event wins, per document part --------------------------------------------------------------

    async def _accept_newer(
        self, collection: AsyncCollection[Document], key: str, part: str, occurred_at: dt.datetime, fields: Document
    ) -> bool:
        """Writes `fields` if `occurred_at` is newer than the part's stamp; False for a replay or an older event."""
        stamp_field = f"{part}_at"
        occurred_at = utc_ms(occurred_at)
        update = {**fields, stamp_field: occurred_at}
        for _ in range(5):  # a concurrent writer may change the document between our read and write
            current = await collection.find_one({"_id": key}, {stamp_field: 1})
            if current is None:
                try:
                    await collection.insert_one({"_id": key, **update})
                except DuplicateKeyError:
                    continue
                return True
            stamp = current.get(stamp_field)
            if stamp is not None and utc_ms(stamp) >= occurred_at:
                return False
            result = await collection.update_one({"_id": key, stamp_field: stamp}, {"$set": update})
            if result.matched_count:
                return True
        return False

    async def accept_meeting(self, event: MeetingExperts) -> bool:
        def expert(value: Any) -> Document | None:
            return None if value is None else {"name": value.name, "email": value.email}

        return await self._accept_newer(
            self._meetings,
            event.meeting_id,
            "event",
            event.occurred_at,
            {
                "event_id": str(event.event_id),
                "title": event.title,
                "date": event.date.isoformat(),
                "centre": event.centre,
                "experts": {
                    "radiologist": expert(event.on_call_radiologist),
                    "nuclear_physician": expert(event.on_call_nuclear_physician),
                },
            },
        )

    async def get_meeting(self, meeting_id: str) -> MeetingFacts | None:
        doc = await self._meetings.find_one({"_id": meeting_id})
        if doc is None:
            return None
        experts: dict[ExpertRole, ExpertContact | None] = {}
        for role in ("radiologist", "nuclear_physician"):
            value = (doc.get("experts") or {}).get(role)
            experts[role] = ExpertContact(value["name"], value["email"]) if value else None
        return MeetingFacts(
            meeting_id=meeting_id,
            title=doc["title"],
            date=dt.date.fromisoformat(doc["date"]),
            centre=doc["centre"],
            experts=experts,
        )

    async def accept_enrolment(
        self,
        enrolment_id: str,
        occurred_at: dt.datetime,
        *,
        meeting_id: str,
        patient: PatientFacts,
        purge_at: dt.datetime,
    ) -> bool:
        return await self._accept_newer(
            self._enrolments,
            enrolment_id,
            "enrolment",
            occurred_at,
            {
                "meeting_id": meeting_id,
                "patient": {
                    "civility": patient.civility,
                    "display_name": patient.display_name,
                    "requested_by": patient.requested_by,
                },
                "purge_at": purge_at,
            },
        )

    async def accept_selection(
        self, enrolment_id: str, occurred_at: dt.datetime, *, expertise_requested: bool, purge_at: dt.datetime
    ) -> bool:
        fields: Document = {"expertise_requested": expertise_requested}
        accepted = await self._accept_newer(self._enrolments, enrolment_id, "selection", occurred_at, fields)
        # A selection before its enrolment must not live forever: purge it like an enrolment would be.
        await self._enrolments.update_one({"_id": enrolment_id, "purge_at": None}, {"$set": {"purge_at": purge_at}})
        return accepted

    async def get_enrolment(self, enrolment_id: str) -> EnrolmentRecord | None:
        doc = await self._enrolments.find_one({"_id": enrolment_id})
        if doc is None:
            return None
        patient = doc.get("patient")
        return EnrolmentRecord(
            enrolment_id=enrolment_id,
            meeting_id=doc.get("meeting_id"),
            patient=PatientFacts(patient.get("civility"), patient["display_name"], patient["requested_by"])
            if patient
            else None,
            expertise_requested=doc.get("expertise_requested"),
        )

    async def enrolments_of_meeting(self, meeting_id: str) -> list[str]:
        cursor = self._enrolments.find({"meeting_id": meeting_id}, {"_id": 1})
        return [str(doc["_id"]) async for doc in cursor]

    async def purge_enrolments(self, now: dt.datetime) -> int:
        result = await self._enrolments.delete_many({"purge_at": {"$lte": now}})
        return int(result.deleted_count)

    # --- slots ------------------------------------------------------------------------------------------------

    async def load_slot(self, enrolment_id: str, role: ExpertRole) -> SlotRecord | None:
        doc = await self._slots.find_one({"_id": slot_id(enrolment_id, role)})
        return None if doc is None else _slot_record(doc)

    async def has_slots(self, enrolment_id: str) -> bool:
        return await self._slots.count_documents({"enrolment_id": enrolment_id}, limit=1) > 0

    async def save_slot(
        self, before: SlotRecord | None, slot: RoleSlot, now: dt.datetime, *, release_lease: bool = False
    ) -> SlotRecord | None:
        """Stores `slot` if nobody changed it since `before` was read; None on a conflict (read again).

        When the role's view (status, reason, meeting) changes, it gets the next version and is marked to
        be published (`dirty`) in the same write.
        """
        base = before or SlotRecord(slot=slot)
        view = slot.view()
        changed = view != base.view or slot.meeting_id != base.published_meeting_id
        record = replace(
            base,
            slot=slot,
            rev=base.rev + 1,
            version=base.version + 1 if changed else base.version,
            view=view,
            view_at=utc_ms(now) if changed else base.view_at,
            published_meeting_id=slot.meeting_id,
            dirty=True if changed else base.dirty,
            lease_until=None if release_lease else base.lease_until,
            lease_token=None if release_lease else base.lease_token,
        )
        doc = _slot_doc(record)
        if before is None:
            try:
                await self._slots.insert_one(doc)
            except DuplicateKeyError:
                return None
            return record
        try:
            result = await self._slots.replace_one({"_id": doc["_id"], "rev": before.rev}, doc)
        except OperationFailure as error:
            if _is_duplicate(error):
                return None
            raise
        return record if result.matched_count == 1 else None

    async def claim_due(self, now: dt.datetime, lease: dt.timedelta, token: str) -> SlotRecord | None:
        """Takes one slot with a due notification, under a lease, so that no other instance sends it."""
        doc = await self._slots.find_one_and_update(
            {
                "next_due_at": {"$lte": now},
                "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}],
            },
            {"$set": {"lease_until": utc_ms(now + lease), "lease_token": token}, "$inc": {"rev": 1}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else _slot_record(doc)

    async def release(self, record: SlotRecord) -> bool:
        result = await self._slots.update_one(
            {"_id": slot_id(record.slot.enrolment_id, record.slot.role), "rev": record.rev},
            {"$set": {"lease_until": None, "lease_token": None}, "$inc": {"rev": 1}},
        )
        return result.matched_count == 1

    async def release_token(self, token: str) -> None:
        """Gives back the claim made with `token`, whatever the slot's revision (used when stopping)."""
        await self._slots.update_one(
            {"lease_token": token},
            {"$set": {"lease_until": None, "lease_token": None, "sending": None}, "$inc": {"rev": 1}},
        )

    async def mark_published(self, record: SlotRecord) -> None:
        # Conditional on the version: a newer view written meanwhile stays dirty and is published too.
        await self._slots.update_one(
            {"_id": slot_id(record.slot.enrolment_id, record.slot.role), "version": record.version, "dirty": True},
            {"$set": {"dirty": False}},
        )

    async def unpublished(self, older_than: dt.datetime, limit: int = 100) -> list[SlotRecord]:
        cursor = self._slots.find({"dirty": True, "view_at": {"$lte": older_than}}).limit(limit)
        return [_slot_record(doc) async for doc in cursor]
