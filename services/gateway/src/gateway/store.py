"""The read model in the gateway's MongoDB database: `enrolments`, `meetings`, `rcps`, plus `audit`.

Each patch of `gateway.projection` is applied as a compare-and-set on one document: an upsert by `_id` whose
filter also says "the part's `order` is lower than the patch's, or absent", returning the document after the
write. A stale or replayed patch does not match; the upsert then fails on the duplicate `_id`
(`idempotency.is_duplicate_key`) and a read confirms it is stale (or, if the document did not exist yet, that
another consumer inserted it first: try again, `idempotency.until_written`). One round trip per event in the usual
case, no multi-document transaction; patches of one document that arrive together share one guarded write
(`gateway.coalesce`). On the local FerretDB this relies on its `_id` index being used whatever else the filter says
(deploy/local/ferretdb/patches); on MongoDB it is an index lookup.

The read methods return the typed documents of `gateway.read_model`, parsed here once; what is stored keeps the
projection's shape. A document that does not have it is a `read_model.StoredDocumentError` (permanent: the event
that wrote it goes to the dead-letter topic; a REST read answers 500 and logs the document and the fields, no values).

Enrolment documents hold the DCC's patient identity (names, birth date) for the console's lists: this
database is the gateway's own; the values never go to logs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from typing import Final

from prometheus_client import Counter
from proxymage_shared.idempotency import LOST_RACE, LostRace, is_duplicate_key, until_written
from pydantic import TypeAdapter
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from gateway.audit import AuditRecord
from gateway.coalesce import Coalescer
from gateway.projection import (
    ENROLMENTS,
    MEETINGS,
    ORDER,
    RCPS,
    Collection,
    Json,
    Patch,
    member_key,
    supersedes,
)
from gateway.read_model import (
    EnrolmentRecord,
    MeetingOfEnrolment,
    MeetingRecord,
    MembersOfMeeting,
    RcpRecord,
    Record,
    StoredDocument,
    enrolment_record,
    meeting_record,
    parse,
    parse_document,
    rcp_record,
)

MEMBER_READS_AT_ONCE: Final = 32
SWEEP_CHUNK: Final = 500
MEMBERS_MIGRATION: Final = "meeting-members"
_AUDIT_RECORD: Final = TypeAdapter(AuditRecord)


# A patch and the `member` patch written with it.
Written = tuple[Patch, Patch | None]

BATCHED_WRITES: Final = Counter(
    "proxymage_gateway_batched_writes_total",
    "Writes that applied several patches of one document together (gateway.coalesce).",
)


def distinct_parts(batch: Sequence[Written]) -> bool:
    """No two patches write the same part, or one part inside another (MongoDB refuses such an update)."""
    paths = [patch.path for pair in batch for patch in pair if patch is not None]
    return not any(_overlap(one, other) for one, other in itertools.combinations(paths, 2))


def _overlap(one: str, other: str) -> bool:
    return one == other or one.startswith(f"{other}.") or other.startswith(f"{one}.")


class ReadModelStore:
    def __init__(self, database: AsyncDatabase[StoredDocument], write_linger_seconds: float = 0.0) -> None:
        self._collections: dict[Collection, AsyncCollection[StoredDocument]] = {
            name: database[name] for name in (ENROLMENTS, MEETINGS, RCPS)
        }
        self._coalescer: Coalescer[tuple[Collection, str], Written, StoredDocument | None] = Coalescer(
            self._write, write_linger_seconds
        )
        self.audit: AsyncCollection[StoredDocument] = database["audit"]

    async def ensure_indexes(self) -> None:
        await self._collections[ENROLMENTS].create_index([("enrolment.meeting_id", ASCENDING)])
        await self._collections[ENROLMENTS].create_index([("selection.study_instance_uids", ASCENDING)])
        await self._collections[MEETINGS].create_index([("experts.date", DESCENDING)])
        await self.audit.create_index([("at", DESCENDING)])
        await self.audit.create_index([("enrolment_id", ASCENDING)])
        await self._list_members_once()

    async def _list_members_once(self) -> None:
        """Fills the meetings' member lists from the enrolments of a read model projected before they existed
        (once: a marker in `migrations`); without it those enrolments would vanish from their meeting's page as
        soon as a new enrolment gives the meeting a list. Idempotent if cut short (`$set` of the same values)."""
        migrations = self._collections[ENROLMENTS].database["migrations"]
        if await migrations.find_one({"_id": MEMBERS_MIGRATION}) is not None:
            return
        # Only the enrolments their meeting does not list yet are written (one read of the meetings first): a read
        # model whose lists are already filled (projected since they exist) costs no write per enrolment at start.
        listed: set[tuple[str, str]] = set()
        async for document in self._collections[MEETINGS].find({}, {"members": 1}):
            meeting = parse(MembersOfMeeting, MEETINGS, document)
            listed.update((meeting.meeting_id, field) for field in meeting.members or {})
        async for document in self._collections[ENROLMENTS].find({}, {"enrolment.meeting_id": 1}):
            found = parse(MeetingOfEnrolment, ENROLMENTS, document)
            if found.enrolment is None:
                continue
            meeting_id, field = found.enrolment.meeting_id, member_key(found.enrolment_id)
            if (meeting_id, field) not in listed:
                member = {"enrolment_id": found.enrolment_id}
                await self._collections[MEETINGS].update_one(
                    {"_id": meeting_id}, {"$set": {f"members.{field}": member}}, upsert=True
                )
        await migrations.update_one({"_id": MEMBERS_MIGRATION}, {"$set": {"done": True}}, upsert=True)

    async def apply(self, patch: Patch, member: Patch | None = None) -> Record | None:
        """Applies `patch` if it is newer; returns the document as read again after the write (so that it
        includes whatever other parts were written concurrently), or None when the patch was stale.

        `member`, a `member` patch of the same document, is written in the same update when `patch` applies (a
        meeting's details and its new member: one round trip); when None is returned it was not written.
        Patches of the same document that arrive while one is written go together (`gateway.coalesce`)."""
        if member is not None:
            assert member.kind == "member"
            assert (member.collection, member.key) == (patch.collection, patch.key)
        document = await self._coalescer.submit((patch.collection, patch.key), (patch, member))
        return parse_document(patch.collection, document) if document is not None else None

    async def _write(self, batch: list[Written]) -> list[StoredDocument | None]:
        """One patch alone, or several patches of one document in one guarded write when they touch distinct
        parts; when the guarded write does not apply (one of them is stale, or the document was inserted
        meanwhile), each is written on its own, which tells which applied."""
        if len(batch) > 1 and distinct_parts(batch):
            document = await self._compare_and_set_together(batch)
            if document is not None:
                BATCHED_WRITES.inc()
                return [document] * len(batch)
        return [await self._compare_and_set(patch, member) for patch, member in batch]

    async def _compare_and_set_together(self, batch: list[Written]) -> StoredDocument | None:
        """The document after writing every patch of `batch` (one document, distinct parts), or None when the
        write did not apply: the filter requires every part to be older than its patch; the upsert inserts the
        document if it does not exist and fails on the duplicate `_id` if it exists and a part is newer."""
        collection = self._collections[batch[0][0].collection]
        guard: dict[str, Json] = {"_id": batch[0][0].key}
        values: dict[str, Json] = {}
        for patch, member in batch:
            guard[f"{patch.path}.{ORDER}"] = {"$not": {"$gte": patch.order}}
            values[patch.path] = patch.stored_value()
            if member is not None:
                values[member.path] = member.stored_value()
        try:
            return await collection.find_one_and_update(
                guard, {"$set": values}, upsert=True, return_document=ReturnDocument.AFTER
            )
        except OperationFailure as error:
            if not is_duplicate_key(error):
                raise
            return None

    async def _compare_and_set(self, patch: Patch, member: Patch | None = None) -> StoredDocument | None:
        """The document after writing `patch`, or None when the stored part is as new or newer.

        One round trip in the usual case: an upsert whose filter says "this part's order is lower, or absent".
        When the document exists and the filter does not match, the upsert tries to insert it again and fails
        on the duplicate `_id`: a read then tells a stale patch (None) from two first writes racing to insert
        the document (try again, `idempotency.until_written`).
        """
        collection = self._collections[patch.collection]
        at = f"{patch.path}.{ORDER}"
        values = {patch.path: patch.stored_value()}
        if member is not None:
            values[member.path] = member.stored_value()

        async def attempt() -> StoredDocument | LostRace | None:
            try:
                return await collection.find_one_and_update(
                    {"_id": patch.key, at: {"$not": {"$gte": patch.order}}},
                    {"$set": values},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except OperationFailure as error:
                if not is_duplicate_key(error):
                    raise
            return LOST_RACE if supersedes(patch, await collection.find_one({"_id": patch.key})) else None

        return await until_written(attempt, what=f"{patch.collection} document {patch.key!r} ({patch.path})")

    async def add_member(self, patch: Patch) -> None:
        """Adds an enrolment to its meeting's list (a `member` patch): a plain idempotent `$set`, no order to
        compare (membership only grows; a member that moved is left out when read)."""
        await self._collections[MEETINGS].update_one(
            {"_id": patch.key}, {"$set": {patch.path: patch.stored_value()}}, upsert=True
        )

    async def enrolment(self, enrolment_id: str) -> EnrolmentRecord | None:
        document = await self._collections[ENROLMENTS].find_one({"_id": enrolment_id})
        return enrolment_record(document) if document is not None else None

    async def enrolments_selecting(
        self, study_instance_uids: Sequence[str], limit: int = 1000
    ) -> list[EnrolmentRecord]:
        """The enrolments whose latest selection names any of the studies (the viewer's access check)."""
        wanted = list(study_instance_uids)
        query = {"selection.study_instance_uids": wanted[0] if len(wanted) == 1 else {"$in": wanted}}
        return [
            enrolment_record(document) for document in await self._collections[ENROLMENTS].find(query).to_list(limit)
        ]

    async def meeting(self, meeting_id: str) -> MeetingRecord | None:
        document = await self._collections[MEETINGS].find_one({"_id": meeting_id})
        return meeting_record(document) if document is not None else None

    async def rcp(self, rcp_id: str) -> RcpRecord | None:
        document = await self._collections[RCPS].find_one({"_id": rcp_id})
        return rcp_record(document) if document is not None else None

    async def meeting_enrolments(self, meeting_id: str, limit: int) -> list[EnrolmentRecord]:
        """The enrolments of a meeting (its document read here; see `enrolments_of`)."""
        return await self.enrolments_of(meeting_id, await self.meeting(meeting_id), limit)

    async def enrolments_of(self, meeting_id: str, meeting: MeetingRecord | None, limit: int) -> list[EnrolmentRecord]:
        """The enrolments of a meeting whose document the caller has read, by `_id` from its list of members
        (kept by the projection).

        A member that has since moved to another meeting is left out. A meeting projected before the list existed
        (no `members`) falls back to a query on every enrolment.
        """
        members = meeting.members if meeting is not None else None
        enrolments = self._collections[ENROLMENTS]
        if members is None:
            cursor = enrolments.find({"enrolment.meeting_id": meeting_id}).sort("_id", ASCENDING)
            return [enrolment_record(document) for document in await cursor.to_list(limit)]
        wanted = sorted({member.enrolment_id for member in members.values()})
        found: list[EnrolmentRecord] = []
        for start in range(0, len(wanted), MEMBER_READS_AT_ONCE):
            chunk = wanted[start : start + MEMBER_READS_AT_ONCE]
            documents = await asyncio.gather(*(enrolments.find_one({"_id": key}) for key in chunk))
            records = [enrolment_record(document) for document in documents if document is not None]
            found += [
                record
                for record in records
                if record.enrolment is not None and record.enrolment.meeting_id == meeting_id
            ]
            if len(found) >= limit:
                break
        return found[:limit]

    async def meetings(self, limit: int) -> list[MeetingRecord]:
        documents = await self._collections[MEETINGS].find({}).sort("_id", ASCENDING).to_list(limit)
        return [meeting_record(document) for document in documents]

    async def meetings_dated(self, first_day: dt.date, last_day: dt.date, limit: int) -> list[MeetingRecord]:
        """The meetings dated from `first_day` to `last_day` by the DCC's meeting event or by an enrolment (a superset
        of what `views.meeting_view` dates in the window: the caller decides)."""
        window = {"$gte": first_day.isoformat(), "$lte": last_day.isoformat()}
        query = {"$or": [{"experts.date": window}, {"enrolment_details.date": window}]}
        documents = await self._collections[MEETINGS].find(query).sort("_id", ASCENDING).to_list(limit)
        return [meeting_record(document) for document in documents]

    async def rcps(self, limit: int) -> list[RcpRecord]:
        documents = await self._collections[RCPS].find({}).sort("_id", ASCENDING).to_list(limit)
        return [rcp_record(document) for document in documents]

    async def sweep_expired(self, cutoff: dt.date, audit_before: dt.datetime) -> int:
        """Retention: deletes the enrolments whose meeting is before `cutoff` with their audit entries, the
        meetings before it, and audit entries older than `audit_before`. Idempotent; returns enrolments deleted.

        Audit entries go first: a sweep cut short leaves the enrolment, which the next sweep finds again.
        """
        before = cutoff.isoformat()
        expired = await self._ids(ENROLMENTS, {"enrolment.meeting_date": {"$lt": before}})
        await self._delete_with_audit(ENROLMENTS, expired, "enrolment_id")
        past = await self._ids(
            MEETINGS, {"$or": [{"enrolment_details.date": {"$lt": before}}, {"experts.date": {"$lt": before}}]}
        )
        await self._delete_with_audit(MEETINGS, past, "meeting_id")
        await self.audit.delete_many({"at": {"$lt": audit_before}})
        return len(expired)

    async def _ids(self, collection: Collection, query: Mapping[str, object]) -> list[str]:
        found = await self._collections[collection].find(query, {"_id": 1}).to_list(None)
        return [str(document["_id"]) for document in found]

    async def _delete_with_audit(self, collection: Collection, keys: list[str], audit_field: str) -> None:
        """Deletes the documents and, first, the audit entries that name them."""
        for start in range(0, len(keys), SWEEP_CHUNK):
            chunk = keys[start : start + SWEEP_CHUNK]
            await self.audit.delete_many({audit_field: {"$in": chunk}})
            for key in chunk:
                await self._collections[collection].delete_one({"_id": key})

    async def record_audit(self, records: list[AuditRecord]) -> None:
        if records:
            documents: list[StoredDocument] = [dict(record) for record in records]
            await self.audit.insert_many(documents, ordered=False)

    async def audit_of(self, enrolment_id: str, limit: int) -> list[AuditRecord]:
        cursor = self.audit.find({"enrolment_id": enrolment_id}, {"_id": 0}).sort("at", DESCENDING).limit(limit)
        return [_AUDIT_RECORD.validate_python(document) async for document in cursor]
