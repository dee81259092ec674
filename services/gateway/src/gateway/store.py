"""The read model in the gateway's MongoDB database: `enrolments`, `meetings`, `rcps`, plus `audit`.

Each patch of `gateway.projection` is applied as a compare-and-set on one document: read it by `_id`; if
the patch is not newer than the stored part, stop (stale or replayed: no write at all); otherwise insert
the document (new) or update it on the condition that the part's `order` is still the one read. A lost
race (another instance or consumer changed that part meanwhile, or inserted the document first: duplicate
key, code 11000, or code 1 from FerretDB) reads again. One read and at most one conditional write per event,
no multi-document transaction.

Why not a single upsert whose filter says "order lower or absent" (`$or`)? On FerretDB v1 (SQLite) an
update costs time proportional to the collection's size and that `$or` filter doubles it, whereas a read by
`_id` and an insert are cheap: the compare-and-set with an equality condition is about twice as fast there,
and skips the write entirely for replays. On MongoDB both are index lookups.

Enrolment documents hold the DCC's patient identity (names, birth date) for the console's lists: this
database is the gateway's own; the values never go to logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from proxymage_shared.mongo import Document
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from gateway.projection import ENROLMENTS, MEETINGS, ORDER, RCPS, Patch, apply_patch, get_path, supersedes

DUPLICATE_KEY: Final = 11000
FERRETDB_INTERNAL: Final = 1
MAX_RACES: Final = 10


def _is_duplicate_key(error: OperationFailure) -> bool:
    if isinstance(error, DuplicateKeyError) or error.code == DUPLICATE_KEY:
        return True
    return error.code == FERRETDB_INTERNAL and "duplicate key" in str(error).lower()


class ReadModelStore:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._collections: dict[str, AsyncCollection[Document]] = {
            name: database[name] for name in (ENROLMENTS, MEETINGS, RCPS)
        }
        self.audit: AsyncCollection[Document] = database["audit"]

    async def ensure_indexes(self) -> None:
        await self._collections[ENROLMENTS].create_index([("enrolment.meeting_id", ASCENDING)])
        await self._collections[ENROLMENTS].create_index([("selection.study_instance_uids", ASCENDING)])
        await self._collections[MEETINGS].create_index([("experts.date", DESCENDING)])
        await self.audit.create_index([("at", DESCENDING)])
        await self.audit.create_index([("enrolment_id", ASCENDING)])

    async def apply(self, patch: Patch) -> Document | None:
        """Applies `patch` if it is newer; returns the document as read again after the write (so that it
        includes whatever other parts were written concurrently), or None when the patch was stale."""
        return await self._compare_and_set(patch)

    async def _compare_and_set(self, patch: Patch) -> Document | None:
        """The document after writing `patch` (one round trip: the conditional update returns it), or None
        when the stored part is as new or newer."""
        collection = self._collections[patch.collection]
        at = f"{patch.path}.{ORDER}"
        for _ in range(MAX_RACES):
            current = await collection.find_one({"_id": patch.key})
            if not supersedes(patch, current):
                return None
            after = apply_patch(current, patch)
            if current is None:
                try:
                    await collection.insert_one(after)
                except OperationFailure as error:
                    if _is_duplicate_key(error):
                        continue
                    raise
                return after
            stored = get_path(current, patch.path)
            condition: Document = {at: stored[ORDER]} if stored is not None else {at: {"$exists": False}}
            written = await collection.find_one_and_update(
                {"_id": patch.key, **condition},
                {"$set": {patch.path: patch.stored_value()}},
                return_document=ReturnDocument.AFTER,
            )
            if written is not None:
                return written
        raise RuntimeError(f"{patch.collection}/{patch.path}: lost {MAX_RACES} races in a row")

    async def enrolment(self, enrolment_id: str) -> Document | None:
        return await self._collections[ENROLMENTS].find_one({"_id": enrolment_id})

    async def enrolments_selecting(self, study_instance_uids: Sequence[str], limit: int = 1000) -> list[Document]:
        """The enrolments whose latest selection names any of the studies (the viewer's access check)."""
        wanted = list(study_instance_uids)
        query = {"selection.study_instance_uids": wanted[0] if len(wanted) == 1 else {"$in": wanted}}
        return await self._collections[ENROLMENTS].find(query).to_list(limit)

    async def meeting(self, meeting_id: str) -> Document | None:
        return await self._collections[MEETINGS].find_one({"_id": meeting_id})

    async def rcp(self, rcp_id: str) -> Document | None:
        return await self._collections[RCPS].find_one({"_id": rcp_id})

    async def meeting_enrolments(self, meeting_id: str, limit: int) -> list[Document]:
        cursor = self._collections[ENROLMENTS].find({"enrolment.meeting_id": meeting_id}).sort("_id", ASCENDING)
        return await cursor.to_list(limit)

    async def meetings(self, limit: int) -> list[Document]:
        return await self._collections[MEETINGS].find({}).sort("_id", ASCENDING).to_list(limit)

    async def rcps(self, limit: int) -> list[Document]:
        return await self._collections[RCPS].find({}).sort("_id", ASCENDING).to_list(limit)

    async def record_audit(self, records: list[dict[str, Any]]) -> None:
        if records:
            await self.audit.insert_many(records, ordered=False)
