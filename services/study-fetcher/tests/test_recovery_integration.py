"""Recovery and takeover against the real store (FerretDB), on a database of their own: the jobs waiting for a
peer (`waiting_for`, indexed) brought forward from `schedule_later` to `schedule`, the conditional lease
renewals, and a worker that stops mid-move taken over by another within the lease (measured). The PACS is a
fake here: no shared peer is stopped."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from proxymage_dev.testing import eventually
from proxymage_shared.events import StudyStatusChanged
from proxymage_shared.idempotency import to_ms
from proxymage_shared.mongo import Document, create_mongo_client
from proxymage_shared.retry import BackoffSchedule
from pymongo.asynchronous.database import AsyncDatabase
from study_fetcher import domain
from study_fetcher.domain import Job
from study_fetcher.ports import StudyPresence, job_key_of
from study_fetcher.recovery import PeerRecovery
from study_fetcher.settings import Settings
from study_fetcher.store import JobStore, TransferStore
from study_fetcher.updater import JobUpdater
from study_fetcher.worker import Retriever, WorkerOptions

from .fakes import FakePacs

LEASE = dt.timedelta(minutes=5)


@pytest.fixture
async def database(stack_env: dict[str, str]) -> AsyncIterator[AsyncDatabase[Document]]:
    client = create_mongo_client(stack_env["PROXYMAGE_MONGO_URL"])
    name = f"it_recovery_{uuid.uuid4().hex[:10]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


def now() -> dt.datetime:
    return to_ms(dt.datetime.now(dt.UTC))


def waiting(reason: domain.Reason, at: dt.datetime, retry_at: dt.datetime) -> Job:
    """A job whose attempt at `at` ended with `reason`, next tried at `retry_at`."""
    policy = domain.RetrievalPolicy()
    job = domain.new_job(at, None, domain.Admit())
    for event in (domain.Start(at), domain.Retry(at, reason)):
        changed = domain.transition(job, event, policy)
        assert changed is not None
        job = changed
    return dataclasses.replace(job, next_attempt_at=retry_at)


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[float, StudyStatusChanged]] = []

    async def __call__(self, event: StudyStatusChanged) -> None:
        self.events.append((time.monotonic(), event))


async def test_jobs_waiting_for_a_peer_are_found_by_it_and_brought_forward_out_of_schedule_later(
    database: AsyncDatabase[Document],
) -> None:
    start = now()
    far = start + dt.timedelta(minutes=30)  # the backoff's late slot: in `schedule_later`
    jobs = JobStore(database)
    await jobs.ensure_indexes()
    mirc = await jobs.insert("enr-m", "1.2.1", waiting(domain.PACS_UNREACHABLE, start, far), start)
    viewer = await jobs.insert("enr-v", "1.2.2", waiting(domain.VIEWER_UNREACHABLE, start, far), start)
    absent = await jobs.insert("enr-a", "1.2.3", waiting(domain.NOT_IN_MIRC, start, far), start)
    assert mirc is not None
    assert viewer is not None
    assert absent is not None
    # A job written before `waiting_for` existed: unknown, it keeps its backoff.
    legacy = waiting(domain.PACS_UNREACHABLE, start, far)
    await jobs.insert("enr-l", "1.2.4", legacy, start)
    await database["jobs"].update_one({"_id": job_key_of("enr-l", "1.2.4")}, {"$unset": {"waiting_for": ""}})
    assert {doc["_id"]: doc.get("waiting_for") async for doc in database["jobs"].find({})} == {
        mirc.job_key: "mirc",
        viewer.job_key: "viewer",
        absent.job_key: None,
        "enr-l|1.2.4": None,
    }
    assert await database["schedule_later"].find_one({"_id": mirc.job_key}) is not None
    assert [stored.job_key for stored in await jobs.waiting_for_peer("mirc")] == [mirc.job_key]

    published = Published()
    updater = JobUpdater(jobs, published, domain.RetrievalPolicy(BackoffSchedule(jitter=0)), now)
    recovery = PeerRecovery(jobs=jobs, updater=updater, spread_seconds=5, clock=now, rng=random.Random(2))
    assert await recovery.peer_back("mirc") == 1
    brought = await jobs.get(mirc.job_key)
    assert brought is not None
    assert brought.job.reason_code == "pacs_back"
    due = brought.job.next_attempt_at
    assert due is not None
    assert start <= due <= now() + dt.timedelta(seconds=5)
    # Its entry left `schedule_later` for `schedule`, at its new time; the others stay where they were.
    assert await database["schedule_later"].find_one({"_id": mirc.job_key}) is None
    entry = await database["schedule"].find_one({"_id": mirc.job_key})
    assert entry is not None
    assert entry["due_at"] == due
    for other in (viewer.job_key, absent.job_key):
        assert await database["schedule_later"].find_one({"_id": other}) is not None
    earliest = await database["schedule_later"].find_one({"_id": "earliest"})
    assert earliest is not None
    assert earliest["at"] <= far  # still a lower bound of what is left there
    assert (await database["jobs"].find_one({"_id": mirc.job_key}) or {}).get("waiting_for") is None
    assert await jobs.waiting_for_peer("mirc") == []
    assert [(e.study_instance_uid, e.reason_code) for _, e in published.events] == [("1.2.1", "pacs_back")]
    # Claimable at its time (not before), by a worker that reads `schedule` only.
    assert await jobs.claim_due("w1", due - dt.timedelta(milliseconds=1), LEASE) is None
    claimed = await jobs.claim_due("w1", due, LEASE)
    assert claimed is not None
    assert claimed.job_key == mirc.job_key


async def test_renewals_are_conditional_on_the_lease_owner(database: AsyncDatabase[Document]) -> None:
    start = now()
    lease = dt.timedelta(seconds=15)
    jobs, transfers = JobStore(database), TransferStore(database)
    await jobs.ensure_indexes()
    inserted = await jobs.insert("enr-r", "1.2.5", domain.new_job(start, None, domain.Admit()), start)
    assert inserted is not None
    claimed = await jobs.claim_due("w1", start, lease)
    assert claimed is not None
    assert await transfers.claim("1.2.5", "w1", start, lease) is not None
    assert await jobs.renew([claimed.job_key], "w1", start + 2 * lease) == 1
    assert await transfers.renew("1.2.5", "w1", start + 2 * lease) is True
    # w1 stalls past its lease: w2 takes both over; w1's next renewal finds it out.
    late = start + 3 * lease
    taken = await jobs.claim_due("w2", late, lease)
    assert taken is not None
    assert taken.job_key == claimed.job_key
    assert await transfers.claim("1.2.5", "w2", late, lease) is not None
    assert await jobs.renew([claimed.job_key], "w1", late + lease) == 0
    assert await transfers.renew("1.2.5", "w1", late + lease) is False
    assert await jobs.renew([claimed.job_key], "w2", late + lease) == 1
    assert await transfers.renew("1.2.5", "w2", late + lease) is True


class Frozen:
    """A store of a worker that stopped: once `frozen` is set, every call waits forever (no renewal, no write),
    as for a killed process or a partitioned host; `dead` makes them fail instead (to cancel its task)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.frozen = asyncio.Event()
        self.dead = False
        self._never = asyncio.Event()

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise RuntimeError("stopped")
            if self.frozen.is_set():
                await self._never.wait()
            return await method(*args, **kwargs)

        return call


async def test_a_worker_that_stops_mid_move_is_taken_over_within_the_lease(
    database: AsyncDatabase[Document],
) -> None:
    """Two workers on one database with the default lease and renewal: w1 claims a study, moves it, renews its
    lease, then stops (its store calls hang); w2 takes the job over once the lease expires, publishes it as
    resumed and completes it. Prints the measured takeover time."""
    defaults = Settings.model_fields
    lease = dt.timedelta(seconds=defaults["lease_seconds"].default)
    renew_every = dt.timedelta(seconds=defaults["lease_renewal_seconds"].default)
    poll = defaults["poll_seconds"].default
    options = WorkerOptions(
        lease=lease,
        renew_every=renew_every,
        transfer_wait=dt.timedelta(seconds=defaults["transfer_wait_seconds"].default),
        progress_interval_seconds=defaults["progress_interval_seconds"].default,
        cancel_poll_seconds=defaults["cancel_poll_seconds"].default,
    )
    jobs, transfers = JobStore(database), TransferStore(database)
    await jobs.ensure_indexes()
    uid = "1.2.6"
    inserted = await jobs.insert("enr-t", uid, domain.new_job(now(), None, domain.Admit()), now())
    assert inserted is not None
    published = Published()
    policy = domain.RetrievalPolicy(BackoffSchedule(jitter=0))

    frozen_jobs, frozen_transfers = Frozen(jobs), Frozen(transfers)
    stopped_at: list[float] = []
    stopped = asyncio.Event()
    first_pacs = FakePacs(mirc={uid: StudyPresence(10)})

    async def move_then_stop(*_: object) -> None:
        # Runs until its heartbeat renewed the lease once, then the worker "dies" mid-move.
        claimed = await jobs.get(inserted.job_key)
        assert claimed is not None

        async def renewed() -> bool:
            current = await jobs.get(inserted.job_key)
            return current is not None and current.lease_until > claimed.lease_until

        await eventually(renewed, renew_every.total_seconds() + 5, "w1's first renewal")
        frozen_jobs.frozen.set()
        frozen_transfers.frozen.set()
        stopped_at.append(time.monotonic())
        stopped.set()
        await asyncio.Event().wait()

    first_pacs.on_move = move_then_stop
    first = Retriever(
        jobs=frozen_jobs,  # type: ignore[arg-type]
        transfers=frozen_transfers,  # type: ignore[arg-type]
        updater=JobUpdater(frozen_jobs, published, policy, now),  # type: ignore[arg-type]
        pacs=first_pacs,
        options=options,
        owner="w1",
    )
    second_pacs = FakePacs(mirc={uid: StudyPresence(10)}, move_result=10, moved_to_viewer=10)
    second = Retriever(
        jobs=jobs,
        transfers=transfers,
        updater=JobUpdater(jobs, published, policy, now),
        pacs=second_pacs,
        options=options,
        owner="w2",
    )
    stop = asyncio.Event()
    first_task = asyncio.create_task(first.run_once())
    second_task: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(stopped.wait(), renew_every.total_seconds() + 10)
        second_task = asyncio.create_task(second.loop(stop, poll))

        def seen(status: str, code: str | None = None) -> float | None:
            return next(
                (t for t, e in published.events if e.status == status and (code is None or e.reason_code == code)),
                None,
            )

        async def done_by_w2() -> bool:
            return seen("available") is not None

        await eventually(done_by_w2, lease.total_seconds() + 20, "w2 to take the job over and complete it")
        resumed, available = seen("retrieving", "resumed"), seen("available")
        assert resumed is not None, "w2 published the takeover"
        assert available is not None, "w2 completed the job"
        takeover, done = resumed - stopped_at[0], available - stopped_at[0]
        print(f"takeover {takeover:.1f} s after the stop, available {done:.1f} s after (lease {lease})")
        # The lease runs from w1's last renewal, just before it stopped; then a poll finds the job.
        assert takeover <= lease.total_seconds() + poll + 1
        stored = await jobs.get(inserted.job_key)
        assert stored is not None
        assert (stored.job.state, stored.job.attempts) == ("available", 2)
        assert second_pacs.moves == [uid]
    finally:
        stop.set()
        second.wake.set()
        if second_task is not None:
            await second_task
        frozen_jobs.dead = frozen_transfers.dead = True
        first_task.cancel()
        await asyncio.gather(first_task, return_exceptions=True)
