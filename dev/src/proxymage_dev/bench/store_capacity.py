"""`python -m proxymage_dev.bench.store_capacity`: what the MongoDB store sustains as history grows.

Locally the store is FerretDB (deploy/local/ferretdb); the figures hold it to two goals:
1. Capacity: updates by `_id` per second with four databases (one per service) written concurrently,
   `--writers` concurrent operations each, on collections pre-filled with `--capacity-docs` documents
   (goal >= 1000/s). Each database has its own client, as each service does.
2. Growth: median and p95 of the hot operations (update by `_id`, guarded find_one_and_update
   `{_id, state}`, insert, find by `_id`) at 1k, 10k and 50k documents in one collection, one operation
   at a time (goal: at 50k no more than twice the 1k figure).

It writes only to its own `proxymage_bench_store_*` databases and drops them at the end.
`--url` (default: `PROXYMAGE_MONGO_URL` from the settings) picks the server.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxymage_shared.mongo import Document, create_mongo_client
from proxymage_shared.settings import ServiceSettings, load_settings
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

SERVICES = ("identity_matcher", "study_fetcher", "expert_notifier", "gateway")
CAPACITY_GOAL = 1000.0
GROWTH_GOAL = 2.0
HOT_OPERATIONS = ("update by _id", "guarded find_one_and_update", "insert", "find by _id")


def _doc(index: int) -> Document:
    """A document shaped like the services' state records (a few hundred bytes)."""
    return {
        "_id": f"doc-{index:07d}",
        "state": "free",
        "version": 0,
        "counter": 0,
        "enrolment_id": f"enr-{index % 997:05d}",
        "study_uid": f"1.2.826.0.1.3680043.10.{index}",
        "reason": "waiting_identity: en attente de l'identification",
        "history": [{"state": "queued", "at": index}],
    }


async def fill(collection: AsyncCollection[Document], start: int, stop: int, batch: int = 1000) -> None:
    for first in range(start, stop, batch):
        await collection.insert_many([_doc(index) for index in range(first, min(stop, first + batch))])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Capacity:
    updates: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.updates / self.seconds if self.seconds else 0.0


async def capacity(url: str, prefix: str, docs: int, writers: int, seconds: float) -> Capacity:
    clients = [create_mongo_client(url, timeout_ms=30_000, app_name=f"bench-{name}") for name in SERVICES]
    collections = [client[f"{prefix}{name}"]["state"] for client, name in zip(clients, SERVICES, strict=True)]
    result = Capacity()
    try:
        await asyncio.gather(*(fill(collection, 0, docs) for collection in collections))
        deadline = time.perf_counter() + seconds

        async def writer(collection: AsyncCollection[Document], seed: int) -> None:
            rng = random.Random(seed)  # noqa: S311 - load generation, not security
            while time.perf_counter() < deadline:
                key = f"doc-{rng.randrange(docs):07d}"
                began = time.perf_counter()
                try:
                    await collection.update_one(
                        {"_id": key}, {"$inc": {"counter": 1}, "$set": {"state": rng.choice(("free", "busy"))}}
                    )
                except Exception:
                    result.errors += 1
                    continue
                result.latencies.append(time.perf_counter() - began)
                result.updates += 1

        began = time.perf_counter()
        await asyncio.gather(
            *(writer(collection, seed) for collection in collections for seed in range(writers)),
        )
        result.seconds = time.perf_counter() - began
    finally:
        for client, name in zip(clients, SERVICES, strict=True):
            await client.drop_database(f"{prefix}{name}")
            await client.close()
    return result


async def _sample(operation: Callable[[int], Awaitable[object]], samples: int, budget: float) -> list[float]:
    """Timings of `operation(i)`, up to `samples` of them or `budget` seconds (at least 5 samples)."""
    timings: list[float] = []
    stop_at = time.perf_counter() + budget
    for index in range(samples):
        if index >= 5 and time.perf_counter() > stop_at:
            break
        began = time.perf_counter()
        await operation(index)
        timings.append(time.perf_counter() - began)
    return timings


async def growth(
    url: str, prefix: str, sizes: list[int], samples: int, budget: float
) -> dict[int, dict[str, list[float]]]:
    client = create_mongo_client(url, timeout_ms=60_000, app_name="bench-growth")
    database = f"{prefix}growth"
    collection = client[database]["state"]
    results: dict[int, dict[str, list[float]]] = {}
    inserted = 0  # documents inserted by the "insert" samples, numbered after the filled ones
    try:
        filled = 0
        for size in sizes:
            await fill(collection, filled, size)
            filled = size
            rng = random.Random(size)  # noqa: S311 - load generation, not security

            def key(_: int, rng: random.Random = rng, size: int = size) -> str:
                return f"doc-{rng.randrange(size):07d}"

            async def insert(_: int) -> object:
                nonlocal inserted
                inserted += 1
                return await collection.insert_one({**_doc(0), "_id": f"new-{inserted:07d}"})

            operations: dict[str, Callable[[int], Awaitable[object]]] = {
                "update by _id": lambda i: collection.update_one({"_id": key(i)}, {"$inc": {"counter": 1}}),
                "guarded find_one_and_update": lambda i: collection.find_one_and_update(
                    {"_id": key(i), "state": "free"},
                    {"$inc": {"version": 1}},
                    return_document=ReturnDocument.AFTER,
                ),
                "insert": insert,
                "find by _id": lambda i: collection.find_one({"_id": key(i)}),
            }
            results[size] = {name: await _sample(op, samples, budget) for name, op in operations.items()}
            # The inserted samples stay: they are few next to the next size's documents.
    finally:
        await client.drop_database(database)
        await client.close()
    return results


def _ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="MongoDB URL (default: PROXYMAGE_MONGO_URL from the settings)")
    parser.add_argument("--capacity-docs", type=int, default=10_000, help="documents per database (capacity)")
    parser.add_argument("--writers", type=int, default=8, help="concurrent updates per database (capacity)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the capacity run")
    parser.add_argument("--sizes", default="1000,10000,50000", help="collection sizes of the growth run")
    parser.add_argument("--samples", type=int, default=200, help="timings per operation and size (growth)")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per operation and size, at most (growth)")
    parser.add_argument("--skip-capacity", action="store_true")
    parser.add_argument("--skip-growth", action="store_true")
    args = parser.parse_args()
    url = args.url or load_settings(ServiceSettings).mongo_url.get_secret_value()
    prefix = f"proxymage_bench_store_{uuid.uuid4().hex[:8]}_"

    if not args.skip_capacity:
        cap = asyncio.run(capacity(url, prefix, args.capacity_docs, args.writers, args.seconds))
        verdict = "ok" if cap.per_second >= CAPACITY_GOAL and not cap.errors else "MISSED"
        print(
            f"store: updates by _id per second, {len(SERVICES)} databases x {args.writers} writers, "
            f"{args.capacity_docs:,} documents each, {cap.seconds:.1f} s: {cap.per_second:,.0f}/s "
            f"(p50 {_ms(statistics.median(cap.latencies or [0.0]))} ms, "
            f"p95 {_ms(percentile(cap.latencies or [0.0], 0.95))} ms, errors {cap.errors})  "
            f"[goal >= {CAPACITY_GOAL:,.0f}/s: {verdict}]"
        )

    if not args.skip_growth:
        sizes = [int(size) for size in args.sizes.split(",")]
        results = asyncio.run(growth(url, prefix, sizes, args.samples, args.budget))
        print("store: one collection, one operation at a time, median / p95 in ms (samples)")
        print(f"  {'operation':<30}" + "".join(f"{size:>24,}" for size in sizes))
        for name in HOT_OPERATIONS:
            cells = []
            for size in sizes:
                timings = results[size][name]
                cell = f"{_ms(statistics.median(timings))} / {_ms(percentile(timings, 0.95))} ({len(timings)})"
                cells.append(f"{cell:>24}")
            smallest, largest = results[sizes[0]][name], results[sizes[-1]][name]
            ratio = statistics.median(largest) / statistics.median(smallest)
            verdict = "ok" if ratio <= GROWTH_GOAL else "MISSED"
            print(
                f"  {name:<30}" + "".join(cells) + f"   {sizes[-1]:,}/{sizes[0]:,}: {ratio:.1f}x "
                f"[goal <= {GROWTH_GOAL:g}x: {verdict}]"
            )


if __name__ == "__main__":
    main()
