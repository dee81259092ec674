"""The Kafka factory against the real broker: contract events in and out, at-least-once commits,
poison messages to `<topic>.dlq` with their reason, bounded retries."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from proxymage_dev.testing import eventually
from proxymage_shared import events, kafka, topics
from proxymage_shared.errors import PermanentError, TransientError
from proxymage_shared.retry import RetryPolicy
from proxymage_shared.settings import ServiceSettings


def refresh(enrolment_id: str) -> events.ImagingRefresh:
    return events.ImagingRefresh(event_id=uuid.uuid4(), occurred_at=events.utc_now(), enrolment_id=enrolment_id)


async def produce_raw(settings: ServiceSettings, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_all(settings: ServiceSettings, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for partition_records in batch.values():
                    records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


async def committed_offset(settings: ServiceSettings, group: str, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(topic, 0))
    return None if meta is None else int(meta.offset)


async def test_contract_event_through_the_factory_and_poison_message_to_dlq(test_settings: ServiceSettings) -> None:
    topic = test_settings.topic(topics.IMAGING_REFRESH)
    broker = kafka.create_broker(test_settings)
    received: list[tuple[events.ImagingRefresh, kafka.Delivery]] = []

    async def handle(event: events.ImagingRefresh, delivery: kafka.Delivery) -> None:
        received.append((event, delivery))

    kafka.subscribe(broker, test_settings, topic, events.ImagingRefresh, handle)
    poison = b'{"event_id": "not-a-uuid", "enrolment_id": "enr-poison", "birth_name": "SECRETNOM"}'
    await produce_raw(test_settings, topic, b"enr-poison", poison)
    await produce_raw(test_settings, topic, b"enr-poison", b"\xff\xfe not even JSON")
    good = refresh("enr-good")
    await broker.start()
    try:
        await kafka.publish_event(broker, topic, good.enrolment_id, good)

        async def got_good() -> bool:
            return any(event == good for event, _ in received)

        await eventually(got_good, what="the valid event after two poison messages")
        assert [event.enrolment_id for event, _ in received] == ["enr-good"]
        assert received[0][1].key == "enr-good"
        assert received[0][1].offset == 2

        dead = await read_all(test_settings, topics.dead_letter_topic(topic), expected=2)
        assert [record.value for record in dead] == [poison, b"\xff\xfe not even JSON"]
        first = {name: value.decode() for name, value in dead[0].headers}
        assert dead[0].key == b"enr-poison"
        assert first[kafka.DLQ_KIND] == "invalid_event"
        assert first[kafka.DLQ_REASON].startswith("invalid event: ")
        assert "event_id" in first[kafka.DLQ_REASON]
        assert "SECRETNOM" not in first[kafka.DLQ_REASON]
        assert first[kafka.DLQ_TOPIC] == topic
        assert first[kafka.DLQ_PARTITION] == "0"
        assert first[kafka.DLQ_OFFSET] == "0"
        assert first[kafka.DLQ_SERVICE] == test_settings.service_name

        group = f"{test_settings.consumer_group()}.{topics.IMAGING_REFRESH}"

        async def all_committed() -> bool:
            return await committed_offset(test_settings, group, topic) == 3

        await eventually(all_committed, what="offsets committed past every handled or dead-lettered message")
    finally:
        await broker.stop()


async def test_transient_failures_are_retried_and_permanent_ones_dead_lettered(
    test_settings: ServiceSettings,
) -> None:
    topic = test_settings.topic(topics.IMAGING_REFRESH)
    broker = kafka.create_broker(test_settings)
    calls: dict[str, int] = {}
    done: list[str] = []

    async def handle(event: events.ImagingRefresh, _: kafka.Delivery) -> None:
        calls[event.enrolment_id] = calls.get(event.enrolment_id, 0) + 1
        if event.enrolment_id == "enr-flaky" and calls["enr-flaky"] < 3:
            raise TransientError("PACS busy")
        if event.enrolment_id == "enr-refused":
            raise PermanentError("PACS refuses this request")
        if event.enrolment_id == "enr-broken":
            raise TransientError("still down")
        done.append(event.enrolment_id)

    kafka.subscribe(broker, test_settings, topic, events.ImagingRefresh, handle, retry=RetryPolicy(4, 0.01, 0.05))
    await broker.start()
    try:
        for enrolment in ("enr-flaky", "enr-refused", "enr-broken", "enr-last"):
            await kafka.publish_event(broker, topic, enrolment, refresh(enrolment))

        async def last_done() -> bool:
            return "enr-last" in done

        await eventually(last_done, what="the message after a permanent and an exhausted failure")
        assert done == ["enr-flaky", "enr-last"]
        assert calls == {"enr-flaky": 3, "enr-refused": 1, "enr-broken": 4, "enr-last": 1}
        dead = await read_all(test_settings, topics.dead_letter_topic(topic), expected=2)
        kinds = [{n: v.decode() for n, v in record.headers}[kafka.DLQ_KIND] for record in dead]
        assert kinds == ["permanent_error", "retries_exhausted"]
        reasons = [{n: v.decode() for n, v in record.headers}[kafka.DLQ_REASON] for record in dead]
        assert "PACS refuses this request" in reasons[0]
        assert "gave up after 4 attempts" in reasons[1]
        assert json.loads(dead[0].value)["enrolment_id"] == "enr-refused"
    finally:
        await broker.stop()


async def test_an_uncommitted_message_is_delivered_again_after_a_restart(test_settings: ServiceSettings) -> None:
    """At-least-once: a handler that never finished (process killed) leaves the offset uncommitted."""
    topic = test_settings.topic(topics.IMAGING_REFRESH)
    first_run_started = asyncio.Event()
    never = asyncio.Event()

    async def hang(_: events.ImagingRefresh, __: kafka.Delivery) -> None:
        first_run_started.set()
        await never.wait()

    broker = kafka.create_broker(test_settings, graceful_timeout=0.5)
    kafka.subscribe(broker, test_settings, topic, events.ImagingRefresh, hang)
    await broker.start()
    await kafka.publish_event(broker, topic, "enr-1", refresh("enr-1"))
    await asyncio.wait_for(first_run_started.wait(), 20)
    await broker.stop()  # the handler is cancelled: its message is not committed

    seen: list[str] = []

    async def record(event: events.ImagingRefresh, _: kafka.Delivery) -> None:
        seen.append(event.enrolment_id)

    second = kafka.create_broker(test_settings)
    kafka.subscribe(second, test_settings, topic, events.ImagingRefresh, record)
    await second.start()
    try:

        async def redelivered() -> bool:
            return seen == ["enr-1"]

        await eventually(redelivered, what="redelivery of the unfinished message")
    finally:
        await second.stop()


async def test_a_message_finishing_during_shutdown_is_committed_before_the_consumer_closes(
    test_settings: ServiceSettings,
) -> None:
    """A stopping service (`run_service`: `drain`, then `broker.stop()`) lets the message in flight finish and
    commits it: it is not delivered again at the next start, and no consumer commits after being closed.

    Without `drain`, FastStream closes the consumers first and this message's commit then opens a Kafka
    connection that nobody closes: pytest reports it (unraisable ResourceWarning, an error here)."""
    topic = test_settings.topic(topics.IMAGING_REFRESH)
    started, release = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    async def slow(event: events.ImagingRefresh, _: kafka.Delivery) -> None:
        started.set()
        await release.wait()
        handled.append(event.enrolment_id)

    broker = kafka.create_broker(test_settings)
    kafka.subscribe(broker, test_settings, topic, events.ImagingRefresh, slow)
    await broker.start()
    await kafka.publish_event(broker, topic, "enr-1", refresh("enr-1"))
    await asyncio.wait_for(started.wait(), 20)
    draining = asyncio.create_task(kafka.drain(broker, 10))
    (subscriber,) = broker.subscribers

    async def stopped_fetching() -> bool:
        return not subscriber.running

    await eventually(stopped_fetching, 10, "the subscriber to stop taking messages")
    release.set()  # the handler finishes while the service is stopping
    await draining
    await broker.stop()
    assert handled == ["enr-1"]
    group = f"{test_settings.consumer_group()}.{topics.IMAGING_REFRESH}"
    assert await committed_offset(test_settings, group, topic) == 1


@pytest.mark.parametrize("partitions", [3])
async def test_ensure_topics_is_idempotent_and_applies_configs(test_settings: ServiceSettings, partitions: int) -> None:
    prefix = f"{test_settings.topic_prefix}again."
    specs = topics.topic_specs(partitions, prefix=prefix)
    created = await kafka.ensure_topics(test_settings.kafka_bootstrap_servers, specs)
    assert sorted(created) == sorted(spec.name for spec in specs)
    assert await kafka.ensure_topics(test_settings.kafka_bootstrap_servers, specs) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=test_settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([prefix + topics.RCP_SETTINGS])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == partitions
