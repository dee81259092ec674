"""The expert-notifier's state in its own MongoDB database (`proxymage_notifier` by default).

- `meetings`: one document per meeting, the latest `dcc.meeting-experts` by `occurred_at`.
- `enrolments`: one document per enrolment, the `domain.EnrolmentFacts` (what the e-mail needs of the
  enrolled event: civility, display name, requesting doctor, meeting, consent, no birth date; the latest
  withdrawal; the latest identity outcome; the current selection; the latest status of each study, whose
  StudyInstanceUID is stored as `studies[].uid`), with the enrolled event's `meeting_date` at top level.
- `slots`: one document per (enrolment, role): the `RoleSlot` aggregate (every notification of that role,
  unique by address), plus the lease of the instance sending it and the published view (`version`,
  `dirty` until published: an outbox).
- `due_slots`, `closing_slots`, `unpublished_slots`: small lists of the slots with a due notification
  (`next_due_at`), an open role to close (`closes_at`), a view to publish (`view_at`, when `dirty`): the sender's
  claim and the maintenance read them, then each slot by `_id` (`_SlotList`). `meetings` documents also hold
  `members` (hex enrolment id -> enrolment id), the enrolments recorded for the meeting. They exist because the
  local store (FerretDB v1) uses no index but `_id`'s: any other filter reads the whole collection (issue 11).

Retention (CONTRACT v1.1; FerretDB has no TTL index, so periodic deletes do it, which work on MongoDB too):
`sweep_expired` deletes the enrolments, slots and meetings whose meeting is before the cutoff, each found by
one query on an indexed field (`meeting_date`, `meeting_end`, `date`) and deleted by `_id`. Facts recorded
for an enrolment whose enrolled event never came (no meeting date) are deleted at their `purge_at` instead
(`purge_enrolments`), with their slots.

Every write is a single-document insert or conditional update (`proxymage_shared.idempotency`): meetings
compare the event's stamp (`occurred_at`, then `event_id`: `EventStamp`; before issue 12 only the time, so
of two events of the same millisecond the first one seen stayed); enrolments
and slots are replaced only if their revision `rev` is the one read (optimistic concurrency), so the
consumers of the five topics and the sender of one or several instances never overwrite each other's
facts or decisions. The "newer wins" rules themselves are the pure `EnrolmentFacts.with_*`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from typing import Any, cast

from proxymage_shared.events import ExpertRole, IdentityStatus, MeetingExperts, NotificationStatus, RetrievalStatus
from proxymage_shared.idempotency import LOST_RACE, EventStamp, LostRace, is_duplicate_key, to_ms, until_written
from proxymage_shared.mongo import Document
from proxymage_shared.reasons import Reason
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from expert_notifier.domain import (
    ROLES,
    Enrolled,
    EnrolmentFacts,
    ExpertContact,
    IdentityFact,
    MeetingFacts,
    Notification,
    RoleSlot,
    Selection,
    SlotMode,
    Stamp,
    StudyFact,
    View,
    meeting_end,
    notification_key,
    slot_id,
)
from expert_notifier.message import PatientFacts
from expert_notifier.ports import SlotRecord

__all__ = ["NotifierStore", "SlotRecord", "member_key", "notification_key", "slot_id"]

# Slot modes of documents written before CONTRACT v1.1.
_LEGACY_MODES = {"withdrawn": "not_requested"}
# How many enrolments of a meeting are read (by `_id`) at once.
_MEMBER_READS_AT_ONCE = 32
# A slot write announced in a `_SlotList` this long ago is taken as failed (it takes milliseconds).
_ANNOUNCED_WRITE_EXPIRES = dt.timedelta(minutes=5)


def member_key(enrolment_id: str) -> str:
    """A field name for an enrolment id (hexadecimal: no `.` or `$`, and no two ids share one)."""
    return enrolment_id.encode().hex()


# --- (de)serialisation -------------------------------------------------------------------------------------


def _reason_doc(reason: Reason | None) -> Document | None:
    return None if reason is None else {"code": reason.code, "text": reason.text}


def _reason(value: Any) -> Reason | None:
    # Documents written before reason codes hold a bare English string: no code to show, so no reason.
    if not isinstance(value, dict):
        return None
    return Reason(str(value["code"]), str(value["text"]))


def _stamp_doc(stamp: Stamp | None) -> Document | None:
    return None if stamp is None else {"at": stamp.occurred_at, "event_id": stamp.event_id}


def _stamp(value: Any) -> Stamp | None:
    return None if not value else Stamp.of(value["at"], value["event_id"])


def _facts_doc(facts: EnrolmentFacts) -> Document:
    enrolled = facts.enrolled
    identity = facts.identity
    selection = facts.selection
    return {
        "enrolled": None
        if enrolled is None
        else {
            "stamp": _stamp_doc(enrolled.stamp),
            "meeting_id": enrolled.meeting_id,
            "meeting_date": enrolled.meeting_date.isoformat(),
            "consent": enrolled.consent,
            "patient": {
                "civility": enrolled.patient.civility,
                "display_name": enrolled.patient.display_name,
                "requested_by": enrolled.patient.requested_by,
            },
        },
        # Top-level copies for the meeting's enrolments query and the retention sweep (indexed).
        "meeting_id": enrolled.meeting_id if enrolled is not None else None,
        "meeting_date": enrolled.meeting_date.isoformat() if enrolled is not None else None,
        "consent_given": _stamp_doc(facts.consent_given),
        "withdrawal": _stamp_doc(facts.withdrawal),
        "identity": None
        if identity is None
        else {
            "source_at": identity.source_at,
            "at": identity.at,
            "event_id": identity.event_id,
            "status": identity.status,
            "source_event_id": identity.source_event_id,
        },
        "selection": None
        if selection is None
        else {
            "stamp": _stamp_doc(selection.stamp),
            "expertise_requested": selection.expertise_requested,
            "study_instance_uids": list(selection.study_instance_uids),
        },
        "studies": [{"uid": s.study_instance_uid, "version": s.version, "status": s.status} for s in facts.studies],
    }


def _facts(doc: Document) -> EnrolmentFacts:
    enrolled_doc = doc.get("enrolled")
    enrolled: Enrolled | None = None
    stamp = _stamp(enrolled_doc.get("stamp")) if isinstance(enrolled_doc, dict) else None
    if isinstance(enrolled_doc, dict) and stamp is not None:
        patient = enrolled_doc["patient"]
        enrolled = Enrolled(
            stamp=stamp,
            meeting_id=enrolled_doc["meeting_id"],
            meeting_date=dt.date.fromisoformat(enrolled_doc["meeting_date"]),
            consent=bool(enrolled_doc["consent"]),
            patient=PatientFacts(patient.get("civility"), patient["display_name"], patient["requested_by"]),
        )
    identity_doc = doc.get("identity")
    identity = (
        IdentityFact(
            source_at=to_ms(identity_doc["source_at"]),
            at=to_ms(identity_doc["at"]),
            event_id=str(identity_doc["event_id"]),
            status=cast(IdentityStatus, identity_doc["status"]),
            source_event_id=str(identity_doc["source_event_id"]),
        )
        if isinstance(identity_doc, dict)
        else None
    )
    selection_doc = doc.get("selection")
    selection_stamp = _stamp(selection_doc.get("stamp")) if isinstance(selection_doc, dict) else None
    selection = (
        Selection(
            stamp=selection_stamp,
            expertise_requested=bool(selection_doc["expertise_requested"]),
            study_instance_uids=tuple(selection_doc.get("study_instance_uids", [])),
        )
        if isinstance(selection_doc, dict) and selection_stamp is not None
        else None
    )
    return EnrolmentFacts(
        enrolment_id=str(doc["_id"]),
        enrolled=enrolled,
        consent_given=_stamp(doc.get("consent_given")),
        withdrawal=_stamp(doc.get("withdrawal")),
        identity=identity,
        selection=selection,
        studies=tuple(
            StudyFact(str(s["uid"]), int(s["version"]), cast(RetrievalStatus, s["status"]))
            for s in doc.get("studies") or []
        ),
    )


def _notification_doc(item: Notification) -> Document:
    return {
        "email": item.email,
        "name": item.name,
        "status": item.status,
        "reason": _reason_doc(item.reason),
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
        reason=_reason(doc.get("reason")),
        attempts=int(doc.get("attempts", 0)),
        next_attempt_at=doc.get("next_attempt_at"),
        deadline=doc.get("deadline"),
        sent_at=doc.get("sent_at"),
        superseded=bool(doc.get("superseded", False)),
    )


def _slot_record(doc: Document) -> SlotRecord:
    view = doc.get("view")
    mode = doc.get("mode", "waiting")
    slot = RoleSlot(
        enrolment_id=doc["enrolment_id"],
        role=cast(ExpertRole, doc["role"]),
        meeting_id=doc.get("meeting_id"),
        mode=cast(SlotMode, _LEGACY_MODES.get(mode, mode)),
        mode_reason=_reason(doc.get("mode_reason")),
        current=doc.get("current"),
        notifications=tuple(_notification(item) for item in doc.get("notifications", [])),
        sending=doc.get("sending"),
        closes_at=doc.get("meeting_end"),
    )
    return SlotRecord(
        slot=slot,
        rev=int(doc.get("rev", 0)),
        version=int(doc.get("version", 0)),
        view=View(view["status"], _reason(view.get("reason"))) if view else None,
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
        "mode_reason": _reason_doc(slot.mode_reason),
        "current": slot.current,
        "sending": slot.sending,
        "notifications": [_notification_doc(item) for item in slot.notifications],
        # Indexed copy of the aggregate's earliest due retry, for the sender's claim query.
        "next_due_at": slot.next_due_at(),
        "meeting_end": slot.closes_at,
        # Indexed: when an open role must be closed (`not_sent`) even if no event comes.
        "closes_at": slot.closes_at if slot.is_open() else None,
        "rev": record.rev,
        "version": record.version,
        "view": {"status": record.view.status, "reason": _reason_doc(record.view.reason)} if record.view else None,
        "view_at": record.view_at,
        "published_meeting_id": record.published_meeting_id,
        "lease_until": record.lease_until,
        "lease_token": record.lease_token,
        "dirty": record.dirty,
    }


async def _inserted(collection: AsyncCollection[Document], doc: Document) -> bool | LostRace:
    """Inserts `doc`: True, or `LOST_RACE` when its `_id` is taken (a concurrent writer inserted it first)."""
    try:
        await collection.insert_one(doc)
    except PyMongoError as error:
        if is_duplicate_key(error):
            return LOST_RACE
        raise
    return True


class _SlotList:
    """A small collection listing the slots for which a date of theirs is set (`_id` = the slot's, the date under
    the slot's field name), so that a periodic read goes through it and then each slot by `_id`.

    Invariant: a slot whose date is set has an entry, at that date or earlier. The entry is written ("announced")
    before each write of the slot setting the date, with `$min` of the date and `$max` of the slot revision
    written (`rev`) and of the time (`announced_at`); it is deleted after a write clearing the date, unless a
    later write announced it again (`rev` greater). An entry may be stale (its write failed, or the date moved
    later): readers check the slot and `correct` it, unless its write may still be on the way.
    """

    def __init__(
        self, collection: AsyncCollection[Document], field: str, of_slot: Callable[[Document], dt.datetime | None]
    ) -> None:
        self.collection = collection
        self.field = field
        self.of_slot = of_slot

    async def announce(self, key: str, at: dt.datetime, rev: int, now: dt.datetime) -> None:
        await self.collection.update_one(
            {"_id": key}, {"$min": {self.field: at}, "$max": {"rev": rev, "announced_at": to_ms(now)}}, upsert=True
        )

    async def cleared(self, key: str, rev: int) -> None:
        await self.collection.delete_one({"_id": key, "rev": {"$lte": rev}})

    async def delete(self, key: str) -> None:
        await self.collection.delete_one({"_id": key})

    def until(self, moment: dt.datetime) -> AsyncCursor[Document]:
        """The entries dated `moment` or earlier, earliest first."""
        return self.collection.find({self.field: {"$lte": moment}}).sort(self.field, ASCENDING)

    async def correct(self, entry: Document, slot: Document | None, now: dt.datetime) -> None:
        """Aligns `entry` with its slot as read (`slot`: None if gone), unless the write it announced may not
        have reached the slot yet. Conditional on the entry as read: one announced meanwhile stays."""
        rev, announced_at = entry.get("rev"), entry.get("announced_at")
        on_the_way = announced_at is not None and to_ms(announced_at) > to_ms(now - _ANNOUNCED_WRITE_EXPIRES)
        if int((slot or {}).get("rev", 0)) < int(rev or 0) and on_the_way:
            return
        at = None if slot is None else self.of_slot(slot)
        as_read: Document = {"_id": entry["_id"], "rev": rev, "announced_at": announced_at}
        if at is None:
            await self.collection.delete_one(as_read)
        elif to_ms(at) != to_ms(entry[self.field]):
            await self.collection.update_one(as_read, {"$set": {self.field: at}})

    async def backfill(self, slots: AsyncCollection[Document], now: dt.datetime) -> None:
        """Entries for the slots written before this list existed."""
        async for doc in slots.find({self.field: {"$ne": None}}):
            at = self.of_slot(doc)
            if at is not None:
                await self.announce(str(doc["_id"]), at, int(doc.get("rev", 0)), now)


class NotifierStore:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._meetings: AsyncCollection[Document] = database["meetings"]
        self._enrolments: AsyncCollection[Document] = database["enrolments"]
        self._slots: AsyncCollection[Document] = database["slots"]
        self._migrations: AsyncCollection[Document] = database["migrations"]
        self._due = _SlotList(database["due_slots"], "next_due_at", lambda doc: doc.get("next_due_at"))
        self._closing = _SlotList(database["closing_slots"], "closes_at", lambda doc: doc.get("closes_at"))
        self._unpublished = _SlotList(
            database["unpublished_slots"], "view_at", lambda doc: doc.get("view_at") if doc.get("dirty") else None
        )
        self._lists = (self._due, self._closing, self._unpublished)

    async def ensure_indexes(self) -> None:
        await self._enrolments.create_index([("meeting_id", ASCENDING)])
        await self._enrolments.create_index([("purge_at", ASCENDING)])
        await self._enrolments.create_index([("meeting_date", ASCENDING)])
        await self._slots.create_index([("enrolment_id", ASCENDING)])
        await self._slots.create_index([("meeting_end", ASCENDING)])
        await self._meetings.create_index([("date", ASCENDING)])
        await self._slots.create_index([("next_due_at", ASCENDING)])
        await self._slots.create_index([("closes_at", ASCENDING)])
        await self._slots.create_index([("dirty", ASCENDING)])
        await self._slots.create_index([("lease_token", ASCENDING)])
        for slot_list in self._lists:
            await slot_list.collection.create_index([(slot_list.field, ASCENDING)])
        await self._backfill_meeting_dates()
        started = dt.datetime.now(dt.UTC)
        for slot_list in self._lists:
            await self._once(slot_list.collection.name, functools.partial(slot_list.backfill, self._slots, started))
        await self._once("meeting_members", self._backfill_meeting_members)

    async def _once(self, name: str, migrate: Callable[[], Awaitable[None]]) -> None:
        """Runs an idempotent migration unless a previous start completed it (several may run it at once)."""
        if await self._migrations.find_one({"_id": name}) is not None:
            return
        await migrate()
        await self._migrations.update_one({"_id": name}, {"$set": {"done": True}}, upsert=True)

    async def _backfill_meeting_members(self) -> None:
        """Enrolments recorded before `members` existed: add each to its meeting's list."""
        meetings: dict[str, tuple[list[str], str | None]] = {}
        cursor = self._enrolments.find({"meeting_id": {"$ne": None}}, {"meeting_id": 1, "meeting_date": 1})
        async for doc in cursor:
            members, _ = meetings.setdefault(str(doc["meeting_id"]), ([], doc.get("meeting_date")))
            members.append(str(doc["_id"]))
        for meeting_id, (members, meeting_date) in meetings.items():
            await self._add_members(meeting_id, members, meeting_date)

    async def _backfill_meeting_dates(self) -> None:
        """Documents written before retention keep the meeting date only in `enrolled`: copy it to the top."""
        cursor = self._enrolments.find({"meeting_date": {"$exists": False}}, {"enrolled": 1})
        async for doc in cursor:
            enrolled = doc.get("enrolled")
            meeting_date = enrolled.get("meeting_date") if isinstance(enrolled, dict) else None
            await self._enrolments.update_one(
                {"_id": doc["_id"], "meeting_date": {"$exists": False}}, {"$set": {"meeting_date": meeting_date}}
            )

    # --- meetings: newer event wins ------------------------------------------------------------------------

    async def accept_meeting(self, event: MeetingExperts) -> bool:
        """Writes the meeting if the event is newer than the stored one; False for a replay or an older event."""

        def expert(value: Any) -> Document | None:
            return None if value is None else {"name": value.name, "email": value.email}

        occurred_at = to_ms(event.occurred_at)
        update: Document = {
            "event_id": str(event.event_id),
            "title": event.title,
            "date": event.date.isoformat(),
            "centre": event.centre,
            "experts": {
                "radiologist": expert(event.on_call_radiologist),
                "nuclear_physician": expert(event.on_call_nuclear_physician),
            },
            "event_at": occurred_at,
        }
        incoming = EventStamp.of(event.occurred_at, event.event_id)

        async def attempt() -> bool | LostRace:
            current = await self._meetings.find_one({"_id": event.meeting_id}, {"event_at": 1, "event_id": 1})
            if current is None:
                return await _inserted(self._meetings, {"_id": event.meeting_id, **update})
            at, event_id = current.get("event_at"), current.get("event_id")
            if at is not None and not incoming.is_newer_than(EventStamp.of(at, event_id)):
                return False
            # Conditional on the stamp read (time and id: two events of one millisecond are ordered by id).
            result = await self._meetings.update_one(
                {"_id": event.meeting_id, "event_at": at, "event_id": event_id}, {"$set": update}
            )
            return True if result.matched_count else LOST_RACE

        # A concurrent writer may change the document between our read and write.
        return await until_written(attempt, what=f"meeting {event.meeting_id}")

    async def get_meeting(self, meeting_id: str) -> MeetingFacts | None:
        doc = await self._meetings.find_one({"_id": meeting_id})
        if doc is None or doc.get("event_at") is None:  # not known yet: only its members were recorded
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

    # --- enrolments: the facts, changed by the pure newer-wins rules ---------------------------------------

    async def change_facts(
        self, enrolment_id: str, change: Callable[[EnrolmentFacts], EnrolmentFacts], *, purge_at: dt.datetime
    ) -> bool:
        """Applies `change` to the enrolment's facts (read, change, conditional write); False if it changed
        nothing (a replay or an older event). `purge_at` only ever moves the deletion later."""

        async def attempt() -> bool | LostRace:
            doc = await self._enrolments.find_one({"_id": enrolment_id})
            before = _facts(doc) if doc is not None else EnrolmentFacts(enrolment_id)
            after = change(before)
            if doc is not None and after == before:
                return False
            purge = to_ms(purge_at)
            if doc is not None and doc.get("purge_at") is not None:
                purge = max(purge, to_ms(doc["purge_at"]))
            rev = int(doc.get("rev", 0)) if doc is not None else 0
            new_doc = {"_id": enrolment_id, **_facts_doc(after), "purge_at": purge, "rev": rev + 1}
            if new_doc["meeting_id"] is not None and new_doc["meeting_id"] != (doc or {}).get("meeting_id"):
                # Before the facts: every enrolment stored with a meeting is in that meeting's list (a member
                # whose write then fails, or that moves later, is left out when read).
                await self._add_members(new_doc["meeting_id"], [enrolment_id], new_doc["meeting_date"])
            if doc is None:
                return await _inserted(self._enrolments, new_doc)
            try:
                result = await self._enrolments.replace_one({"_id": enrolment_id, "rev": doc.get("rev")}, new_doc)
            except PyMongoError as error:
                if is_duplicate_key(error):
                    return LOST_RACE
                raise
            return True if result.matched_count == 1 else LOST_RACE

        return await until_written(attempt, what=f"enrolment {enrolment_id}")

    async def get_facts(self, enrolment_id: str) -> EnrolmentFacts | None:
        doc = await self._enrolments.find_one({"_id": enrolment_id})
        return None if doc is None else _facts(doc)

    async def _add_members(self, meeting_id: str, enrolment_ids: list[str], meeting_date: str | None) -> None:
        """Adds enrolments to their meeting's list: an idempotent `$set`. A meeting not known yet gets a document
        with its members and the enrolments' meeting date, so that retention (`sweep_expired`) deletes it too;
        `accept_meeting` completes it."""
        update: Document = {"$set": {f"members.{member_key(key)}": key for key in enrolment_ids}}
        if meeting_date is not None:
            update["$setOnInsert"] = {"date": meeting_date}

        async def attempt() -> LostRace | None:
            try:
                await self._meetings.update_one({"_id": meeting_id}, update, upsert=True)
            except PyMongoError as error:  # a concurrent insert of the same meeting: the update now applies
                if is_duplicate_key(error):
                    return LOST_RACE
                raise
            return None

        await until_written(attempt, what=f"meeting {meeting_id}")

    async def enrolments_of_meeting(self, meeting_id: str) -> list[str]:
        """The enrolments whose facts name the meeting, read by `_id` from the meeting's list of members.

        A member that has since moved to another meeting is left out. A meeting stored before the list existed
        (no `members`) falls back to a query on every enrolment.
        """
        meeting = await self._meetings.find_one({"_id": meeting_id}, {"members": 1})
        members = (meeting or {}).get("members")
        if not isinstance(members, dict):
            cursor = self._enrolments.find({"meeting_id": meeting_id}, {"_id": 1})
            return [str(doc["_id"]) async for doc in cursor]
        wanted = sorted({str(enrolment_id) for enrolment_id in members.values()})
        found: list[str] = []
        for start in range(0, len(wanted), _MEMBER_READS_AT_ONCE):
            chunk = wanted[start : start + _MEMBER_READS_AT_ONCE]
            docs = await asyncio.gather(*(self._enrolments.find_one({"_id": key}, {"meeting_id": 1}) for key in chunk))
            found += [str(doc["_id"]) for doc in docs if doc is not None and doc.get("meeting_id") == meeting_id]
        return found

    async def purge_enrolments(self, now: dt.datetime) -> int:
        """Deletes the facts (and slots) of enrolments never enrolled whose `purge_at` is past: facts that came
        before their enrolment must not live forever. Enrolled ones go by their meeting date (`sweep_expired`)."""
        orphan: Document = {"purge_at": {"$lte": now}, "meeting_date": None}
        purged = 0
        for enrolment_id in [str(doc["_id"]) async for doc in self._enrolments.find(orphan, {"_id": 1})]:
            # Conditional: an enrolled event recorded meanwhile gives it a meeting date, and keeps it.
            result = await self._enrolments.delete_one({"_id": enrolment_id, **orphan})
            if result.deleted_count:
                await self._delete_slots(enrolment_id)
                purged += 1
        return purged

    async def sweep_expired(self, cutoff: dt.date, zone: dt.tzinfo) -> int:
        """Retention: deletes what is kept of the enrolments whose meeting (a date in `zone`) is before
        `cutoff` (facts and notification slots) and the meetings before it; returns the enrolments deleted.

        Every document is found by one query on its own meeting date and deleted by `_id`, on condition that
        it is still past, so several replicas may sweep at once and a second sweep finds nothing. Slots are
        swept on their own date too (`meeting_end`, the meeting's own date when known), so a slot whose
        enrolment document went first (a sweep cut short, or a late event re-creating it) goes as well.
        """
        past: Document = {"$lt": cutoff.isoformat()}  # ISO dates: text order is date order
        removed = 0
        for enrolment_id in [str(d["_id"]) async for d in self._enrolments.find({"meeting_date": past}, {"_id": 1})]:
            # The slots first: a sweep cut short leaves the enrolment, which the next one finds again.
            await self._delete_slots(enrolment_id)
            result = await self._enrolments.delete_one({"_id": enrolment_id, "meeting_date": past})
            removed += result.deleted_count
        # A meeting day ends at midnight starting the next day: a slot's meeting is before `cutoff` exactly
        # when its day ended by the start of the cutoff day.
        ended: Document = {"$lte": meeting_end(cutoff - dt.timedelta(days=1), zone)}
        for key in [str(doc["_id"]) async for doc in self._slots.find({"meeting_end": ended}, {"_id": 1})]:
            for slot_list in self._lists:  # the entries first: an entry must not outlive its slot
                await slot_list.delete(key)
            await self._slots.delete_one({"_id": key, "meeting_end": ended})
        for key in [str(doc["_id"]) async for doc in self._meetings.find({"date": past}, {"_id": 1})]:
            await self._meetings.delete_one({"_id": key, "date": past})
        return removed

    async def _delete_slots(self, enrolment_id: str) -> None:
        for role in ROLES:
            key = slot_id(enrolment_id, role)
            for slot_list in self._lists:
                await slot_list.delete(key)
            await self._slots.delete_one({"_id": key})

    # --- slots ------------------------------------------------------------------------------------------------

    async def load_slot(self, enrolment_id: str, role: ExpertRole) -> SlotRecord | None:
        doc = await self._slots.find_one({"_id": slot_id(enrolment_id, role)})
        return None if doc is None else _slot_record(doc)

    async def has_slots(self, enrolment_id: str) -> bool:
        for role in ROLES:
            if await self._slots.find_one({"_id": slot_id(enrolment_id, role)}, {"_id": 1}) is not None:
                return True
        return False

    async def closing(self, now: dt.datetime, limit: int = 100) -> list[str]:
        """Enrolments with a role still open (waiting, pending) whose meeting day is over."""
        found: dict[str, None] = {}
        async for entry in self._closing.until(now):
            doc = await self._slots.find_one({"_id": entry["_id"]}, {"enrolment_id": 1, "closes_at": 1, "rev": 1})
            closes_at = None if doc is None else doc.get("closes_at")
            if doc is not None and closes_at is not None and closes_at <= now:
                found[str(doc["enrolment_id"])] = None
                if len(found) >= limit:
                    break
            else:
                await self._closing.correct(entry, doc, now)
        return list(found)

    async def save_slot(
        self, before: SlotRecord | None, slot: RoleSlot, now: dt.datetime, *, release_lease: bool = False
    ) -> SlotRecord | None:
        """Stores `slot` if nobody changed it since `before` was read; None on a conflict (read again).

        When the role's view (status, reason, meeting) changes, it gets the next version and is marked to
        be published (`dirty`) in the same write (`SlotRecord.next`).
        """
        record = SlotRecord.next(before, slot, now, release_lease=release_lease)
        doc = _slot_doc(record)
        key = str(doc["_id"])
        listed = [(slot_list, slot_list.of_slot(doc)) for slot_list in self._lists]
        for slot_list, at in listed:  # before the slot: a slot with a date set always has its entry
            if at is not None:
                await slot_list.announce(key, at, record.rev, now)
        if before is None:
            if await _inserted(self._slots, doc) is LOST_RACE:
                return None
        else:
            try:
                result = await self._slots.replace_one({"_id": key, "rev": before.rev}, doc)
            except PyMongoError as error:
                if is_duplicate_key(error):
                    return None
                raise
            if result.matched_count != 1:
                return None
        old = _slot_doc(before) if before is not None else {}
        for slot_list, at in listed:
            # An entry of a slot whose date was not set is a failed announcement, corrected when read.
            if at is None and slot_list.of_slot(old) is not None:
                await slot_list.cleared(key, record.rev)
        return record

    async def claim_due(self, now: dt.datetime, lease: dt.timedelta, token: str) -> SlotRecord | None:
        """Takes one slot with a due notification, under a lease, so that no other instance sends it.

        The candidates, earliest first, come from `due_slots`; each is taken by a write on the slot by `_id`,
        conditional on its being due and not leased. An entry that no longer matches its slot is corrected.
        """
        async for entry in self._due.until(now):
            key = str(entry["_id"])
            doc = await self._slots.find_one_and_update(
                {
                    "_id": key,
                    "next_due_at": {"$lte": now},
                    "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}],
                },
                {"$set": {"lease_until": to_ms(now + lease), "lease_token": token}, "$inc": {"rev": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return _slot_record(doc)
            # Leased by another instance, or stale: corrected from the slot as it is now.
            await self._due.correct(entry, await self._slots.find_one({"_id": key}, {"next_due_at": 1, "rev": 1}), now)
        return None

    async def release_token(self, token: str) -> None:
        """Gives back the claim made with `token`, whatever the slot's revision (used when stopping)."""
        await self._slots.update_one(
            {"lease_token": token},
            {"$set": {"lease_until": None, "lease_token": None, "sending": None}, "$inc": {"rev": 1}},
        )

    async def mark_published(self, record: SlotRecord) -> None:
        # Conditional on the version: a newer view written meanwhile stays dirty and is published too.
        key = slot_id(record.slot.enrolment_id, record.slot.role)
        result = await self._slots.update_one(
            {"_id": key, "version": record.version, "dirty": True}, {"$set": {"dirty": False}}
        )
        if result.modified_count:
            await self._unpublished.cleared(key, record.rev)

    async def unpublished(self, older_than: dt.datetime, limit: int = 100) -> list[SlotRecord]:
        found: list[SlotRecord] = []
        async for entry in self._unpublished.until(older_than):
            doc = await self._slots.find_one({"_id": entry["_id"]})
            view_at = None if doc is None else self._unpublished.of_slot(doc)
            if doc is not None and view_at is not None and view_at <= older_than:
                found.append(_slot_record(doc))
                if len(found) >= limit:
                    break
            else:
                await self._unpublished.correct(entry, doc, older_than)
        return found
