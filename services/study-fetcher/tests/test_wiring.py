"""The composition root's subscriptions (`app.build`), driven through FastStream's in-memory `TestKafkaBroker`:
an event on each consumed topic reaches its handler, whose outcome is published. No server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from proxymage_shared import topics
from proxymage_shared.events import Event, ImagingCatalogued, StudyStatusChanged
from proxymage_shared.kafka import Delivery, publish_event, subscribe
from proxymage_shared.settings import load_settings
from study_fetcher.app import Overrides, build
from study_fetcher.settings import Settings

from .fakes import FakeEnrolmentStore, FakeJobStore, FakePacs, FakePurge, FakeTransferStore
from .test_handlers import ENROLMENT, NOW, PATIENT, STUDY, identity, record, refresh, removal, selection


@dataclass
class Wired:
    settings: Settings
    broker: KafkaBroker  # patched by TestKafkaBroker: in memory
    jobs: FakeJobStore
    pacs: FakePacs
    statuses: list[StudyStatusChanged] = field(default_factory=list)
    catalogues: list[ImagingCatalogued] = field(default_factory=list)

    async def send(self, topic: str, event: Event) -> None:
        await publish_event(self.broker, self.settings.topic(topic), ENROLMENT, event)


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    settings = load_settings(Settings, topic_prefix=f"wiring-{uuid.uuid4().hex[:8]}.")
    jobs, pacs = FakeJobStore(), FakePacs(studies={PATIENT.patient_id: [record(STUDY)]})
    overrides = Overrides(
        enrolments=FakeEnrolmentStore(),
        jobs=jobs,
        transfers=FakeTransferStore(),
        pacs=pacs,
        purge=FakePurge(),
        clock=lambda: NOW,
    )
    service = build(settings, instance_id="wiring", overrides=overrides)
    found = Wired(settings, service.broker, jobs, pacs)

    async def on_status(event: StudyStatusChanged, _delivery: Delivery) -> None:
        found.statuses.append(event)

    async def on_catalogue(event: ImagingCatalogued, _delivery: Delivery) -> None:
        found.catalogues.append(event)

    subscribe(service.broker, settings, settings.topic(topics.STUDY_STATUS), StudyStatusChanged, on_status)
    subscribe(service.broker, settings, settings.topic(topics.IMAGING_CATALOGUED), ImagingCatalogued, on_catalogue)
    async with TestKafkaBroker(service.broker) as broker:
        found.broker = broker
        yield found
    for hook in service.on_stop:
        await hook()


async def test_an_identity_outcome_reaches_on_identity_resolved_and_the_catalogue_is_published(wired: Wired) -> None:
    await wired.send(topics.IDENTITY_RESOLVED, identity())
    assert [(c.status, [s.study_instance_uid for s in c.studies]) for c in wired.catalogues] == [("listed", [STUDY])]


async def test_a_selection_reaches_on_selected_and_the_job_is_published(wired: Wired) -> None:
    await wired.send(topics.STUDIES_SELECTED, selection(STUDY))
    assert [(s.study_instance_uid, s.status, s.version) for s in wired.statuses] == [(STUDY, "queued", 1)]


async def test_a_removal_reaches_on_removed(wired: Wired) -> None:
    await wired.send(topics.STUDIES_SELECTED, selection(STUDY))
    await wired.send(topics.STUDY_REMOVED, removal())
    assert [s.status for s in wired.statuses] == ["queued", "removed"]


async def test_a_refresh_reaches_on_refresh_and_lists_again(wired: Wired) -> None:
    await wired.send(topics.IDENTITY_RESOLVED, identity())
    await wired.send(topics.IMAGING_REFRESH, refresh())
    assert [c.status for c in wired.catalogues] == ["listed", "listed"]
