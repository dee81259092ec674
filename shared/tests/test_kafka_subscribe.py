"""`kafka.subscribe`'s decision tree for one consumed message, through FastStream's in-memory `TestKafkaBroker`
(no server): a permanent failure is dead-lettered at once (`permanent_error`), a transient one is retried in
place and then either succeeds (no dead letter) or is dead-lettered (`retries_exhausted`); a retriable Kafka
error is reported to the outage tracker, not logged once per retry. The real-Kafka counterpart is
tests/integration/test_kafka.py."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from faststream.kafka import KafkaBroker, TestKafkaBroker
from proxymage_shared import kafka, topics
from proxymage_shared.dependency_log import Outages
from proxymage_shared.errors import PermanentError, TransientError
from proxymage_shared.events import ImagingRefresh
from proxymage_shared.retry import RetryPolicy
from proxymage_shared.settings import ServiceSettings, load_settings
from structlog.testing import capture_logs

ATTEMPTS = 3
OCCURRED_AT = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


@dataclass
class DeadLetter:
    key: bytes | None
    body: bytes
    headers: dict[str, str]


@dataclass
class Subscribed:
    """One subscription whose handler raises, in turn, the errors of `script` (then succeeds)."""

    settings: ServiceSettings
    broker: KafkaBroker
    topic: str
    script: list[Exception] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # the enrolment id of each call
    handled: list[str] = field(default_factory=list)  # the calls that succeeded
    dead: list[DeadLetter] = field(default_factory=list)

    async def handle(self, event: ImagingRefresh, delivery: kafka.Delivery) -> None:
        assert delivery.key == event.enrolment_id
        self.calls.append(event.enrolment_id)
        if self.script:
            raise self.script.pop(0)
        self.handled.append(event.enrolment_id)

    async def send(self, enrolment_id: str) -> ImagingRefresh:
        event = ImagingRefresh(event_id=uuid.uuid4(), occurred_at=OCCURRED_AT, enrolment_id=enrolment_id)
        await kafka.publish_event(self.broker, self.topic, enrolment_id, event)
        return event

    def dead_letter(self) -> DeadLetter:
        (dead,) = self.dead
        return dead


async def _as_is(message: Any) -> Any:
    return message


@pytest.fixture
async def subscribed() -> AsyncIterator[Subscribed]:
    settings = load_settings(ServiceSettings, service_name="kafka-test", topic_prefix=f"sub-{uuid.uuid4().hex[:8]}.")
    broker = kafka.create_broker(settings)
    topic = settings.topic(topics.IMAGING_REFRESH)
    found = Subscribed(settings, broker, topic)
    # Retries in place without waiting: at most 2 ms between attempts.
    kafka.subscribe(broker, settings, topic, ImagingRefresh, found.handle, retry=RetryPolicy(ATTEMPTS, 0.001, 0.002))

    @broker.subscriber(topics.dead_letter_topic(topic), decoder=_as_is)
    async def on_dead_letter(message: Any) -> None:
        found.dead.append(DeadLetter(message.raw_message.key, message.body, dict(message.headers)))

    async with TestKafkaBroker(broker) as patched:
        found.broker = patched
        yield found


async def test_a_permanent_error_is_dead_lettered_at_once_with_its_reason(subscribed: Subscribed) -> None:
    subscribed.script = [PermanentError("the PACS refuses this request")]
    event = await subscribed.send("enr-refused")
    assert subscribed.calls == ["enr-refused"]  # never retried
    dead = subscribed.dead_letter()
    assert dead.headers[kafka.DLQ_KIND] == "permanent_error"
    assert "the PACS refuses this request" in dead.headers[kafka.DLQ_REASON]
    assert dead.headers[kafka.DLQ_TOPIC] == subscribed.topic
    assert dead.headers[kafka.DLQ_SERVICE] == "kafka-test"
    assert dead.key == b"enr-refused"
    assert json.loads(dead.body)["event_id"] == str(event.event_id)  # the original bytes
    assert subscribed.handled == []


async def test_a_failure_that_outlasts_the_retries_is_dead_lettered_as_exhausted(subscribed: Subscribed) -> None:
    subscribed.script = [TransientError("PACS busy")] * (ATTEMPTS + 1)
    await subscribed.send("enr-broken")
    assert subscribed.calls == ["enr-broken"] * ATTEMPTS
    dead = subscribed.dead_letter()
    assert dead.headers[kafka.DLQ_KIND] == "retries_exhausted"
    assert dead.headers[kafka.DLQ_REASON].startswith(f"gave up after {ATTEMPTS} attempts: ")
    assert "PACS busy" in dead.headers[kafka.DLQ_REASON]
    assert subscribed.handled == []


async def test_a_transient_failure_retried_in_place_then_handled_is_not_dead_lettered(
    subscribed: Subscribed,
) -> None:
    subscribed.script = [TransientError("PACS busy")] * (ATTEMPTS - 1)
    with capture_logs() as logs:
        await subscribed.send("enr-flaky")
    assert subscribed.calls == ["enr-flaky"] * ATTEMPTS
    assert subscribed.handled == ["enr-flaky"]
    assert subscribed.dead == []
    retries = [entry for entry in logs if entry["event"] == "handler_retry"]
    assert [entry["attempt"] for entry in retries] == [1, 2]


async def test_a_retriable_kafka_error_is_reported_to_the_outage_tracker_not_logged_per_retry(
    subscribed: Subscribed, monkeypatch: pytest.MonkeyPatch
) -> None:
    notices: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(kafka, "OUTAGES", Outages(lambda level, event, fields: notices.append((event, fields))))
    subscribed.script = [KafkaConnectionError("leader not available"), KafkaConnectionError("still not")]
    with capture_logs() as logs:
        await subscribed.send("enr-outage")
    assert subscribed.handled == ["enr-outage"]  # retried in place until Kafka answered
    assert subscribed.dead == []
    # One outage (the second failure adds to it silently), and no retry line per failure.
    assert [(event, fields["dependency"]) for event, fields in notices] == [("dependency_down", "kafka")]
    assert "KafkaConnectionError" in notices[0][1]["error"]
    assert [entry for entry in logs if entry["event"] == "handler_retry"] == []
