"""The composition root's subscriptions (`app.build`), driven through FastStream's in-memory `TestKafkaBroker`:
an event on each of the six consumed topics reaches its handler. No server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from expert_notifier.app import Overrides, build
from expert_notifier.settings import Settings
from faststream.kafka import KafkaBroker, TestKafkaBroker
from proxymage_shared import topics
from proxymage_shared.events import Event, ExpertiseNotification
from proxymage_shared.kafka import Delivery, publish_event, subscribe
from proxymage_shared.settings import load_settings

from .fakes import FakeNotifierStore, FakeSender
from .test_handlers import NOW, available, enrolled, identity, meeting, selected, withdrawn


@dataclass
class Wired:
    settings: Settings
    broker: KafkaBroker  # patched by TestKafkaBroker: in memory
    store: FakeNotifierStore
    published: list[ExpertiseNotification]

    async def send(self, topic: str, event: Event, key: str = "enr-1") -> None:
        await publish_event(self.broker, self.settings.topic(topic), key, event)


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    settings = load_settings(Settings, topic_prefix=f"wiring-{uuid.uuid4().hex[:8]}.")
    store = FakeNotifierStore()
    service = build(settings, overrides=Overrides(store=store, sender=FakeSender(), clock=lambda: NOW))
    published: list[ExpertiseNotification] = []

    async def collect(outcome: ExpertiseNotification, _delivery: Delivery) -> None:
        published.append(outcome)

    subscribe(service.broker, settings, settings.topic(topics.EXPERTISE_NOTIFICATION), ExpertiseNotification, collect)
    async with TestKafkaBroker(service.broker) as broker:
        yield Wired(settings, broker, store, published)


async def test_meeting_experts_reach_on_meeting_experts(wired: Wired) -> None:
    await wired.send(topics.MEETING_EXPERTS, meeting(), "m-1")
    assert await wired.store.get_meeting("m-1") is not None


async def test_an_enrolled_event_reaches_on_enrolled(wired: Wired) -> None:
    event = enrolled()
    await wired.send(topics.PATIENT_ENROLLED, event)
    facts = await wired.store.get_facts("enr-1")
    assert facts is not None
    assert facts.enrolled is not None
    assert facts.enrolled.stamp.event_id == str(event.event_id)


async def test_a_selection_reaches_on_selected_and_views_are_published(wired: Wired) -> None:
    await wired.send(topics.STUDIES_SELECTED, selected())
    facts = await wired.store.get_facts("enr-1")
    assert facts is not None
    assert facts.expertise_requested
    assert sorted((o.role, o.status) for o in wired.published) == [
        ("nuclear_physician", "waiting"),
        ("radiologist", "waiting"),
    ]


async def test_a_withdrawal_reaches_on_withdrawn(wired: Wired) -> None:
    await wired.send(topics.ENROLMENT_WITHDRAWN, withdrawn())
    facts = await wired.store.get_facts("enr-1")
    assert facts is not None
    assert facts.withdrawn


async def test_an_identity_outcome_reaches_on_identity(wired: Wired) -> None:
    await wired.send(topics.IDENTITY_RESOLVED, identity(enrolled()))
    facts = await wired.store.get_facts("enr-1")
    assert facts is not None
    assert facts.identity is not None
    assert facts.identity.status == "matched"


async def test_a_study_status_reaches_on_study_status(wired: Wired) -> None:
    await wired.send(topics.STUDY_STATUS, available(version=3))
    facts = await wired.store.get_facts("enr-1")
    assert facts is not None
    assert [(s.study_instance_uid, s.version) for s in facts.studies] == [(available().study_instance_uid, 3)]
