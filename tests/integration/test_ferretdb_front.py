"""The local MongoDB stand-in (deploy/local/ferretdb) against the guarantees the services rely on:
its `_id` index serves the compare-and-set filters (the build-time patches), single-document writes are
atomic across connections, writers of different collections and databases run together, and a slow
command does not hold up the driver's heartbeat (the front's lock table, front.go).

Each test works in its own databases and drops them."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from bson import ObjectId
from proxymage_shared.mongo import Document, create_mongo_client
from pymongo import AsyncMongoClient, ReturnDocument

pytestmark = pytest.mark.integration


@dataclass
class Store:
    """The server under test: a client, fresh database names (dropped at the end), more clients."""

    url: str
    client: AsyncMongoClient[Document]
    created: list[str] = field(default_factory=list)

    def database_name(self) -> str:
        name = f"test_front_{uuid.uuid4().hex[:10]}"
        self.created.append(name)
        return name

    def separate_clients(self, count: int) -> list[AsyncMongoClient[Document]]:
        """Clients with their own connections, as separate service processes would have."""
        return [create_mongo_client(self.url, timeout_ms=30_000) for _ in range(count)]


@pytest.fixture
async def store(stack_env: dict[str, str]) -> AsyncIterator[Store]:
    url = stack_env["PROXYMAGE_MONGO_URL"]
    store = Store(url, create_mongo_client(url, timeout_ms=30_000))
    try:
        yield store
    finally:
        for name in store.created:
            await store.client.drop_database(name)
        await store.client.close()


async def close_all(clients: list[AsyncMongoClient[Document]]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


def plan_of(explained: dict[str, Any]) -> list[str]:
    """FerretDB's SQLite backend answers `explain` with SQLite's EXPLAIN QUERY PLAN lines."""
    return [str(line) for line in explained["queryPlanner"]["Plan"]]


@pytest.mark.parametrize("key", [ObjectId(), "enr-42:1.2.3"], ids=["objectid", "string"])
async def test_a_guarded_filter_is_served_by_the_id_index(store: Store, key: Any) -> None:
    db = store.client[store.database_name()]
    jobs = db["jobs"]
    others = [{"_id": f"other-{index}", "state": "free", "tags": ["a"]} for index in range(200)]
    await jobs.insert_many([*others, {"_id": key, "state": "free", "tags": ["urgent", "ct"]}])

    explained = await db.command("explain", {"find": "jobs", "filter": {"_id": key, "state": "free"}})
    plan = plan_of(explained)
    assert any("USING INDEX" in line and "_id_" in line for line in plan), plan
    assert explained["filterPushdown"] is True

    # Only the _id condition goes to SQLite: the rest is still MongoDB's matching (an array field
    # matches one of its elements), and a guard that no longer holds matches nothing.
    assert await jobs.find_one({"_id": key, "tags": "urgent"}) is not None
    assert await jobs.find_one({"_id": key, "state": "taken"}) is None
    claimed = await jobs.find_one_and_update(
        {"_id": key, "state": "free"}, {"$set": {"state": "taken"}}, return_document=ReturnDocument.AFTER
    )
    assert claimed is not None
    assert claimed["state"] == "taken"
    assert (await jobs.update_one({"_id": key, "state": "free"}, {"$set": {"state": "x"}})).matched_count == 0
    assert (await jobs.delete_one({"_id": key, "state": "taken"})).deleted_count == 1
    assert await jobs.count_documents({}) == len(others)


async def test_a_date_upper_bound_is_pushed_down_and_matches_as_mongodb_does(store: Store) -> None:
    db = store.client[store.database_name()]
    entries = db["schedule"]
    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    before, after = now - dt.timedelta(minutes=1), now + dt.timedelta(minutes=30)
    waiting = [{"_id": f"later-{index}", "due_at": after} for index in range(200)]
    await entries.insert_many(
        [
            *waiting,
            {"_id": "due", "due_at": before},
            {"_id": "due-exactly", "due_at": now},
            {"_id": "epoch", "due_at": dt.datetime(1970, 1, 1, tzinfo=dt.UTC)},
            {"_id": "array-with-one-due", "due_at": [after, before]},
            {"_id": "array-none-due", "due_at": [after]},
            {"_id": "a-number", "due_at": 5},
            {"_id": "a-string", "due_at": "2020-01-01"},
            {"_id": "null", "due_at": None},
            {"_id": "missing"},
        ]
    )

    explained = await db.command("explain", {"find": "schedule", "filter": {"due_at": {"$lte": now}}})
    assert explained["filterPushdown"] is True
    # What MongoDB matches: dates up to the bound, and arrays holding one (never numbers, strings, nulls).
    lte = {doc["_id"] async for doc in entries.find({"due_at": {"$lte": now}})}
    assert lte == {"due", "due-exactly", "epoch", "array-with-one-due"}
    lt = {doc["_id"] async for doc in entries.find({"due_at": {"$lt": now}, "_id": {"$ne": "epoch"}})}
    assert lt == {"due", "array-with-one-due"}
    # Two bounds on two fields, sorted, as a schedule's poll asks.
    skip = ["epoch", "array-with-one-due"]
    first = await entries.find_one({"due_at": {"$lte": now}, "_id": {"$nin": skip}}, sort=[("due_at", 1)])
    assert first is not None
    assert first["_id"] == "due"
    assert await entries.count_documents({"due_at": {"$lte": after}}) == len(waiting) + 4 + 1


async def test_concurrent_increments_are_all_applied(store: Store) -> None:
    name = store.database_name()
    await store.client[name]["counters"].insert_one({"_id": "c", "n": 0})
    clients = store.separate_clients(20)
    try:

        async def increment(c: AsyncMongoClient[Document]) -> None:
            for _ in range(50):
                await c[name]["counters"].update_one({"_id": "c"}, {"$inc": {"n": 1}})

        await asyncio.gather(*(increment(c) for c in clients))
    finally:
        await close_all(clients)
    assert await store.client[name]["counters"].find_one({"_id": "c"}) == {"_id": "c", "n": 1000}


async def test_a_guarded_claim_has_exactly_one_winner(store: Store) -> None:
    name = store.database_name()
    jobs = store.client[name]["jobs"]
    clients = store.separate_clients(16)
    try:
        for round_ in range(5):
            await jobs.replace_one({"_id": "job"}, {"state": "free", "owner": None}, upsert=True)
            claims = await asyncio.gather(
                *(
                    c[name]["jobs"].find_one_and_update(
                        {"_id": "job", "state": "free"}, {"$set": {"state": "taken", "owner": index}}
                    )
                    for index, c in enumerate(clients)
                )
            )
            assert sum(claim is not None for claim in claims) == 1, f"round {round_}: {claims}"

            await jobs.replace_one({"_id": "job"}, {"state": "free", "owner": None})
            results = await asyncio.gather(
                *(
                    c[name]["jobs"].update_one({"_id": "job", "state": "free"}, {"$set": {"state": "taken"}})
                    for c in clients
                )
            )
            assert sum(result.modified_count for result in results) == 1, f"round {round_}"
    finally:
        await close_all(clients)


async def test_writers_of_different_collections_and_databases_run_together(store: Store) -> None:
    first, second = store.database_name(), store.database_name()
    targets = [(first, "a"), (first, "b"), (second, "a"), (second, "b")]
    for db, coll in targets:
        await store.client[db][coll].insert_one({"_id": "counter", "n": 0})
    clients = store.separate_clients(4 * len(targets))

    async def write(c: AsyncMongoClient[Document], db: str, coll: str, writer: int) -> None:
        for index in range(40):
            await c[db][coll].insert_one({"_id": f"w{writer}-{index}", "writer": writer})
            await c[db][coll].update_one({"_id": "counter"}, {"$inc": {"n": 1}})

    try:
        await asyncio.gather(
            *(write(c, *targets[index % len(targets)], index) for index, c in enumerate(clients)),
        )
    finally:
        await close_all(clients)
    writes = 40 * len(clients) // len(targets)
    for db, coll in targets:
        assert await store.client[db][coll].count_documents({"writer": {"$exists": True}}) == writes
        assert await store.client[db][coll].find_one({"_id": "counter"}) == {"_id": "counter", "n": writes}


async def test_ping_is_answered_while_a_slow_command_runs(store: Store) -> None:
    name = store.database_name()
    big = store.client[name]["big"]
    for first in range(0, 30_000, 2_000):
        await big.insert_many(
            [{"_id": f"d{index}", "n": index, "text": "x" * 100} for index in range(first, first + 2_000)]
        )

    slow_client, ping_client = store.separate_clients(2)
    try:
        # Warm the ping client's connection up, so that its first ping is not a handshake.
        await ping_client.admin.command("ping")

        async def slow_counts() -> list[int]:
            # Not indexed: FerretDB decodes and filters the 30k documents itself, each time.
            return [await slow_client[name]["big"].count_documents({"n": {"$gte": 0}}) for _ in range(3)]

        slow = asyncio.create_task(slow_counts())
        pings: list[float] = []
        slow_seconds = time.perf_counter()
        while not slow.done():
            began = time.perf_counter()
            await ping_client.admin.command("ping")
            if not slow.done():  # answered while the count was still running
                pings.append(time.perf_counter() - began)
        assert await slow == [30_000] * 3
        slow_seconds = time.perf_counter() - slow_seconds
    finally:
        await close_all([slow_client, ping_client])
    assert pings, f"the counts ({slow_seconds:.2f} s) ended before a ping could overlap them"
    # Queued behind a count, a ping would take about as long as the count itself; answered beside it, a small
    # fraction of that (relative, so that a busy machine slowing both does not fail it).
    per_count = slow_seconds / 3
    assert max(pings) < per_count / 2, f"slowest ping {max(pings):.3f} s; one count {per_count:.2f} s"
