"""The association budget's slots in MongoDB (`budget.SlotStore`), in a database every service shares for it
(`pacs_budget_database`, default "proxymage_pacs_budget"): the budget of a PACS spans services, so it cannot
live in one service's own database.

Collection `association_slots`, one document per slot:
  `_id` "<peer>#<i>", `peer` (the peer's AE title), `index` (0 … size-1), `holder` (the acquisition's token,
  None when free), `process` (who holds it: service@host:pid, for operators), `lease_until`.

Every write is one single-document conditional update, the same on MongoDB and FerretDB (whose writes the local
stack's front serialises per collection). A budget has a handful of documents, so FerretDB v1's full scans
cost nothing here.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Final

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from proxymage_shared.dicom.budget import (
    FREE,
    AssociationBudget,
    AssociationBudgetUnavailableError,
    BudgetOptions,
    slot_id,
)
from proxymage_shared.errors import describe
from proxymage_shared.idempotency import is_duplicate_key
from proxymage_shared.mongo import Document
from proxymage_shared.settings import DicomServiceSettings

COLLECTION: Final = "association_slots"


class MongoSlots:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self.collection: AsyncCollection[Document] = database[COLLECTION]
        self._created: set[tuple[str, int]] = set()  # (peer, size) whose slot documents exist

    async def _create_slots(self, peer: str, size: int) -> None:
        """Inserts the missing slot documents of `peer`'s budget (once per process; a lost race is fine)."""
        if (peer, size) in self._created:
            return
        for index in range(size):
            document = {"_id": slot_id(peer, index), "peer": peer, "index": index, "holder": None}
            try:
                await self.collection.insert_one({**document, "process": None, "lease_until": FREE})
            except PyMongoError as error:
                if not is_duplicate_key(error):
                    raise
        self._created.add((peer, size))

    async def take(
        self, peer: str, size: int, holder: str, process: str, now: dt.datetime, until: dt.datetime
    ) -> str | None:
        try:
            await self._create_slots(peer, size)
            # budget.may_take: a free slot has lease_until FREE, so "expired" covers both. `index` < size keeps a
            # lowered budget from using the slots above it.
            taken = await self.collection.find_one_and_update(
                {"peer": peer, "index": {"$lt": size}, "lease_until": {"$lte": now}},
                {"$set": {"holder": holder, "process": process, "lease_until": until}},
                return_document=ReturnDocument.AFTER,  # no projection: FerretDB v1 has none in findAndModify
            )
        except PyMongoError as error:
            raise AssociationBudgetUnavailableError(f"association budget: {describe(error)}") from error
        return None if taken is None else str(taken["_id"])

    async def renew(self, slot: str, holder: str, until: dt.datetime) -> bool:
        result = await self.collection.update_one({"_id": slot, "holder": holder}, {"$set": {"lease_until": until}})
        return result.matched_count == 1

    async def release(self, slot: str, holder: str) -> None:
        await self.collection.update_one(
            {"_id": slot, "holder": holder}, {"$set": {"holder": None, "process": None, "lease_until": FREE}}
        )


def process_name(service: str) -> str:
    return f"{service}@{socket.gethostname()}:{os.getpid()}"


def service_budget(settings: DicomServiceSettings, client: AsyncMongoClient[Document]) -> AssociationBudget:
    """The process's association budget (every DICOM client of the service shares it: its waiters wake each
    other), in the database all services share for it."""
    options = BudgetOptions(
        lease=dt.timedelta(seconds=settings.pacs_budget_lease_seconds), wait_seconds=settings.pacs_budget_wait_seconds
    )
    slots = MongoSlots(client[settings.pacs_budget_database])
    return AssociationBudget(slots, process=process_name(settings.service_name), options=options)
