"""Composition root of the identity-matcher: settings, adapters, subscribers, durable retry loop.

Consumes `dcc.patient-enrolled.v1`, `dcc.enrolment-withdrawn.v1` and `dcc.imaging-refresh.v1`; publishes
`identity.resolved.v1`. Deletes the enrolments past their retention (proxymage_shared.retention).
"""

from __future__ import annotations

import datetime as dt

from proxymage_shared import topics
from proxymage_shared.dicom import DicomClient, echo_check
from proxymage_shared.events import EnrolmentWithdrawn, IdentityResolved, ImagingRefresh, PatientEnrolled
from proxymage_shared.kafka import publish_event, subscribe
from proxymage_shared.retention import sweeper
from proxymage_shared.retry import BackoffSchedule
from proxymage_shared.service import Service, build_service, periodic

from identity_matcher.directory import MircDirectory
from identity_matcher.handlers import IdentityResolver, ResolverOptions
from identity_matcher.settings import Settings
from identity_matcher.store import EnrolmentStore


def build(settings: Settings) -> Service:
    mirc = DicomClient(settings.calling_ae_title, settings.mirc, max_associations=settings.mirc_max_associations)
    service = build_service(settings, readiness_checks={"mirc": echo_check(mirc)})
    store = EnrolmentStore(service.mongo_client[settings.database_name()])
    outcome_topic = settings.topic(topics.IDENTITY_RESOLVED)

    async def publish(outcome: IdentityResolved) -> None:
        await publish_event(service.broker, outcome_topic, outcome.enrolment_id, outcome)

    resolver = IdentityResolver(
        store,
        MircDirectory(mirc, settings.mirc_max_answers),
        publish,
        ResolverOptions(
            family_is_used_name=settings.mirc_family_is_used_name,
            pacs_attempts=settings.pacs_attempts,
            pacs_retry_base_seconds=settings.pacs_retry_base_seconds,
            error_retries=BackoffSchedule(settings.error_retry_delays_seconds),
            lease=dt.timedelta(seconds=settings.retry_lease_seconds),
            timezone=settings.timezone(),
        ),
    )
    subscribe(
        service.broker,
        settings,
        settings.topic(topics.PATIENT_ENROLLED),
        PatientEnrolled,
        resolver.on_enrolled,
        concurrency=settings.enrolment_concurrency,
    )
    subscribe(
        service.broker,
        settings,
        settings.topic(topics.ENROLMENT_WITHDRAWN),
        EnrolmentWithdrawn,
        resolver.on_withdrawn,
        concurrency=settings.enrolment_concurrency,
    )
    subscribe(service.broker, settings, settings.topic(topics.IMAGING_REFRESH), ImagingRefresh, resolver.on_refresh)

    async def close_mirc() -> None:
        mirc.close()

    service.on_start.append(store.ensure_indexes)
    service.on_stop.append(close_mirc)
    service.background.append(periodic("error_retry", resolver.retry_due, settings.error_retry_poll_seconds))
    service.background.append(sweeper(settings, store.sweep_expired))
    return service
