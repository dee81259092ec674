"""Composition root of the identity-matcher: settings, adapters, subscribers, durable retry loop.

Consumes `dcc.patient-enrolled.v1`, `dcc.enrolment-withdrawn.v1` and `dcc.imaging-refresh.v1`; publishes
`identity.resolved.v1`. Deletes the enrolments past their retention (proxymage_shared.retention).

`build(settings, overrides=Overrides(...))` replaces adapters (tests give in-memory fakes, a fixed clock).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from proxymage_shared import topics
from proxymage_shared.dicom import DicomClient, echo_check
from proxymage_shared.dicom.budget_store import service_budget
from proxymage_shared.events import (
    EnrolmentWithdrawn,
    IdentityResolved,
    ImagingRefresh,
    PatientEnrolled,
    utc_now,
)
from proxymage_shared.kafka import publish_event, subscribe
from proxymage_shared.retention import sweeper
from proxymage_shared.retry import BackoffSchedule, RetryPolicy
from proxymage_shared.service import Service, build_service, periodic

from identity_matcher.directory import MircDirectory
from identity_matcher.handlers import Handlers, ResolverOptions
from identity_matcher.ports import EnrolmentRepository, PatientDirectory
from identity_matcher.settings import Settings
from identity_matcher.store import EnrolmentStore


@dataclass(frozen=True, slots=True)
class Overrides:
    """Adapters to use instead of the real ones (None: the real one). A replaced store is not given the
    real store's start-up and retention tasks."""

    store: EnrolmentRepository | None = None
    directory: PatientDirectory | None = None
    clock: Callable[[], dt.datetime] | None = None


def options(settings: Settings) -> ResolverOptions:
    return ResolverOptions(
        family_is_used_name=settings.mirc_family_is_used_name,
        pacs_retry=RetryPolicy.uncapped(settings.pacs_attempts, settings.pacs_retry_base_seconds),
        error_retries=BackoffSchedule(settings.error_retry_delays_seconds),
        lease=dt.timedelta(seconds=settings.retry_lease_seconds),
        timezone=settings.timezone(),
    )


def build(settings: Settings, *, overrides: Overrides | None = None) -> Service:
    overrides = overrides or Overrides()
    service = build_service(settings)
    mirc = DicomClient(
        settings.calling_ae_title,
        settings.mirc,
        max_associations=settings.mirc_max_associations,
        budget=service_budget(settings, service.mongo_client),  # MIRC's budget, shared with the fetchers
    )
    service.readiness_checks = {"mirc": echo_check(mirc)}
    outcome_topic = settings.topic(topics.IDENTITY_RESOLVED)

    async def publish(outcome: IdentityResolved) -> None:
        await publish_event(service.broker, outcome_topic, outcome.enrolment_id, outcome)

    store: EnrolmentRepository
    if overrides.store is None:
        mongo_store = EnrolmentStore(service.mongo_client[settings.database_name()])
        service.on_start.append(mongo_store.ensure_indexes)
        service.background.append(sweeper(settings, mongo_store.sweep_expired))
        store = mongo_store
    else:
        store = overrides.store
    handlers = Handlers(
        store,
        overrides.directory or MircDirectory(mirc, settings.mirc_max_answers),
        publish,
        options(settings),
        clock=overrides.clock or utc_now,
    )
    subscribe(
        service.broker,
        settings,
        settings.topic(topics.PATIENT_ENROLLED),
        PatientEnrolled,
        handlers.on_enrolled,
        concurrency=settings.enrolment_concurrency,
    )
    subscribe(
        service.broker,
        settings,
        settings.topic(topics.ENROLMENT_WITHDRAWN),
        EnrolmentWithdrawn,
        handlers.on_withdrawn,
        concurrency=settings.enrolment_concurrency,
    )
    subscribe(service.broker, settings, settings.topic(topics.IMAGING_REFRESH), ImagingRefresh, handlers.on_refresh)

    service.on_stop.append(mirc.aclose)
    service.background.append(periodic("error_retry", handlers.retry_due, settings.error_retry_poll_seconds))
    return service
