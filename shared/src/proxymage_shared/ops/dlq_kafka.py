"""Kafka for the dead-letter commands: read dead-letter topics and the action record, publish replays.

Plain aiokafka clients (no consumer group: reading commits nothing and moves no service's offsets), with the
services' security settings; the producer waits for every in-sync replica and is idempotent, like theirs.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Final, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from proxymage_shared.kafka import PRODUCER_IDEMPOTENCE, admin_security_options, ensure_topics
from proxymage_shared.ops.dlq import (
    Action,
    DeadLetter,
    DlqRef,
    NotFoundError,
    OperatorError,
    Outbound,
    Position,
    fold_actions,
)
from proxymage_shared.settings import ServiceSettings
from proxymage_shared.topics import dlq_actions_spec

REQUEST_TIMEOUT_MS: Final = 15_000
# How long reading a topic up to the end offsets taken at the start may take.
READ_TIMEOUT_SECONDS: Final = 60.0
FETCH_MAX_WAIT_MS: Final = 20


class DlqKafka:
    """The clients of one command, opened and closed with `async with`."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self.actions_topic = dlq_actions_spec(settings.topic_prefix).name
        options: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap_servers,
            "client_id": f"proxymage-{settings.service_name}",
            "request_timeout_ms": REQUEST_TIMEOUT_MS,
            **admin_security_options(settings.kafka_security),
        }
        self._admin = AIOKafkaAdminClient(**options)
        # Reads stop at end offsets known beforehand, so a long poll at a partition's end only delays the next
        # read (the fetcher waits for the request in flight before fetching a newly assigned partition).
        self._consumer = AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS, **options
        )
        self._producer: AIOKafkaProducer | None = None
        self._options = options

    async def __aenter__(self) -> Self:
        try:
            await self._admin.start()
            await self._consumer.start()
        except BaseException:
            await self.__aexit__(None, None, None)  # what was opened (an unreachable broker) is closed
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._producer is not None:
            await self._producer.stop()
        await self._consumer.stop()
        await self._admin.close()

    async def topics(self) -> set[str]:
        return set(await self._admin.list_topics())

    async def ranges(self, topic: str) -> dict[int, tuple[int, int]]:
        """partition -> (first offset kept, end offset) of an existing topic."""
        return (await self.ranges_of([topic]))[topic]

    async def ranges_of(self, topics: list[str]) -> dict[str, dict[int, tuple[int, int]]]:
        """`ranges` of several topics in three requests rather than three per topic."""
        if not topics:
            return {}
        described = await self._admin.describe_topics(topics)
        partitions = [
            TopicPartition(item["topic"], part["partition"]) for item in described for part in item["partitions"]
        ]
        # Assigning first makes the client fetch the metadata of every topic at once; otherwise the offset
        # lookup learns of one unknown topic per retry, 100 ms each (0.7 s for the seven dead-letter topics).
        self._consumer.assign(partitions)
        first = await self._consumer.beginning_offsets(partitions)
        end = await self._consumer.end_offsets(partitions)
        found: dict[str, dict[int, tuple[int, int]]] = {topic: {} for topic in topics}
        for tp in partitions:
            found[tp.topic][tp.partition] = (int(first[tp]), int(end[tp]))
        return found

    async def _records(self, topic: str, ranges: dict[int, tuple[int, int]]) -> list[Any]:
        """Every record of `topic` up to the end offsets in `ranges`, partition by partition in offset order."""
        wanted = {TopicPartition(topic, p): end for p, (first, end) in ranges.items() if end > first}
        if not wanted:
            return []
        self._consumer.assign(list(wanted))
        for tp in wanted:
            self._consumer.seek(tp, ranges[tp.partition][0])
        records: list[Any] = []
        remaining = dict(wanted)
        try:
            async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                while remaining:
                    batch = await self._consumer.getmany(*remaining, timeout_ms=500)
                    for tp, items in batch.items():
                        records.extend(item for item in items if item.offset < wanted[tp])
                    for tp in list(remaining):
                        # A compacted topic has gaps: the position, not the last offset seen, says we are done.
                        if await self._consumer.position(tp) >= remaining[tp]:
                            del remaining[tp]
        except TimeoutError:
            raise OperatorError(f"could not read {topic} to its end within {READ_TIMEOUT_SECONDS:.0f} s") from None
        records.sort(key=lambda item: (item.partition, item.offset))
        return records

    async def dead_letters(self, topic: str) -> list[DeadLetter]:
        return [_dead_letter(record) for record in await self._records(topic, await self.ranges(topic))]

    async def dead_letter(self, topic: str, partition: int, offset: int) -> DeadLetter:
        ranges = await self.ranges(topic)
        if partition not in ranges:
            raise NotFoundError(f"{topic} has no partition {partition}")
        first, end = ranges[partition]
        if not first <= offset < end:
            raise NotFoundError(
                f"no dead letter at {partition}:{offset} in {topic} (offsets kept: {first} to {end - 1})"
            )
        for record in await self._records(topic, {partition: (offset, offset + 1)}):
            return _dead_letter(record)
        raise NotFoundError(f"no dead letter at {partition}:{offset} in {topic}")

    async def actions(self) -> dict[str, Action]:
        """The latest action per dead letter (none if the action topic does not exist yet)."""
        if self.actions_topic not in await self.topics():
            return {}
        records = await self._records(self.actions_topic, await self.ranges(self.actions_topic))
        return fold_actions((record.key, record.value) for record in records)

    async def ensure_actions_topic(self) -> None:
        await ensure_topics(
            self._settings.kafka_bootstrap_servers,
            [dlq_actions_spec(self._settings.topic_prefix)],
            replication_factor=self._settings.topic_replication_factor,
            security=self._settings.kafka_security,
        )

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(acks="all", enable_idempotence=PRODUCER_IDEMPOTENCE, **self._options)
            await producer.start()
            self._producer = producer
        return self._producer

    async def publish(self, message: Outbound) -> Position:
        producer = await self._started_producer()
        metadata = await producer.send_and_wait(
            message.topic, message.value, key=message.key, headers=list(message.headers)
        )
        return Position(topic=message.topic, partition=metadata.partition, offset=metadata.offset)

    async def record(self, action: Action) -> None:
        producer = await self._started_producer()
        await producer.send_and_wait(
            self.actions_topic, action.model_dump_json().encode(), key=action.ref.key().encode()
        )


def _dead_letter(record: Any) -> DeadLetter:
    return DeadLetter(
        ref=DlqRef(record.topic, record.partition, record.offset),
        key=record.key,
        value=record.value or b"",
        headers=tuple((name, bytes(value or b"")) for name, value in record.headers or ()),
        timestamp_ms=int(record.timestamp),
    )
