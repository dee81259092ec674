"""`proxymage dlq` against the real broker: dead letters parked by `kafka.dead_letter` listed, shown, replayed
once onto their original topic, purged. The commands run through typer's runner, as an operator types them,
in the test's own topics (prefix `test-dlq-<id>.`, deleted afterwards)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from proxymage_shared import events, kafka, topics
from proxymage_shared.ops import dlq
from proxymage_shared.ops.cli import app
from proxymage_shared.settings import ServiceSettings, load_settings
from typer.testing import CliRunner, Result

SECRET = "SECRETNOM"  # stands for patient data in a payload: printed only by `show --payload`


@pytest.fixture
def settings(stack_env: dict[str, str]) -> Iterator[ServiceSettings]:
    prefix = f"test-dlq-{uuid.uuid4().hex[:10]}."
    settings = load_settings(ServiceSettings, service_name="it-dlq", topic_prefix=prefix)
    asyncio.run(kafka.ensure_topics(settings.kafka_bootstrap_servers, topics.topic_specs(1, prefix=prefix)))
    yield settings

    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            doomed = [name for name in await admin.list_topics() if name.startswith(prefix)]
            if doomed:
                await admin.delete_topics(doomed)
        finally:
            await admin.close()

    asyncio.run(delete())


async def park(settings: ServiceSettings, offset: int, key: bytes, value: bytes, kind: str) -> None:
    """What a consumer does with a message it cannot process."""
    broker = kafka.create_broker(settings)
    await broker.start()
    try:
        await kafka.dead_letter(
            broker,
            service="identity-matcher",
            topic=settings.topic(topics.IMAGING_REFRESH),
            partition=0,
            offset=offset,
            key=key,
            value=value,
            reason=f"test {kind}",
            kind=kind,
            original_headers={"content-type": "application/json", "x-event-type": "ImagingRefresh"},
        )
    finally:
        await broker.stop()


async def records(settings: ServiceSettings, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        found: list[Any] = []
        async with asyncio.timeout(20):
            while len(found) < end:
                found.extend((await consumer.getmany(tp, timeout_ms=500)).get(tp, []))
        return found
    finally:
        await consumer.stop()


def run(settings: ServiceSettings, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(app, ["dlq", *args], env={"PROXYMAGE_TOPIC_PREFIX": settings.topic_prefix})
    assert result.exit_code == code, result.output
    return result


def run_json(settings: ServiceSettings, *args: str, code: int = 0) -> Any:
    return json.loads(run(settings, *args, "--json", code=code).stdout)


def test_dead_letters_are_listed_shown_replayed_once_and_purged(settings: ServiceSettings) -> None:
    original = settings.topic(topics.IMAGING_REFRESH)
    dlq_topic = topics.dead_letter_topic(original)
    event = events.ImagingRefresh(event_id=uuid.uuid4(), occurred_at=events.utc_now(), enrolment_id="enr-1")
    good = event.to_kafka_value()
    invalid = json.dumps({"event_id": "not-a-uuid", "enrolment_id": "enr-2", "birth_name": SECRET}).encode()
    garbage = b"\xff\xfe not even JSON " + SECRET.encode()
    asyncio.run(park(settings, 40, b"enr-1", good, "retries_exhausted"))
    asyncio.run(park(settings, 41, b"enr-2", invalid, "invalid_event"))
    asyncio.run(park(settings, 42, b"enr-3", garbage, "invalid_event"))

    # Every dead-letter topic of the deployment with its pending count.
    summary = {row["topic"]: row for row in run_json(settings, "list")}
    assert summary[dlq_topic] == {"topic": dlq_topic, "total": 3, "handled": 0, "pending": 3}
    assert summary[topics.dead_letter_topic(settings.topic(topics.PATIENT_ENROLLED))]["total"] == 0

    # One topic's dead letters (named without the prefix), no payload printed.
    listing = run_json(settings, "list", topics.dead_letter_topic(topics.IMAGING_REFRESH))
    assert listing["topic"] == dlq_topic
    rows = listing["dead_letters"]
    assert [(r["partition"], r["offset"], r["key"], r["status"]) for r in rows] == [
        (0, 0, "enr-1", "pending"),
        (0, 1, "enr-2", "pending"),
        (0, 2, "enr-3", "pending"),
    ]
    assert rows[1]["original_topic"] == original
    assert (rows[1]["original_offset"], rows[1]["service"]) == ("41", "identity-matcher")
    assert (rows[1]["kind"], rows[1]["reason"]) == ("invalid_event", "test invalid_event")
    text = run(settings, "list", dlq_topic).stdout
    assert "0:1\tpending" in text
    assert SECRET not in text
    assert SECRET not in json.dumps(listing)

    # show: headers and size; the body only when asked.
    shown = run_json(settings, "show", dlq_topic, "0", "1")
    assert shown["headers"]["x-dlq-original-offset"] == "41"
    assert shown["size"] == len(invalid)
    assert "payload" not in shown
    assert SECRET not in run(settings, "show", dlq_topic, "0", "1").stdout
    assert SECRET in run(settings, "show", dlq_topic, "0", "1", "--payload").stdout

    # Replay: the original bytes and key on the original topic, same event_id, headers without x-dlq-*.
    report = run_json(settings, "replay", dlq_topic, "--offset", "0:0", "--operator", "alice")
    assert [(a["offset"], a["kind"], a["operator"]) for a in report["done"]] == [(0, "replayed", "alice")]
    assert report["done"][0]["replayed_to"] == {"topic": original, "partition": 0, "offset": 0}
    assert report["done"][0]["event_id"] == str(event.event_id)
    [replayed] = asyncio.run(records(settings, original))
    assert (replayed.key, replayed.value) == (b"enr-1", good)
    headers = dict(replayed.headers)
    assert headers["content-type"] == b"application/json"
    assert headers["x-event-type"] == b"ImagingRefresh"
    assert headers[dlq.REPLAYED_FROM] == f"{dlq_topic}:0:0".encode()
    assert headers[dlq.REPLAYED_BY] == b"alice"
    assert dlq.REPLAYED_AT in headers
    assert not [name for name in headers if name.startswith("x-dlq-")]

    # Replaying it again does nothing (and says why): the command is idempotent.
    again = run_json(settings, "replay", dlq_topic, "--offset", "0:0", "--operator", "bob")
    assert again["done"] == []
    assert [(s["offset"], s["why"].split(" at ")[0]) for s in again["skipped"]] == [(0, "already replayed by alice")]
    assert len(asyncio.run(records(settings, original))) == 1

    # Forced, with a fresh event_id: a second copy that consumers will apply as a new event.
    forced = run_json(settings, "replay", dlq_topic, "--offset=0:0", "--operator=bob", "--force", "--new-event-id")
    [action] = forced["done"]
    assert action["new_event_id"] is True
    assert action["event_id"] != str(event.event_id)
    assert [earlier["operator"] for earlier in action["earlier"]] == ["alice"]
    second = asyncio.run(records(settings, original))[1]
    assert json.loads(second.value) == {**json.loads(good), "event_id": action["event_id"]}
    assert second.key == b"enr-1"

    # A payload that has no event_id cannot get a new one: that dead letter fails, the others go on.
    failed = run_json(settings, "replay", dlq_topic, "--offset", "0:2", "--operator", "bob", "--new-event-id", code=4)
    assert [(f["offset"], "event_id" in f["why"]) for f in failed["failed"]] == [(2, True)]
    assert len(asyncio.run(records(settings, original))) == 2

    # Purge everything still pending: the replayed one is skipped.
    purged = run_json(settings, "purge", dlq_topic, "--all", "--operator", "carol")
    assert sorted(a["offset"] for a in purged["done"]) == [1, 2]
    assert [s["offset"] for s in purged["skipped"]] == [0]
    statuses = [r["status"] for r in run_json(settings, "list", dlq_topic)["dead_letters"]]
    assert statuses == ["replayed", "purged", "purged"]
    summary = {row["topic"]: row for row in run_json(settings, "list")}
    assert summary[dlq_topic] == {"topic": dlq_topic, "total": 3, "handled": 3, "pending": 0}
    late = run_json(settings, "purge", dlq_topic, "--before", "2999-01-01T00:00:00Z", "--operator", "carol")
    assert (late["done"], len(late["skipped"])) == ([], 3)
    shown = run_json(settings, "show", dlq_topic, "0", "2")
    assert (shown["status"], shown["action"]["operator"]) == ("purged", "carol")


def test_clear_errors_for_a_wrong_topic_or_position(settings: ServiceSettings) -> None:
    asyncio.run(park(settings, 7, b"enr-1", b"{}", "invalid_event"))
    dlq_topic = topics.dead_letter_topic(settings.topic(topics.IMAGING_REFRESH))
    not_dlq = run(settings, "list", settings.topic(topics.IMAGING_REFRESH), code=dlq.EXIT_USAGE)
    assert "not a dead-letter topic" in not_dlq.output
    assert "no topic" in run(settings, "list", "nowhere.v1.dlq", code=dlq.EXIT_NOT_FOUND).output
    missing = run(settings, "show", dlq_topic, "0", "5", code=dlq.EXIT_NOT_FOUND)
    assert "offsets kept: 0 to 0" in missing.output
    assert "no partition 3" in run(settings, "show", dlq_topic, "3", "0", code=dlq.EXIT_NOT_FOUND).output
    # An unknown position among several: nothing is replayed.
    run(settings, "replay", dlq_topic, "--offset", "0:0", "--offset", "0:9", "--operator", "a", code=dlq.EXIT_NOT_FOUND)
    assert asyncio.run(records(settings, settings.topic(topics.IMAGING_REFRESH))) == []
    both = run(settings, "purge", dlq_topic, "--all", "--offset", "0:0", "--operator", "a", code=dlq.EXIT_USAGE)
    assert "one of them" in both.output
    naive = run(settings, "purge", dlq_topic, "--before", "2999-01-01T00:00:00", "--operator", "a", code=dlq.EXIT_USAGE)
    assert "time zone" in naive.output
    assert run_json(settings, "purge", dlq_topic, "--before", "2000-01-01T00:00:00Z", "--operator", "a")["done"] == []
    [purged] = run_json(settings, "purge", dlq_topic, "--before", "2999-01-01T00:00:00Z", "--operator", "a")["done"]
    assert (purged["offset"], purged["kind"]) == (0, "purged")
