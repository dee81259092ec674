"""The composition root's subscriptions (`app.build`), driven through FastStream's in-memory `TestKafkaBroker`:
an event on each consumed topic reaches its handler, and the outcome is published. No server."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from identity_matcher.app import Overrides, build
from identity_matcher.ports import Candidates
from identity_matcher.settings import Settings
from proxymage_shared import topics
from proxymage_shared.events import EnrolmentWithdrawn, Event, IdentityResolved, ImagingRefresh, PatientEnrolled
from proxymage_shared.kafka import Delivery, publish_event, subscribe
from proxymage_shared.settings import load_settings

from .fakes import FakeDirectory, FakeEnrolmentStore
from .test_handlers import NOW, enrolled, record, withdrawn


@dataclass
class Wired:
    settings: Settings
    broker: KafkaBroker  # patched by TestKafkaBroker: in memory
    store: FakeEnrolmentStore
    directory: FakeDirectory
    published: list[IdentityResolved]

    async def send(self, topic: str, event: Event, key: str) -> None:
        await publish_event(self.broker, self.settings.topic(topic), key, event)


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    settings = load_settings(Settings, topic_prefix=f"wiring-{uuid.uuid4().hex[:8]}.")
    store, directory = FakeEnrolmentStore(), FakeDirectory(Candidates((record(),), "exact"))
    service = build(settings, overrides=Overrides(store=store, directory=directory, clock=lambda: NOW))
    published: list[IdentityResolved] = []

    async def collect(outcome: IdentityResolved, _delivery: Delivery) -> None:
        published.append(outcome)

    subscribe(service.broker, settings, settings.topic(topics.IDENTITY_RESOLVED), IdentityResolved, collect)

    async with TestKafkaBroker(service.broker) as broker:
        yield Wired(settings, broker, store, directory, published)


async def test_an_enrolled_event_reaches_on_enrolled_and_its_outcome_is_published(wired: Wired) -> None:
    event = enrolled()
    await wired.send(topics.PATIENT_ENROLLED, event, event.enrolment_id)
    assert [(o.status, o.source_event_id) for o in wired.published] == [("matched", event.event_id)]


async def test_a_withdrawal_reaches_on_withdrawn(wired: Wired) -> None:
    event: EnrolmentWithdrawn = withdrawn()
    await wired.send(topics.ENROLMENT_WITHDRAWN, event, event.enrolment_id)
    assert [(o.status, o.source_event_id) for o in wired.published] == [("withdrawn", event.event_id)]


async def test_a_refresh_reaches_on_refresh(wired: Wired) -> None:
    first: PatientEnrolled = enrolled()
    await wired.send(topics.PATIENT_ENROLLED, first, first.enrolment_id)
    refresh = ImagingRefresh(event_id=uuid.uuid4(), occurred_at=NOW + dt.timedelta(seconds=1), enrolment_id="enr-1")
    await wired.send(topics.IMAGING_REFRESH, refresh, refresh.enrolment_id)
    assert wired.directory.calls == 2
    assert [o.status for o in wired.published] == ["matched", "matched"]
