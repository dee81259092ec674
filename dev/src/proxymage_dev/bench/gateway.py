"""`python -m proxymage_dev.bench.gateway`: enrolment event -> catalogue visible in the gateway, at a steady rate.

Two measures in the same run, on the same Kafka and MongoDB (ARCHITECTURE.md "Budgets"):

- **gateway**: for each enrolment, publish `dcc.patient-enrolled.v1`, then (standing in for the
  identity-matcher and the fetcher, until the full pipeline bench) `identity.resolved.v1` and
  `imaging.catalogued.v1`; the clock stops when the catalogue is visible, i.e. when the gateway announces
  it on the meeting's SSE stream, which it does right after the write that makes `GET
  /api/v1/enrolments/{id}` list the studies (checked with a GET for every enrolment, untimed). SSE rather
  than polling, so that the measure does not load FerretDB with reads.
- **baseline**: a bare aiokafka produce -> consume -> MongoDB write loop at the same rate.

The ratio of the p95s is printed. Topics and databases get a unique prefix and are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from gateway.app import EVENT_TYPES, build
from gateway.auth import token_hash
from gateway.projection import MEETINGS, apply_patch, patches
from gateway.settings import ApiToken, Settings
from gateway.store import BATCHED_WRITES
from proxymage_shared import topics
from proxymage_shared.events import utc_now
from proxymage_shared.kafka import ensure_topics
from proxymage_shared.mongo import create_mongo_client
from proxymage_shared.service import run_service
from proxymage_shared.settings import load_settings
from proxymage_shared.topics import TopicSpec, topic_specs

BENCH_TOKEN = "bench-token"  # noqa: S105 - a throwaway token of this process's own gateway


@dataclass(frozen=True)
class Figures:
    count: int
    p50_ms: float
    p95_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples: list[float]) -> Figures:
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return cls(len(ordered), statistics.median(ordered) * 1000, p95 * 1000, ordered[-1] * 1000)

    def line(self, name: str) -> str:
        return (
            f"{name:<10} n={self.count:<5} p50={self.p50_ms:8.1f} ms  "
            f"p95={self.p95_ms:8.1f} ms  max={self.max_ms:8.1f} ms"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def delete_topics(bootstrap_servers: str, prefix: str) -> None:
    """Deletes every topic whose name starts with `prefix` (a bench's or a test's own)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def paced(rate: float, count: int, action: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Starts `action(i)` at `rate` per second, `count` times, and waits for all of them."""
    started = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for index in range(count):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(action(index)))
    await asyncio.gather(*tasks)


async def baseline(settings: Settings, rate: float, count: int) -> Figures:
    topic = settings.topic("bench.baseline")
    await ensure_topics(settings.kafka_bootstrap_servers, [TopicSpec(topic, 3)])
    client = create_mongo_client(settings.mongo_url.get_secret_value())
    collection = client[settings.database_name()]["baseline"]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"{topic}.group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    sent: dict[str, float] = {}
    done: dict[str, float] = {}
    finished = asyncio.Event()

    async def consume() -> None:
        async for record in consumer:
            key = record.key.decode()
            await collection.update_one({"_id": key}, {"$set": {"value": record.value}}, upsert=True)
            done[key] = time.perf_counter()
            await consumer.commit()
            if len(done) >= count:
                finished.set()

    await producer.start()
    await consumer.start()
    task = asyncio.create_task(consume())
    try:
        while not consumer.assignment():  # noqa: ASYNC110 - aiokafka offers no event for it
            await asyncio.sleep(0.05)

        async def send(index: int) -> None:
            key = f"b-{index}"
            sent[key] = time.perf_counter()
            await producer.send_and_wait(topic, json.dumps({"n": index}).encode(), key=key.encode())

        await paced(rate, count, send)
        await asyncio.wait_for(finished.wait(), 60)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()
        await client.close()
    return Figures.of([done[key] - sent[key] for key in sent])


def _events(index: int, meeting_id: str, label: str = "") -> list[tuple[str, dict[str, Any]]]:
    enrolment_id = f"enr-bench-{label}{index}"
    enrolled_id = str(uuid.uuid4())
    patient_ref = {"patient_id": f"BENCH{index}", "issuer": "BENCH"}
    base = {"enrolment_id": enrolment_id}
    return [
        (
            topics.PATIENT_ENROLLED,
            {
                **base,
                "event_id": enrolled_id,
                "occurred_at": utc_now().isoformat(),
                "meeting_id": meeting_id,
                "rcp_id": "rcp-bench",
                "meeting_title": "RCP BENCH",
                "meeting_date": "2030-01-01",
                "centre": "3C BENCH",
                "patient": {
                    "birth_name": "BENCH",
                    "used_name": None,
                    "first_name": f"P{index}",
                    "birth_date": "1950-01-01",
                    "sex": "F",
                },
                "consent": True,
                "requested_by": {"name": "Dr BENCH"},
            },
        ),
        (
            topics.IDENTITY_RESOLVED,
            {
                **base,
                "event_id": str(uuid.uuid4()),
                "occurred_at": utc_now().isoformat(),
                "source_event_id": enrolled_id,
                "meeting_id": meeting_id,
                "meeting_date": "2030-01-01",
                "status": "matched",
                "pacs_patients": [patient_ref],
            },
        ),
        (
            topics.IMAGING_CATALOGUED,
            {
                **base,
                "event_id": str(uuid.uuid4()),
                "occurred_at": utc_now().isoformat(),
                "status": "listed",
                "studies": [
                    {
                        "study_instance_uid": f"1.2.826.0.1.999.{index}.{n}",
                        "description": "TDM THORAX",
                        "pacs": "MIRC",
                        "date": "2029-12-01",
                        "modalities": ["CT"],
                        "images": 100,
                        "series": 2,
                        "pacs_patient": patient_ref,
                    }
                    for n in range(3)
                ],
            },
        ),
    ]


async def preload(settings: Settings, count: int) -> float:
    """Fills the bench's read model with `count` enrolments of realistic shape (enrolled, matched, three studies
    catalogued, one selected and available), 20 per past meeting, as the projection would have written them.
    Returns the seconds it took. The clock of the measure starts afterwards."""
    started = time.perf_counter()
    client = create_mongo_client(settings.mongo_url.get_secret_value())
    database = client[settings.database_name()]
    try:
        documents: dict[tuple[str, str], dict[str, Any]] = {}
        batch_size = 1000
        for first in range(0, count, batch_size):
            documents.clear()
            for index in range(first, min(count, first + batch_size)):
                meeting_id = f"m-history-{index // PATIENTS_PER_MEETING}"
                events = _events(index, meeting_id, "h")
                study_instance_uid = events[2][1]["studies"][0]["study_instance_uid"]
                enrolment_id = events[0][1]["enrolment_id"]
                common = {"enrolment_id": enrolment_id, "occurred_at": utc_now().isoformat()}
                events += [
                    (
                        topics.STUDIES_SELECTED,
                        {
                            **common,
                            "event_id": str(uuid.uuid4()),
                            "study_instance_uids": [study_instance_uid],
                            "expertise_requested": False,
                        },
                    ),
                    (
                        topics.STUDY_STATUS,
                        {
                            **common,
                            "event_id": str(uuid.uuid4()),
                            "study_instance_uid": study_instance_uid,
                            "status": "available",
                            "version": 3,
                            "attempts": 1,
                        },
                    ),
                ]
                for topic, value in events:
                    for patch in patches(EVENT_TYPES[topic].model_validate_json(json.dumps(value))):
                        key = (patch.collection, patch.key)
                        documents[key] = apply_patch(documents.get(key), patch)
            by_collection: dict[str, list[dict[str, Any]]] = {}
            for (collection, _), document in documents.items():
                by_collection.setdefault(collection, []).append(document)
            for collection, docs in by_collection.items():
                if collection == MEETINGS:
                    for document in docs:  # a meeting spans two batches at most: merge, do not overwrite
                        await database[collection].update_one(
                            {"_id": document["_id"]},
                            {"$set": {k: v for k, v in document.items() if k != "_id"}},
                            upsert=True,
                        )
                else:
                    await database[collection].insert_many(docs, ordered=False)
    finally:
        await client.close()
    return time.perf_counter() - started


async def _sse_events(
    client: httpx.AsyncClient, path: str, connected: asyncio.Event
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async with client.stream("GET", path, timeout=httpx.Timeout(10, read=None)) as response:
        connected.set()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event:
                yield event, json.loads(line.removeprefix("data: "))
            elif not line:
                event = ""


PATIENTS_PER_MEETING = 20


def meeting_of(index: int) -> str:
    return f"m-bench-{index // PATIENTS_PER_MEETING}"


async def through_gateway(settings: Settings, rate: float, count: int) -> Figures:
    service = build(settings)
    # (topic partitions come from settings.topic_partitions)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_service(service, stop))
    url = f"http://127.0.0.1:{settings.health_port}"
    meeting_id = "m-bench-warm-up"
    sent: dict[str, float] = {}
    visible: dict[str, float] = {}
    finished = asyncio.Event()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=0)
    headers = {"Authorization": f"Bearer {BENCH_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, trust_env=False) as client:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    break
            if time.monotonic() > deadline or runner.done():
                raise RuntimeError("the gateway did not get ready")
            await asyncio.sleep(0.1)

        async def watch(meeting: str, connected: asyncio.Event) -> None:
            async for _, data in _sse_events(client, f"/api/v1/meetings/{meeting}/events", connected):
                # Whichever of the identity and the catalogue lands last makes the studies visible.
                if (data.get("summary") or {}).get("catalogued"):
                    visible.setdefault(data["enrolment_id"], time.perf_counter())
                    if all(key in visible for key in sent) and len(sent) >= count:
                        finished.set()

        # Realistic meetings: PATIENTS_PER_MEETING enrolments each, one SSE stream per meeting (as the console
        # of each meeting would listen).
        meetings = [meeting_of(index) for index in range(0, count, PATIENTS_PER_MEETING)] + [meeting_id]
        streams = {meeting: asyncio.Event() for meeting in meetings}
        watchers = [asyncio.create_task(watch(meeting, connected)) for meeting, connected in streams.items()]
        await asyncio.wait_for(asyncio.gather(*(connected.wait() for connected in streams.values())), 10)
        await producer.start()
        try:
            # Warm-up: every consumer has joined its group and the first writes are done before the clock
            # starts (the groups rebalance as their consumers join, one by one).
            warm_up = [f"enr-bench-w{index}" for index in range(10)]
            for index, enrolment_id in enumerate(warm_up):
                for topic, value in _events(index, meeting_id, "w"):
                    await producer.send(settings.topic(topic), json.dumps(value).encode(), key=enrolment_id.encode())
            await producer.flush()
            while not all(key in visible for key in warm_up):  # noqa: ASYNC110 - filled by the watcher
                await asyncio.sleep(0.1)
            await asyncio.sleep(3.0)

            async def enrol(index: int) -> None:
                events = _events(index, meeting_of(index))
                enrolment_id = events[0][1]["enrolment_id"]
                sent[enrolment_id] = time.perf_counter()
                for topic, value in events:
                    await producer.send(settings.topic(topic), json.dumps(value).encode(), key=enrolment_id.encode())
                await producer.flush()

            await paced(rate, count, enrol)
            await asyncio.wait_for(finished.wait(), 120)
            for enrolment_id in sent:  # the GET agrees with what the stream said
                answer = (await client.get(f"/api/v1/enrolments/{enrolment_id}")).json()
                assert len(answer["studies"]) == 3, enrolment_id
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await producer.stop()
            stop.set()
            await runner
    return Figures.of([visible[key] - sent[key] for key in sent])


async def main_async(rate: float, count: int, history: int) -> None:
    run_id = uuid.uuid4().hex[:8]
    settings = load_settings(
        Settings,
        topic_prefix=f"bench-gw-{run_id}.",
        mongo_database=f"bench_gw_{run_id}",
        health_port=0,
        topic_partitions=3,
        api_tokens=(ApiToken(name="bench", role="dcc", sha256=token_hash(BENCH_TOKEN)),),
        log_level="WARNING",
    )
    settings = settings.model_copy(update={"health_port": free_port()})
    await ensure_topics(
        settings.kafka_bootstrap_servers, topic_specs(settings.topic_partitions, prefix=settings.topic_prefix)
    )
    try:
        if history:
            seconds = await preload(settings, history)
            print(f"read model preloaded with {history} enrolments in {seconds:.0f} s", flush=True)
        base = await baseline(settings, rate, count)
        gateway = await through_gateway(settings, rate, count)
    finally:
        await delete_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
        client = create_mongo_client(settings.mongo_url.get_secret_value())
        await client.drop_database(settings.database_name())
        await client.close()
    print(f"enrolment -> catalogue visible, {count} enrolments at {rate:g}/s, {history} enrolments already stored")
    print(base.line("baseline"))
    print(gateway.line("gateway"))
    print(
        f"ratio p50 {gateway.p50_ms / base.p50_ms:.2f}x  p95 {gateway.p95_ms / base.p95_ms:.2f}x "
        "(budget: p95 < 500 ms, < 3x)"
    )
    print(f"gateway writes that applied several patches of one document together: {BATCHED_WRITES._value.get():.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=20.0, help="enrolments per second")
    parser.add_argument("--count", type=int, default=200, help="enrolments")
    parser.add_argument(
        "--history", type=int, default=50_000, help="enrolments already in the read model before the measure"
    )
    arguments = parser.parse_args()
    from proxymage_shared.logging import configure_logging

    configure_logging("gateway-bench", "WARNING")
    asyncio.run(main_async(arguments.rate, arguments.count, arguments.history))


if __name__ == "__main__":
    main()
