"""Composition root of the study-fetcher: settings, adapters, subscribers, retrieval workers, housekeeping.

Consumes `identity.resolved.v1`, `dcc.imaging-refresh.v1`, `dcc.studies-selected.v1`, `dcc.study-removed.v1`;
publishes `imaging.catalogued.v1` and `imaging.study-status.v1`. No internal topics: due jobs live in MongoDB
and are claimed with leases by `mirc_max_associations` workers per instance, so retries never block a
partition and instances share the work however the consumer group's partitions are spread. Every association
to MIRC or the viewer store holds a slot of that peer's budget, shared with the other replicas and services.
Enrolments past their retention are deleted, with their studies' viewer-store copies nobody else needs
(`retention.py`). MIRC and the viewer store are probed (C-ECHO) every `peer_probe_seconds`: when one answers
again, the jobs waiting for it are retried at once (`recovery.py`).

`build(settings, overrides=Overrides(...))` replaces adapters (tests give in-memory fakes, a fixed clock).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass

from proxymage_shared import topics
from proxymage_shared.dicom import DicomClient, DicomTimeouts, echo_check
from proxymage_shared.dicom.budget_store import service_budget
from proxymage_shared.events import (
    IdentityResolved,
    ImagingCatalogued,
    ImagingRefresh,
    StudiesSelected,
    StudyRemoved,
    StudyStatusChanged,
    utc_now,
)
from proxymage_shared.kafka import publish_event, subscribe
from proxymage_shared.logging import get_logger
from proxymage_shared.retention import sweeper
from proxymage_shared.service import Service, build_service, periodic

from study_fetcher import domain
from study_fetcher.cleanup import ViewerCleaner
from study_fetcher.handlers import Catalogue, CatalogueOptions, Handlers, RetrievalOptions
from study_fetcher.pacs import DicomPacs, OrthancRest
from study_fetcher.ports import (
    Clock,
    EnrolmentRepository,
    JobRepository,
    Pacs,
    TransferRepository,
    ViewerPurge,
)
from study_fetcher.recovery import PeerRecovery, PeerWatch
from study_fetcher.retention import RetentionSweep
from study_fetcher.settings import Settings
from study_fetcher.store import EnrolmentStore, JobStore, TransferStore
from study_fetcher.updater import JobUpdater
from study_fetcher.worker import Retriever, WorkerOptions

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Overrides:
    """Adapters to use instead of the real ones (None: the real one). A replaced store is not given the
    real store's start-up task (its indexes)."""

    enrolments: EnrolmentRepository | None = None
    jobs: JobRepository | None = None
    transfers: TransferRepository | None = None
    pacs: Pacs | None = None
    purge: ViewerPurge | None = None
    clock: Clock | None = None


def build(settings: Settings, *, instance_id: str | None = None, overrides: Overrides | None = None) -> Service:
    overrides = overrides or Overrides()
    clock = overrides.clock or utc_now
    timeouts = DicomTimeouts(dimse=settings.dimse_timeout_seconds, network=settings.dimse_timeout_seconds)
    service = build_service(settings)
    budget = service_budget(settings, service.mongo_client)
    mirc = DicomClient(
        settings.calling_ae_title,
        settings.mirc,
        max_associations=settings.mirc_max_associations,
        timeouts=timeouts,
        budget=budget,
    )
    viewer = DicomClient(
        settings.calling_ae_title,
        settings.viewer,
        max_associations=settings.viewer_max_associations,
        timeouts=timeouts,
        budget=budget,
    )
    # The peers' probes: `/readyz` asks them on request; `PeerWatch` every `peer_probe_seconds`.
    probes = {"mirc": echo_check(mirc), "viewer": echo_check(viewer)}
    service.readiness_checks = probes
    database = service.mongo_client[settings.database_name()]
    enrolment_store, job_store = EnrolmentStore(database), JobStore(database)
    enrolments = overrides.enrolments or enrolment_store
    jobs = overrides.jobs or job_store
    transfers = overrides.transfers or TransferStore(database)
    owner = instance_id or uuid.uuid4().hex
    lease = dt.timedelta(seconds=settings.lease_seconds)
    pacs = overrides.pacs or DicomPacs(mirc, viewer, settings.destination())
    rest = OrthancRest(
        settings.viewer_rest(),
        settings.viewer_rest_username,
        settings.viewer_rest_password.get_secret_value() if settings.viewer_rest_password else None,
    )
    purge = overrides.purge or rest
    status_topic = settings.topic(topics.STUDY_STATUS)
    catalogue_topic = settings.topic(topics.IMAGING_CATALOGUED)

    async def publish_status(event: StudyStatusChanged) -> None:
        await publish_event(service.broker, status_topic, event.enrolment_id, event)

    async def publish_catalogue(event: ImagingCatalogued) -> None:
        await publish_event(service.broker, catalogue_topic, event.enrolment_id, event)

    policy = domain.RetrievalPolicy(settings.retry_schedule())
    updater = JobUpdater(jobs, publish_status, policy, clock)
    catalogue = Catalogue(
        enrolments,
        pacs,
        publish_catalogue,
        CatalogueOptions(
            display_names=dict(settings.pacs_display_names), retries=settings.retry_schedule(), lease=lease
        ),
        clock,
    )
    cleaner = ViewerCleaner(jobs=jobs, transfers=transfers, purge=purge, owner=owner, lease=lease, clock=clock)
    retention = RetentionSweep(enrolments=enrolments, jobs=jobs, transfers=transfers, cleaner=cleaner, clock=clock)
    retriever = Retriever(
        jobs=jobs,
        transfers=transfers,
        updater=updater,
        pacs=pacs,
        options=WorkerOptions(
            lease=lease,
            renew_every=dt.timedelta(seconds=settings.lease_renewal_seconds),
            transfer_wait=dt.timedelta(seconds=settings.transfer_wait_seconds),
            progress_interval_seconds=settings.progress_interval_seconds,
            cancel_poll_seconds=settings.cancel_poll_seconds,
        ),
        owner=owner,
        cleaner=cleaner,
        clock=clock,
    )
    handlers = Handlers(
        enrolments=enrolments,
        jobs=jobs,
        updater=updater,
        catalogue=catalogue,
        cleaner=cleaner,
        options=RetrievalOptions(
            deadline_after_meeting=settings.deadline_after_meeting,
            timezone=settings.timezone(),
            purge_removed=settings.purge_removed_from_viewer,
        ),
        wake=retriever.wake.set,
        clock=clock,
    )
    subscribe(
        service.broker,
        settings,
        settings.topic(topics.IDENTITY_RESOLVED),
        IdentityResolved,
        handlers.on_identity_resolved,
    )
    subscribe(service.broker, settings, settings.topic(topics.IMAGING_REFRESH), ImagingRefresh, handlers.on_refresh)
    subscribe(service.broker, settings, settings.topic(topics.STUDIES_SELECTED), StudiesSelected, handlers.on_selected)
    subscribe(service.broker, settings, settings.topic(topics.STUDY_REMOVED), StudyRemoved, handlers.on_removed)

    async def housekeeping() -> None:
        """Re-publishes unacknowledged job versions, retries failed catalogues and owed viewer-store purges."""
        older_than = clock() - dt.timedelta(seconds=settings.republish_after_seconds)
        if republished := await updater.republish_pending(older_than):
            log.info("status_republished", count=republished)
        await catalogue.retry_due()
        await cleaner.settle_owed()

    async def ensure_indexes() -> None:
        if overrides.enrolments is None:
            await enrolment_store.ensure_indexes()
        if overrides.jobs is None:
            await job_store.ensure_indexes()

    async def close_clients() -> None:
        await asyncio.gather(mirc.aclose(), viewer.aclose())
        await rest.close()

    service.on_start.append(ensure_indexes)
    service.on_stop.append(close_clients)
    service.background.append(periodic("housekeeping", housekeeping, settings.poll_seconds))
    service.background.append(sweeper(settings, retention.sweep_expired))
    recovery = PeerRecovery(
        jobs=jobs, updater=updater, spread_seconds=settings.peer_recovery_spread_seconds, clock=clock, rng=policy.rng
    )
    watch = PeerWatch(probes, recovery, retriever.wake.set, clock)
    service.background.append(periodic("peer_watch", watch.probe_once, settings.peer_probe_seconds))
    for _ in range(settings.mirc_max_associations):

        async def run_worker(stop: asyncio.Event) -> None:
            await retriever.loop(stop, settings.poll_seconds)

        service.background.append(run_worker)
    log.debug("fetcher_built", owner=owner, workers=settings.mirc_max_associations)
    return service
