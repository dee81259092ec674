"""The claim's `schedule` against the real store (FerretDB): migration of existing jobs, stale entries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from proxymage_shared.mongo import Document, create_mongo_client
from pymongo.asynchronous.database import AsyncDatabase
from study_fetcher.domain import Job
from study_fetcher.store import FREE, JobStore, _due_at, _job_fields, job_key, ms

LEASE = dt.timedelta(minutes=5)


@pytest.fixture
async def database(stack_env: dict[str, str]) -> AsyncIterator[AsyncDatabase[Document]]:
    client = create_mongo_client(stack_env["PROXYMAGE_MONGO_URL"])
    name = f"it_schedule_{uuid.uuid4().hex[:10]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


def _job(state: Any, at: dt.datetime) -> Job:
    return Job(
        state=state,
        version=1,
        attempts=0,
        next_attempt_at=None,
        deadline=None,
        reason=None,
        progress=None,
        selected_at=at,
    )


def _legacy(enrolment_id: str, uid: str, job: Job, at: dt.datetime) -> Document:
    """A job as written before `schedule` existed."""
    return {
        "_id": job_key(enrolment_id, uid),
        "enrolment_id": enrolment_id,
        "study_uid": uid,
        **_job_fields(job),
        "revision": 1,
        "due_at": _due_at(job, at, FREE),
        "lease_until": FREE,
        "lease_owner": None,
        "waiting": False,
        "unpublished": False,
        "updated_at": at,
    }


async def test_existing_jobs_are_scheduled_at_start_and_claimed_once(database: AsyncDatabase[Document]) -> None:
    now = ms(dt.datetime.now(dt.UTC))
    earlier = now - dt.timedelta(minutes=1)
    await database["jobs"].insert_many(
        [
            _legacy("enr-a", "1.2.3", _job("queued", earlier), earlier),
            _legacy("enr-b", "1.2.4", _job("available", now), now),
        ]
    )
    jobs = JobStore(database)
    await jobs.ensure_indexes()
    assert await database["schedule"].count_documents({"due_at": {"$ne": None}}) == 1

    claimed = await jobs.claim_due("w1", now, LEASE)
    assert claimed is not None
    assert claimed.key == "enr-a|1.2.3"
    assert await jobs.claim_due("w2", now, LEASE) is None  # leased: its entry is repaired, not claimed again
    await jobs.release([claimed.key], "w1")
    again = await jobs.claim_due("w2", now, LEASE)
    assert again is not None
    assert again.key == claimed.key
    # Finished: never claimable again, its entry goes.
    saved = await jobs.save(again, dataclasses.replace(again.job, state="available", version=2), now)
    assert saved is not None
    assert await database["schedule"].find_one({"_id": claimed.key}) is None
    assert await jobs.claim_due("w3", now + 2 * LEASE, LEASE) is None


async def test_a_stale_entry_is_dropped_and_retention_removes_entries(database: AsyncDatabase[Document]) -> None:
    now = ms(dt.datetime.now(dt.UTC))
    jobs = JobStore(database)
    await jobs.ensure_indexes()
    await database["schedule"].insert_one({"_id": "enr-gone|1.2.9", "due_at": FREE, "lease_until": FREE, "token": "x"})
    inserted = await jobs.insert("enr-c", "1.2.5", _job("queued", now), now)
    assert inserted is not None
    claimed = await jobs.claim_due("w1", now, LEASE)
    assert claimed is not None
    assert claimed.key == inserted.key
    assert await database["schedule"].find_one({"_id": "enr-gone|1.2.9"}) is None
    await jobs.retire("enr-c")
    await jobs.delete(inserted.key)
    assert await database["schedule"].find_one({"_id": inserted.key}) is None
