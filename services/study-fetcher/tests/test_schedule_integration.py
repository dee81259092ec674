"""The claim's `schedule` against the real store (FerretDB): migration of existing jobs, stale entries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from proxymage_shared.idempotency import to_ms
from proxymage_shared.mongo import Document, create_mongo_client
from pymongo.asynchronous.database import AsyncDatabase
from study_fetcher.domain import Job, Progress
from study_fetcher.ports import StoredJob, job_key_of
from study_fetcher.store import FREE, JobStore, _due_at, _job_fields

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
        "_id": job_key_of(enrolment_id, uid),
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
    now = to_ms(dt.datetime.now(dt.UTC))
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
    assert claimed.job_key == "enr-a|1.2.3"
    assert await jobs.claim_due("w2", now, LEASE) is None  # leased: its entry is repaired, not claimed again
    await jobs.release([claimed.job_key], "w1")
    again = await jobs.claim_due("w2", now, LEASE)
    assert again is not None
    assert again.job_key == claimed.job_key
    # Finished: never claimable again, its entry goes, after `then` (the publication) ran on the written job.
    seen_by_then: list[tuple[str, bool]] = []

    async def then(written: StoredJob) -> None:
        entry = await database["schedule"].find_one({"_id": claimed.job_key})
        seen_by_then.append((written.job.state, entry is not None))

    saved = await jobs.save(again, dataclasses.replace(again.job, state="available", version=2), now, then=then)
    assert saved is not None
    assert seen_by_then == [("available", True)]  # written, its (now early) entry not yet settled
    assert await database["schedule"].find_one({"_id": claimed.job_key}) is None
    assert await jobs.claim_due("w3", now + 2 * LEASE, LEASE) is None


async def test_a_stale_entry_is_dropped_and_retention_removes_entries(database: AsyncDatabase[Document]) -> None:
    now = to_ms(dt.datetime.now(dt.UTC))
    jobs = JobStore(database)
    await jobs.ensure_indexes()
    await database["schedule"].insert_one({"_id": "enr-gone|1.2.9", "due_at": FREE, "lease_until": FREE, "token": "x"})
    inserted = await jobs.insert("enr-c", "1.2.5", _job("queued", now), now)
    assert inserted is not None
    claimed = await jobs.claim_due("w1", now, LEASE)
    assert claimed is not None
    assert claimed.job_key == inserted.job_key
    assert await database["schedule"].find_one({"_id": "enr-gone|1.2.9"}) is None
    await jobs.retire("enr-c")
    await jobs.delete(inserted.job_key)
    assert await database["schedule"].find_one({"_id": inserted.job_key}) is None


async def test_work_due_later_waits_out_of_the_claims_way_and_is_promoted_on_time(
    database: AsyncDatabase[Document],
) -> None:
    now = to_ms(dt.datetime.now(dt.UTC))
    retry_at = now + dt.timedelta(minutes=10)
    jobs = JobStore(database)
    await jobs.ensure_indexes()
    waiting = dataclasses.replace(_job("not_yet_available", now), attempts=1, next_attempt_at=retry_at)
    inserted = await jobs.insert("enr-w", "1.2.6", waiting, now)
    assert inserted is not None
    # A claim reads `schedule` only: the retry due in ten minutes is not there, but in `schedule_later`.
    assert await database["schedule"].find_one({"_id": inserted.job_key}) is None
    later = await database["schedule_later"].find_one({"_id": inserted.job_key})
    assert later is not None
    assert later["due_at"] == retry_at
    assert await jobs.claim_due("w1", now, LEASE) is None
    # Within the horizon of its time, a claim promotes it; at its time, it is claimed.
    assert await jobs.claim_due("w1", retry_at - dt.timedelta(seconds=10), LEASE) is None
    assert await database["schedule_later"].find_one({"_id": inserted.job_key}) is None
    assert await database["schedule"].find_one({"_id": inserted.job_key}) is not None
    claimed = await jobs.claim_due("w1", retry_at, LEASE)
    assert claimed is not None
    assert claimed.job_key == inserted.job_key


async def test_a_claimed_job_leaves_the_claims_way_and_comes_back_when_released(
    database: AsyncDatabase[Document],
) -> None:
    now = to_ms(dt.datetime.now(dt.UTC))
    jobs = JobStore(database)
    await jobs.ensure_indexes()
    inserted = await jobs.insert("enr-l", "1.2.7", _job("queued", now), now)
    assert inserted is not None
    claimed = await jobs.claim_due("w1", now, LEASE)
    assert claimed is not None
    # Its entry stayed early; the next poll is refused by the lease and moves the entry to its lease's end.
    assert await jobs.claim_due("w2", now, LEASE) is None
    assert await database["schedule"].find_one({"_id": claimed.job_key}) is None
    moved = await database["schedule_later"].find_one({"_id": claimed.job_key})
    assert moved is not None
    assert moved["lease_until"] == now + LEASE
    earliest = await database["schedule_later"].find_one({"_id": "earliest"})
    assert earliest is not None
    assert earliest["at"] <= now + LEASE
    # Given back: claimable at once, by another worker.
    await jobs.release([claimed.job_key], "w1")
    again = await jobs.claim_due("w2", now, LEASE)
    assert again is not None
    assert again.job_key == claimed.job_key
    assert again.job.state == "queued"


async def test_earliest_follows_the_entries_left_and_those_written_after_a_promotion(
    database: AsyncDatabase[Document],
) -> None:
    now = to_ms(dt.datetime.now(dt.UTC))
    jobs = JobStore(database)
    await jobs.ensure_indexes()

    async def waiting(enrolment_id: str, uid: str, retry_at: dt.datetime) -> str:
        job = dataclasses.replace(_job("not_yet_available", now), attempts=1, next_attempt_at=retry_at)
        inserted = await jobs.insert(enrolment_id, uid, job, now)
        assert inserted is not None
        return inserted.job_key

    async def earliest() -> dt.datetime:
        marker = await database["schedule_later"].find_one({"_id": "earliest"})
        assert marker is not None
        return marker["at"]  # type: ignore[no-any-return]

    soon, far = now + dt.timedelta(minutes=5), now + dt.timedelta(hours=1)
    first = await waiting("enr-p", "1.2.8", soon)
    await waiting("enr-f", "1.2.10", far)
    assert await earliest() <= soon
    claimed = await jobs.claim_due("w1", soon, dt.timedelta(hours=2))  # held beyond this test's times
    assert claimed is not None
    assert claimed.job_key == first
    assert await earliest() == far  # computed again from what is left there
    # A job due sooner, written after, lowers it: the claims then promote it on time.
    sooner = now + dt.timedelta(minutes=10)
    third = await waiting("enr-q", "1.2.9", sooner)
    assert await earliest() <= sooner
    assert await jobs.claim_due("w1", sooner - dt.timedelta(seconds=1), LEASE) is None
    claimed = await jobs.claim_due("w1", sooner, LEASE)
    assert claimed is not None
    assert claimed.job_key == third


async def test_a_running_jobs_progress_leaves_its_schedule_alone_and_its_lease_still_ends_on_time(
    database: AsyncDatabase[Document],
) -> None:
    now = to_ms(dt.datetime.now(dt.UTC))
    jobs = JobStore(database)
    await jobs.ensure_indexes()
    inserted = await jobs.insert("enr-r", "1.2.11", _job("queued", now), now)
    assert inserted is not None
    claimed = await jobs.claim_due("w1", now, LEASE)
    assert claimed is not None
    started = await jobs.save(claimed, dataclasses.replace(claimed.job, state="retrieving", attempts=1), now)
    assert started is not None
    entries = [
        [doc async for doc in database[name].find({}, sort=[("_id", 1)])] for name in ("schedule", "schedule_later")
    ]
    progressed = started
    for done in (10, 20, 30):
        job = dataclasses.replace(progressed.job, version=progressed.job.version + 1, progress=Progress(done, 300))
        saved = await jobs.save(progressed, job, now + dt.timedelta(seconds=done))
        assert saved is not None
        progressed = saved
    # Not a write to either collection: the entries are as the start left them (their tokens unchanged).
    assert [
        [doc async for doc in database[name].find({}, sort=[("_id", 1)])] for name in ("schedule", "schedule_later")
    ] == entries
    assert (progressed.job.progress, progressed.revision) == (Progress(30, 300), started.revision + 3)
    # The job is still taken over once the lease ends, not before.
    assert await jobs.claim_due("w2", now + LEASE - dt.timedelta(seconds=1), LEASE) is None
    taken = await jobs.claim_due("w2", now + LEASE, LEASE)
    assert taken is not None
    assert (taken.job_key, taken.lease_owner, taken.job.progress) == (inserted.job_key, "w2", Progress(30, 300))
