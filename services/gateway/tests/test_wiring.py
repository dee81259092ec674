"""The composition root's subscriptions (`app.build`), driven through FastStream's in-memory `TestKafkaBroker`: an
event on each consumed topic reaches the handlers and lands in the read model; a malformed message goes to the
topic's `.dlq` with its reason. No server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from gateway.app import EVENT_TYPES, Overrides, build
from gateway.asyncapi import CONSUMED_TOPICS
from gateway.projection import patches
from gateway.settings import Settings
from proxymage_shared import topics
from proxymage_shared.events import Event
from proxymage_shared.kafka import DLQ_KIND, DLQ_REASON, dead_letter_topic, publish_event
from proxymage_shared.settings import load_settings

from .fakes import FakeReadModel
from .test_projection import ENROLMENT, POOL


@dataclass
class DeadLetter:
    headers: dict[str, str]
    body: bytes


@dataclass
class Wired:
    settings: Settings
    broker: KafkaBroker  # patched by TestKafkaBroker: in memory
    store: FakeReadModel
    dead: list[DeadLetter] = field(default_factory=list)

    async def send(self, topic: str, event: Event) -> None:
        await publish_event(self.broker, self.settings.topic(topic), ENROLMENT, event)


async def _as_is(message: Any) -> Any:
    return message


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    settings = load_settings(Settings, topic_prefix=f"wiring-{uuid.uuid4().hex[:8]}.")
    store = FakeReadModel()
    service = build(settings, overrides=Overrides(store=store))
    found = Wired(settings, service.broker, store)
    dlq = dead_letter_topic(settings.topic(topics.PATIENT_ENROLLED))

    @service.broker.subscriber(dlq, decoder=_as_is)
    async def on_dead_letter(message: Any) -> None:
        found.dead.append(DeadLetter(dict(message.headers), message.body))

    async with TestKafkaBroker(service.broker) as broker:
        found.broker = broker
        yield found
    for hook in service.on_stop:
        await hook()


def _example(topic: str) -> Event:
    return next(event for event in POOL if isinstance(event, EVENT_TYPES[topic]))


def _consumed_with_examples() -> list[str]:
    return [topic for topic in CONSUMED_TOPICS if any(isinstance(event, EVENT_TYPES[topic]) for event in POOL)]


def test_every_consumed_topic_has_an_example() -> None:
    assert _consumed_with_examples() == list(CONSUMED_TOPICS)


@pytest.mark.parametrize("topic", _consumed_with_examples())
async def test_each_consumed_topic_reaches_the_handlers(wired: Wired, topic: str) -> None:
    event = _example(topic)
    await wired.send(topic, event)
    for patch in patches(event):
        stored = wired.store.stored(patch.collection, patch.key)
        assert stored is not None, patch.path
        part, _, child = patch.path.partition(".")
        value = stored[part]
        assert isinstance(value, dict)
        assert (value[child] if child else value) == patch.stored_value()


async def test_a_malformed_message_goes_to_the_dead_letter_topic_with_its_reason(wired: Wired) -> None:
    topic = wired.settings.topic(topics.PATIENT_ENROLLED)
    await wired.broker.publish(b'{"enrolment_id": "enr-x"}', topic=topic, key=b"enr-x")
    (dead,) = wired.dead
    assert dead.body == b'{"enrolment_id": "enr-x"}'
    assert dead.headers[DLQ_KIND] == "invalid_event"
    assert "event_id" in dead.headers[DLQ_REASON]
    assert wired.store.documents == {}
