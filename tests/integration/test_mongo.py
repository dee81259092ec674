"""The MongoDB factory against the real server (FerretDB locally, MongoDB in production): the only
write shapes services may use — single-document upserts and conditional updates."""

from __future__ import annotations

import pytest
from proxymage_shared import mongo
from proxymage_shared.settings import ServiceSettings
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError


async def test_upsert_conditional_update_and_unique_key(test_settings: ServiceSettings) -> None:
    client, db = mongo.service_database(test_settings)
    try:
        assert await mongo.ping(client)
        jobs = db["jobs"]
        await jobs.create_index([("enrolment_id", 1), ("study_uid", 1)], unique=True)
        key = {"enrolment_id": "enr-1", "study_uid": "1.2.3"}
        for _ in range(2):  # a replay changes nothing
            await jobs.update_one(
                key, {"$setOnInsert": {"state": "queued", "version": 1}, "$set": {"seen": True}}, upsert=True
            )
        assert await jobs.count_documents({}) == 1

        claimed = await jobs.find_one_and_update(
            {**key, "state": "queued"},
            {"$set": {"state": "retrieving", "version": 2}},
            return_document=ReturnDocument.AFTER,
        )
        assert claimed is not None
        assert claimed["state"] == "retrieving"
        # The same conditional update again finds nothing: two workers never claim the same job.
        assert await jobs.find_one_and_update({**key, "state": "queued"}, {"$set": {"state": "x"}}) is None

        with pytest.raises(DuplicateKeyError):
            await jobs.insert_one({**key, "state": "queued"})
        stored = await jobs.find_one(key)
        assert stored is not None
        assert stored["version"] == 2
    finally:
        await client.drop_database(test_settings.database_name())
        await client.close()


async def test_ping_is_false_when_the_server_is_unreachable() -> None:
    client = mongo.create_mongo_client("mongodb://127.0.0.1:1/", timeout_ms=300)
    try:
        assert not await mongo.ping(client)
    finally:
        await client.close()
